"""tarball.py: the same tree gives the same bytes whatever the umask, the
file dates and the directory order; GNU tar reads what we write."""
from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from onlydocker.errors import UnsafeArchive
from onlydocker.formats import tarball
from tests.conftest import require_tool
from tests.trees import EPOCH, assert_refuses_setuid_files_and_fifos, two_trees, written


def tar_bytes(src: Path, **kw) -> bytes:
    return written(tarball.write_tree, src, **kw)


@pytest.fixture
def trees(tmp_path):
    return two_trees(tmp_path)


def test_same_tree_same_bytes_whatever_umask_dates_and_order(trees):
    assert tar_bytes(trees[0]) == tar_bytes(trees[1])


def test_members_are_sorted_normalised_and_owned_by_root(trees):
    with tarfile.open(fileobj=io.BytesIO(tar_bytes(trees[1]))) as tf:
        members = tf.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names, key=lambda n: n.encode())
    assert all(m.mtime == EPOCH and m.uid == 0 and m.gid == 0 and m.uname == "" and m.gname == ""
               for m in members)
    by = {m.name: m for m in members}
    assert by["bin"].isdir() and by["bin"].mode == 0o755
    assert by["bin/tool"].mode == 0o755 and by["etc/conf"].mode == 0o644
    assert by["sbin"].issym() and by["sbin"].linkname == "bin"
    assert by["lib64"].linkname == "/lib/x86_64-linux-gnu"
    # A hardlink becomes a regular file of its own.
    assert by["bin/tool-hardlink"].isreg() and by["bin/tool-hardlink"].size == by["bin/tool"].size


def test_gnu_tar_lists_and_extracts_it(trees, tmp_path):
    require_tool("tar")
    (tmp_path / "x.tar").write_bytes(tar_bytes(trees[0], prefix="out"))
    listing = subprocess.run(["tar", "-tvf", str(tmp_path / "x.tar")], capture_output=True, text=True, check=True)
    assert "out/bin/tool" in listing.stdout and "0/0" in listing.stdout
    dest = tmp_path / "x"
    dest.mkdir()
    subprocess.run(["tar", "-xf", str(tmp_path / "x.tar"), "-C", str(dest)], check=True)
    assert (dest / "out" / "etc" / "ssl" / "cert.pem").read_bytes() == b"PEM\n" * 100
    assert os.readlink(dest / "out" / "sbin") == "bin"


def test_setuid_files_and_fifos_are_refused(tmp_path):
    assert_refuses_setuid_files_and_fifos(tarball.write_tree, tmp_path)


def test_in_memory_entries_in_any_order_give_one_archive():
    entries = [("b.txt", "file", 0o600, b"b"), ("a", "dir", 0o700, None), ("a/link", "symlink", 0, "../b.txt"),
               ("a/run", "file", 0o700, b"#!/bin/sh\n")]
    outs = []
    for rows in (entries, list(reversed(entries))):
        buf = io.BytesIO()
        tarball.write_entries(rows, buf, EPOCH)
        outs.append(buf.getvalue())
    assert outs[0] == outs[1]
    as_mapping = io.BytesIO()
    tarball.write_entries({"b.txt": b"b", "a": None, "a/link": ("->", "../b.txt"), "a/run": (0o755, b"#!/bin/sh\n")},
                          as_mapping, EPOCH)
    assert as_mapping.getvalue() == outs[0]


def test_a_name_given_twice_is_refused():
    with pytest.raises(UnsafeArchive, match="twice"):
        tarball.write_entries([("a", "file", 0o644, b"1"), ("./a", "file", 0o644, b"2")], io.BytesIO(), EPOCH)


def _raw_tar(members) -> io.BytesIO:
    """An untidy tar like the engine's get_archive: owners, dates, modes and
    order of a live system, under a top-level folder."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid, info.uname = 1234567890.5, 1000, 1000, "builder"
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o700
                tf.addfile(info)
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, data
                tf.addfile(info)
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, data
                tf.addfile(info)
            else:
                info.size, info.mode = len(data), 0o600 if kind == "file" else 0o700
                tf.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def test_normalize_rewrites_an_untidy_stream_and_strips_the_top_folder():
    raw = _raw_tar([("out", "dir", None), ("out/z", "file", b"z" * 5000), ("out/bin", "dir", None),
                    ("out/bin/x", "exe", b"\x7fELF"), ("out/bin/y", "hard", "out/bin/x"),
                    ("out/s", "sym", "bin/x")])
    shuffled = _raw_tar([("out/s", "sym", "bin/x"), ("out/bin", "dir", None), ("out/bin/x", "exe", b"\x7fELF"),
                         ("out/z", "file", b"z" * 5000), ("out/bin/y", "hard", "out/bin/x"), ("out", "dir", None)])
    outs = []
    for r in (raw, shuffled):
        out = io.BytesIO()
        tarball.normalize(r, out, EPOCH, strip_top=True)
        outs.append(out.getvalue())
    assert outs[0] == outs[1]
    with tarfile.open(fileobj=io.BytesIO(outs[0])) as tf:
        got = {m.name: (m.type, m.mode, m.mtime, m.uid, m.uname) for m in tf.getmembers()}
        assert tf.extractfile("bin/y").read() == b"\x7fELF"
        assert tf.extractfile("z").read() == b"z" * 5000
    assert list(got) == ["bin", "bin/x", "bin/y", "s", "z"]
    assert got["bin/x"] == (tarfile.REGTYPE, 0o755, EPOCH, 0, "")
    assert got["z"][1] == 0o644 and got["bin"][1] == 0o755


def test_normalize_refuses_a_member_escaping_the_tree():
    with pytest.raises(UnsafeArchive):
        tarball.normalize(_raw_tar([("out/../../etc/passwd", "file", b"x")]), io.BytesIO(), EPOCH, strip_top=True)


def test_normalize_equals_write_tree_of_the_same_tree(trees, tmp_path):
    require_tool("tar")
    raw = tmp_path / "raw.tar"
    # GNU tar's own archive of the tree, with its dates, owners and order.
    subprocess.run(["tar", "-cf", str(raw), "-C", str(trees[0].parent), trees[0].name], check=True)
    out = io.BytesIO()
    with open(raw, "rb") as f:
        tarball.normalize(f, out, EPOCH, strip_top=True)
    assert out.getvalue() == tar_bytes(trees[1])
