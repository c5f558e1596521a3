"""`doit verify` and `doit lock`, run for real as doit commands, and doit's
content-based rebuild decisions."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from onlydocker import lock
from tests import workspace as wsmod

BODY = b"source bytes\n" * 1000


def setup_lane(tmp_path, httpserver, pinned: bool):
    httpserver.expect_request("/src.tar.gz").respond_with_data(BODY)
    ws = wsmod.make(tmp_path / "ws")
    ws.env.update({"ONLYDOCKER_CACHE": str(tmp_path / "cache"), "ONLYDOCKER_CONFIG": "/nonexistent",
                   "ONLYDOCKER_DOWNLOADS": str(tmp_path / "dl")})
    pin = f'sha256 = "{hashlib.sha256(BODY).hexdigest()}"\nsize = {len(BODY)}\n' if pinned else \
        "# no hash known yet: `doit lock` pins it\n"
    (ws.root / "t.lock").write_text(wsmod.builder_tables() + f"""
[[source]]
name = "src"
version = "1"
file = "src.tar.gz"
urls = ["{httpserver.url_for('/src.tar.gz')}"]
{pin}license = "MIT"
""")
    return ws


def test_lock_pins_an_unpinned_source_and_keeps_the_comments(tmp_path, httpserver):
    ws = setup_lane(tmp_path, httpserver, pinned=False)
    r = ws.doit("lock", "--lock", "t.lock")
    assert "pinned src" in r.stdout
    text = (ws.root / "t.lock").read_text()
    assert "# no hash known yet" in text
    s = lock.load(ws.root / "t.lock").source("src")
    assert s.sha256 == hashlib.sha256(BODY).hexdigest() and s.size == len(BODY)


def test_verify_says_missing_ok_and_corrupt_and_exits_nonzero_on_a_problem(tmp_path, httpserver):
    ws = setup_lane(tmp_path, httpserver, pinned=True)
    missing = ws.doit("verify", "--lock", "t.lock", check=False)
    assert missing.returncode != 0 and any(l.split()[:2] == ["MISSING", "src"] for l in missing.stdout.splitlines())
    ws.doit("lock=t.lock", "build:fetch:src")
    ok = ws.doit("verify", "--lock", "t.lock", check=False)
    assert any(l.split()[:2] == ["OK", "src"] for l in ok.stdout.splitlines())
    cached = tmp_path / "cache" / "sources" / "sha256" / hashlib.sha256(BODY).hexdigest()
    cached.write_bytes(b"bit rot" + BODY[7:])
    bad = ws.doit("verify", "--lock", "t.lock", check=False)
    line = next(l for l in bad.stdout.splitlines() if "src" in l)
    assert bad.returncode != 0 and line.split()[0] == "CORRUPT"
    assert hashlib.sha256(BODY).hexdigest() in line and hashlib.sha256(b"bit rot" + BODY[7:]).hexdigest() in line


def test_a_malformed_lock_stops_everything_before_it_runs(tmp_path, httpserver):
    ws = setup_lane(tmp_path, httpserver, pinned=True)
    (ws.root / "t.lock").write_text((ws.root / "t.lock").read_text().replace('size = ', 'size = -'))
    r = ws.doit("lock=t.lock", check=False)
    assert r.returncode != 0 and "t.lock" in r.stderr and "'size'" in r.stderr
    assert len(httpserver.log) == 0


def test_touching_a_dependency_without_changing_it_reruns_nothing(tmp_path):
    (tmp_path / "in.txt").write_text("same")
    (tmp_path / "dodo.py").write_text(
        "from onlydocker.hashing import ContentChecker\n"
        "DOIT_CONFIG = {'check_file_uptodate': ContentChecker, 'verbosity': 2}\n"
        "def task_copy():\n"
        "    return {'actions': ['cp in.txt out.txt && echo RAN'], 'file_dep': ['in.txt'], 'targets': ['out.txt']}\n")
    env = dict(os.environ, PYTHONPATH=str(wsmod.REPO))
    run = lambda: subprocess.run([sys.executable, "-m", "doit"], cwd=tmp_path, env=env,
                                 capture_output=True, text=True).stdout
    assert "RAN" in run()
    later = time.time() + 50
    os.utime(tmp_path / "in.txt", (later, later))
    assert "RAN" not in run()
    (tmp_path / "in.txt").write_text("changed")
    assert "RAN" in run()
