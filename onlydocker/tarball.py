"""Deterministic tar: the same tree gives the same bytes, whatever the host's
umask, clock, locale or directory order (GNU format, sorted members, one
mtime, uid/gid 0, no user or group names, modes from a table)."""
from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path
from typing import BinaryIO, Iterable

from .errors import UnsafeArchive

FORMAT_VERSION = "tar-gnu-1"


def mode_for(kind: str, mode: int) -> int:
    """Modes from a table: directories and executables 0755, files 0644,
    symlinks 0777."""
    if kind == "dir":
        return 0o755
    if kind == "symlink":
        return 0o777
    return 0o755 if mode & 0o111 else 0o644


def _info(name: str, kind: str, mode: int, mtime: int, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "file": tarfile.REGTYPE}[kind]
    info.mode = mode_for(kind, mode)
    info.mtime = int(mtime)
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.size = size if kind == "file" else 0
    info.linkname = link
    return info


def write_entries(entries: Iterable[tuple[str, str, int, object]], out: BinaryIO, mtime: int) -> None:
    """Entries are (name, kind, mode, payload): payload is bytes or a path for
    files, the target for symlinks, None for dirs. Written sorted by name."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.GNU_FORMAT) as tf:
        for name, kind, mode, payload in sorted(entries, key=lambda e: e[0]):
            if kind == "file":
                if isinstance(payload, (bytes, bytearray)):
                    tf.addfile(_info(name, kind, mode, mtime, len(payload)), io.BytesIO(payload))
                else:
                    size = os.path.getsize(payload)
                    with open(payload, "rb") as f:
                        tf.addfile(_info(name, kind, mode, mtime, size), f)
            elif kind == "symlink":
                tf.addfile(_info(name, kind, mode, mtime, link=str(payload)))
            else:
                tf.addfile(_info(name, kind, mode, mtime))


def tree_entries(src: Path, prefix: str = "") -> list[tuple[str, str, int, object]]:
    src = Path(src)
    entries = []
    if prefix:
        entries.append((prefix, "dir", 0o755, None))
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = Path(dirpath, name)
            rel = p.relative_to(src).as_posix()
            arc = f"{prefix}/{rel}" if prefix else rel
            st = os.lstat(p)
            if p.is_symlink():
                entries.append((arc, "symlink", 0o777, os.readlink(p)))
            elif p.is_dir():
                entries.append((arc, "dir", 0o755, None))
            elif p.is_file():
                if st.st_mode & 0o6000:
                    raise UnsafeArchive(f"{p}: setuid/setgid file refused")
                entries.append((arc, "file", st.st_mode, p))
            else:
                raise UnsafeArchive(f"{p}: neither file, directory nor symlink")
    return entries


def write_tree(src: Path, out: BinaryIO, *, mtime: int, prefix: str = "") -> None:
    write_entries(tree_entries(src, prefix), out, mtime)


def normalize(in_tar: BinaryIO, out: BinaryIO, mtime: int, strip_top: bool = False) -> None:
    """Re-write any tar stream deterministically (e.g. what the engine's
    get_archive returns, whose top-level folder `strip_top` drops)."""
    from .unpack import check_member
    members: dict[str, tuple[str, int, object]] = {}
    with tarfile.open(fileobj=in_tar, mode="r|*") as tf:
        for m in tf:
            check_member(m, "build output", absolute_symlinks=True)
            name = "/".join(p for p in m.name.split("/") if p not in ("", "."))
            if strip_top:
                name = name.partition("/")[2]
            if not name:
                continue
            if m.isdir():
                members[name] = ("dir", 0o755, None)
            elif m.issym():
                members[name] = ("symlink", 0o777, m.linkname)
            elif m.islnk():
                target = "/".join(p for p in m.linkname.split("/") if p not in ("", "."))
                if strip_top:
                    target = target.partition("/")[2]
                kind, mode, payload = members[target]
                members[name] = (kind, mode, payload)
            else:
                members[name] = ("file", m.mode, tf.extractfile(m).read())
    write_entries([(n, *v) for n, v in members.items()], out, mtime)
