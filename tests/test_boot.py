"""It boots: the built kernel + initrd (and the ISO) in qemu under software
emulation, init's self-check read from the serial console. The images are the
modern lane's, built once per session by the `modern_lane` fixture (minutes:
these tests are slow and run last); ONLYDOCKER_TEST_KERNEL, _INITRD and _ISO
point them at images built elsewhere instead. boot() itself is checked
against qemu for real too."""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from onlydocker import boot
from onlydocker.errors import OnlyDockerError
from tests.conftest import require_tool

MARKER = "ONLYDOCKER-SELFTEST:"


def _image(request, env_name: str, dist_name: str) -> Path:
    """The image named by env_name when set, else the modern lane's own build."""
    value = os.environ.get(env_name)
    if value:
        path = Path(value)
        if not path.is_file():
            pytest.fail(f"{env_name}={value}: no such file")
        return path
    path = request.getfixturevalue("modern_lane").dist / dist_name
    assert path.is_file(), f"the modern lane's build has no {path}"
    return path


@pytest.fixture
def kernel_initrd(request):
    require_tool("qemu-system-x86_64")
    return (_image(request, "ONLYDOCKER_TEST_KERNEL", "vmlinuz"),
            _image(request, "ONLYDOCKER_TEST_INITRD", "initrd"))


def check_selftest(result: boot.BootResult) -> None:
    """Everything issue 4 asks of a boot, each named when it is missing."""
    boot.assert_selftest_passed(result)
    text = result.text
    assert re.search(r"^pid 1 is: dockerd\r?$", text, re.M), "PID 1 is not dockerd"
    assert "Server:" in text and "API version" in text, "docker version printed no server"
    assert "Storage Driver: overlay2" in text, "docker info: not overlay2"
    for chain in ("Chain INPUT", "Chain FORWARD", "Chain DOCKER"):
        assert chain in text, f"iptables -L printed no {chain}"
    for module in ("overlay", "bridge", "veth", "nf_nat", "br_netfilter"):
        assert re.search(rf"^{module}\s+\d+", text, re.M), f"lsmod does not list {module}"
    assert "selftest: ok: docker works inside the console container" in text
    assert "selftest: ok: a container runs on the bridge" in text
    assert "lease of 10.0.2.15 obtained" in text, "the DHCP container got no lease"
    assert "starting the console container from" in text


def test_boot_needs_an_image(tmp_path):
    require_tool("qemu-system-x86_64")
    with pytest.raises(OnlyDockerError, match="kernel and initrd, or iso"):
        boot.boot(None, None, marker=MARKER, timeout=5, log_path=tmp_path / "log")


def test_without_qemu_the_error_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(OnlyDockerError, match="qemu-system-x86_64 is not installed"):
        boot.boot(tmp_path / "k", tmp_path / "i", marker=MARKER, timeout=5, log_path=tmp_path / "log")


def test_qemu_that_cannot_start_ends_at_once(tmp_path):
    require_tool("qemu-system-x86_64")
    bogus = tmp_path / "not-a-kernel"
    bogus.write_bytes(b"\0" * 4096)
    start = time.monotonic()
    r = boot.boot(bogus, bogus, marker=MARKER, timeout=60, log_path=tmp_path / "log")
    assert not r.marker_seen
    assert time.monotonic() - start < 30
    assert (tmp_path / "log").read_text(errors="replace").startswith("$ ")


@pytest.mark.slow
def test_a_marker_that_never_comes_ends_at_the_timeout(kernel_initrd, tmp_path):
    kernel, initrd = kernel_initrd
    start = time.monotonic()
    r = boot.boot(kernel, initrd, marker="NEVER-PRINTED", timeout=8, log_path=tmp_path / "log")
    took = time.monotonic() - start
    assert not r.marker_seen
    assert 8 <= took < 20, took
    assert "Linux version" in r.text   # the serial console was read meanwhile


@pytest.mark.slow
def test_kernel_and_initrd_boot_into_docker_as_pid1(kernel_initrd, tmp_path):
    kernel, initrd = kernel_initrd
    r = boot.boot(kernel, initrd, append="onlydocker.selftest", timeout=600, marker=MARKER,
                  log_path=tmp_path / "boot.log")
    check_selftest(r)
    assert "Running from memory" in r.text
    print(f"kernel + initrd: self-check passed after {r.seconds:.1f} s")


@pytest.mark.slow
def test_an_empty_disk_is_formatted_once_and_kept(kernel_initrd, tmp_path):
    kernel, initrd = kernel_initrd
    disk = tmp_path / "data.img"
    with open(disk, "wb") as f:
        f.truncate(1 << 30)       # sparse and empty, as the box ships it
    first = boot.boot(kernel, initrd, append="onlydocker.selftest", timeout=600, marker=MARKER,
                      log_path=tmp_path / "boot1.log", disk=disk)
    check_selftest(first)
    assert "init: formatting the empty /dev/sda (label DOCKER)" in first.text
    assert "init: /var/lib/docker is on /dev/sda" in first.text
    second = boot.boot(kernel, initrd, append="onlydocker.selftest", timeout=600, marker=MARKER,
                       log_path=tmp_path / "boot2.log", disk=disk)
    check_selftest(second)
    assert "formatting" not in second.text
    assert "init: /var/lib/docker is on /dev/sda" in second.text
    # The image loaded on the first boot is still there: no second load.
    assert "loaded /usr/share/onlydocker/images" not in second.text


@pytest.mark.slow
def test_a_disk_with_data_is_never_formatted(kernel_initrd, tmp_path):
    kernel, initrd = kernel_initrd
    disk = tmp_path / "data.img"
    payload = b"someone's data, no filesystem we know" * 100
    with open(disk, "wb") as f:
        f.write(payload)
        f.truncate(256 << 20)
    r = boot.boot(kernel, initrd, append="onlydocker.selftest", timeout=600, marker=MARKER,
                  log_path=tmp_path / "boot.log", disk=disk)
    check_selftest(r)
    assert "formatting" not in r.text and "Running from memory" in r.text
    assert disk.read_bytes()[:len(payload)] == payload


@pytest.mark.slow
def test_iso_boots_into_docker_as_pid1(request, tmp_path):
    require_tool("qemu-system-x86_64")
    iso = _image(request, "ONLYDOCKER_TEST_ISO", "onlydocker.iso")
    r = boot.boot(None, None, iso=iso, boot_label="selftest", timeout=600, marker=MARKER,
                  log_path=tmp_path / "boot.log")
    check_selftest(r)
    print(f"ISO: self-check passed after {r.seconds:.1f} s")
