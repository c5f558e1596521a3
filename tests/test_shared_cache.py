"""One cache, many builds at once: two trees (as two CI jobs or two clones)
building over one ONLYDOCKER_CACHE at the same time, for real: the builder
bootstrapped by mmdebstrap, stages built in the real engine."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from onlydocker.cli.report import RUN_RECORD, read_run_record
from tests import workspace as wsmod

pytestmark = pytest.mark.docker


def _tree(root: Path, cache: Path, script: str) -> wsmod.Workspace:
    ws = wsmod.make(root)
    ws.env["ONLYDOCKER_CACHE"] = str(cache)
    ws.env.pop("ONLYDOCKER_STAGE_CACHE", None)
    (ws.root / "test.lock").write_text(wsmod.builder_tables())
    wsmod.add_stage(ws.root, "tiny", 'description = "tiny"\noutputs = ["data"]\n', script)
    return ws


def _start(ws: wsmod.Workspace, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "doit", "lock=test.lock"], cwd=ws.root, env=ws.env,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def _leftovers(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("*") if p.name.endswith((".tmp", ".part"))]


def _tiny(ws: wsmod.Workspace) -> str:
    """What the tree's last run did with stage tiny, from its run record."""
    record = read_run_record(ws.out(wsmod.lane_name()) / RUN_RECORD)
    return next(t["result"] for t in record["tasks"] if t["name"] == "build:tiny")


def _manifest(ws: wsmod.Workspace) -> dict:
    return json.loads((ws.out(wsmod.lane_name()) / "stages" / "tiny.manifest.json").read_text())


def test_two_trees_over_one_empty_cache_both_succeed_with_the_same_outputs(tmp_path, docker_client):
    cache = tmp_path / "cache"
    script = "set -eu\nsleep 5\necho tiny > /build/out/data\n"
    a, b = _tree(tmp_path / "a", cache, script), _tree(tmp_path / "b", cache, script)
    pa, pb = _start(a, tmp_path / "a.log"), _start(b, tmp_path / "b.log")
    assert pa.wait(timeout=900) == 0, (tmp_path / "a.log").read_text()
    assert pb.wait(timeout=900) == 0, (tmp_path / "b.log").read_text()
    logs = (tmp_path / "a.log").read_text() + (tmp_path / "b.log").read_text()
    # The builder was bootstrapped once, the stage built once: the other run
    # waited for it, said so, and took the result from the cache.
    assert logs.count("builder: bootstrapped in") == 1, logs
    assert re.search(r"waiting for pid \d+, which is making the builder", logs), logs
    assert sorted([_tiny(a), _tiny(b)]) == ["built", "restored"], logs
    assert _manifest(a) == _manifest(b)
    data = [(ws.out(wsmod.lane_name()) / "stages" / "tiny" / "data").read_text() for ws in (a, b)]
    assert data == ["tiny\n", "tiny\n"]
    assert _leftovers(cache) == []


@pytest.fixture
def cache_with_builder(tmp_path, docker_client) -> Path:
    """A cache that already holds the builder (hardlinked from the run's own
    cache, made there if needed), so the race below is about the stage."""
    ws = wsmod.make(tmp_path / "seed")
    (ws.root / "test.lock").write_text(wsmod.builder_tables())
    ws.doit("lock=test.lock", "build:builder")
    from onlydocker import config
    shared = config.load(env=ws.env).cache_dir / "builders"
    cache = tmp_path / "cache"
    shutil.copytree(shared, cache / "builders", copy_function=os.link,
                    ignore=shutil.ignore_patterns("locks", "*.tmp"))
    return cache


def test_a_run_killed_while_writing_a_cache_entry_leaves_nothing_and_the_other_completes(
        tmp_path, cache_with_builder):
    cache = cache_with_builder
    # A large, incompressible output: storing it takes long enough to kill
    # the writer in the middle of its write.
    script = "set -eu\nhead -c 400000000 /dev/urandom > /build/out/data\n"
    a, b = _tree(tmp_path / "a", cache, script), _tree(tmp_path / "b", cache, script)
    pa, pb = _start(a, tmp_path / "a.log"), _start(b, tmp_path / "b.log")
    procs = {pa.pid: (pa, b, tmp_path / "b.log"), pb.pid: (pb, a, tmp_path / "a.log")}
    try:
        deadline = time.time() + 600
        victim = None
        while time.time() < deadline and victim is None:
            writing = [p for p in _leftovers(cache / "stages") if p.suffix == ".tmp"] if (cache / "stages").exists() else []
            if writing:
                holder = int(writing[0].name.split(".")[-3])     # .<name>.<pid>.<random>.tmp
                victim = procs[holder]
            time.sleep(0.05)
        assert victim is not None, "no run ever wrote a cache entry"
        proc, survivor, survivor_log = victim
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        other = next(p for p, *_ in procs.values() if p is not proc)
        assert other.wait(timeout=600) == 0, survivor_log.read_text()
    finally:
        for p, *_ in procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    text = survivor_log.read_text()
    assert re.search(r"waiting for pid \d+, which is building stage tiny", text), text
    assert _tiny(survivor) == "built", text
    assert _leftovers(cache) == [], _leftovers(cache)
    key = _manifest(survivor)["key"]
    assert (cache / "stages" / f"{key}.tar.zst").is_file() and (cache / "stages" / f"{key}.json").is_file()
