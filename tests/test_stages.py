"""The engine, on tiny real sources built in the real builder image: keys,
the cache, patches, failures, kills and concurrent runs."""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import zstandard

from tests import workspace as wsmod

pytestmark = pytest.mark.docker

HELLO_C = b'#include <stdio.h>\nint main(void) { puts("hello"); return 0; }\n'
PATCH = """--- a/hello.c
+++ b/hello.c
@@ -1,2 +1,2 @@
 #include <stdio.h>
-int main(void) { puts("hello"); return 0; }
+int main(void) { puts("%s"); return 0; }
"""


def _source_tarball(path: Path) -> bytes:
    return wsmod.source_tarball(path, (("hello-1.0/", None), ("hello-1.0/hello.c", HELLO_C)))


_stage = wsmod.add_stage


@pytest.fixture
def tiny(tmp_path, docker_client):
    ws = wsmod.make(tmp_path / "ws")
    ws.env["ONLYDOCKER_STAGE_CACHE"] = str(tmp_path / "stage-cache")
    tarball = tmp_path / "hello-1.0.tar.gz"
    (ws.root / "test.lock").write_text(wsmod.builder_tables() + wsmod.source_entry(
        "hello", "hello-1.0.tar.gz", f"file://{tarball}", _source_tarball(tarball), version="1.0"))
    patches = ws.root / "patches" / "hello" / "1.0"
    patches.mkdir(parents=True)
    (patches / "0001-greeting.patch").write_text(PATCH % "hello, patched")
    _stage(ws.root, "hello", 'description = "hello"\nsources = ["hello"]\noutputs = ["bin/hello"]\n',
           "set -eu\nmkdir -p /build/out/bin\ncc -O2 -static -o /build/out/bin/hello /build/src/hello/hello.c\n")
    _stage(ws.root, "pkg", 'description = "pkg"\nneeds = ["hello"]\noutputs = ["said"]\n',
           "set -eu\n/build/deps/hello/bin/hello > /build/out/said\n")
    _stage(ws.root, "other", 'description = "other"\noutputs = ["other"]\n',
           "set -eu\necho other > /build/out/other\n")
    ws.lane = wsmod.lane_name()
    return ws


def test_builds_every_stage_then_has_nothing_to_do(tiny):
    first = wsmod.events(tiny.doit("lock=test.lock"))
    assert first == {"hello": "built", "pkg": "built", "other": "built"}
    said = tiny.out(tiny.lane) / "stages" / "pkg" / "said"
    assert said.read_text() == "hello, patched\n"
    again = tiny.doit("lock=test.lock")
    assert wsmod.events(again) == {}
    # The run record says so for every task, with each stage's key as out/ holds it.
    assert {t["name"]: t["result"] for t in again.record["tasks"]} == {
        "build:fetch:hello": "up-to-date", "build:builder": "up-to-date", "build:hello": "up-to-date",
        "build:pkg": "up-to-date", "build:other": "up-to-date", "build:dist": "up-to-date"}
    for t in again.record["tasks"]:
        if t["name"] in ("build:hello", "build:pkg", "build:other"):
            manifest = tiny.out(tiny.lane) / "stages" / f"{t['name'][6:]}.manifest.json"
            assert t["key"] == json.loads(manifest.read_text())["key"]


def test_a_no_op_does_not_ask_the_engine_and_a_stage_that_must_run_does(tiny):
    tiny.doit("lock=test.lock")
    # No engine answers at this socket: a no-op needs none (every stage is in out/).
    nobody = dict(tiny.env, DOCKER_HOST=f"unix://{tiny.root}/nobody.sock")
    nobody.pop("ONLYDOCKER_ENGINES", None)
    noop = wsmod.Workspace(root=tiny.root, env=nobody, log=tiny.log).doit("lock=test.lock")
    assert {t["name"]: t["result"] for t in noop.record["tasks"]}["build:builder"] == "up-to-date"
    assert wsmod.events(noop) == {}
    # A container stage that must run needs the builder image: the builder
    # task asks the engine, and the run fails naming it.
    (tiny.root / "stages" / "other" / "build.sh").write_text("set -eu\necho changed > /build/out/other\n")
    failed = wsmod.Workspace(root=tiny.root, env=nobody, log=tiny.log).doit("lock=test.lock", check=False)
    assert failed.returncode != 0
    assert f"no Docker engine answers at DOCKER_HOST=unix://{tiny.root}/nobody.sock" in failed.stdout + failed.stderr
    assert wsmod.events(tiny.doit("lock=test.lock")) == {"other": "built"}


def test_touching_a_file_without_changing_it_rebuilds_nothing(tiny):
    tiny.doit("lock=test.lock")
    script = tiny.root / "stages" / "hello" / "build.sh"
    os.utime(script, (time.time() + 100, time.time() + 100))
    assert wsmod.events(tiny.doit("lock=test.lock")) == {}


def test_changed_patch_rebuilds_its_stage_and_downstream_only_and_revert_restores(tiny):
    tiny.doit("lock=test.lock")
    patch = tiny.root / "patches" / "hello" / "1.0" / "0001-greeting.patch"
    original = patch.read_text()
    patch.write_text(PATCH % "hello, changed")
    assert wsmod.events(tiny.doit("lock=test.lock")) == {"hello": "built", "pkg": "built"}
    assert (tiny.out(tiny.lane) / "stages" / "pkg" / "said").read_text() == "hello, changed\n"
    patch.write_text(original)
    assert wsmod.events(tiny.doit("lock=test.lock")) == {"hello": "restored", "pkg": "restored"}


def test_a_patch_that_does_not_apply_names_the_patch_and_the_file(tiny):
    patch = tiny.root / "patches" / "hello" / "1.0" / "0001-greeting.patch"
    patch.write_text(PATCH.replace('puts("hello")', 'puts("nothing like it")') % "x")
    r = tiny.doit("lock=test.lock", "build:hello", check=False)
    assert r.returncode != 0
    text = r.stdout + r.stderr
    assert "0001-greeting.patch" in text and "hello.c" in text
    assert not (tiny.out(tiny.lane) / "stages" / "hello.manifest.json").exists()


def test_lane_data_a_stage_lacks_is_named_before_anything_builds(tiny):
    _stage(tiny.root, "other", 'description = "other"\noutputs = ["other"]\n[lane_settings]\ngreeting = "string"\n',
           'set -eu\n. /build/stage/lane/lane.env\necho "$GREETING" > /build/out/other\n')
    # Lane data for another lane only: this lane has none for the stage.
    other = tiny.root / "stages" / "other" / "lanes" / "elsewhere"
    other.mkdir(parents=True)
    (other / "lane.toml").write_text('greeting = "hi"\n')

    def errors() -> list[str]:
        r = tiny.doit("lock=test.lock", check=False)
        assert r.returncode != 0 and "Traceback" not in r.stderr
        assert not (tiny.out(tiny.lane) / "stages").exists()
        return [ln for ln in (r.stdout + r.stderr).splitlines() if ln.startswith("ERROR")]

    assert errors() == [f"ERROR: stage other: stages/other/lanes/{tiny.lane}: is missing: lane "
                        f"{tiny.lane!r} has no data for this stage (lanes there: elsewhere)"]
    # The folder, with a setting misspelt: the one the build reads is missing.
    lane_dir = tiny.root / "stages" / "other" / "lanes" / tiny.lane
    lane_dir.mkdir()
    (lane_dir / "lane.toml").write_text('greting = "hi"\n')
    assert errors() == [f"ERROR: stage other: stages/other/lanes/{tiny.lane}/lane.toml: key 'greting' is no "
                        "setting of this stage (stages/other/stage.toml's [lane_settings]: greeting)"]
    # Mended, it builds with the lane's value.
    (lane_dir / "lane.toml").write_text('greeting = "hi"\n')
    tiny.doit("lock=test.lock", "build:other")
    assert (tiny.out(tiny.lane) / "stages" / "other" / "other").read_text() == "hi\n"


def test_a_failing_build_names_the_stage_keeps_the_log_and_caches_nothing(tiny):
    _stage(tiny.root, "other", 'description = "other"\noutputs = ["other"]\n',
           "echo 'the last words of a failing build'\nexit 3\n")
    r = tiny.doit("lock=test.lock", "build:other", check=False)
    assert r.returncode != 0
    text = r.stdout + r.stderr
    assert "stage other failed" in text and "the last words of a failing build" in text
    assert r.record["ok"] is False
    assert [(t["name"], t["result"]) for t in r.record["tasks"] if t["name"] == "build:other"] == [
        ("build:other", "failed")]
    log = tiny.out(tiny.lane) / "logs" / "other.log"
    assert "the last words of a failing build" in log.read_text()
    cache = Path(tiny.env["ONLYDOCKER_STAGE_CACHE"])
    assert not list(cache.glob("*.tar.zst")) and not list(cache.glob("*.json"))
    assert not (tiny.out(tiny.lane) / "stages" / "other.manifest.json").exists()


def test_a_changed_output_is_stale_and_restored_from_the_cache(tiny):
    tiny.doit("lock=test.lock")
    binary = tiny.out(tiny.lane) / "stages" / "hello" / "bin" / "hello"
    binary.write_bytes(b"tampered")
    assert wsmod.events(tiny.doit("lock=test.lock")).get("hello") == "restored"
    assert binary.read_bytes() != b"tampered"


def test_an_output_changed_in_place_with_its_size_and_mtime_kept_is_restored(tiny):
    # A no-op decides by stat (snapshot.py); an edit that keeps the size and
    # puts the mtime back still moves the ctime, and is caught.
    tiny.doit("lock=test.lock")
    binary = tiny.out(tiny.lane) / "stages" / "hello" / "bin" / "hello"
    st, data = binary.stat(), binary.read_bytes()
    with open(binary, "r+b") as f:
        f.write(b"\0" * 64)
    os.utime(binary, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert binary.stat().st_size == st.st_size and binary.stat().st_mtime_ns == st.st_mtime_ns
    assert wsmod.events(tiny.doit("lock=test.lock")) == {"hello": "restored"}
    assert binary.read_bytes() == data


def _hello_entry(tiny) -> Path:
    manifest = tiny.out(tiny.lane) / "stages" / "hello.manifest.json"
    key = json.loads(manifest.read_text())["key"]
    return Path(tiny.env["ONLYDOCKER_STAGE_CACHE"]) / f"{key}.tar.zst"


@pytest.mark.parametrize("damage", ["other bytes", "truncated", "no record"])
def test_a_damaged_cache_entry_is_set_aside_and_the_stage_built_again(tiny, damage):
    tiny.doit("lock=test.lock")
    entry = _hello_entry(tiny)
    if damage == "other bytes":
        # A well-formed entry whose file is not what the record says.
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
            info = tarfile.TarInfo("bin")
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tf.addfile(info)
            info = tarfile.TarInfo("bin/hello")
            info.size, info.mode = 8, 0o755
            tf.addfile(info, io.BytesIO(b"tampered"))
        entry.write_bytes(zstandard.ZstdCompressor().compress(buf.getvalue()))
        why = "bin/hello: expected sha256"
    elif damage == "truncated":
        entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
        why = "corrupt or truncated archive"
    else:
        entry.with_suffix("").with_suffix(".json").unlink()
        why = "no readable record"
    shutil.rmtree(tiny.out(tiny.lane))          # a fresh out/: everything comes from the cache
    r = tiny.doit("lock=test.lock")
    ran = wsmod.events(r)
    assert ran["hello"] == "built" and ran["pkg"] == "restored", ran
    assert why in r.stdout, r.stdout
    assert [p for p in (entry.parent / "rejected").iterdir() if p.name.startswith(entry.name + ".")]
    binary = tiny.out(tiny.lane) / "stages" / "hello" / "bin" / "hello"
    assert b"tampered" not in binary.read_bytes()
    assert (tiny.out(tiny.lane) / "stages" / "pkg" / "said").read_text() == "hello, patched\n"
    # The rebuilt entry is good again: the next fresh out/ restores it.
    shutil.rmtree(tiny.out(tiny.lane))
    assert wsmod.events(tiny.doit("lock=test.lock"))["hello"] == "restored"


def _start_slow(tiny, seconds: int) -> subprocess.Popen:
    _stage(tiny.root, "other", 'description = "other"\noutputs = ["other"]\n',
           f"echo sleeping; sleep {seconds}; echo other > /build/out/other\n")
    return subprocess.Popen([sys.executable, "-m", "doit", "lock=test.lock", "build:other"],
                            cwd=tiny.root, env=tiny.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, text=True)


def _wait_for_log(path: Path, text: str, timeout: float = 120) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.5)
    raise AssertionError(f"{path} never showed {text!r}")


def test_a_killed_run_leaves_nothing_a_later_run_takes_as_complete(tiny):
    tiny.doit("lock=test.lock", "build:builder")
    proc = _start_slow(tiny, 600)
    _wait_for_log(tiny.out(tiny.lane) / "logs" / "other.log", "sleeping")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tiny.out(tiny.lane) / "stages" / "other.manifest.json").exists()
    _stage(tiny.root, "other", 'description = "other"\noutputs = ["other"]\n',
           "echo other > /build/out/other\n")
    assert wsmod.events(tiny.doit("lock=test.lock", "build:other")) == {"other": "built"}


def test_two_runs_at_once_do_not_share_a_tree(tiny):
    tiny.doit("lock=test.lock", "build:builder")
    proc = _start_slow(tiny, 30)
    try:
        _wait_for_log(tiny.out(tiny.lane) / "logs" / "other.log", "sleeping")
        r = tiny.doit("lock=test.lock", "build:hello", check=False)
        assert r.returncode != 0
        text = r.stdout + r.stderr
        # Said once, in our words: no doit TaskFailed trace, no function repr.
        assert text.count("another doit run") == 1, text
        assert "<function" not in text and "TaskFailed" not in text and "Traceback" not in text, text
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
