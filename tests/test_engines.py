"""Several engines side by side (onlydocker/engine/pool.py): the setting's
entries, and for real a second dockerd of the test's own beside the
machine's: stages on both with the same bytes as on one, and an engine
stopped in the middle of a stage."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
import pytest

from onlydocker import config
from onlydocker.builder import image as builder_image
from onlydocker.engine import pool as engines
from onlydocker.errors import ConfigError, EngineError
from tests import workspace as wsmod
from tests.conftest import require_tool

MAIN_SOCKET = Path("/var/run/docker.sock")
MAIN = f"unix://{MAIN_SOCKET}"


# --- the setting's entries ---------------------------------------------------


def test_a_context_entry_is_resolved_as_the_usual_engine_s_context_is(monkeypatch, tmp_path):
    """One resolver (dockerclient.context_endpoint) for DOCKER_CONTEXT and for
    a context named in ONLYDOCKER_ENGINES: the same host and TLS, the same
    messages for a missing or broken context."""
    import hashlib

    from onlydocker.engine import client as dockerclient
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    subprocess.run(["docker", "context", "create", "far", "--docker", "host=tcp://127.0.0.1:9"],
                   env={**os.environ, "DOCKER_CONFIG": str(tmp_path)}, check=True, capture_output=True)
    (tmp_path / "config.json").write_text("{}")         # contexts are found beside it
    monkeypatch.setenv("DOCKER_CONTEXT", "far")
    usual = dockerclient.client_args(dockerclient.endpoint())
    assert engines._client_args(engines.Entry("far", "context")) == usual
    assert usual == {"base_url": "tcp://127.0.0.1:9", "tls": False, "use_ssh_client": False}
    with pytest.raises(EngineError) as e:
        engines._client_args(engines.Entry("nowhere", "context"))
    assert str(e.value).startswith("Docker context 'nowhere' (from ONLYDOCKER_ENGINES) is not defined (no ")
    assert hashlib.sha256(b"nowhere").hexdigest() in str(e.value) and "\n" not in str(e.value)
    # "default" is DOCKER_HOST, else the local socket, as for the CLI.
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:7")
    assert engines._client_args(engines.Entry("default", "context"))["base_url"] == "tcp://127.0.0.1:7"


@pytest.mark.parametrize("text, kind", [
    ("default", "context"), ("far-away.1", "context"), ("unix:///var/run/docker.sock", "unix"),
    ("tcp://10.0.0.5:2376", "tcp"), ("tcp://builder.local", "tcp"), ("ssh://builder@big.local", "ssh"),
    ("ssh://big.local:2222", "ssh"), ("tcp://[::1]:2375", "tcp"),
])
def test_an_entry_is_a_context_name_or_a_docker_url(text, kind):
    assert engines.parse(text) == engines.Entry(text, kind)


@pytest.mark.parametrize("text, words", [
    ("http://10.0.0.5:2375", "the scheme http://, which Docker does not serve"),
    ("npipe:////./pipe/docker_engine", "the scheme npipe://"),
    ("unix://var/run/docker.sock", "no absolute socket path"),
    ("unix://", "no absolute socket path"),
    ("tcp://", "names no host"),
    ("ssh://", "names no host"),
    ("tcp://host:notaport", "port that is not a number"),
    ("tcp://host:99999", "port that is not a number"),
    ("tcp://host:2375/v1.41", "path, query or fragment"),
    ("tcp://me@host:2376", "has a user name"),
    ("10.0.0.5:2375", "did you mean tcp://10.0.0.5:2375?"),
    ("/var/run/docker.sock", "not a URL"),
    ("-bad", "not a valid context name"),
])
def test_a_bad_entry_is_named_in_one_line(text, words):
    with pytest.raises(ConfigError) as e:
        engines.parse(text)
    message = str(e.value)
    assert words in message and repr(text) in message and "ONLYDOCKER_ENGINES" in message, message
    assert "\n" not in message


def test_an_engine_named_twice_is_refused_and_the_order_is_kept():
    assert [e.name for e in engines.parse_all(["ssh://b", "default", MAIN])] == ["ssh://b", "default", MAIN]
    with pytest.raises(ConfigError, match="engine 'ssh://b' is named twice"):
        engines.parse_all(["ssh://b", "default", "ssh://b"])


def test_the_setting_is_checked_when_the_graph_is_made(tmp_path, monkeypatch):
    from onlydocker.cli.tasks import workspace_from_env
    monkeypatch.setenv("ONLYDOCKER_ENGINES", f"{MAIN} 10.0.0.5:2375")
    monkeypatch.setenv("ONLYDOCKER_LOCK", str(tmp_path / "none.lock"))
    with pytest.raises(ConfigError, match="did you mean tcp://10.0.0.5:2375"):
        workspace_from_env(root=tmp_path)


def _pool(tmp_path, *names: str) -> engines.Pool:
    settings = config.load(env={"ONLYDOCKER_CACHE": str(tmp_path / "cache"), "ONLYDOCKER_ENGINES": " ".join(names)},
                           root=tmp_path)
    return engines.Pool(engines.parse_all(settings.engines), settings)


def test_when_no_engine_answers_one_error_names_each(tmp_path):
    pool = _pool(tmp_path, "unix:///nonexistent/a.sock", "unix:///nonexistent/b.sock")
    with pytest.raises(EngineError) as e:
        pool.first()
    message = str(e.value)
    assert message.startswith("none of the engines in ONLYDOCKER_ENGINES answers: unix:///nonexistent/a.sock (")
    assert "unix:///nonexistent/b.sock (" in message and "dockerd" in message and "\n" not in message
    # Asked once a run: the next caller gets the same error, not a second round of questions.
    with pytest.raises(EngineError) as again:
        pool.first()
    assert again.value is e.value


def test_an_engine_gone_during_work_fails_it_naming_the_engine_and_gets_no_more(tmp_path):
    pool = _pool(tmp_path, "unix:///nonexistent/gone.sock", "unix:///nonexistent/other.sock")
    gone = engines.Member(pool.entries[0], client=None)
    with pytest.raises(EngineError) as e:
        with pool.speaking_for(gone, "stage tiny"):
            raise ConnectionError("('Connection aborted.', ConnectionResetError(104, 'reset by peer'))")
    assert str(e.value).startswith("stage tiny: engine unix:///nonexistent/gone.sock stopped answering "
                                   "(ConnectionError: ('Connection aborted.',"), str(e.value)
    assert gone.lost and "\n" not in str(e.value)


def test_an_engine_that_does_not_answer_is_said_once_and_left_out(tmp_path, docker_client, capsys):
    if not MAIN_SOCKET.is_socket():
        pytest.skip(f"the engine does not listen on {MAIN_SOCKET}")
    pool = _pool(tmp_path, "unix:///nonexistent/away.sock", MAIN)
    assert pool.first().name == MAIN
    with pool.lease("one") as a, pool.lease("two") as b:
        assert a.name == b.name == MAIN and a.running == 2
    assert a.running == 0 and pool.ran_on == {"one": MAIN, "two": MAIN}
    said = capsys.readouterr().err
    assert said.count("unix:///nonexistent/away.sock") == 1, said
    assert "engines: engine unix:///nonexistent/away.sock does not answer (" in said
    assert "): left out of this run" in said


# --- a second engine, for real -----------------------------------------------

class SecondEngine:
    """A dockerd of the test's own: its socket, data and state under a short
    /tmp folder (unix socket paths have a 108-byte limit), no network of its
    own (stages run with --network none)."""

    def __init__(self, base: Path):
        self.base = base
        self.socket = base / "docker.sock"
        self.url = f"unix://{self.socket}"
        self.proc: subprocess.Popen | None = None
        self.killed = False

    def start(self) -> None:
        log = open(self.base / "dockerd.log", "a")
        self.proc = subprocess.Popen(
            [require_tool("dockerd"), "--host", self.url, "--data-root", str(self.base / "data"),
             "--exec-root", str(self.base / "x"), "--pidfile", str(self.base / "docker.pid"),
             "--iptables=false", "--ip-masq=false", "--bridge=none"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"dockerd ended ({self.proc.returncode}):\n{self.log()[-3000:]}")
            try:
                self.client().ping()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise AssertionError(f"dockerd does not answer at {self.url}:\n{self.log()[-3000:]}") from None
                time.sleep(0.2)

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.url, timeout=10)

    def log(self) -> str:
        return (self.base / "dockerd.log").read_text(errors="replace")

    def kill(self) -> None:
        """Gone at once, as a machine that loses power."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.killed = True

    def stop(self) -> None:
        os.kill(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=120)

    def close(self) -> None:
        if self.killed:
            # Started again on the same folders, dockerd removes what the killed
            # one left running (no live-restore); then it is stopped properly.
            self.start()
        self.stop()
        # dockerd bind-mounts its data root on itself (private propagation)
        # and undoes it when it stops; a killed one's mount outlives it.
        for point in sorted(self._mounts(), reverse=True):
            subprocess.run(["umount", point], check=False)
        shutil.rmtree(self.base, ignore_errors=True)

    def _mounts(self) -> list[str]:
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f]
        return [p for p in points if p == str(self.base) or p.startswith(f"{self.base}/")]


@pytest.fixture(scope="module")
def second_engine(docker_client):
    if os.geteuid() != 0:
        pytest.skip("a second dockerd needs root")
    if not MAIN_SOCKET.is_socket():
        pytest.skip(f"the engine does not listen on {MAIN_SOCKET}")
    engine = SecondEngine(Path(tempfile.mkdtemp(prefix="od2-", dir="/tmp")))
    engine.start()
    yield engine
    engine.close()


def _tree(root: Path, stages: dict[str, str], engine_list: str | None) -> wsmod.Workspace:
    ws = wsmod.make(root)
    ws.env["ONLYDOCKER_STAGE_CACHE"] = str(root.parent / f"{root.name}-stage-cache")   # each tree builds
    if engine_list is None:
        ws.env.pop("ONLYDOCKER_ENGINES", None)
    else:
        ws.env["ONLYDOCKER_ENGINES"] = engine_list
    (ws.root / "test.lock").write_text(wsmod.builder_tables())
    for name, script in stages.items():
        wsmod.add_stage(ws.root, name, f'description = "{name}"\noutputs = ["data", "env"]\n', script)
    return ws


def _tasks(record: dict) -> dict[str, dict]:
    return {t["name"]: t for t in record["tasks"]}


def _manifest(ws: wsmod.Workspace, stage: str) -> dict:
    return json.loads((ws.out(wsmod.lane_name()) / "stages" / f"{stage}.manifest.json").read_text())


@pytest.mark.docker
def test_an_engine_without_the_builder_gets_it_from_the_cache_once_whatever_the_threads(
        tmp_path, second_engine, capfd):
    ws = _tree(tmp_path / "ws", {}, None)
    ws.doit("lock=test.lock", "build:builder")        # made or taken from the cache, in the machine's engine
    builder = json.loads((ws.out(wsmod.lane_name()) / "builder.json").read_text())
    try:
        second_engine.client().images.remove(builder["tag"], force=True)
    except docker.errors.ImageNotFound:
        pass
    pool = engines.Pool(engines.parse_all([second_engine.url]), config.load(env=ws.env, root=ws.root))
    member = pool.first()
    capfd.readouterr()
    with ThreadPoolExecutor(3) as threads:
        tags = list(threads.map(lambda _: pool.provide_builder(member, builder, builder_image.import_cached), range(3)))
    assert tags == [builder["tag"]] * 3
    said = capfd.readouterr().err
    assert said.count(f"engines: engine {second_engine.url} has no {builder['tag']}: importing") == 1, said
    image = second_engine.client().images.get(builder["tag"])
    assert image.tags == [builder["tag"]]


# Each stage takes a few seconds, so that `doit -n 2` has both running at once;
# what they write shows the container's whole environment and user.
SIDE_BY_SIDE = {name: f"set -eu\nsleep 4\necho {name} > /build/out/data\nid >> /build/out/data\n"
                      f"uname -sm >> /build/out/data\nenv | LC_ALL=C sort > /build/out/env\n"
                for name in ("left", "right")}


@pytest.mark.docker
def test_two_engines_build_side_by_side_with_the_bytes_of_one(tmp_path, second_engine, docker_client):
    two = _tree(tmp_path / "two", SIDE_BY_SIDE, f"{MAIN} {second_engine.url}")
    run = two.doit("-n", "2", "lock=test.lock")
    tasks = _tasks(run.record)
    assert tasks["build:left"]["result"] == tasks["build:right"]["result"] == "built"
    # One stage on each engine (the one with fewer stages running), each said.
    assert {tasks["build:left"]["engine"], tasks["build:right"]["engine"]} == {MAIN, second_engine.url}, run.stdout + run.stderr
    for stage in ("left", "right"):
        assert f"{stage}: building on engine {tasks[f'build:{stage}']['engine']}" in run.stdout
    # The builder image, by its tar's tag, on both: the second got it from the cache.
    tag = json.loads((two.out(wsmod.lane_name()) / "builder.json").read_text())["tag"]
    docker_client.images.get(tag)
    second_engine.client().images.get(tag)

    one = _tree(tmp_path / "one", SIDE_BY_SIDE, None)
    alone = _tasks(one.doit("-n", "2", "lock=test.lock").record)
    assert alone["build:left"]["result"] == alone["build:right"]["result"] == "built"
    for stage in ("left", "right"):
        # The same key (no engine in it) and the same bytes.
        assert _manifest(two, stage) == _manifest(one, stage)
        for f in ("data", "env"):
            assert ((two.out(wsmod.lane_name()) / "stages" / stage / f).read_bytes()
                    == (one.out(wsmod.lane_name()) / "stages" / stage / f).read_bytes())


# Waits for a file that never comes (nothing reaches a build container but its
# inputs), at most 15 s: the test stops the engine meanwhile.
WAITS = {"waits": "set -eu\nfor i in $(seq 30); do [ -e /build/never ] && break; sleep 0.5; done\n"
                  "echo waited > /build/out/data\nenv | LC_ALL=C sort > /build/out/env\n"}


def _running_build(engine: SecondEngine, deadline: float) -> bool:
    client = engine.client()
    while time.monotonic() < deadline:
        if client.containers.list(filters={"label": "org.onlydocker.build", "status": "running"}):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.docker
def test_an_engine_stopped_mid_stage_fails_it_by_name_and_the_next_run_completes(
        tmp_path, second_engine, docker_client):
    # The second engine first: the one stage leases it (both run nothing).
    ws = _tree(tmp_path / "ws", WAITS, f"{second_engine.url} {MAIN}")
    log = tmp_path / "first.log"
    proc = subprocess.Popen([sys.executable, "-m", "doit", "-n", "2", "lock=test.lock"], cwd=ws.root, env=ws.env,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert _running_build(second_engine, time.monotonic() + 600), log.read_text()
        second_engine.kill()
        assert proc.wait(timeout=300) != 0, log.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = log.read_text()
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, text
    assert errors[0].startswith(f"error: stage waits: engine {second_engine.url} stopped answering ("), text
    assert "Traceback" not in text
    record = json.loads((ws.out(wsmod.lane_name()) / "last-run.json").read_text())
    assert _tasks(record)["build:waits"]["result"] == "failed"
    assert _tasks(record)["build:waits"]["engine"] == second_engine.url

    # The same setting again: the engine that is away is said once, the stage runs on the other.
    again = ws.doit("-n", "2", "lock=test.lock")
    said = again.stdout + again.stderr
    assert said.count(second_engine.url) == 1, said
    assert f"engines: engine {second_engine.url} does not answer (" in said and "): left out of this run" in said
    waits = _tasks(again.record)["build:waits"]
    assert waits["result"] == "built" and waits["engine"] == MAIN
    assert (ws.out(wsmod.lane_name()) / "stages" / "waits" / "data").read_text() == "waited\n"
