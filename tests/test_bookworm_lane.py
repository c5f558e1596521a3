"""Bookworm stays a supported lane: built once for real by the same code as
the default lane (trixie, which gets every other end-to-end test), its
artifacts signed, and booted once: kernel + initrd to Docker 20.10 as PID 1
on cgroup v1, the whole self-check."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from onlydocker.cli import boot
from tests import workspace as wsmod
from tests.conftest import require_tool
from tests.test_boot import MARKER, check_selftest

LANE = "bookworm"
LOCK = "locks/bookworm.lock"
GROUP = "bookworm: build, one boot"

pytestmark = [pytest.mark.slow, pytest.mark.docker]


@pytest.fixture(scope="module")
def bookworm(tmp_path_factory, docker_client):
    from tests import budget
    base = tmp_path_factory.mktemp("bookworm")
    cache = Path(os.environ["ONLYDOCKER_CACHE"]) if os.environ.get("ONLYDOCKER_CACHE") else base / "cache"
    ws = wsmod.make(base / "workspace", copy_project=True, cache=cache)
    ws.env.pop("ONLYDOCKER_STAGE_CACHE", None)
    ws.doit("keygen")
    with budget.charge(GROUP):
        ws.first = ws.doit("-n", "2", f"lock={LOCK}", timeout=5400)
    return ws


@pytest.mark.budget(GROUP)
def test_bookworm_builds_signed_and_boots_into_docker_20_10_as_pid1(bookworm, tmp_path):
    dist = bookworm.out(LANE) / "dist"
    for name in ("vmlinuz", "initrd", "onlydocker.iso", "onlydocker-virtualbox.box", "onlydocker-libvirt.box",
                 "SHA256SUMS", "SHA256SUMS.minisig", "provenance.intoto.json"):
        assert (dist / name).is_file(), name
    minisign = require_tool("minisign")
    pub = bookworm.env["ONLYDOCKER_SIGNING_KEY"] + ".pub"
    r = subprocess.run([minisign, "-V", "-p", pub, "-m", str(dist / "SHA256SUMS")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    require_tool("qemu-system-x86_64")
    result = boot.boot(dist / "vmlinuz", dist / "initrd", append="onlydocker.selftest", timeout=600, marker=MARKER,
                       log_path=tmp_path / "boot.log")
    check_selftest(result, lane=LANE)
    assert re.search(r"^\s*Server Version: 20\.10\.", result.text, re.M), "docker info: not Docker 20.10"
    print(f"bookworm kernel + initrd: self-check passed after {result.seconds:.1f} s")
