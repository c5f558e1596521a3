"""A full disk and a read-only cache, for real: small tmpfs file systems
mounted by the test (we are root), a tiny lane built in the real builder
image. The machine is blamed, not the cache: one line naming the path, no
entry set aside, and a clean rerun once there is room (issue 31)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import docker
import pytest

from tests import workspace as wsmod

pytestmark = pytest.mark.docker

# 8 MB of pseudo-random hex, the same bytes every time (awk's generator with a
# fixed seed): about half of it survives zstd, so it fills a store too.
BIG = ("set -eu\nmkdir -p /build/out\nawk 'BEGIN { srand(1); for (i = 0; i < 1000000; i++) "
       "printf \"%08x\", int(rand() * 4294967296) }' > /build/out/data\n")
SMALL = "set -eu\necho small > /build/out/data\n"
TIMEOUT = 120


@contextmanager
def tmpfs(path: Path, size: str):
    """A real small file system at `path`, unmounted (lazily) whatever happens."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)


def _tree(root: Path, stage_cache: Path, stages: dict[str, str]) -> wsmod.Workspace:
    ws = wsmod.make(root)
    ws.env["ONLYDOCKER_STAGE_CACHE"] = str(stage_cache)
    (ws.root / "test.lock").write_text(wsmod.builder_tables())
    for name, script in stages.items():
        wsmod.add_stage(ws.root, name, f'description = "{name}"\noutputs = ["data"]\n', script)
    ws.lane = wsmod.lane_name()
    return ws


def _errors(r) -> list[str]:
    return [line for line in (r.stdout + r.stderr).splitlines() if line.startswith("error:")]


def _entries(store: Path) -> set[str]:
    return {p.name for p in store.glob("*.tar.zst")} | {p.name for p in store.glob("*.json")}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_full_out_is_said_in_one_line_keeps_the_entry_and_the_rerun_completes(tmp_path):
    store = tmp_path / "stage-cache"
    ws = _tree(tmp_path / "ws", store, {"big": BIG})
    ws.doit("keygen")
    with tmpfs(ws.root / "out", "4m") as out:
        # 1. Built on a full out/: the output copy meets the full disk and the
        # stage ends at once, in one line naming the path; nothing counts.
        started = time.monotonic()
        r = ws.doit("lock=test.lock", check=False, timeout=TIMEOUT)
        copy_failed = time.monotonic() - started
        assert r.returncode != 0
        errors = _errors(r)
        assert len(errors) == 1, r.stdout + r.stderr
        assert "error: stage big:" in errors[0] and "no space left on the device" in errors[0], errors
        assert str(out) in errors[0] and "free on" in errors[0], errors
        assert "Traceback" not in r.stdout + r.stderr and "ReadTimeout" not in r.stdout + r.stderr
        assert not (ws.out(ws.lane) / "stages" / "big.manifest.json").exists()
        print(f"a failing build on a full out/ took {copy_failed:.1f} s")

        # 2. With room, built and stored.
        remount(out, "size=64m")
        assert wsmod.events(ws.doit("lock=test.lock", timeout=TIMEOUT)) == {"big": "built"}
        built = _sha(ws.out(ws.lane) / "stages" / "big" / "data")
        held = _entries(store)
        assert len(held) == 2

        # 3. out/ emptied and made small again: the restore is refused before
        # it starts, saying how much it needs; the entry stays.
        subprocess.run(["rm", "-rf", str(ws.out(ws.lane) / "stages")], check=True)
        remount(out, "size=4m")
        r = ws.doit("lock=test.lock", check=False, timeout=TIMEOUT)
        errors = _errors(r)
        assert len(errors) == 1 and "needs about 8.0 MB" in errors[0] and " free on " in errors[0], \
            r.stdout + r.stderr
        assert _entries(store) == held and not (store / "rejected").exists()

        # 4. An entry whose record gives no size (stored before records did):
        # the unpacking meets the full disk; blamed on the disk, not the entry.
        record = next(store.glob("*.json"))
        data = json.loads(record.read_text())
        del data["tar_bytes"]
        record.write_text(json.dumps(data, sort_keys=True))
        r = ws.doit("lock=test.lock", check=False, timeout=TIMEOUT)
        errors = _errors(r)
        assert len(errors) == 1 and "no space left on the device" in errors[0], r.stdout + r.stderr
        assert "unusable" not in r.stdout + r.stderr and "rejected" not in r.stdout + r.stderr
        assert _entries(store) == held and not (store / "rejected").exists()
        assert not (ws.out(ws.lane) / "stages" / "big.manifest.json").exists()
        assert not [p for p in (ws.out(ws.lane) / "stages").iterdir() if p.name.startswith(".big.")]

        # 5. Room again: restored, the same bytes, verify passes, every entry kept.
        remount(out, "size=64m")
        assert wsmod.events(ws.doit("lock=test.lock", timeout=TIMEOUT)) == {"big": "restored"}
        assert _sha(ws.out(ws.lane) / "stages" / "big" / "data") == built
        ws.doit("verify", "lock=test.lock", timeout=TIMEOUT)
        assert _entries(store) == held and not (store / "rejected").exists()


def test_a_full_store_does_not_fail_the_build_and_keeps_every_entry(tmp_path):
    with tmpfs(tmp_path / "stage-cache", "2m") as store:
        ws = _tree(tmp_path / "ws", store, {"small": SMALL, "big": BIG})
        ws.doit("keygen")
        # The small stage is stored; the big one fills the store's file system
        # while it is written: said once, used from out/, nothing half-made left.
        r = ws.doit("-n", "1", "lock=test.lock", timeout=TIMEOUT)
        said = r.stdout + r.stderr
        assert wsmod.events(r) == {"small": "built", "big": "built"}
        assert said.count("stages built in this run are used from out/ and not stored") == 1, said
        assert "no space left on the device" in said and str(store) in said, said
        assert not list(store.glob(".*.tmp")), list(store.iterdir())
        held = _entries(store)
        assert len(held) == 2 and not (store / "rejected").exists()     # small's entry and record
        built = _sha(ws.out(ws.lane) / "stages" / "big" / "data")

        # Room made: the stage built again has the same bytes, and is stored.
        remount(store, "size=64m")
        subprocess.run(["rm", "-rf", str(ws.out(ws.lane) / "stages" / "big"),
                        str(ws.out(ws.lane) / "stages" / "big.manifest.json")], check=True)
        assert wsmod.events(ws.doit("lock=test.lock", timeout=TIMEOUT)) == {"big": "built"}
        assert _sha(ws.out(ws.lane) / "stages" / "big" / "data") == built
        assert _entries(store) > held and len(_entries(store)) == 4
        ws.doit("verify", "lock=test.lock", timeout=TIMEOUT)


def test_a_read_only_cache_is_read_and_a_changed_stage_is_built_not_stored(tmp_path):
    with tmpfs(tmp_path / "stage-cache", "16m") as store:
        stages = {"small": SMALL, "one": "set -eu\necho one > /build/out/data\n",
                  "two": "set -eu\necho two > /build/out/data\n"}
        ws = _tree(tmp_path / "ws", store, stages)
        ws.doit("lock=test.lock", timeout=TIMEOUT)
        held = _entries(store)
        remount(store, "ro")
        try:
            # Two trees at once over the read-only cache: the unchanged stage
            # restored, the two changed ones built, the run says once that
            # they are not stored; the per-entry locks live elsewhere.
            trees = []
            for name in ("a", "b"):
                t = _tree(tmp_path / name, store, dict(stages, one="set -eu\necho ONE > /build/out/data\n",
                                                       two="set -eu\necho TWO > /build/out/data\n"))
                trees.append((t, subprocess.Popen([sys.executable, "-m", "doit", "-n", "2", "lock=test.lock"],
                                                  cwd=t.root, env=t.env, stdout=subprocess.PIPE,
                                                  stderr=subprocess.STDOUT, text=True)))
            for t, proc in trees:
                said = proc.communicate(timeout=TIMEOUT)[0]
                assert proc.returncode == 0, said
                assert said.count("stages built in this run are used from out/ and not stored") == 1, said
                assert "not writable" in said and "Read-only file system" not in said, said
                assert "small: restored from the cache" in said, said
                assert (t.out(t.lane) / "stages" / "one" / "data").read_text() == "ONE\n"
                assert (t.out(t.lane) / "stages" / "two" / "data").read_text() == "TWO\n"
        finally:
            remount(store, "rw")
        assert _entries(store) == held


# --- an engine stopped while an output copy streams ----------------------------

def _tiny_image(client, tag: str) -> None:
    """An image of one static busybox (the host's, which setup.sh installs)."""
    import io
    import tarfile

    from onlydocker.engine import client as dockerclient
    from tests.conftest import require_tool
    busybox = Path(require_tool("busybox")).resolve()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        tf.add(busybox, "bin/busybox")
        link = tarfile.TarInfo("bin/sh")
        link.type, link.linkname = tarfile.SYMTYPE, "busybox"
        tf.addfile(link)
    dockerclient.import_image(client, buf.getvalue(), tag)


def test_an_engine_stopped_while_the_outputs_stream_ends_the_stage_in_seconds(tmp_path, docker_client):
    import tempfile
    import threading

    from onlydocker.engine import run as engine
    from onlydocker.errors import EngineError
    from tests.test_engines import SecondEngine
    if os.geteuid() != 0:
        pytest.skip("a second dockerd needs root")
    second = SecondEngine(Path(tempfile.mkdtemp(prefix="od31-", dir="/tmp")))
    second.start()
    try:
        client = second.client()
        _tiny_image(client, "onlydocker-test-busybox:1")
        client = docker.DockerClient(base_url=second.url, timeout=600)   # as dockerclient.connect makes them
        # 1.5 GB of output: a copy that takes a few seconds, during which the engine is killed.
        spec = engine.RunSpec("onlydocker-test-busybox:1", ["/bin/sh", "-c",
                              "mkdir -p /build/out && dd if=/dev/zero of=/build/out/big bs=1M count=1500"],
                              env={}, root=True)
        out = tmp_path / "raw.tar"
        failure: list[BaseException] = []

        def build():
            try:
                engine.run(client, spec, output_tar=out, log_path=tmp_path / "log")
            except BaseException as e:       # noqa: BLE001 -- handed to the test
                failure.append(e)
        worker = threading.Thread(target=build, daemon=True)
        worker.start()
        deadline = time.monotonic() + 60
        while not any(p.stat().st_size > 50_000_000 for p in tmp_path.glob(".raw.tar.*.part")):
            assert worker.is_alive() and time.monotonic() < deadline, failure
            time.sleep(0.01)
        second.kill()
        killed = time.monotonic()
        worker.join(timeout=60)
        ended = time.monotonic() - killed
        print(f"the stage ended {ended:.1f} s after the engine was killed mid-copy")
        assert not worker.is_alive() and ended < 15
        assert len(failure) == 1 and isinstance(failure[0], EngineError), failure
        assert "the engine stopped answering while copying /build/out out of onlydocker-" in str(failure[0])
        assert "\n" not in str(failure[0])
        assert not out.exists() and not list(tmp_path.glob(".raw.tar.*.part"))
    finally:
        _end_engine(second)


def _end_engine(second) -> None:
    """Stop the test's dockerd, and after a kill what it had started (its
    containerd and shims, which name its folder on their command line);
    then its mounts and folders go."""
    if not second.killed:
        second.stop()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if str(second.base).encode() in cmdline and int(pid) != os.getpid():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
    for point in sorted(second._mounts(), reverse=True):
        subprocess.run(["umount", "-l", point], check=False)
    shutil.rmtree(second.base, ignore_errors=True)
