"""The stage store: a stage's outputs, cached by the stage's key; and, with
`kind="builder"`, the builder image's tar by its input key (one store, one
record format, one lock per entry, one remote path per kind).

An entry is `<key>.tar.zst` (the deterministic output tar, zstd at a fixed
level, single-threaded, so the bytes depend only on the tar and the pinned
library) and `<key>.json`, the record of what was stored (path -> type,
sha256, link target). The store is untrusted input when read back: the
caller checks what it unpacks against the record, and `reject` moves a bad
entry aside.

Several trees and runs may share one store at once (see atomic.py): entries
are written under unique temporary names and renamed into place, the record
first; `producing(key)` lets one process build a key while the others wait.

With a remote cache (remote.py), the store is the same interface over two
tiers: `has` also looks there and brings a trusted entry into the local
folder (checked like any local entry when it is restored), and `put` shares
what was built here.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import zstandard

from .. import atomic
from ..errors import BuildError, machine_cause, machine_error

if TYPE_CHECKING:
    from .remote import RemoteCache

# zstd's own default level. Entries are written once and read by every
# restore, on the way to the kernel in a cold build (the builder's 615 MB tar:
# level 3 in 2.9 s, 199 MB; level 10 in 17.6 s, 175 MB; decompression 0.9 s
# either way): the CPU a higher level takes is the kernel's, on 2 cores.
ZSTD_LEVEL = 3


def compress_file(tar_path: Path, dest: Path) -> None:
    """zstd of a file into `dest`, atomically."""
    cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=0)
    with open(tar_path, "rb") as src, atomic.replacing(dest) as dst:
        cctx.copy_stream(src, dst)


def _has_files(record: dict) -> bool:
    """A stage's record names what its tar holds."""
    return isinstance(record.get("files"), dict)


class StageStore:
    """The local cache folder of one kind of entry ("stage", "builder"), and
    the remote cache behind it if any. `record_ok` says whether a record read
    back (untrusted) has what an entry of this kind needs, besides its key."""

    def __init__(self, root: Path, remote: RemoteCache | None = None, kind: str = "stage",
                 record_ok: Callable[[dict], bool] = _has_files):
        self.root = Path(root)
        self.remote = remote
        self.kind = kind
        self.record_ok = record_ok
        self._entries: dict[str, dict | None] = {}     # remote entries read by `known`, kept for `has`
        self._entries_lock = threading.Lock()
        self._writable: bool | None = None
        self._said: set[str] = set()

    # --- a cache that cannot be written is a cache to read --------------------

    @property
    def writable(self) -> bool:
        """The folder can be written (made if need be): not a read-only
        mount, not someone else's. Asked once per run; a store that stops
        being writable during the run is said when it fails (`put`)."""
        if self._writable is None:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                probe = atomic.temp_path(self.root / "probe")
                probe.touch()
                probe.unlink()
                self._writable = True
            except OSError:
                self._writable = False
        return self._writable

    def say_once(self, topic: str, text: str, say: Callable[[str], None]) -> None:
        with self._entries_lock:
            if topic in self._said:
                return
            self._said.add(topic)
        say(text)

    def not_stored(self, why: str, say: Callable[[str], None]) -> None:
        """Say once that stages built in this run are not stored, and why."""
        self.say_once("not-stored", f"stage cache {self.root}: {why}; stages built in this run are used "
                                    f"from out/ and not stored", say)

    def _lock_dir(self) -> Path:
        """Where the per-entry locks live: in the cache; for a cache that
        cannot be written, in a folder of this machine's temporary space
        named after the cache, so that runs sharing that cache on this
        machine still build one key at a time."""
        if self.writable:
            return self.root / "locks"
        tag = hashlib.sha256(os.fsencode(os.path.realpath(self.root))).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"onlydocker-{os.getuid()}" / f"stage-locks-{tag}"

    def entry(self, key: str) -> Path:
        return self.root / f"{key}.tar.zst"

    def _record(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def has(self, key: str) -> bool:
        """The entry is here, or was just brought from the remote cache."""
        return self.entry(key).exists() or self._pull(key)

    def known(self, key: str) -> bool:
        """Here, or named by a trusted entry of the remote cache (its blob
        is not fetched yet: `has` does that when the stage is restored)."""
        return self.entry(key).exists() or self._remote_entry(key) is not None

    def _remote_entry(self, key: str) -> dict | None:
        if self.remote is None:
            return None
        with self._entries_lock:
            if key in self._entries:
                return self._entries[key]
        entry = self.remote.get_entry(self.kind, key)
        with self._entries_lock:
            self._entries[key] = entry
        return entry

    def _pull(self, key: str) -> bool:
        entry = self._remote_entry(key)
        with self._entries_lock:
            self._entries.pop(key, None)      # asked once more next time: a miss may be filled meanwhile
        if entry is None or self.remote is None or not self.writable:
            return False          # a read-only local cache: nowhere to bring it
        record = self._usable(entry.get("record"), key)
        if record is None:
            # Signed by a trusted key, yet not a record of this entry: refused.
            self.remote.say(f"/ac/{key}: its record is not of this entry: ignored")
            return False
        self.root.mkdir(parents=True, exist_ok=True)
        # The record first, as `put` does; the blob is hashed as it arrives.
        atomic.write_text(self._record(key), json.dumps(record, sort_keys=True))
        return self.remote.get_blob(entry["blob"]["sha256"], self.entry(key), entry["blob"]["size"], hit=True)

    def _usable(self, record: object, key: str) -> dict | None:
        if isinstance(record, dict) and record.get("key") == key and self.record_ok(record):
            return record
        return None

    def record(self, key: str) -> dict | None:
        """The record of the local entry `key`, when the entry is here and its
        record is whole and of this entry (else None: build or fetch it)."""
        if not self.entry(key).exists():
            return None
        try:
            return self._usable(json.loads(self._record(key).read_text()), key)
        except (OSError, ValueError):
            return None

    def remote_record(self, key: str) -> dict | None:
        """The record of a trusted remote entry `key`, its blob not fetched."""
        entry = self._remote_entry(key)
        return self._usable(entry.get("record"), key) if entry else None

    def share(self, key: str, record: dict) -> None:
        """Offer the local entry to the remote cache (when there is one)."""
        if self.remote is not None:
            self.remote.share(self.kind, key, self.entry(key), record)

    def recorded_files(self, key: str) -> dict:
        """What the entry held when it was stored: path -> type and sha256."""
        try:
            record = json.loads(self._record(key).read_text())
            files = record["files"]
        except (OSError, ValueError, KeyError, TypeError):
            raise BuildError(f"no readable record {self._record(key)} of what it holds") from None
        if record.get("key") != key or not isinstance(files, dict):
            raise BuildError(f"its record {self._record(key)} is of another entry")
        for path, info in files.items():
            if not isinstance(info, dict) or not isinstance(info.get("type"), str):
                raise BuildError(f"its record {self._record(key)} is malformed at {path!r}")
        return files

    def recorded_size(self, key: str) -> int | None:
        """The size of the entry's tar (about what it takes unpacked), when
        its record says (records written before it did: unknown)."""
        try:
            size = json.loads(self._record(key).read_text()).get("tar_bytes")
        except (OSError, ValueError, AttributeError):
            return None
        return size if isinstance(size, int) and size > 0 else None

    def put(self, key: str, tar_path: Path, files: dict | None = None, **fields: object) -> Path:
        """Store the entry. A failure of the machine (full disk, read-only
        folder) raises MachineError and leaves no part of the entry: the
        entries already there are untouched."""
        entry = self.entry(key)
        # The record first: an entry without one would be refused on restore.
        record: dict = {"key": key, "tar_bytes": Path(tar_path).stat().st_size, **fields}
        if files is not None:
            record["files"] = files
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            atomic.write_text(self._record(key), json.dumps(record, sort_keys=True))
            compress_file(tar_path, entry)
        except OSError as e:
            cause = machine_cause(e)
            if cause is None:
                raise
            if not entry.exists():
                try:
                    self._record(key).unlink(missing_ok=True)     # ours: we hold `producing(key)`
                except OSError:
                    pass
            raise machine_error(cause, cause.filename or entry, f"storing entry {key[:16]}", advice=False) from None
        self.share(key, record)
        return entry

    def reject(self, key: str) -> Path:
        """Move an unusable entry aside for inspection, under a fresh name.
        Call it only under `producing(key)`: then no other run is writing or
        rejecting this entry."""
        rejected = self.root / "rejected"
        rejected.mkdir(parents=True, exist_ok=True)
        tag = f"{os.getpid()}-{secrets.token_hex(4)}"
        for path in (self.entry(key), self._record(key)):
            try:
                os.replace(path, rejected / f"{path.name}.{tag}")
            except FileNotFoundError:
                pass
        return rejected

    @contextmanager
    def producing(self, key: str, doing: str, say: Callable[[str], None]) -> Iterator[None]:
        """Hold the right to make entry `key`; leftovers of a killed writer
        of this entry are removed once it is ours."""
        with atomic.entry_lock(self._lock_dir() / f"{key}.lock", doing, say):
            if self.writable:
                atomic.clear_leftovers(self.entry(key))
                atomic.clear_leftovers(self._record(key))
            yield
