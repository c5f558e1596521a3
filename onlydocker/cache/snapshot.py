"""Deciding "unchanged" by stat, safely: git's index rule.

When a tree is written, a snapshot records every entry's kind and, for a
file, its sha256 and (size, mtime_ns, ctime_ns, inode). Later the tree
counts as unchanged when the same entries are there and every file's stat
matches; a file whose stat differs is hashed again and compared. A file whose
mtime is not older than the snapshot itself is "racily clean" (it may have
changed within the same clock tick after its stat was taken) and is always
hashed. An edit that keeps the size and puts the mtime back still moves the
ctime, which nobody can set. `doit verify` never relies on this: it hashes.
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from .. import atomic
from ..hashing import sha256_file


def _stat_of(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _walk(root: Path) -> dict[str, os.stat_result]:
    found: dict[str, os.stat_result] = {}
    todo = [""]
    while todo:
        rel = todo.pop()
        with os.scandir(root / rel if rel else root) as it:
            for e in it:
                path = f"{rel}/{e.name}" if rel else e.name
                st = e.stat(follow_symlinks=False)
                found[path] = st
                if stat.S_ISDIR(st.st_mode):
                    todo.append(path)
    return found


def take(root: Path) -> dict[str, list[int]]:
    """The stat of every file of `root`: taken before hashing them, so that
    `write` can tell a file that changed while it was hashed."""
    return {rel: _stat_of(st) for rel, st in _walk(root).items() if stat.S_ISREG(st.st_mode)}


def take_file(path: Path) -> list[int]:
    return _stat_of(os.lstat(path))


def write(record: Path, root: Path, files: dict[str, dict], before: dict[str, list[int]]) -> None:
    """Snapshot `root`, whose manifest `files` (path -> type, sha256 or
    target) was computed from it after `take` gave `before`. A file whose stat
    moved meanwhile is recorded without one: it is hashed at every check."""
    entries = {}
    for rel, st in _walk(root).items():
        info = files.get(rel)
        if info is None:
            raise ValueError(f"{root}/{rel} is not in the manifest it was snapshot with")
        if info["type"] == "file" and before.get(rel) == _stat_of(st):
            info = dict(info, stat=_stat_of(st))
        entries[rel] = info
    atomic.write_text(record, json.dumps({"root": str(root), "entries": entries}, sort_keys=True))


def unchanged(record: Path, root: Path) -> bool:
    """True when `root` holds what the snapshot recorded (see the module's rule).
    False when anything differs or the snapshot is missing or unreadable."""
    try:
        written_ns = os.stat(record).st_mtime_ns
        snap = json.loads(record.read_text())
        entries = snap["entries"]
        if snap.get("root") != str(root):
            return False
        now = _walk(root)
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if now.keys() != entries.keys():
        return False
    for rel, st in now.items():
        want = entries[rel]
        kind = want.get("type")
        if stat.S_ISDIR(st.st_mode):
            ok = kind == "dir"
        elif stat.S_ISLNK(st.st_mode):
            ok = kind == "symlink" and os.readlink(root / rel) == want.get("target")
        elif stat.S_ISREG(st.st_mode) and kind == "file":
            ok = (_stat_of(st) == want.get("stat") and st.st_mtime_ns < written_ns) \
                or sha256_file(root / rel) == want.get("sha256")
        else:
            ok = False
        if not ok:
            return False
    return True


def restat(record: Path, root: Path, rel: str, sha256: str, before: list[int]) -> None:
    """Take a file's stat again after an operation that moved its ctime
    without touching its bytes (dist/ hard-links the artifacts), once the
    caller has hashed it and found `sha256`, the snapshot's own hash, with
    `before` its stat taken just before hashing: size, mtime and inode must
    still be those. Otherwise the snapshot is left as it is (the next check
    hashes)."""
    try:
        snap = json.loads(record.read_text())
        entry = snap["entries"][rel]
    except (OSError, ValueError, KeyError, TypeError):
        return
    now = _stat_of(os.lstat(root / rel))
    if entry.get("type") != "file" or entry.get("sha256") != sha256 or \
            [now[0], now[1], now[3]] != [before[0], before[1], before[3]]:
        return
    entry["stat"] = now
    atomic.write_text(record, json.dumps(snap, sort_keys=True))
