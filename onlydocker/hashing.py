"""Hashing: of files, of streams while they are written, and doit's
content-based up-to-date checker."""
from __future__ import annotations

import hashlib
import os

from doit.dependency import FileChangedChecker

CHUNK = 1 << 20
HASH_LENGTHS = {"sha256": 64, "sha512": 128, "sha1": 40}


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of a file: the package's one file-hash helper (hashlib's
    file_digest reads it into one reused buffer, unbuffered)."""
    with open(path, "rb", buffering=0) as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class MultiHasher:
    """Several digests of one stream, in one pass (also as the digest object
    of hashlib.file_digest, which only calls update)."""

    def __init__(self, algorithms=("sha256",)):
        self._h = {a: hashlib.new(a) for a in dict.fromkeys(("sha256", *algorithms))}
        self.size = 0

    def update(self, data: bytes) -> None:
        self.size += len(data)
        for h in self._h.values():
            h.update(data)

    def hexdigests(self) -> dict[str, str]:
        return {a: h.hexdigest() for a, h in self._h.items()}


class ContentChecker(FileChangedChecker):
    """doit's file_dep checker, by sha256 of the content.

    Like doit's MD5Checker, it trusts an unchanged mtime and size (so a no-op
    run hashes nothing); when the mtime moved, it hashes, so a touched but
    unchanged file rebuilds nothing."""

    def check_modified(self, file_path, file_stat, state):
        if state is None:
            return True
        timestamp, size, digest = state
        if file_stat.st_mtime == timestamp and file_stat.st_size == size:
            return False
        if file_stat.st_size != size:
            return True
        return sha256_file(file_path) != digest

    def get_state(self, dep, current_state):
        st = os.stat(dep)
        if current_state is not None:
            timestamp, size, digest = current_state
            if st.st_mtime == timestamp and st.st_size == size:
                return None       # unchanged: doit keeps the saved state
            if st.st_size == size and sha256_file(dep) == digest:
                return st.st_mtime, size, digest   # touched only: new mtime, same content
        return st.st_mtime, st.st_size, sha256_file(dep)
