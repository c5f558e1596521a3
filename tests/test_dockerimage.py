"""dockerimage.py: an image archive both loaders accept, the same bytes
every time; `docker load` and `docker import` on the real engine."""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from onlydocker.formats import dockerimage

EPOCH = 1686355200


def static_busybox() -> Path:
    for cand in (shutil.which("busybox"), "/bin/busybox", "/usr/bin/busybox"):
        if cand and Path(cand).exists():
            info = subprocess.run(["file", "-L", cand], capture_output=True, text=True).stdout
            if "statically linked" in info or "static-pie" in info:
                return Path(cand)
    pytest.skip("no static busybox on the host (apt-get install busybox-static)")


@pytest.fixture
def rootfs(tmp_path) -> Path:
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    shutil.copy(static_busybox(), root / "bin" / "busybox")
    (root / "bin" / "sh").symlink_to("busybox")
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    return root


def archive(root: Path, **kw) -> bytes:
    buf = io.BytesIO()
    kw.setdefault("tags", ["h4-test/bb:latest"])
    dockerimage.write_image_archive(root, buf, mtime=EPOCH, **kw)
    return buf.getvalue()


def members(data: bytes) -> dict[str, bytes | None]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return {m.name: (tf.extractfile(m).read() if m.isfile() else None) for m in tf.getmembers()}


def test_same_rootfs_same_bytes(rootfs):
    a = archive(rootfs)
    os.utime(rootfs / "etc" / "passwd", (1, 1))
    (rootfs / "bin" / "busybox").chmod(0o700)
    assert archive(rootfs) == a


def test_both_layouts_agree_and_ids_are_content_hashes(rootfs):
    m = members(archive(rootfs, tags=["h4-test/bb:latest", "h4-test/bb:1"], config={"Cmd": ["/bin/sh", "-l"]}))
    manifest = json.loads(m["manifest.json"])[0]
    config_name, layer_path = manifest["Config"], manifest["Layers"][0]
    config = json.loads(m[config_name])
    assert config_name == hashlib.sha256(m[config_name]).hexdigest() + ".json"
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(m[layer_path]).hexdigest()]
    assert config["created"] == "2023-06-10T00:00:00Z" and config["config"]["Cmd"] == ["/bin/sh", "-l"]
    assert manifest["RepoTags"] == ["h4-test/bb:latest", "h4-test/bb:1"]
    layer_id = layer_path.split("/")[0]
    # Docker 1.5's loader: repositories -> <id>/{VERSION,json,layer.tar}
    assert json.loads(m["repositories"]) == {"h4-test/bb": {"latest": layer_id, "1": layer_id}}
    assert m[f"{layer_id}/VERSION"] == b"1.0"
    legacy = json.loads(m[f"{layer_id}/json"])
    assert legacy["id"] == layer_id and len(layer_id) == 64 and "parent" not in legacy
    with tarfile.open(fileobj=io.BytesIO(m[layer_path])) as layer:
        names = layer.getnames()
    assert names == ["bin", "bin/busybox", "bin/sh", "etc", "etc/passwd"]


def test_another_config_gets_another_legacy_id(rootfs):
    ids = set()
    for cmd in (["/bin/sh"], ["udhcpc", "-f"]):
        manifest = json.loads(members(archive(rootfs, config={"Cmd": cmd}))["manifest.json"])[0]
        ids.add(manifest["Layers"][0])
    assert len(ids) == 2


def test_a_tagless_archive_is_refused(rootfs):
    with pytest.raises(ValueError, match="tag"):
        archive(rootfs, tags=[])


@pytest.mark.docker
def test_docker_loads_and_runs_it(rootfs, docker_client):
    tag = f"h4-test/bb-load:{os.getpid()}"
    data = archive(rootfs, tags=[tag])
    try:
        docker_client.images.load(data)
        image = docker_client.images.get(tag)
        config_id = json.loads(members(data)["manifest.json"])[0]["Config"][:-len(".json")]
        assert image.id == f"sha256:{config_id}"
        out = docker_client.containers.run(tag, ["/bin/busybox", "echo", "ok"], remove=True, network_mode="none")
        assert out.strip() == b"ok"
    finally:
        docker_client.images.remove(tag, force=True)



@pytest.mark.docker
def test_the_legacy_layout_alone_loads_too(rootfs, docker_client):
    # Without manifest.json, today's engine takes the pre-1.10 path (its
    # legacyLoad): `repositories` and <id>/{VERSION,json,layer.tar}, what
    # Docker 1.5 reads.
    tag = f"h4-test/bb-legacy:{os.getpid()}"
    legacy = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(archive(rootfs, tags=[tag]))) as src, \
            tarfile.open(fileobj=legacy, mode="w", format=tarfile.GNU_FORMAT) as dst:
        for m in src.getmembers():
            if m.name == "manifest.json" or (m.name.endswith(".json") and "/" not in m.name):
                continue
            dst.addfile(m, src.extractfile(m) if m.isfile() else None)
    try:
        # The legacy path answers with an empty body, not the JSON stream
        # that images.load() decodes: post it and check the status alone.
        res = docker_client.api._post(docker_client.api._url("/images/load"), data=legacy.getvalue())
        docker_client.api._raise_for_status(res)
        out = docker_client.containers.run(tag, ["/bin/busybox", "echo", "legacy"], remove=True,
                                           network_mode="none")
        assert out.strip() == b"legacy"
    finally:
        docker_client.images.remove(tag, force=True)
