"""The initramfs writer: cpio "newc", written by us so every byte is ours.

Sorted paths, inode numbers 1..N, nlink 1 (directories 2), uid/gid 0, one
mtime, modes from a table (tarball.mode_for; `init` always 0755), device
nodes from a list (`/dev/console` by default: the kernel opens it before
/init runs), `TRAILER!!!` and 4-byte padding, the whole padded to 512 bytes
like GNU cpio. Like LinuxKit's initrd writer: short, single-purpose,
deterministic.
"""
from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from ..errors import UnsafeArchive
from .tarball import mode_for

MAGIC = b"070701"
DEFAULT_DEVICES = (("dev/console", 0o600, 5, 1),)
CHUNK = 1 << 20
# Paths whose mode the table fixes whatever the tree says: the kernel must
# be able to exec /init.
FIXED_MODES = {"init": 0o755}


def _pad(n: int) -> bytes:
    return b"\0" * ((4 - n % 4) % 4)


def _header(ino: int, mode: int, nlink: int, mtime: int, size: int, name: bytes,
            rdevmajor: int = 0, rdevminor: int = 0) -> bytes:
    # ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
    fields = (ino, mode, 0, 0, nlink, mtime, size, 0, 0, rdevmajor, rdevminor, len(name) + 1, 0)
    h = MAGIC + b"".join(b"%08X" % f for f in fields) + name + b"\0"
    return h + _pad(len(h))


def entries_of(root: Path, extra_devices: Iterable[tuple[str, int, int, int]] = DEFAULT_DEVICES
               ) -> list[tuple[str, tuple]]:
    """Sorted (path, (kind, mode, payload)) for the tree plus the device
    nodes (their parent directories are added when missing)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such directory for the initrd")
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
                if st.st_mode & 0o6000:
                    raise UnsafeArchive(f"{p}: setuid/setgid file (mode {stat.S_IMODE(st.st_mode):o}) "
                                        f"refused in an initrd")
                out[rel] = ("file", FIXED_MODES.get(rel, mode_for("file", st.st_mode)), p)
            else:
                raise UnsafeArchive(f"{p}: only files, directories and symlinks go into an initrd "
                                    f"(device nodes come from extra_devices)")
    for path, mode, major, minor in extra_devices:
        path = path.strip("/")
        parts = path.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            kind = out.setdefault(parent, ("dir", 0o755, None))[0]
            if kind != "dir":
                raise UnsafeArchive(f"{root}/{parent}: is a {kind}, but device {path} needs a directory there")
        if path in out and out[path][0] == "dir":
            raise UnsafeArchive(f"{root}/{path}: is a directory, but a device node goes there")
        out[path] = ("chardev", mode & 0o7777, (major, minor))
    # Sorting by bytes, not by str, so the order never depends on the locale.
    return sorted(out.items(), key=lambda kv: kv[0].encode("utf-8", "surrogateescape"))


def write_newc(root: Path, out: BinaryIO, *, mtime: int,
               extra_devices: Iterable[tuple[str, int, int, int]] = DEFAULT_DEVICES) -> None:
    """Write `root` (its content, not itself) as a newc archive to `out`."""
    mtime = int(mtime)
    written = 0

    def emit(b: bytes) -> None:
        nonlocal written
        out.write(b)
        written += len(b)

    for ino, (path, (kind, mode, payload)) in enumerate(entries_of(Path(root), extra_devices), start=1):
        name = path.encode("utf-8", "surrogateescape")
        if kind == "dir":
            emit(_header(ino, stat.S_IFDIR | mode, 2, mtime, 0, name))
        elif kind == "symlink":
            target = payload.encode("utf-8", "surrogateescape")
            emit(_header(ino, stat.S_IFLNK | mode, 1, mtime, len(target), name))
            emit(target + _pad(len(target)))
        elif kind == "chardev":
            major, minor = payload
            emit(_header(ino, stat.S_IFCHR | mode, 1, mtime, 0, name, major, minor))
        else:
            with open(payload, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                emit(_header(ino, stat.S_IFREG | mode, 1, mtime, size, name))
                copied = 0
                while chunk := f.read(CHUNK):
                    emit(chunk)
                    copied += len(chunk)
            if copied != size:
                raise UnsafeArchive(f"{payload}: changed while the initrd was written "
                                    f"({size} bytes announced, {copied} read)")
            emit(_pad(size))
    emit(_header(0, 0, 1, 0, 0, b"TRAILER!!!"))
    # The kernel reads the archive in 512-byte blocks: pad like GNU cpio.
    emit(b"\0" * ((512 - written % 512) % 512))
