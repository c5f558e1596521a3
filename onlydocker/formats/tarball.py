"""Deterministic tar: the same tree gives the same bytes, whatever the host's
umask, clock, locale or directory order.

GNU format, members sorted by name, every mtime set to one integer (the
lane's SOURCE_DATE_EPOCH: set, not clamped, so the files' own dates never
reach the bytes), uid/gid 0, no user or group names, modes from a table.
Hardlinks become regular files; setuid/setgid files and device nodes are
refused (nothing the pipeline ships needs them).
"""
from __future__ import annotations

import io
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import UnsafeArchive

CHUNK = 1 << 20


def mode_for(kind: str, mode: int) -> int:
    """The mode table: directories 0755, symlinks 0777, files 0755 when any
    execute bit is set and 0644 otherwise. Only these survive, so the host's
    umask and the build's chmods cannot change the bytes."""
    if kind == "dir":
        return 0o755
    if kind == "symlink":
        return 0o777
    return 0o755 if mode & 0o111 else 0o644


@dataclass(frozen=True)
class Slice:
    """`size` bytes at `offset` of an open file: a payload spooled to disk."""
    file: BinaryIO
    offset: int
    size: int


# An entry is a 4-tuple (name, kind, mode, payload): kind "file", "dir" or
# "symlink"; payload bytes or a path (or a Slice) for a file, the target for a
# symlink, None for a directory.
Payload = bytes | tuple | None
# The 4-tuple itself: its payload's type follows its kind.
Entry = tuple[str, str, int, Any]


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


def _clean(name: str) -> str:
    return "/".join(p for p in name.split("/") if p not in ("", "."))


def _from_mapping(entries: Mapping[str, Payload]) -> list[Entry]:
    """name -> bytes (a 0644 file), (mode, bytes) (a file), ("->", target) (a
    symlink) or None (a directory)."""
    out: list[Entry] = []
    for name, v in entries.items():
        if v is None:
            out.append((name, "dir", 0o755, None))
        elif isinstance(v, (bytes, bytearray)):
            out.append((name, "file", 0o644, bytes(v)))
        elif isinstance(v, tuple) and v and v[0] == "->":
            out.append((name, "symlink", 0o777, v[1]))
        elif isinstance(v, tuple) and isinstance(v[0], int):
            out.append((name, "file", v[0], v[1]))
        else:
            raise TypeError(f"tar entry {name!r}: unsupported payload {type(v).__name__}")
    return out


def write_entries(entries: Iterable[Entry] | Mapping[str, Payload], out: BinaryIO, mtime: int) -> None:
    """Write members sorted by name. `entries` is an iterable of
    (name, kind, mode, payload) tuples, or a mapping (see _from_mapping)."""
    if isinstance(entries, Mapping):
        entries = _from_mapping(entries)
    rows = []
    seen: set[str] = set()
    for e in entries:
        name, kind, mode, payload = e
        name = _clean(name)
        if not name:
            raise UnsafeArchive("tar entry with an empty name: refused")
        if name in seen:
            # Two members of one name: which wins would depend on input order.
            raise UnsafeArchive(f"tar entry {name!r} given twice: refused")
        if kind not in ("file", "dir", "symlink"):
            raise UnsafeArchive(f"tar entry {name!r}: kind {kind!r} is not file, dir or symlink")
        seen.add(name)
        rows.append((name, kind, mode, payload))
    # By UTF-8 bytes (never the locale), like cpio.py.
    rows.sort(key=lambda r: r[0].encode("utf-8", "surrogateescape"))
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.GNU_FORMAT, encoding="utf-8",
                      errors="surrogateescape") as tf:
        for name, kind, mode, payload in rows:
            if kind == "file":
                if isinstance(payload, (bytes, bytearray)):
                    tf.addfile(_info(name, kind, mode, mtime, len(payload)), io.BytesIO(payload))
                elif isinstance(payload, Slice):
                    payload.file.seek(payload.offset)
                    tf.addfile(_info(name, kind, mode, mtime, payload.size), payload.file)
                else:
                    with open(payload, "rb") as f:
                        size = os.fstat(f.fileno()).st_size
                        tf.addfile(_info(name, kind, mode, mtime, size), f)
            elif kind == "symlink":
                tf.addfile(_info(name, kind, mode, mtime, link=str(payload)))
            else:
                tf.addfile(_info(name, kind, mode, mtime))


def tree_entries(src: Path, prefix: str = "") -> list[Entry]:
    """(name, kind, mode, path-or-target) for every member of a tree."""
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: no such directory to archive")
    prefix = _clean(prefix)
    entries: list[Entry] = []
    if prefix:
        entries.append((prefix, "dir", 0o755, None))
    for dirpath, dirnames, filenames in os.walk(src):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = p.relative_to(src).as_posix()
            arc = f"{prefix}/{rel}" if prefix else rel
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                entries.append((arc, "symlink", 0o777, os.readlink(p)))
            elif stat.S_ISDIR(st.st_mode):
                entries.append((arc, "dir", 0o755, None))
            elif stat.S_ISREG(st.st_mode):
                if st.st_mode & 0o6000:
                    raise UnsafeArchive(f"{p}: setuid/setgid file (mode {stat.S_IMODE(st.st_mode):o}) refused")
                entries.append((arc, "file", st.st_mode, p))
            else:
                raise UnsafeArchive(f"{p}: neither file, directory nor symlink: refused")
    return entries


def write_tree(src: Path, out: BinaryIO, *, mtime: int, prefix: str = "") -> None:
    """Archive the tree under `src` (its members, not `src` itself; under a
    top-level `prefix` directory when one is given)."""
    write_entries(tree_entries(src, prefix), out, mtime)


def normalize(in_tar: BinaryIO, out: BinaryIO, mtime: int, strip_top: bool = False) -> None:
    """Re-write any tar stream deterministically (e.g. what the engine's
    get_archive returns, whose top-level folder `strip_top` drops). File
    contents are spooled to one temporary file, not held in memory: stage
    outputs reach hundreds of MB."""
    from .unpack import check_member, member_file

    def clean(name: str) -> str:
        name = _clean(name)
        return name.partition("/")[2] if strip_top else name

    members: dict[str, tuple[str, int, object]] = {}
    with tempfile.TemporaryFile() as spool:
        with tarfile.open(fileobj=in_tar, mode="r|*") as tf:
            for m in tf:
                check_member(m, "build output", absolute_symlinks=True)
                name = clean(m.name)
                if not name:
                    continue
                if m.isdir():
                    members[name] = ("dir", 0o755, None)
                elif m.issym():
                    members[name] = ("symlink", 0o777, m.linkname)
                elif m.islnk():
                    target = clean(m.linkname)
                    if target not in members or members[target][0] != "file":
                        raise UnsafeArchive(f"build output: hardlink {m.name!r} -> {m.linkname!r}: "
                                            f"no earlier regular file of that name")
                    members[name] = members[target]
                else:
                    offset = spool.seek(0, os.SEEK_END)
                    shutil.copyfileobj(member_file(tf, m), spool, CHUNK)
                    members[name] = ("file", m.mode, Slice(spool, offset, m.size))
        write_entries([(n, *v) for n, v in members.items()], out, mtime)
