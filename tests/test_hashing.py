"""Hashing: files, streams in one pass, and doit's content-based checker."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from onlydocker.hashing import CHUNK, ContentChecker, MultiHasher, sha256_file

REPO = Path(__file__).resolve().parent.parent


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


def test_checker_state_is_mtime_size_and_sha256(tmp_path):
    p = tmp_path / "dep"
    p.write_bytes(b"hello")
    st = os.stat(p)
    assert ContentChecker().get_state(str(p), None) == (st.st_mtime, 5, hashlib.sha256(b"hello").hexdigest())


def test_checker_decides_by_content_not_by_timestamp(tmp_path):
    c = ContentChecker()
    p = tmp_path / "dep"
    p.write_bytes(b"hello")
    state = c.get_state(str(p), None)
    assert not c.check_modified(str(p), os.stat(p), state)          # untouched: the mtime shortcut
    assert c.get_state(str(p), state) is None                        # doit keeps the saved state

    os.utime(p, (state[0] + 100, state[0] + 100))                    # touched, same bytes
    assert not c.check_modified(str(p), os.stat(p), state)
    touched = c.get_state(str(p), state)
    assert touched == (state[0] + 100, 5, state[2])                  # new mtime saved: no rehash next time

    p.write_bytes(b"jello")                                          # same size, new bytes
    os.utime(p, (state[0] + 200, state[0] + 200))
    assert c.check_modified(str(p), os.stat(p), touched)
    p.write_bytes(b"longer")                                         # new size: no need to hash
    assert c.check_modified(str(p), os.stat(p), touched)
    assert c.check_modified(str(p), os.stat(p), None)                # never seen


def test_doit_with_the_checker_reruns_only_on_new_content(tmp_path):
    """A real dodo run by the real doit: touching rebuilds nothing; new bytes
    of the same size rebuild (so the decision is the hash, not the size)."""
    (tmp_path / "in.txt").write_text("aaaa")
    (tmp_path / "dodo.py").write_text(
        "from onlydocker.hashing import ContentChecker\n"
        "DOIT_CONFIG = {'check_file_uptodate': ContentChecker, 'verbosity': 2}\n"
        "def task_copy():\n"
        "    return {'actions': ['cp in.txt out.txt && echo RAN'], 'file_dep': ['in.txt'],"
        " 'targets': ['out.txt']}\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))

    def run() -> str:
        r = subprocess.run([sys.executable, "-m", "doit"], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return r.stdout

    assert "RAN" in run()
    assert "RAN" not in run()
    st = os.stat(tmp_path / "in.txt")
    for later in (st.st_mtime + 10, st.st_mtime + 20):               # touched twice, never changed
        os.utime(tmp_path / "in.txt", (later, later))
        assert "RAN" not in run()
    (tmp_path / "in.txt").write_text("bbbb")
    os.utime(tmp_path / "in.txt", (st.st_mtime + 30, st.st_mtime + 30))
    assert "RAN" in run()
