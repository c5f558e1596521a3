"""Archives are untrusted: nothing escapes its directory."""
from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from onlydocker.errors import UnsafeArchive
from onlydocker.unpack import check_archive, extract


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
    data = tmp_path / "data.tar.gz"
    make_tar(data, [("./usr", "dir", None), ("./usr/../../x", "file", None)])
    payload = data.read_bytes()
    deb = tmp_path / "evil.deb"
    with open(deb, "wb") as f:
        f.write(b"!<arch>\n")
        for name, body in ((b"debian-binary", b"2.0\n"), (b"data.tar.gz", payload)):
            f.write(name.ljust(16) + b"0".ljust(12) + b"0".ljust(6) + b"0".ljust(6) + b"100644".ljust(8)
                    + str(len(body)).encode().ljust(10) + b"`\n")
            f.write(body + (b"\n" if len(body) % 2 else b""))
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
