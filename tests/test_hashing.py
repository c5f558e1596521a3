"""Hashing: files, streams in one pass, and doit's content-based checker."""
from __future__ import annotations

import hashlib
import os

from onlydocker.hashing import CHUNK, MultiHasher, sha256_file


def test_sha256_file_matches_hashlib_across_chunk_boundaries(tmp_path):
    for size in (0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 7):
        data = os.urandom(size)
        p = tmp_path / f"f{size}"
        p.write_bytes(data)
        assert sha256_file(p) == hashlib.sha256(data).hexdigest()


def test_multihasher_gives_every_digest_and_the_size_in_one_pass():
    data = os.urandom(3 * CHUNK + 5)
    h = MultiHasher(("sha1", "sha512"))
    for i in range(0, len(data), 4096):
        h.update(data[i:i + 4096])
    assert h.size == len(data)
    assert h.hexdigests() == {"sha256": hashlib.sha256(data).hexdigest(),   # always there: it names the cache
                              "sha1": hashlib.sha1(data).hexdigest(),
                              "sha512": hashlib.sha512(data).hexdigest()}


def test_multihasher_with_sha256_named_twice_hashes_it_once():
    h = MultiHasher(("sha256", "sha256"))
    h.update(b"x")
    assert h.hexdigests() == {"sha256": hashlib.sha256(b"x").hexdigest()}
