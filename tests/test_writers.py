"""The deterministic writers, checked with the real tools that read them."""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from onlydocker import box, compress, cpio, dockerimage, sign, tarball
from onlydocker.errors import SigningError
from tests.conftest import require_tool

EPOCH = 1686355200


def make_tree(root: Path, umask: int, mtime: float) -> Path:
    old = os.umask(umask)
    try:
        (root / "bin").mkdir(parents=True)
        (root / "bin" / "tool").write_bytes(b"#!/bin/sh\necho hi\n")
        (root / "bin" / "tool").chmod(0o777 & ~umask)
        (root / "etc").mkdir()
        (root / "etc" / "conf").write_text("x=1\n")
        (root / "sbin").symlink_to("bin")
        (root / "init").write_text("#!/bin/sh\n")
        (root / "init").chmod(0o755)
    finally:
        os.umask(old)
    for p in root.rglob("*"):
        os.utime(p, (mtime, mtime), follow_symlinks=False)
    return root


@pytest.fixture
def trees(tmp_path):
    return (make_tree(tmp_path / "a", 0o022, time.time()), make_tree(tmp_path / "b", 0o077, 1e9))


def test_tar_is_the_same_whatever_the_umask_and_mtimes(trees):
    out = []
    for t in trees:
        buf = io.BytesIO()
        tarball.write_tree(t, buf, mtime=EPOCH)
        out.append(buf.getvalue())
    assert out[0] == out[1]


def test_cpio_is_deterministic_and_read_by_gnu_cpio(trees, tmp_path):
    require_tool("cpio")
    images = []
    for t in trees:
        buf = io.BytesIO()
        cpio.write_newc(t, buf, mtime=EPOCH)
        images.append(buf.getvalue())
    assert images[0] == images[1]
    (tmp_path / "x.cpio").write_bytes(images[0])
    listing = subprocess.run(["cpio", "-itv", "-F", str(tmp_path / "x.cpio")], capture_output=True, text=True)
    assert listing.returncode == 0, listing.stderr
    names = [line.split()[-1] if "->" not in line else line.split()[-3] for line in listing.stdout.splitlines()]
    assert names == sorted(names) and "dev/console" in names and "init" in names
    console = next(l for l in listing.stdout.splitlines() if l.endswith("dev/console"))
    assert console.startswith("crw-------") and "5,   1" in console
    out = tmp_path / "extracted"
    out.mkdir()
    subprocess.run(["cpio", "-idm", "--no-absolute-filenames", "-F", str(tmp_path / "x.cpio")],
                   cwd=out, check=True, capture_output=True)
    assert (out / "bin" / "tool").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert os.readlink(out / "sbin") == "bin"
    assert (out / "init").stat().st_mode & 0o777 == 0o755


@pytest.mark.parametrize("fmt, tool", [("zstd", ["zstd", "-dc"]), ("xz", ["xz", "-dc"]),
                                       ("lzma", ["xz", "--format=lzma", "-dc"]), ("gzip", ["gzip", "-dc"])])
def test_compression_round_trips_through_the_standard_tool_and_is_stable(tmp_path, fmt, tool):
    require_tool(tool[0])
    data = os.urandom(1 << 16) * 8
    outs = []
    for _ in range(2):
        buf = io.BytesIO()
        compress.compress(io.BytesIO(data), fmt, buf)
        outs.append(buf.getvalue())
    assert outs[0] == outs[1]
    r = subprocess.run(tool, input=outs[0], capture_output=True)
    assert r.returncode == 0 and r.stdout == data


def test_minisign_verifies_our_signature_and_refuses_a_tampered_file(tmp_path):
    minisign = require_tool("minisign")
    key = sign.generate_key(tmp_path / "keys" / "signing.key")
    assert (tmp_path / "keys" / "signing.key").stat().st_mode & 0o777 == 0o600
    f = tmp_path / "SHA256SUMS"
    f.write_text("abc  file\n")
    (tmp_path / "SHA256SUMS.minisig").write_text(sign.minisign_sign(key, f.read_bytes(), "onlydocker test"))
    pub = str(tmp_path / "keys" / "signing.key.pub")
    ok = subprocess.run([minisign, "-V", "-p", pub, "-m", str(f)], capture_output=True, text=True)
    assert ok.returncode == 0 and "onlydocker test" in ok.stdout
    f.write_text("abd  file\n")
    bad = subprocess.run([minisign, "-V", "-p", pub, "-m", str(f)], capture_output=True, text=True)
    assert bad.returncode != 0
    with pytest.raises(SigningError):
        sign.minisign_verify(Path(pub).read_text(), f.read_bytes(), (tmp_path / "SHA256SUMS.minisig").read_text())


def test_dsse_envelope_verifies_and_detects_tampering(tmp_path):
    key = sign.generate_key(tmp_path / "k")
    pub = (tmp_path / "k.pub").read_text()
    env = sign.dsse_sign(key, b'{"a":1}', "application/vnd.in-toto+json")
    assert sign.dsse_verify(pub, env) == b'{"a":1}'
    env["payloadType"] = "text/plain"
    with pytest.raises(SigningError):
        sign.dsse_verify(pub, env)


def test_a_key_is_never_made_inside_the_repo_nor_readable_by_others(tmp_path):
    with pytest.raises(SigningError, match="inside"):
        sign.generate_key(tmp_path / "repo" / "out" / "k", forbidden=[tmp_path / "repo"])
    sign.generate_key(tmp_path / "k")
    with pytest.raises(SigningError, match="exists"):
        sign.generate_key(tmp_path / "k")
    (tmp_path / "k").chmod(0o644)
    with pytest.raises(SigningError, match="readable by others"):
        sign.load_key(tmp_path / "k")


def test_box_parts_are_stable_and_the_catalog_is_vagrants_format(tmp_path):
    import json
    import xml.dom.minidom
    xml.dom.minidom.parseString(box.box_ovf("onlydocker", ["data-disk.vmdk"], EPOCH))
    assert box.box_ovf("x", ["d.vmdk"], EPOCH) == box.box_ovf("x", ["d.vmdk"], EPOCH)
    (tmp_path / "f").write_text("x")
    outs = []
    for _ in range(2):
        buf = io.BytesIO()
        box.write_box({"metadata.json": tmp_path / "f", "box.ovf": tmp_path / "f"}, buf, EPOCH)
        outs.append(buf.getvalue())
    assert outs[0] == outs[1]
    cat = json.loads(box.catalog_json("o/o", "1.0.0", "virtualbox", "https://x.invalid/b.box", "a" * 64))
    assert cat["versions"][0]["providers"][0] == {"name": "virtualbox", "url": "https://x.invalid/b.box",
                                                  "checksum_type": "sha256", "checksum": "a" * 64}


@pytest.mark.docker
def test_image_archive_is_stable_and_docker_loads_and_runs_it(tmp_path, docker_client):
    busybox = shutil.which("busybox")
    if not busybox or "static" not in subprocess.run(["file", "-L", busybox], capture_output=True, text=True).stdout:
        busybox = "/bin/busybox" if Path("/bin/busybox").exists() else None
    if busybox is None:
        pytest.skip("no static busybox on the host (apt-get install busybox-static)")
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    shutil.copy(busybox, root / "bin" / "busybox")
    (root / "bin" / "sh").symlink_to("busybox")
    outs = []
    for _ in range(2):
        buf = io.BytesIO()
        dockerimage.write_image_archive(root, buf, tags=["onlydocker-test/bb:latest"], mtime=EPOCH)
        outs.append(buf.getvalue())
    assert outs[0] == outs[1]
    try:
        docker_client.images.load(outs[0])
        out = docker_client.containers.run("onlydocker-test/bb:latest", ["/bin/busybox", "echo", "ok"],
                                           remove=True, network_mode="none")
        assert out.strip() == b"ok"
    finally:
        docker_client.images.remove("onlydocker-test/bb:latest", force=True)
