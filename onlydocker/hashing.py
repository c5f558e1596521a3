"""Hashing: of files, and of streams while they are written."""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable

CHUNK = 1 << 20
HASH_LENGTHS = {"sha256": 64, "sha512": 128, "sha1": 40}


def is_sha256(value: object) -> bool:
    """A sha256 as this project spells one (keys, names of entries, records
    read back): 64 lower-case hex digits."""
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of a file: the package's one file-hash helper (hashlib's
    file_digest reads it into one reused buffer, unbuffered)."""
    with open(path, "rb", buffering=0) as f:
        # typeshed's file_digest wants readinto -> int; FileIO's may return None (non-blocking only)
        return hashlib.file_digest(f, "sha256").hexdigest()  # type: ignore[arg-type]


class MultiHasher:
    """Several digests of one stream, in one pass (also as the digest object
    of hashlib.file_digest, which only calls update)."""

    def __init__(self, algorithms: Iterable[str] = ("sha256",)) -> None:
        self._h = {a: hashlib.new(a) for a in dict.fromkeys(("sha256", *algorithms))}
        self.size = 0

    def update(self, data: bytes) -> None:
        self.size += len(data)
        for h in self._h.values():
            h.update(data)

    def hexdigests(self) -> dict[str, str]:
        return {a: h.hexdigest() for a, h in self._h.items()}
