"""End to end, for real: build the modern lane with `doit`, boot it in qemu,
check Docker runs as PID 1, rebuild only what changed, audit, and prove the
build reproducible. Minutes, not seconds: marked slow, run last. The boots
of this build (kernel + initrd, the ISO, data disks) are in test_boot.py."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests import workspace as wsmod
from tests.conftest import MODERN_LANE as LANE, MODERN_LOCK as LOCK, require_tool

pytestmark = [pytest.mark.slow, pytest.mark.docker]


@pytest.fixture(scope="module")
def lane(modern_lane):
    return modern_lane


def dist(ws) -> Path:
    return ws.out(LANE) / "dist"


def test_full_build_publishes_signed_artifacts(lane):
    d = dist(lane)
    for name in ("vmlinuz", "initrd", "onlydocker.iso", "onlydocker-virtualbox.box",
                 "onlydocker-libvirt.box", "onlydocker.json", "SHA256SUMS", "SHA256SUMS.minisig",
                 "provenance.intoto.json", "provenance.intoto.dsse.json"):
        assert (d / name).is_file(), name
    minisign = require_tool("minisign")
    pub = lane.env["ONLYDOCKER_SIGNING_KEY"] + ".pub"
    r = subprocess.run([minisign, "-V", "-p", pub, "-m", str(d / "SHA256SUMS")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    statement = json.loads((d / "provenance.intoto.json").read_text())
    names = {s["name"] for s in statement["subject"]}
    assert {"vmlinuz", "initrd", "onlydocker.iso"} <= names
    assert "UNSIGNED" not in lane.first.stdout


def test_a_second_run_builds_and_restores_nothing(lane):
    assert wsmod.events(lane.doit(f"lock={LOCK}")) == {}


def test_verify_passes_and_then_names_a_corrupted_artifact(lane):
    r = lane.doit("verify", "--lock", LOCK)
    assert "CORRUPT" not in r.stdout
    iso = dist(lane) / "onlydocker.iso"
    original = iso.read_bytes()
    try:
        iso.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        bad = lane.doit("verify", "--lock", LOCK, check=False)
        assert bad.returncode != 0
        assert any("CORRUPT" in line and "onlydocker.iso" in line for line in bad.stdout.splitlines())
    finally:
        iso.write_bytes(original)


def test_changed_busybox_config_rebuilds_busybox_and_downstream_not_the_kernel(lane):
    config = lane.root / "stages" / "busybox" / "lanes" / LANE / "config"
    lane.original_busybox_config = config.read_text()
    config.write_text(lane.original_busybox_config + "\n# CONFIG_CAL is not set\n")
    ran = wsmod.events(lane.doit("-n", "2", f"lock={LOCK}"))
    assert ran.get("busybox") == "built"
    assert "kernel" not in ran and "docker" not in ran and "iptables" not in ran
    assert {"images", "rootfs", "initrd", "iso"} <= set(ran)


def test_reverting_the_change_restores_from_the_cache_without_building(lane):
    config = lane.root / "stages" / "busybox" / "lanes" / LANE / "config"
    config.write_text(lane.original_busybox_config)
    ran = wsmod.events(lane.doit("-n", "2", f"lock={LOCK}"))
    assert ran.get("busybox") == "restored"
    assert "built" not in ran.values()


def test_the_lane_is_bit_for_bit_reproducible(lane):
    r = lane.doit("repro", "--lock", LOCK, check=False, timeout=5400)
    report = json.loads((lane.out(LANE) / "repro" / "report.json").read_text())
    differing = [row["artifact"] for row in report["rows"] if not row["same"]]
    assert r.returncode == 0 and report["identical"], f"differ: {differing}\n{r.stdout[-3000:]}"
    assert any(row["artifact"] == "dist/onlydocker.iso" for row in report["rows"])
