"""Trees and writers shared by the tests of the deterministic archive
writers (tarball, cpio): one tree made twice under different conditions,
and a writer's output as bytes."""
from __future__ import annotations

import io
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from onlydocker.errors import UnsafeArchive

EPOCH = 1686355200


def make_tree(root: Path, umask: int, mtime: float, reverse: bool = False) -> Path:
    """One tree, made under another umask, with other dates, and its files
    created in another order (so the directory order differs too)."""
    old = os.umask(umask)
    try:
        for d in ("bin", "etc/ssl", "usr/share/a-b", "usr/share/a"):
            (root / d).mkdir(parents=True, exist_ok=True)
        files = [("bin/tool", b"#!/bin/sh\necho hi\n", True), ("etc/conf", b"x=1\n", False),
                 ("etc/ssl/cert.pem", b"PEM\n" * 100, False), ("usr/share/a-b/z", b"z", False),
                 ("usr/share/a/y", b"y", False), ("init", b"#!/bin/sh\n", True),
                 ("big", bytes(range(256)) * 1200, False)]
        for name, data, x in (reversed(files) if reverse else files):
            (root / name).write_bytes(data)
            if x:
                (root / name).chmod(0o777 & ~umask)
        (root / "sbin").symlink_to("bin")
        (root / "lib64").symlink_to("/lib/x86_64-linux-gnu")
        os.link(root / "bin" / "tool", root / "bin" / "tool-hardlink")
    finally:
        os.umask(old)
    for p in root.rglob("*"):
        os.utime(p, (mtime, mtime), follow_symlinks=False)
    return root


def two_trees(tmp_path: Path) -> tuple[Path, Path]:
    """The same tree twice: under umask 022 with today's dates in creation
    order, and under umask 077 with 2001's dates in reverse order."""
    return (make_tree(tmp_path / "a", 0o022, time.time()),
            make_tree(tmp_path / "b", 0o077, 1e9, reverse=True))


def written(write: Callable, root: Path, **kw) -> bytes:
    """What a writer (`tarball.write_tree`, `cpio.write_newc`) writes for `root`."""
    buf = io.BytesIO()
    write(root, buf, mtime=EPOCH, **kw)
    return buf.getvalue()


def assert_refuses_setuid_files_and_fifos(write: Callable, tmp_path: Path) -> None:
    """`write` refuses a setuid file and a fifo, each in an error naming it."""
    root = tmp_path / "r"
    root.mkdir()
    (root / "su").write_bytes(b"x")
    (root / "su").chmod(0o4755)
    with pytest.raises(UnsafeArchive, match=re.escape(f"{root / 'su'}: setuid")):
        written(write, root)
    (root / "su").unlink()
    os.mkfifo(root / "pipe")
    with pytest.raises(UnsafeArchive, match=re.escape(f"{root / 'pipe'}: ")):
        written(write, root)
