"""The ISO stage's own script (stages/iso/build.sh), run on the host with
BUILD pointing at a tree laid out like the builder's /build (a Debian host
has xorriso and the ISOLINUX files at the same places): the same bytes from
inputs with other dates and modes, at another time; the layout, the dates
and the hybrid MBR; and a clear refusal without SOURCE_DATE_EPOCH."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from onlydocker.stage.lanedata import LANE_ENV, render_file
from tests.conftest import require_tool

REPO = Path(__file__).resolve().parent.parent
STAGE = REPO / "stages" / "iso"
EPOCH = 1686355200
ISOHDPFX = Path("/usr/lib/ISOLINUX/isohdpfx.bin")


@pytest.fixture(autouse=True)
def bootfiles():
    for p in (ISOHDPFX, Path("/usr/lib/ISOLINUX/isolinux.bin"), Path("/usr/lib/syslinux/modules/bios/ldlinux.c32")):
        if not p.exists():
            pytest.skip(f"{p} missing (apt-get install isolinux syslinux-common)")
    require_tool("xorriso")


def layout(build: Path, umask: int, mtime: float, lane: str = "2015") -> Path:
    """A /build tree: the kernel and initrd stages' outputs and the stage
    folder with `lane`'s data as the container sees it (a BIOS-only lane:
    the host has no ukify; the UEFI path is proven by the built lane's
    boots and `doit repro`)."""
    old = os.umask(umask)
    try:
        (build / "deps" / "kernel").mkdir(parents=True)
        (build / "deps" / "initrd").mkdir(parents=True)
        (build / "deps" / "kernel" / "bzImage").write_bytes(b"\x4d\x5a" + bytes(range(256)) * 40)
        (build / "deps" / "initrd" / "initrd.img").write_bytes(b"\x28\xb5\x2f\xfd" + bytes(range(255, -1, -1)) * 80)
        shutil.copytree(STAGE, build / "stage", ignore=shutil.ignore_patterns("lanes"))
        (build / "stage" / "lane").mkdir()
        (build / "stage" / "lane" / LANE_ENV).write_text(render_file(STAGE / "lanes" / lane / "lane.toml"))
    finally:
        os.umask(old)
    for p in [build, *build.rglob("*")]:
        os.utime(p, (mtime, mtime))
    return build


def build_iso(build: Path, epoch: int | None = EPOCH) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("SOURCE_DATE_EPOCH", "TZ")}
    env["BUILD"] = str(build)
    if epoch is not None:
        env["SOURCE_DATE_EPOCH"] = str(epoch)
    return subprocess.run(["sh", str(STAGE / "build.sh")], env=env, capture_output=True, text=True)


def xorriso(*args: str) -> str:
    return subprocess.run(["xorriso", *args], capture_output=True, text=True, check=True).stdout


def test_same_iso_from_other_dates_modes_and_times(tmp_path):
    a = layout(tmp_path / "a", 0o022, time.time())
    b = layout(tmp_path / "b", 0o077, 1e9)
    assert build_iso(a).returncode == 0
    time.sleep(1.1)   # another "now" for anything that would read the clock
    r = build_iso(b)
    assert r.returncode == 0, r.stderr
    assert (a / "out" / "onlydocker.iso").read_bytes() == (b / "out" / "onlydocker.iso").read_bytes()


def test_layout_dates_and_hybrid_mbr(tmp_path):
    build = layout(tmp_path / "b", 0o022, time.time())
    r = build_iso(build)
    assert r.returncode == 0, r.stderr
    out = build / "out" / "onlydocker.iso"
    found = xorriso("-indev", str(out), "-find", "/").split()
    assert sorted(f.strip("'") for f in found) == [
        "/", "/boot", "/boot/initrd", "/boot/isolinux", "/boot/isolinux/boot.cat", "/boot/isolinux/isolinux.bin",
        "/boot/isolinux/isolinux.cfg", "/boot/isolinux/ldlinux.c32", "/boot/vmlinuz"]
    pvd = xorriso("-indev", str(out), "-pvd_info")
    assert "Volume Id    : ONLYDOCKER" in pvd and "Preparer Id  : ONLYDOCKER" in pvd
    assert "Creation Time: 2023061000000000" in pvd and "Modif. Time  : 2023061000000000" in pvd
    with open(out, "rb") as f, open(ISOHDPFX, "rb") as mbr:
        first = f.read(512)
        assert first[:432] == mbr.read(432)             # isohdpfx.bin's boot code
    part = first[446:462]
    assert first[510:512] == b"\x55\xaa" and part[0] == 0x80 and part[4] != 0   # isohybrid's partition
    assert "Jun 10  2023" in xorriso("-indev", str(out), "-lsdl", "/boot/vmlinuz")
    assert "BIOS" in xorriso("-indev", str(out), "-report_el_torito", "plain")


def test_without_source_date_epoch_it_refuses(tmp_path):
    r = build_iso(layout(tmp_path / "b", 0o022, time.time()), epoch=None)
    assert r.returncode != 0 and "SOURCE_DATE_EPOCH must be set" in r.stderr
    assert not (tmp_path / "b" / "out" / "onlydocker.iso").exists()


def test_isolinux_cfg_boots_the_kernel_on_both_consoles_and_has_a_selftest_label():
    lines = [line.strip() for line in (STAGE / "files" / "isolinux.cfg").read_text().splitlines()]
    assert lines[:2] == ["# Serial first, so a test (or a headless server) reads the console on ttyS0.",
                         "serial 0 115200"]
    assert "default onlydocker" in lines and "label selftest" in lines
    assert lines.count("kernel /boot/vmlinuz") == 2 and lines.count("initrd /boot/initrd") == 2
    # The serial console last: /dev/console (init's output) is the last console= given.
    assert "append console=tty0 console=ttyS0,115200" in lines
    assert "append console=tty0 console=ttyS0,115200 onlydocker.selftest" in lines


def test_the_unified_kernel_image_has_isolinux_default_command_line():
    lines = [line.strip() for line in (STAGE / "files" / "isolinux.cfg").read_text().splitlines()]
    default = lines[lines.index("label onlydocker") + 3]
    assert default == "append " + (STAGE / "files" / "cmdline").read_text().strip()


@pytest.mark.parametrize("lane", ["2015", "bookworm"])
def test_a_bios_only_lane_makes_no_efi_files(tmp_path, lane):
    build = layout(tmp_path / "b", 0o022, time.time(), lane=lane)
    r = build_iso(build)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (build / "out").iterdir()) == ["onlydocker.iso"]
    assert "UEFI" not in xorriso("-indev", str(build / "out" / "onlydocker.iso"), "-report_el_torito", "plain")
