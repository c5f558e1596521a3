"""The initramfs writer: cpio "newc", written by us so every byte is ours.

Sorted paths, inode numbers 1..N, nlink 1 (directories 2), uid/gid 0, one
mtime, modes from a table, `/dev/console` always present (the kernel opens
it before /init runs), `TRAILER!!!` and 4-byte padding. Like LinuxKit's
initrd writer: short, single-purpose, deterministic.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from .errors import UnsafeArchive
from .tarball import mode_for

MAGIC = b"070701"
DEFAULT_DEVICES = (("dev/console", 0o600, 5, 1),)


def _pad(n: int) -> bytes:
    return b"\0" * ((4 - n % 4) % 4)


def _header(ino: int, mode: int, nlink: int, mtime: int, size: int, name: bytes,
            rdevmajor: int = 0, rdevminor: int = 0) -> bytes:
    fields = (ino, mode, 0, 0, nlink, mtime, size, 0, 0, rdevmajor, rdevminor, len(name) + 1, 0)
    h = MAGIC + b"".join(b"%08X" % f for f in fields) + name + b"\0"
    return h + _pad(len(h))


def entries_of(root: Path, extra_devices=DEFAULT_DEVICES):
    """(path, kind, mode, payload) for the tree plus device nodes, sorted."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = p.relative_to(root).as_posix()
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("symlink", 0o777, os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", 0o755, None)
            elif stat.S_ISREG(st.st_mode):
                out[rel] = ("file", mode_for("file", st.st_mode), p)
            else:
                raise UnsafeArchive(f"{p}: only files, directories and symlinks go into an initrd")
    for path, mode, major, minor in extra_devices:
        parts = path.split("/")
        for i in range(1, len(parts)):
            out.setdefault("/".join(parts[:i]), ("dir", 0o755, None))
        out[path] = ("chardev", mode, (major, minor))
    return sorted(out.items())


def write_newc(root: Path, out: BinaryIO, *, mtime: int, extra_devices=DEFAULT_DEVICES) -> None:
    written = 0

    def emit(b: bytes):
        nonlocal written
        out.write(b)
        written += len(b)

    for ino, (path, (kind, mode, payload)) in enumerate(entries_of(Path(root), extra_devices), start=1):
        name = path.encode()
        if kind == "dir":
            emit(_header(ino, stat.S_IFDIR | mode, 2, mtime, 0, name))
        elif kind == "symlink":
            target = payload.encode()
            emit(_header(ino, stat.S_IFLNK | mode, 1, mtime, len(target), name))
            emit(target + _pad(len(target)))
        elif kind == "chardev":
            major, minor = payload
            emit(_header(ino, stat.S_IFCHR | mode, 1, mtime, 0, name, major, minor))
        else:
            size = os.path.getsize(payload)
            emit(_header(ino, stat.S_IFREG | mode, 1, mtime, size, name))
            with open(payload, "rb") as f:
                while chunk := f.read(1 << 20):
                    emit(chunk)
            emit(_pad(size))
    emit(_header(0, 0, 1, 0, 0, b"TRAILER!!!"))
    # The kernel reads the archive in 512-byte blocks: pad like GNU cpio.
    emit(b"\0" * ((512 - written % 512) % 512))
