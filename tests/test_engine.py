"""The engine layer: copy in, no network, copy out, clear failures."""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from onlydocker.engine import client as dockerclient
from onlydocker.engine import run as engine
from onlydocker.errors import BuildError, EngineError
from onlydocker.formats.tarball import write_tree
from tests.conftest import require_tool


def test_no_engine_says_where_it_looked_and_how_to_start_one(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    dockerclient._clients.clear()
    with pytest.raises(EngineError) as e:
        dockerclient.connect()
    assert "unix:///nonexistent/docker.sock" in str(e.value) and "dockerd" in str(e.value)
    assert "\n" not in str(e.value)


def _docker_cli(config_dir: Path, *args: str) -> None:
    """The real docker CLI on a config folder of the test's own."""
    env = {k: v for k, v in os.environ.items() if k not in ("DOCKER_HOST", "DOCKER_CONTEXT")}
    r = subprocess.run([require_tool("docker"), *args], env={**env, "DOCKER_CONFIG": str(config_dir)},
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_docker_context_names_the_engine(monkeypatch, tmp_path):
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    _docker_cli(tmp_path, "context", "create", "far", "--docker", "host=tcp://127.0.0.1:9")
    _docker_cli(tmp_path, "context", "use", "far")
    dockerclient._clients.clear()
    with pytest.raises(EngineError, match="tcp://127.0.0.1:9") as e:
        dockerclient.connect()
    assert "'far'" in str(e.value) and "\n" not in str(e.value)


def test_docker_context_use_picks_the_engine_as_for_the_docker_cli(docker_client, monkeypatch, tmp_path):
    # A real second context on the real engine's socket: `docker context use`
    # makes it the current one, and DOCKER_CONTEXT wins over that.
    socket = Path("/var/run/docker.sock")
    if not socket.is_socket():
        pytest.skip("the engine does not listen on /var/run/docker.sock")
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    _docker_cli(tmp_path, "context", "create", "h-box-second", "--docker", f"host=unix://{socket}")
    _docker_cli(tmp_path, "context", "create", "nowhere", "--docker", "host=unix:///nonexistent/docker.sock")
    _docker_cli(tmp_path, "context", "use", "h-box-second")
    assert dockerclient.endpoint().source == (f"Docker context 'h-box-second' (unix://{socket}, "
                                        f"from currentContext in {tmp_path / 'config.json'})")
    dockerclient._clients.clear()
    client = dockerclient.connect()
    assert client.version()["Version"] == docker_client.version()["Version"]
    assert client.info()["ID"] == docker_client.info()["ID"]        # the very same engine
    monkeypatch.setenv("DOCKER_CONTEXT", "nowhere")
    with pytest.raises(EngineError, match="'nowhere' .*unix:///nonexistent/docker.sock, from DOCKER_CONTEXT"):
        dockerclient.connect()
    monkeypatch.delenv("DOCKER_CONTEXT")
    _docker_cli(tmp_path, "context", "use", "nowhere")
    with pytest.raises(EngineError, match="'nowhere' .*nonexistent.*from currentContext in"):
        dockerclient.connect()
    _docker_cli(tmp_path, "context", "use", "default")
    assert dockerclient.endpoint().host is None          # the default: docker.from_env's local socket
    assert dockerclient.connect().info()["ID"] == docker_client.info()["ID"]


@pytest.fixture(scope="module")
def tiny_image(docker_client, tmp_path_factory):
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        pytest.skip("no static busybox on the host (apt-get install busybox-static)")
    root = tmp_path_factory.mktemp("rootfs")
    (root / "bin").mkdir()
    shutil.copy(busybox, root / "bin" / "busybox")
    for applet in ("sh", "cat", "mkdir", "ls", "echo", "nc", "sleep"):
        (root / "bin" / applet).symlink_to("busybox")
    buf = io.BytesIO()
    write_tree(root, buf, mtime=0)
    tag = "onlydocker-test/engine:latest"
    dockerclient.import_image(docker_client, buf.getvalue(), tag)
    yield tag
    docker_client.images.remove(tag, force=True)


def test_inputs_go_in_and_outputs_come_out_with_no_network(tiny_image, tmp_path):
    dockerclient._clients.clear()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "greeting").write_text("hello\n")
    spec = engine.RunSpec(image=tiny_image, env={"PATH": "/bin"}, inputs=[(tmp_path / "in", "/build/in")],
                          command=["sh", "-c", "mkdir -p /build/out && cat /build/in/greeting > /build/out/said"
                                               " && cat /proc/net/dev > /build/out/net"])
    out = tmp_path / "out.tar"
    engine.run(dockerclient.connect(), spec, output_tar=out, log_path=tmp_path / "log")
    with tarfile.open(out) as tf:
        assert tf.extractfile("out/said").read() == b"hello\n"
        interfaces = [l.split(":")[0].strip() for l in tf.extractfile("out/net").read().decode().splitlines()[2:]]
    assert interfaces == ["lo"]


def test_a_failing_command_raises_with_the_log_tail(tiny_image, tmp_path):
    dockerclient._clients.clear()
    spec = engine.RunSpec(image=tiny_image, env={"PATH": "/bin"},
                          command=["sh", "-c", "echo 'compiler says no'; exit 7"])
    with pytest.raises(BuildError) as e:
        engine.run(dockerclient.connect(), spec, output_tar=tmp_path / "o.tar", log_path=tmp_path / "log")
    assert "exited with 7" in str(e.value) and "compiler says no" in str(e.value)
    assert "compiler says no" in (tmp_path / "log").read_text()
    assert not (tmp_path / "o.tar").exists()


def test_the_input_tar_streams_a_big_file_in_small_pieces(tmp_path):
    import tracemalloc
    big = tmp_path / "linux.orig.tar.xz"
    with open(big, "wb") as f:
        f.truncate(96 << 20)            # 96 MB, sparse: cheap to make and to read
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "x").write_text("x")
    tracemalloc.start()
    try:
        total = 0
        for piece in engine.tar_stream([(big, "/build/sources/linux.tar.xz"), (tmp_path / "tree", "/build/t")]):
            total += len(piece)
            assert len(piece) <= 2 << 20
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total >= 96 << 20 and total % 512 == 0
    assert peak < 8 << 20, f"peak {peak} bytes: the input was held in memory"


def test_the_input_tar_keeps_modes_symlinks_and_hardlinks(tmp_path):
    import os
    src = tmp_path / "stage"
    (src / "lane").mkdir(parents=True)
    (src / "build.sh").write_text("#!/bin/sh\n")
    (src / "build.sh").chmod(0o755)
    (src / "lane" / "config").write_text("CONFIG_X=y\n")
    (src / "lane" / "config").chmod(0o640)
    (src / "current").symlink_to("lane")
    os.link(src / "build.sh", src / "again.sh")
    with tarfile.open(fileobj=io.BytesIO(b"".join(engine.tar_stream([(src, "/build/stage")])))) as tf:
        members = {m.name: m for m in tf.getmembers()}
        assert list(members)[:2] == ["build", "build/stage"]      # parents first
        assert members["build/stage/build.sh"].mode == 0o755
        assert members["build/stage/lane/config"].mode == 0o640
        assert members["build/stage/current"].issym() and members["build/stage/current"].linkname == "lane"
        assert members["build/stage/again.sh"].islnk() or members["build/stage/build.sh"].islnk()
        assert all(m.uid == 0 and m.gid == 0 and m.uname == "" for m in members.values())
        assert tf.extractfile("build/stage/lane/config").read() == b"CONFIG_X=y\n"


def test_a_missing_input_is_named_before_any_container_exists(docker_client, tmp_path):
    spec = engine.RunSpec(image="onlydocker-none:0", env={}, command=["true"],
                          inputs=[(tmp_path / "no-such-file", "/build/x")])
    with pytest.raises(EngineError, match="no-such-file"):
        engine.run(docker_client, spec, output_tar=None, log_path=tmp_path / "log")


def _leftovers(client, prefix):
    return [c.name for c in client.containers.list(all=True) if c.name.startswith(prefix)]


def test_modes_and_links_arrive_and_a_missing_output_is_a_build_error(tiny_image, docker_client, tmp_path):
    src = tmp_path / "stage"
    src.mkdir()
    (src / "run").write_text("#!/bin/sh\necho ran\n")
    (src / "run").chmod(0o755)
    (src / "alias").symlink_to("run")
    spec = engine.RunSpec(image=tiny_image, env={"PATH": "/bin"}, inputs=[(src, "/build/stage")],
                          command=["sh", "-c", "ls -l /build/stage; /build/stage/alias"])
    log = tmp_path / "log"
    with pytest.raises(BuildError, match="left no /build/out"):
        engine.run(docker_client, spec, output_tar=tmp_path / "o.tar", log_path=log, name_prefix="h2-test-a")
    text = log.read_text()
    assert "-rwxr-xr-x" in text and "alias -> run" in text and "ran" in text
    assert not (tmp_path / "o.tar").exists() and list(tmp_path.glob("*.part")) == []
    assert _leftovers(docker_client, "h2-test-a") == []


def test_no_network_even_to_a_literal_address(tiny_image, docker_client, tmp_path):
    # busybox nc, not wget: the static wget sometimes segfaults without a network.
    spec = engine.RunSpec(image=tiny_image, env={"PATH": "/bin"},
                          command=["sh", "-c", "nc -w 3 10.0.2.2 80 </dev/null && echo CONNECTED || echo REFUSED; "
                                               "echo IFACES $(ls /sys/class/net)"])
    engine.run(docker_client, spec, output_tar=None, log_path=tmp_path / "log")
    text = (tmp_path / "log").read_text()
    assert "Network is unreachable" in text and "REFUSED" in text and "CONNECTED" not in text
    assert "IFACES lo\n" in text


def test_an_interrupt_still_removes_the_container(tiny_image, docker_client, tmp_path):
    def interrupt(line):
        raise KeyboardInterrupt
    spec = engine.RunSpec(image=tiny_image, env={"PATH": "/bin"},
                          command=["sh", "-c", "echo started; sleep 30"])
    with pytest.raises(KeyboardInterrupt):
        engine.run(docker_client, spec, output_tar=None, log_path=tmp_path / "log",
                   name_prefix="h2-test-int", on_line=interrupt)
    assert _leftovers(docker_client, "h2-test-int") == []


def test_parallel_runs_do_not_clash(tiny_image, docker_client, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    def one(i):
        spec = engine.RunSpec(image=tiny_image, env={"PATH": "/bin", "N": str(i)},
                              command=["sh", "-c", "mkdir -p /build/out && echo $N > /build/out/n"])
        out = tmp_path / f"o{i}.tar"
        engine.run(docker_client, spec, output_tar=out, log_path=tmp_path / f"log{i}", name_prefix="h2-test-par")
        with tarfile.open(out) as tf:
            return tf.extractfile("out/n").read()
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(one, range(4))) == [b"%d\n" % i for i in range(4)]


def test_docker_context_env_wins_and_a_broken_context_is_named(monkeypatch, tmp_path):
    import hashlib
    import json
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"currentContext": "broken"}))
    dockerclient._clients.clear()
    with pytest.raises(EngineError) as e:
        dockerclient.connect()
    assert "'broken'" in str(e.value) and "not defined" in str(e.value)
    assert hashlib.sha256(b"broken").hexdigest() in str(e.value) and "\n" not in str(e.value)
    _docker_cli(tmp_path, "context", "create", "remote", "--docker", "host=tcp://127.0.0.1:1")
    monkeypatch.setenv("DOCKER_CONTEXT", "remote")
    with pytest.raises(EngineError) as e:
        dockerclient.connect()
    assert "tcp://127.0.0.1:1" in str(e.value) and "sudo dockerd" in str(e.value) and "\n" not in str(e.value)
    meta = tmp_path / "contexts" / "meta" / hashlib.sha256(b"remote").hexdigest() / "meta.json"
    meta.write_text("{not json")
    with pytest.raises(EngineError, match="'remote' \\(from DOCKER_CONTEXT\\) is unreadable") as e:
        dockerclient.connect()
    assert str(meta) in str(e.value) and "\n" not in str(e.value)


def test_docker_context_without_a_config_file_says_so(monkeypatch, tmp_path):
    # The SDK finds contexts beside config.json; without one it would look in the working directory.
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    _docker_cli(tmp_path, "context", "create", "far", "--docker", "host=tcp://127.0.0.1:9")
    monkeypatch.setenv("DOCKER_CONTEXT", "far")
    with pytest.raises(EngineError, match="'far'.*no Docker config.json.*docker context use far"):
        dockerclient.connect()
