"""cpio.py: the initramfs writer, read back by GNU cpio."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from onlydocker.errors import UnsafeArchive
from onlydocker.formats import cpio
from tests.conftest import require_tool
from tests.trees import EPOCH, assert_refuses_setuid_files_and_fifos, two_trees, written


def newc(root: Path, **kw) -> bytes:
    return written(cpio.write_newc, root, **kw)


@pytest.fixture
def trees(tmp_path):
    return two_trees(tmp_path)


def parse(data: bytes) -> list[dict]:
    """A strict newc reader: every field, every padding."""
    out, pos = [], 0
    names = ("ino", "mode", "uid", "gid", "nlink", "mtime", "size", "devmajor", "devminor",
             "rdevmajor", "rdevminor", "namesize", "check")
    while True:
        assert data[pos:pos + 6] == b"070701", f"bad magic at {pos}"
        h = {k: int(data[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i, k in enumerate(names)}
        start = pos + 110
        h["name"] = data[start:start + h["namesize"] - 1].decode()
        assert data[start + h["namesize"] - 1] == 0
        pos = start + h["namesize"]
        assert pos % 4 == 0 or data[pos:pos + (-pos) % 4] == b"\0" * ((-pos) % 4)
        pos += (-pos) % 4
        h["data"] = data[pos:pos + h["size"]]
        pos += h["size"]
        assert data[pos:pos + (-pos) % 4] == b"\0" * ((-pos) % 4)
        pos += (-pos) % 4
        out.append(h)
        if h["name"] == "TRAILER!!!":
            assert data[pos:] == b"\0" * (len(data) - pos) and len(data) % 512 == 0
            return out


def test_same_tree_same_bytes_whatever_umask_dates_and_order(trees):
    assert newc(trees[0]) == newc(trees[1])


def test_headers_follow_the_table(trees):
    entries = parse(newc(trees[1]))
    body, trailer = entries[:-1], entries[-1]
    names = [e["name"] for e in body]
    assert names == sorted(names, key=lambda n: n.encode())
    assert [e["ino"] for e in body] == list(range(1, len(body) + 1))
    assert all(e["uid"] == 0 and e["gid"] == 0 and e["mtime"] == EPOCH for e in body)
    by = {e["name"]: e for e in body}
    assert by["bin"]["mode"] == 0o040755 and by["bin"]["nlink"] == 2
    assert by["bin/tool"]["mode"] == 0o100755 and by["etc/conf"]["mode"] == 0o100644
    assert by["init"]["mode"] == 0o100755
    assert by["sbin"]["mode"] == 0o120777 and by["sbin"]["data"] == b"bin"
    assert by["dev"]["mode"] == 0o040755
    assert by["dev/console"]["mode"] == 0o020600
    assert (by["dev/console"]["rdevmajor"], by["dev/console"]["rdevminor"]) == (5, 1)
    # Hardlinks are separate files: the kernel needs no link bookkeeping.
    assert by["bin/tool-hardlink"]["nlink"] == 1 and by["bin/tool-hardlink"]["data"] == by["bin/tool"]["data"]
    assert trailer["ino"] == 0 and trailer["mode"] == 0


def test_gnu_cpio_lists_and_extracts_it(trees, tmp_path):
    require_tool("cpio")
    archive = tmp_path / "x.cpio"
    archive.write_bytes(newc(trees[0]))
    listing = subprocess.run(["cpio", "-itv", "-F", str(archive)], capture_output=True, text=True)
    assert listing.returncode == 0, listing.stderr
    console = next(line for line in listing.stdout.splitlines() if line.endswith(" dev/console"))
    assert console.startswith("crw-------") and "5,   1" in console
    out = tmp_path / "extracted"
    out.mkdir()
    subprocess.run(["cpio", "-idm", "--no-absolute-filenames", "-F", str(archive)],
                   cwd=out, check=True, capture_output=True)
    for p in trees[0].rglob("*"):
        rel = p.relative_to(trees[0])
        q = out / rel
        if p.is_symlink():
            assert os.readlink(q) == os.readlink(p)
        elif p.is_file():
            assert q.read_bytes() == p.read_bytes(), rel
    assert (out / "init").stat().st_mode & 0o777 == 0o755
    assert int((out / "etc" / "conf").stat().st_mtime) == EPOCH


def test_init_is_always_executable(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "init").write_text("#!/bin/sh\n")
    (tmp_path / "r" / "init").chmod(0o600)
    by = {e["name"]: e for e in parse(newc(tmp_path / "r"))}
    assert by["init"]["mode"] == 0o100755


def test_devices_come_from_the_list_with_their_parents(tmp_path):
    (tmp_path / "r").mkdir()
    data = newc(tmp_path / "r", extra_devices=(("dev/console", 0o600, 5, 1), ("dev/net/tun", 0o666, 10, 200)))
    by = {e["name"]: e for e in parse(data)}
    assert by["dev/net"]["mode"] == 0o040755
    assert by["dev/net/tun"]["mode"] == 0o020666 and by["dev/net/tun"]["rdevminor"] == 200


def test_a_device_under_a_symlink_is_refused(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "dev").symlink_to("/somewhere")
    with pytest.raises(UnsafeArchive, match="needs a directory"):
        newc(tmp_path / "r")


def test_setuid_files_and_fifos_are_refused(tmp_path):
    assert_refuses_setuid_files_and_fifos(cpio.write_newc, tmp_path)
