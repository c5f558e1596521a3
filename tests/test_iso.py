"""iso.py: the xorriso command and its script give the same ISO bytes from
trees with other dates and modes, at another time, with or without
SOURCE_DATE_EPOCH; the image is a hybrid ISOLINUX one."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from onlydocker import iso
from tests.conftest import require_tool

EPOCH = 1686355200


@pytest.fixture
def bootfiles():
    for p in (iso.ISOLINUX_BIN, iso.ISOHDPFX_BIN, iso.LDLINUX_C32):
        if not Path(p).exists():
            pytest.skip(f"{p} missing (apt-get install isolinux syslinux-common)")
    return require_tool("xorriso")


@pytest.fixture
def payload(tmp_path):
    (tmp_path / "vmlinuz").write_bytes(b"\x4d\x5a" + bytes(range(256)) * 40)
    (tmp_path / "initrd").write_bytes(b"\x28\xb5\x2f\xfd" + bytes(range(255, -1, -1)) * 80)
    return tmp_path / "vmlinuz", tmp_path / "initrd"


def tree(dest: Path, payload, umask: int, mtime: float) -> Path:
    old = os.umask(umask)
    try:
        iso.stage_tree(dest, kernel=payload[0], initrd=payload[1],
                       cfg=iso.isolinux_cfg("quiet", extra_labels={"selftest": "onlydocker.selftest"}))
    finally:
        os.umask(old)
    for p in [dest, *dest.rglob("*")]:
        os.utime(p, (mtime, mtime))
    return dest


def run(cmd: list[str], env_epoch: bool = True):
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    if env_epoch:
        env.update(iso.xorriso_env(EPOCH))
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_same_iso_from_other_dates_modes_and_times(bootfiles, payload, tmp_path):
    a = tree(tmp_path / "a", payload, 0o022, time.time())
    b = tree(tmp_path / "b", payload, 0o077, 1e9)
    run(iso.xorriso_command("ONLYDOCKER", EPOCH, str(a), str(tmp_path / "a.iso")))
    time.sleep(1.1)   # another "now" for anything that would read the clock
    run(iso.xorriso_command("ONLYDOCKER", EPOCH, str(b), str(tmp_path / "b.iso")), env_epoch=False)
    assert (tmp_path / "a.iso").read_bytes() == (tmp_path / "b.iso").read_bytes()


def test_layout_dates_and_hybrid_mbr(bootfiles, payload, tmp_path):
    a = tree(tmp_path / "a", payload, 0o022, time.time())
    out = tmp_path / "a.iso"
    run(iso.xorriso_command("ONLYDOCKER", EPOCH, str(a), str(out)))
    found = subprocess.run(["xorriso", "-indev", str(out), "-find", "/"],
                           capture_output=True, text=True, check=True).stdout.split()
    assert sorted(f.strip("'") for f in found) == [
        "/", "/boot", "/boot/initrd", "/boot/isolinux", "/boot/isolinux/boot.cat", "/boot/isolinux/isolinux.bin",
        "/boot/isolinux/isolinux.cfg", "/boot/isolinux/ldlinux.c32", "/boot/vmlinuz"]
    pvd = subprocess.run(["xorriso", "-indev", str(out), "-pvd_info"], capture_output=True, text=True,
                         check=True).stdout
    assert "Volume Id    : ONLYDOCKER" in pvd and "Preparer Id  : ONLYDOCKER" in pvd
    assert "Creation Time: 2023061000000000" in pvd and "Modif. Time  : 2023061000000000" in pvd
    assert iso.has_hybrid_mbr(out)
    with open(out, "rb") as f, open(iso.ISOHDPFX_BIN, "rb") as mbr:
        assert f.read(432) == mbr.read(432)   # isohdpfx.bin's boot code
    listing = subprocess.run(["xorriso", "-indev", str(out), "-lsdl", "/boot/vmlinuz"],
                             capture_output=True, text=True, check=True).stdout
    assert "Jun 10  2023" in listing and "-r--r--r--" in listing
    assert (subprocess.run(["xorriso", "-indev", str(out), "-report_el_torito", "plain"],
                           capture_output=True, text=True).stdout.count("BIOS")) >= 1


def test_the_builder_script_gives_the_same_bytes(bootfiles, payload, tmp_path):
    # The script uses the container's paths of the bootloader files, which a
    # Debian host has at the same places.
    a = tree(tmp_path / "a", payload, 0o022, time.time())
    run(iso.xorriso_command("ONLYDOCKER", EPOCH, str(a), str(tmp_path / "direct.iso")))
    script = iso.build_iso_script(kernel=str(payload[0]), initrd=str(payload[1]),
                                  out=str(tmp_path / "out" / "onlydocker.iso"), cmdline="quiet",
                                  extra_labels={"selftest": "onlydocker.selftest"}, work=str(tmp_path / "w"))
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(EPOCH)}
    r = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "onlydocker.iso").read_bytes() == (tmp_path / "direct.iso").read_bytes()
    no_epoch = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    r = subprocess.run(["sh", "-c", script], env=no_epoch, capture_output=True, text=True)
    assert r.returncode != 0 and "SOURCE_DATE_EPOCH must be set" in r.stderr


def test_isolinux_cfg_boots_the_kernel_with_both_consoles():
    cfg = iso.isolinux_cfg("quiet", extra_labels={"selftest": "onlydocker.selftest"})
    lines = [line.strip() for line in cfg.splitlines()]
    assert "serial 0 115200" in lines and "default onlydocker" in lines
    assert "kernel /boot/vmlinuz" in lines and "initrd /boot/initrd" in lines
    assert "append console=tty0 console=ttyS0,115200 quiet" in lines
    assert "append console=tty0 console=ttyS0,115200 quiet onlydocker.selftest" in lines
    with pytest.raises(ValueError):
        iso.isolinux_cfg("a\nb")


def test_labels_are_iso9660_volume_ids():
    with pytest.raises(ValueError, match="volume label"):
        iso.xorriso_command("only docker", EPOCH, "src", "x.iso")
    assert iso.volume_uuid(EPOCH) == "2023061000000000"
