"""The engine layer: copy in, no network, copy out, clear failures."""
from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import pytest

from onlydocker import engine
from onlydocker.errors import BuildError, EngineError
from onlydocker.tarball import write_tree


def test_no_engine_says_where_it_looked_and_how_to_start_one(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    engine._clients.clear()
    with pytest.raises(EngineError) as e:
        engine.connect()
    assert "unix:///nonexistent/docker.sock" in str(e.value) and "dockerd" in str(e.value)


def test_a_docker_context_names_the_engine(monkeypatch, tmp_path):
    import hashlib
    import json
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    meta = tmp_path / "contexts" / "meta" / hashlib.sha256(b"far").hexdigest()
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text(json.dumps({"Name": "far", "Endpoints": {"docker": {"Host": "tcp://127.0.0.1:9"}}}))
    (tmp_path / "config.json").write_text(json.dumps({"currentContext": "far"}))
    engine._clients.clear()
    with pytest.raises(EngineError, match="tcp://127.0.0.1:9"):
        engine.connect()


@pytest.fixture(scope="module")
def tiny_image(docker_client, tmp_path_factory):
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        pytest.skip("no static busybox on the host (apt-get install busybox-static)")
    root = tmp_path_factory.mktemp("rootfs")
    (root / "bin").mkdir()
    shutil.copy(busybox, root / "bin" / "busybox")
    for applet in ("sh", "cat", "mkdir", "ls", "echo"):
        (root / "bin" / applet).symlink_to("busybox")
    buf = io.BytesIO()
    write_tree(root, buf, mtime=0)
    tag = "onlydocker-test/engine:latest"
    engine.import_image(docker_client, buf.getvalue(), tag)
    yield tag
    docker_client.images.remove(tag, force=True)


def test_inputs_go_in_and_outputs_come_out_with_no_network(tiny_image, tmp_path):
    engine._clients.clear()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "greeting").write_text("hello\n")
    spec = engine.RunSpec(image=tiny_image, env={"PATH": "/bin"}, inputs=[(tmp_path / "in", "/build/in")],
                          command=["sh", "-c", "mkdir -p /build/out && cat /build/in/greeting > /build/out/said"
                                               " && cat /proc/net/dev > /build/out/net"])
    out = tmp_path / "out.tar"
    engine.run(engine.connect(), spec, output_tar=out, log_path=tmp_path / "log")
    with tarfile.open(out) as tf:
        assert tf.extractfile("out/said").read() == b"hello\n"
        interfaces = [l.split(":")[0].strip() for l in tf.extractfile("out/net").read().decode().splitlines()[2:]]
    assert interfaces == ["lo"]


def test_a_failing_command_raises_with_the_log_tail(tiny_image, tmp_path):
    engine._clients.clear()
    spec = engine.RunSpec(image=tiny_image, env={"PATH": "/bin"},
                          command=["sh", "-c", "echo 'compiler says no'; exit 7"])
    with pytest.raises(BuildError) as e:
        engine.run(engine.connect(), spec, output_tar=tmp_path / "o.tar", log_path=tmp_path / "log")
    assert "exited with 7" in str(e.value) and "compiler says no" in str(e.value)
    assert "compiler says no" in (tmp_path / "log").read_text()
    assert not (tmp_path / "o.tar").exists()
