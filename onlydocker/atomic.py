"""Files that other processes read and write at the same time: the shared
cache (several trees and runs may use one `ONLYDOCKER_CACHE`) and out/.

- A write goes to a name unique to its writer (pid and a random part) in the
  destination's folder and is renamed into place: a reader sees the old file
  or the new one, never half of one, and two writers never share a file.
- Expensive work on one entry (bootstrapping a builder, building a stage key)
  is done by one process at a time under an flock on that entry; the others
  wait, say for whom, and then use the result. The kernel releases an flock
  when its holder dies, so a stale lock never blocks. Lock files are kept
  (removing one while another process waits on it would let two holders in).
- A writer killed before its rename leaves its temporary file behind; the next
  holder of the entry's lock removes such leftovers (`clear_leftovers`).
"""
from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

TMP_SUFFIX = ".tmp"
# How long a waiter looks for the pid of a holder that has just taken the lock.
HOLDER_PID_WAIT = 2.0


def temp_path(path: Path) -> Path:
    """A name beside `path` that no other writer uses."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}")


@contextmanager
def replacing(path: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file for `path`; when the block succeeds it replaces
    `path` atomically, when it fails it is removed."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, mode) as f:
            yield f
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: Path, data: bytes) -> None:
    with replacing(path, "wb") as f:
        f.write(data)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: Path, obj: Any) -> None:
    """Pretty, key-sorted JSON (records a person may read), atomically."""
    write_text(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


def replace_dir(new: Path, dest: Path) -> None:
    """Put the finished tree `new` at `dest` (replacing a folder, a file or a
    link there), on the same filesystem: the old one is renamed aside first
    and removed after, so `dest` is missing only between two renames and is
    never half of one tree and half of the other. If `new` cannot go in, the
    old one is put back."""
    aside = None
    if dest.exists() or dest.is_symlink():
        aside = temp_path(dest)           # a leftover of this writer if it dies here (clear_leftovers)
        aside.mkdir()
        os.replace(dest, aside / dest.name)
    try:
        os.replace(new, dest)
    except OSError:
        if aside is not None:
            os.replace(aside / dest.name, dest)
            aside.rmdir()
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def clear_leftovers(path: Path) -> None:
    """Remove temporary files and folders that writers of `path` left when
    they were killed. Call it only while holding `path`'s entry lock: then no
    live writer of `path` exists."""
    path = Path(path)
    for p in path.parent.glob(f".{path.name}.*{TMP_SUFFIX}"):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def _holder(fd: int) -> str:
    """The pid written by the lock's holder, or "" while it has not written
    it yet (or wrote it and died: a stale pid is not reported)."""
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    if not text.isdigit():
        return ""
    try:
        os.kill(int(text), 0)
    except ProcessLookupError:
        return ""
    except PermissionError:
        pass                      # alive, someone else's
    return text


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


@contextmanager
def entry_lock(lock_path: Path, doing: str, say: Callable[[str], None]) -> Iterator[None]:
    """Hold the exclusive lock of one entry. When another process (or thread)
    holds it, `say` "waiting for pid N, which is <doing>" and wait.

    The holder writes its pid just after it takes the lock, so a waiter may
    look in between: it polls for a moment until the pid is there (or the
    lock is free) before it says whom it waits for."""
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _try_lock(fd):
            deadline = time.monotonic() + HOLDER_PID_WAIT
            holder = _holder(fd)
            locked = False
            while not holder and time.monotonic() < deadline:
                time.sleep(0.02)
                if locked := _try_lock(fd):
                    break
                holder = _holder(fd)
            if not locked:
                say(f"waiting for pid {holder}, which is {doing}" if holder
                    else f"waiting for another process, which is {doing}")
                fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)   # nobody holds it now: no pid to report
    finally:
        os.close(fd)      # releases the lock
