"""Archives are untrusted: nothing escapes its directory."""
from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from onlydocker.errors import UnsafeArchive
from onlydocker.formats.unpack import check_archive, extract


def make_tar(path: Path, members) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, kind, extra in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                data = extra or b"data"
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
                continue
            if kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, extra
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, extra
            elif kind == "dev":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            elif kind == "setuid":
                info.mode, info.size = 0o4755, 4
                tf.addfile(info, io.BytesIO(b"data"))
                continue
            tf.addfile(info)
    return path


def make_deb(path: Path, members) -> Path:
    """A .deb (an ar archive) whose data.tar.gz holds `members` (see make_tar)."""
    data = make_tar(path.with_name("data.tar.gz"), members).read_bytes()
    with open(path, "wb") as f:
        f.write(b"!<arch>\n")
        for name, body in ((b"debian-binary", b"2.0\n"), (b"data.tar.gz", data)):
            f.write(name.ljust(16) + b"0".ljust(12) + b"0".ljust(6) + b"0".ljust(6) + b"100644".ljust(8)
                    + str(len(body)).encode().ljust(10) + b"`\n")
            f.write(body + (b"\n" if len(body) % 2 else b""))
    return path


@pytest.mark.parametrize("members, words", [
    ([("/etc/passwd", "file", None)], "absolute path"),
    ([("a/../../escape", "file", None)], "'..'"),
    ([("a/link", "sym", "../../outside")], "outside the tree"),
    ([("a/link", "sym", "/etc/shadow")], "absolute path"),
    ([("a/hard", "hard", "../../etc/passwd")], "outside the tree"),
    ([("a/null", "dev", None)], "device node"),
    ([("a/suid", "setuid", None)], "setuid"),
])
def test_unsafe_members_are_refused_and_nothing_is_written(tmp_path, members, words):
    archive = make_tar(tmp_path / "evil.tar.gz", [("a", "dir", None), *members])
    with pytest.raises(UnsafeArchive) as e:
        check_archive(archive)
    assert words in str(e.value) and "evil.tar.gz" in str(e.value)
    dest = tmp_path / "box" / "dest"
    with pytest.raises(UnsafeArchive):
        extract(archive, dest)
    assert not dest.exists()
    assert sorted(p.name for p in (tmp_path / "box").iterdir()) == []
    assert not (tmp_path / "escape").exists() and not (tmp_path / "outside").exists()


def tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        h.update(oct(p.lstat().st_mode).encode())
        if p.is_symlink():
            h.update(os.readlink(p).encode())
        elif p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def test_the_same_archive_gives_the_same_tree(tmp_path):
    archive = make_tar(tmp_path / "ok.tar.gz", [
        ("pkg-1.0", "dir", None), ("pkg-1.0/a.c", "file", b"int a;"), ("pkg-1.0/sub", "dir", None),
        ("pkg-1.0/sub/b", "file", b"b"), ("pkg-1.0/link", "sym", "sub/b"), ("pkg-1.0/hard", "hard", "pkg-1.0/a.c")])
    old = os.umask(0o077)
    try:
        extract(archive, tmp_path / "one", strip_single_top=True)
    finally:
        os.umask(old)
    extract(archive, tmp_path / "two", strip_single_top=True)
    assert tree_hash(tmp_path / "one") == tree_hash(tmp_path / "two")
    assert (tmp_path / "one" / "hard").read_bytes() == b"int a;"
    assert os.readlink(tmp_path / "one" / "link") == "sub/b"


def test_a_deb_is_checked_inside(tmp_path):
    deb = make_deb(tmp_path / "evil.deb", [("./usr", "dir", None), ("./usr/../../x", "file", None)])
    with pytest.raises(UnsafeArchive, match="evil.deb"):
        check_archive(deb)


def test_nothing_is_written_through_a_symlink_even_an_allowed_absolute_one(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    archive = make_tar(tmp_path / "sysroot.tar.gz", [("lib64", "sym", str(outside)), ("lib64/evil", "file", b"x")])
    with pytest.raises(UnsafeArchive, match="through a symlink"):
        extract(archive, tmp_path / "dest", absolute_symlinks=True)
    assert list(outside.iterdir()) == []


def test_a_sysroot_may_keep_absolute_symlinks(tmp_path):
    archive = make_tar(tmp_path / "sysroot.tar.gz", [("lib64", "dir", None),
                                                     ("lib64/ld.so", "sym", "/lib/x86_64-linux-gnu/ld.so")])
    extract(archive, tmp_path / "dest", absolute_symlinks=True)
    assert os.readlink(tmp_path / "dest" / "lib64" / "ld.so") == "/lib/x86_64-linux-gnu/ld.so"


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_a_chain_of_links_that_leads_out_is_refused(tmp_path):
    # Each link alone reads as inside (x -> ., y -> x/..), together y is the parent.
    archive = make_tar(tmp_path / "chain.tar.gz", [("x", "sym", "."), ("y", "sym", "x/..")])
    before = _listing(tmp_path)
    with pytest.raises(UnsafeArchive, match="'y'"):
        extract(archive, tmp_path / "dest")
    assert _listing(tmp_path) == before


def test_a_failed_extraction_leaves_the_old_tree_alone(tmp_path):
    good = make_tar(tmp_path / "good.tar.gz", [("a", "file", b"old")])
    extract(good, tmp_path / "dest")
    evil = make_tar(tmp_path / "evil.tar.gz", [("b", "file", b"new"), ("../c", "file", None)])
    with pytest.raises(UnsafeArchive):
        extract(evil, tmp_path / "dest")
    assert (tmp_path / "dest" / "a").read_bytes() == b"old" and not (tmp_path / "dest" / "b").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", "evil.tar.gz", "good.tar.gz"]


def test_modes_are_normalised_and_mtimes_kept_whatever_the_umask(tmp_path):
    path = tmp_path / "modes.tar"
    with tarfile.open(path, "w") as tf:
        for name, mode in (("d", 0o700), ("d/exe", 0o777), ("d/data", 0o666), ("d/private", 0o600)):
            info = tarfile.TarInfo(name)
            info.mode, info.mtime = mode, 1686355200
            if name == "d":
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            else:
                info.size = 1
                tf.addfile(info, io.BytesIO(b"x"))
    old = os.umask(0o077)
    try:
        extract(path, tmp_path / "dest")
    finally:
        os.umask(old)
    d = tmp_path / "dest"
    modes = {p.name: p.stat().st_mode & 0o7777 for p in [d / "d", *(d / "d").iterdir()]}
    assert modes == {"d": 0o755, "exe": 0o755, "data": 0o644, "private": 0o644}
    assert {int(p.stat().st_mtime) for p in [d / "d", *(d / "d").iterdir()]} == {1686355200}


def test_zstd_is_recognised_by_its_bytes_and_a_stream_extracts(tmp_path):
    import zstandard
    plain = make_tar(tmp_path / "p.tar.gz", [("top", "dir", None), ("top/f", "file", b"zz")])
    with tarfile.open(plain) as tf_in, tarfile.open(tmp_path / "raw.tar", "w") as tf_out:
        for m in tf_in:
            tf_out.addfile(m, tf_in.extractfile(m) if m.isfile() else None)
    blob = zstandard.ZstdCompressor().compress((tmp_path / "raw.tar").read_bytes())
    (tmp_path / "entry").write_bytes(blob)           # a cache entry: no suffix at all
    with open(tmp_path / "entry", "rb") as f:
        extract(f, tmp_path / "dest", strip_single_top=True)
    assert (tmp_path / "dest" / "f").read_bytes() == b"zz"


def test_a_truncated_archive_is_named(tmp_path):
    archive = make_tar(tmp_path / "ok.tar.gz", [("a", "file", os.urandom(50000))])
    (tmp_path / "cut.tar.gz").write_bytes(archive.read_bytes()[:20000])
    with pytest.raises(UnsafeArchive, match="cut.tar.gz"):
        check_archive(tmp_path / "cut.tar.gz")


@pytest.mark.parametrize("suffix", ["tar", "tar.gz", "tar.zst"])
def test_an_archive_cut_inside_a_file_is_named_and_leaves_nothing(tmp_path, suffix):
    import zstandard
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("big")
        info.size = 300000
        tf.addfile(info, io.BytesIO(os.urandom(300000)))
    plain = buf.getvalue()
    cut = plain[:150000]                       # the header is whole; the data is not
    if suffix == "tar.gz":
        import gzip
        cut = gzip.compress(cut, mtime=0)
    elif suffix == "tar.zst":
        cut = zstandard.ZstdCompressor().compress(plain)[:150000]
    (tmp_path / f"cut.{suffix}").write_bytes(cut)
    with pytest.raises(UnsafeArchive, match=rf"cut.{suffix}.*corrupt or truncated"):
        extract(tmp_path / f"cut.{suffix}", tmp_path / "dest")
    assert not (tmp_path / "dest").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def _deb(path: Path, data_name: bytes, payload: bytes) -> Path:
    with open(path, "wb") as f:
        f.write(b"!<arch>\n")
        for name, body in ((b"debian-binary", b"2.0\n"), (b"control.tar.xz", b"x"), (data_name, payload)):
            f.write(name.ljust(16) + b"0".ljust(12) + b"0".ljust(6) + b"0".ljust(6) + b"100644".ljust(8)
                    + str(len(body)).encode().ljust(10) + b"`\n")
            f.write(body + (b"\n" if len(body) % 2 else b""))
    return path


def test_a_good_deb_is_checked_and_extracted_from_its_data_member(tmp_path):
    data = make_tar(tmp_path / "data.tar.gz", [("./usr", "dir", None), ("./usr/bin", "dir", None),
                                               ("./usr/bin/tool", "file", b"\x7fELF")])
    deb = _deb(tmp_path / "tool_1.0_amd64.deb", b"data.tar.gz", data.read_bytes())
    check_archive(deb)
    extract(deb, tmp_path / "dest")
    assert (tmp_path / "dest" / "usr" / "bin" / "tool").read_bytes() == b"\x7fELF"


def test_a_member_read_as_a_file_that_is_none_is_refused_in_one_line(tmp_path):
    """member_file: where the code reads a member's bytes (a .deb's control
    file, a stage output's files), a member that is a directory or a link is
    the archive's doing: UnsafeArchive naming it, not a traceback."""
    from onlydocker.formats.unpack import member_file
    path = tmp_path / "a.tar"
    with tarfile.open(path, "w") as tf:
        info = tarfile.TarInfo("control")
        info.type = tarfile.DIRTYPE
        tf.addfile(info)
    with tarfile.open(path) as tf, pytest.raises(UnsafeArchive, match=r"a\.tar: member 'control' is not a regular file"):
        member_file(tf, "control")
