"""box.py: the Vagrant boxes' parts (VirtualBox and libvirt), the guest
plugin and the catalog; the boxes' disks (stages/disk and stages/libvirt,
their build.sh run on the host)."""
from __future__ import annotations

import io
import json
import re
import struct
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from onlydocker.errors import BuildError
from onlydocker.formats import box
from tests.conftest import require_tool

EPOCH = 1686355200
NS = {"ovf": "http://schemas.dmtf.org/ovf/envelope/1", "vbox": "http://www.virtualbox.org/ovf/machine",
      "rasd": "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"}


# --- the VirtualBox box's data disk: stages/disk/build.sh on the host ---------

STAGES = Path(__file__).resolve().parent.parent / "stages"
DISK_CID = "0d0c4e72"


def _descriptor(path: Path) -> tuple[int, bytes]:
    """The offset of a sparse VMDK's embedded descriptor and its region (the
    text, then NULs): SparseExtentHeader's descriptorOffset/Size, in sectors."""
    with open(path, "rb") as f:
        header = f.read(512)
        assert header[:4] == b"KDMV"
        offset, size = struct.unpack_from("<QQ", header, 28)
        f.seek(offset * 512)
        return offset * 512, f.read(size * 512)


def _cids(path: Path) -> tuple[str, str]:
    text = _descriptor(path)[1].partition(b"\0")[0].decode()
    return re.search(r"(?m)^CID=(\w+)$", text).group(1), re.search(r"(?m)^parentCID=(\w+)$", text).group(1)


def _run_disk_stage(build: Path, path: str = "/usr/bin:/bin") -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(STAGES / "disk" / "build.sh")], env={"BUILD": str(build), "PATH": path},
                          capture_output=True, text=True)


def test_the_data_disk_is_a_sparse_streamoptimized_vmdk_with_the_fixed_cid(tmp_path):
    qemu_img = require_tool("qemu-img")
    require_tool("perl")
    disks = []
    for run in ("a", "b"):
        r = _run_disk_stage(tmp_path / run)
        assert r.returncode == 0, r.stdout + r.stderr
        disks.append(tmp_path / run / "out" / "data-disk.vmdk")
    a, b = disks
    assert _cids(a) == (DISK_CID, "ffffffff")
    assert a.read_bytes() == b.read_bytes()
    info = json.loads(subprocess.run([qemu_img, "info", "--output=json", str(a)], capture_output=True,
                                     text=True, check=True).stdout)
    # The box's OVF declares the disk's capacity from box.DATA_DISK_GB: the two agree.
    assert info["format"] == "vmdk" and info["virtual-size"] == box.DATA_DISK_GB * 1024 ** 3
    assert info["format-specific"]["data"]["create-type"] == "streamOptimized"
    subprocess.run([qemu_img, "check", str(a)], check=True, capture_output=True)
    assert a.stat().st_size < 8 * 1024 ** 2     # sparse: a few MB for 40 GB


# qemu-img, then its random CID replaced: by 3 digits (as qemu-img writes one
# below 0x10000000: unpadded, the descriptor's region padded with NULs) for
# the first SHORT calls, by 8 digits after them (so the count is exact); each
# call is counted in CALLS.
FAKE_QEMU_IMG = """#!{python}
import re, subprocess, sys
from pathlib import Path
subprocess.run([{qemu_img!r}, *sys.argv[1:]], check=True)
calls = Path({calls!r})
n = len(calls.read_text().splitlines()) + 1 if calls.exists() else 1
calls.write_text("call\\n" * n)
if sys.argv[1] == "create":
    cid = b"5a3" if n <= {short} else b"9e3779b9"
    disk = Path(sys.argv[-2])
    with open(disk, "r+b") as f:
        offset, size = {offset}, {size}
        f.seek(offset)
        text = f.read(size).partition(b"\\0")[0]
        text, k = re.subn(rb"(?m)^CID=[0-9a-f]+$", b"CID=" + cid, text)
        assert k == 1
        f.seek(offset)
        f.write(text + b"\\0" * (size - len(text)))
"""


def _fake_qemu_img(tmp_path: Path, short: int) -> tuple[str, Path]:
    qemu_img = require_tool("qemu-img")
    probe = tmp_path / "probe.vmdk"
    subprocess.run([qemu_img, "create", "-q", "-f", "vmdk", "-o", "subformat=streamOptimized", str(probe), "40G"],
                   check=True)
    offset, region = _descriptor(probe)
    fake = tmp_path / "bin" / "qemu-img"
    fake.parent.mkdir()
    calls = tmp_path / "calls"
    fake.write_text(FAKE_QEMU_IMG.format(python=sys.executable, qemu_img=qemu_img, calls=str(calls), short=short,
                                         offset=offset, size=len(region)))
    fake.chmod(0o755)
    return f"{fake.parent}:/usr/bin:/bin", calls


def test_a_short_cid_is_drawn_again_and_gives_the_same_disk(tmp_path):
    require_tool("perl")
    r = _run_disk_stage(tmp_path / "plain")
    assert r.returncode == 0, r.stdout + r.stderr
    path, calls = _fake_qemu_img(tmp_path, short=2)
    r = _run_disk_stage(tmp_path / "short", path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(calls.read_text().splitlines()) == 3       # two short CIDs, then an 8-digit one
    disk = tmp_path / "short" / "out" / "data-disk.vmdk"
    assert _cids(disk) == (DISK_CID, "ffffffff")
    assert disk.read_bytes() == (tmp_path / "plain" / "out" / "data-disk.vmdk").read_bytes()


def test_a_qemu_img_that_never_writes_an_8_digit_cid_fails_the_stage(tmp_path):
    require_tool("perl")
    path, calls = _fake_qemu_img(tmp_path, short=1000)
    r = _run_disk_stage(tmp_path / "b", path)
    assert r.returncode != 0 and "qemu-img never wrote an 8-digit CID" in r.stdout + r.stderr
    assert len(calls.read_text().splitlines()) == 32


def test_ovf_is_well_formed_and_fixed():
    text = box.box_ovf("onlydocker/onlydocker-bookworm", ["data-disk.vmdk"], EPOCH)
    assert text == box.box_ovf("onlydocker/onlydocker-bookworm", ["data-disk.vmdk"], EPOCH)
    root = ET.fromstring(text)
    disk = root.find("ovf:DiskSection/ovf:Disk", NS)
    assert disk.get(f"{{{NS['ovf']}}}capacity") == str(40 * 1024 ** 3)
    disk_uuid = disk.get(f"{{{NS['vbox']}}}uuid")
    machine = root.find("ovf:VirtualSystem/vbox:Machine", NS)
    assert machine.get("lastStateChange") == "2023-06-10T00:00:00Z"
    assert "/" not in machine.get("name")
    # As in VirtualBox's own exports, the machine's elements are unprefixed:
    # they sit in the envelope's default namespace.
    vb = f"{{{NS['ovf']}}}"
    controllers = {c.get("name"): c for c in machine.iter(f"{vb}StorageController")}
    assert set(controllers) == {"IDE Controller", "SATA Controller"}
    dvd = controllers["IDE Controller"].find(f"{vb}AttachedDevice")
    assert (dvd.get("type"), dvd.get("port"), dvd.get("device")) == ("DVD", "0", "0")
    hdd = controllers["SATA Controller"].find(f"{vb}AttachedDevice")
    assert hdd.get("type") == "HardDisk" and hdd.find(f"{vb}Image").get("uuid") == "{" + disk_uuid + "}"
    assert machine.find(f"{vb}Hardware/{vb}Network/{vb}Adapter").get("MACAddress") == box.MAC
    # The generic section: two IDE controllers and one SATA, the CD-ROM on IDE, the disk on SATA.
    kinds = [i.findtext("rasd:ResourceType", namespaces=NS) for i in root.iter(f"{{{NS['ovf']}}}Item")]
    assert kinds.count("5") == 2 and kinds.count("20") == 1 and "15" in kinds and "17" in kinds
    with pytest.raises(ValueError, match="disk file name"):
        box.box_ovf("o/o", ['x".vmdk'], EPOCH)



# The box.ovf bytes each lane ships (the shipped onlydocker-virtualbox.box of
# the modern lane holds exactly these): the OVF writer may change, its output
# may not. Parameters as the box stage passes them: the lane's lane.toml name,
# the one data disk, the lock's SOURCE_DATE_EPOCH.
SHIPPED_OVF = {
    ("trixie", "locks/trixie.lock"): "df1252456723d7a945d73d60560ef800271555f687d6eb3c2d4ee91b0f8f56ac",
    ("bookworm", "locks/bookworm.lock"): "33f51b94593c8842705c1f310e63e40308d6a396222534c2dfce295b89fb91bc",
    ("2015", "sources.lock"): "04ca779a6c988ab8bc59ce68c3156a21648c930d8b114d8b513b6937a8ddd626",
}


@pytest.mark.parametrize("lane,lock", list(SHIPPED_OVF), ids=[lane for lane, _ in SHIPPED_OVF])
def test_the_ovf_of_each_lane_is_the_one_it_ships(lane, lock):
    import hashlib
    import tomllib
    root = Path(__file__).resolve().parent.parent
    name = tomllib.loads((root / "stages" / "box" / "lanes" / lane / "lane.toml").read_text())["name"]
    epoch = tomllib.loads((root / lock).read_text())["lane"]["source_date_epoch"]
    text = box.box_ovf(name, ["data-disk.vmdk"], epoch)
    assert hashlib.sha256(text.encode()).hexdigest() == SHIPPED_OVF[(lane, lock)], text


def ruby_syntax_ok(path: Path) -> None:
    """Ruby's own parser on a Vagrantfile or the plugin."""
    ruby = require_tool("ruby")
    r = subprocess.run([ruby, "-c", str(path)], capture_output=True, text=True)
    assert r.returncode == 0 and "Syntax OK" in r.stdout, r.stdout + r.stderr


def test_vagrantfile_mounts_the_iso_before_boot_and_keeps_the_mac(tmp_path):
    vf = box.vagrantfile("onlydocker.iso")
    assert f'config.vm.base_mac = "{box.MAC}"' in vf
    assert 'vb.customize "pre-boot", ["storageattach", :id, "--storagectl", "IDE Controller"' in vf
    assert 'File.expand_path("../onlydocker.iso", __FILE__)' in vf
    assert 'vb.check_guest_additions = false' in vf
    with pytest.raises(ValueError):
        box.vagrantfile('x".iso')
    (tmp_path / "Vagrantfile").write_text(vf)
    ruby_syntax_ok(tmp_path / "Vagrantfile")


@pytest.mark.parametrize("make", [lambda: box.vagrantfile("onlydocker.iso"), box.libvirt_vagrantfile],
                         ids=["virtualbox", "libvirt"])
def test_both_vagrantfiles_load_the_guest_plugin_and_log_in_as_root_by_key(make, tmp_path):
    vf = make()
    assert 'require File.expand_path("../onlydocker_guest.rb", __FILE__)' in vf
    assert "config.vm.guest = :onlydocker" in vf
    assert 'config.ssh.username = "root"' in vf and 'config.ssh.shell = "sh"' in vf
    assert 'config.vm.synced_folder ".", "/vagrant", disabled: true' in vf
    # Vagrant's default: it replaces the insecure key with a fresh pair.
    assert "insert_key" not in vf
    # Docker is reached over SSH; no TCP socket unless the user asks.
    assert "2375" not in vf and "docker -H ssh://" in vf
    (tmp_path / "Vagrantfile").write_text(vf)
    ruby_syntax_ok(tmp_path / "Vagrantfile")


def test_libvirt_vagrantfile_boots_box_img_on_virtio():
    vf = box.libvirt_vagrantfile()
    assert 'config.vm.provider "libvirt" do |lv|' in vf and 'lv.disk_bus = "virtio"' in vf
    assert "lv.memory = 1024" in vf


def test_the_guest_plugin_parses_and_has_its_capabilities():
    plugin = STAGES / "box" / "files" / box.GUEST_PLUGIN
    ruby_syntax_ok(plugin)
    text = plugin.read_text()
    assert 'guest(:onlydocker, :linux)' in text
    for cap in ("halt", "change_host_name", "configure_networks", "nfs_client_installed"):
        assert f"def self.{cap}(" in text, cap
    assert "poweroff -f" in text


def test_metadata_json_per_provider():
    assert json.loads(box.metadata_json()) == {"provider": "virtualbox"}
    assert json.loads(box.metadata_json("libvirt")) == {"provider": "libvirt", "format": "qcow2",
                                                        "virtual_size": 40}
    with pytest.raises(ValueError, match="hyperv"):
        box.metadata_json("hyperv")


def test_the_box_is_a_stable_tar_of_its_parts(tmp_path):
    parts = {"metadata.json": box.metadata_json(), "Vagrantfile": box.vagrantfile("onlydocker.iso"),
             "onlydocker_guest.rb": "plugin",
             "box.ovf": box.box_ovf("o/o", ["data-disk.vmdk"], EPOCH), "data-disk.vmdk": "disk",
             "onlydocker.iso": "iso"}
    files = {}
    for name, text in parts.items():
        (tmp_path / name).write_text(text)
        files[name] = tmp_path / name
    outs = []
    for order in (files, dict(reversed(files.items()))):
        buf = io.BytesIO()
        box.write_box(order, buf, EPOCH)
        outs.append(buf.getvalue())
    assert outs[0] == outs[1]
    with tarfile.open(fileobj=io.BytesIO(outs[0])) as tf:
        assert tf.getnames() == sorted(parts)
        assert json.loads(tf.extractfile("metadata.json").read()) == {"provider": "virtualbox"}
    with pytest.raises(ValueError):
        box.write_box({"../x": tmp_path / "box.ovf"}, io.BytesIO(), EPOCH)


def test_the_catalog_is_vagrants_box_metadata_format():
    cat = json.loads(box.catalog_json("onlydocker/onlydocker-bookworm", "1.0.0", [
        ("virtualbox", "https://x.invalid/v.box", "a" * 64), ("libvirt", "https://x.invalid/l.box", "b" * 64)]))
    assert cat["name"] == "onlydocker/onlydocker-bookworm"
    assert cat["versions"] == [{"version": "1.0.0", "providers": [
        {"name": "virtualbox", "url": "https://x.invalid/v.box", "checksum_type": "sha256", "checksum": "a" * 64},
        {"name": "libvirt", "url": "https://x.invalid/l.box", "checksum_type": "sha256", "checksum": "b" * 64}]}]
    with pytest.raises(ValueError, match="xyz"):
        box.catalog_json("o/o", "1.0.0", [("virtualbox", "https://x.invalid/b.box", "xyz")])
    with pytest.raises(ValueError, match="vmware"):
        box.catalog_json("o/o", "1.0.0", [("vmware", "https://x.invalid/b.box", "a" * 64)])


def test_the_catalog_takes_its_urls_from_the_base_url(tmp_path):
    t = tmp_path / box.CATALOG_TEMPLATE
    t.write_text(box.catalog_template("o/o", "1.0.0", {"libvirt": ("onlydocker-libvirt.box", "b" * 64),
                                                        "virtualbox": ("onlydocker-virtualbox.box", "a" * 64)}))
    cat = json.loads(box.catalog_from_template(t, "http://127.0.0.1:8080/boxes/", "bookworm"))
    urls = {p["name"]: p["url"] for p in cat["versions"][0]["providers"]}
    assert urls == {"libvirt": "http://127.0.0.1:8080/boxes/bookworm/onlydocker-libvirt.box",
                    "virtualbox": "http://127.0.0.1:8080/boxes/bookworm/onlydocker-virtualbox.box"}
    t.write_text("{}")
    with pytest.raises(BuildError, match=box.CATALOG_TEMPLATE):
        box.catalog_from_template(t, "http://x", "bookworm")


def test_the_box_base_url_setting_is_checked():
    from onlydocker import config
    from onlydocker.errors import ConfigError
    env = {"ONLYDOCKER_CONFIG": "/nonexistent"}
    assert config.load(env=env).box_base_url == config.DEFAULT_BOX_BASE_URL
    assert config.load(env={**env, "ONLYDOCKER_BOX_BASE_URL": "http://h/x/"}).box_base_url == "http://h/x"
    with pytest.raises(ConfigError, match="ONLYDOCKER_BOX_BASE_URL.*ftp://h"):
        config.load(env={**env, "ONLYDOCKER_BOX_BASE_URL": "ftp://h"})


# --- the libvirt box's disk: stages/libvirt/build.sh on the host ---------------

def _fake_iso(path: Path, tree: Path, efi: bool = False) -> None:
    """A small hybrid ISO as the iso stage makes it: ISOLINUX and, with
    `efi`, a FAT image as its second El Torito entry and MBR partition 2
    (the UEFI lanes')."""
    xorriso = require_tool("xorriso")
    (tree / "boot" / "isolinux").mkdir(parents=True)
    (tree / "boot" / "vmlinuz").write_bytes(b"kernel" * 1000)
    isolinux = Path("/usr/lib/ISOLINUX/isolinux.bin")
    if not isolinux.is_file():
        pytest.skip("isolinux is not installed")
    (tree / "boot" / "isolinux" / "isolinux.bin").write_bytes(isolinux.read_bytes())
    uefi: list[str] = []
    if efi:
        subprocess.run([require_tool("mformat"), "-C", "-f", "1440", "-i", str(tree / "boot" / "efi.img"), "::"],
                       check=True, capture_output=True)
        uefi = ["-eltorito-alt-boot", "-e", "boot/efi.img", "-no-emul-boot", "-isohybrid-gpt-basdat"]
    path.parent.mkdir(parents=True)
    subprocess.run([xorriso, "-report_about", "SORRY", "-as", "mkisofs", "-l", "-J", "-r", "-V", "ONLYDOCKER",
                    "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table",
                    "-b", "boot/isolinux/isolinux.bin", "-c", "boot/isolinux/boot.cat",
                    "-isohybrid-mbr", "/usr/lib/ISOLINUX/isohdpfx.bin", *uefi, "-o", str(path), str(tree)],
                   check=True, capture_output=True)


def _run_libvirt_stage(build: Path, epoch: int = EPOCH, tz: str = "UTC") -> Path:
    # The container's PATH (sfdisk and mformat's kin live in sbin) and a
    # caller's time zone, which the script must not let show.
    (build / "stage").mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-rT", str(STAGES / "libvirt" / "files"), str(build / "stage" / "files")], check=True)
    subprocess.run(["sh", str(STAGES / "libvirt" / "build.sh")],
                   env={"BUILD": str(build), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SOURCE_DATE_EPOCH": str(epoch),
                        "TZ": tz}, check=True, capture_output=True)
    return build / "out" / box.LIBVIRT_DISK


def _raw(img: Path, raw: Path) -> Path:
    qemu_img = require_tool("qemu-img")
    info = json.loads(subprocess.run([qemu_img, "info", "--output=json", str(img)], check=True,
                                     capture_output=True, text=True).stdout)
    assert info["format"] == "qcow2" and info["virtual-size"] == 40 * 1024 ** 3
    subprocess.run([qemu_img, "convert", "-f", "qcow2", "-O", "raw", str(img), str(raw)], check=True)
    return raw


def test_libvirt_disk_of_a_bios_only_lane_is_the_iso_then_an_empty_partition_and_reproducible(tmp_path):
    build = tmp_path / "build"
    iso = build / "deps" / "iso" / "onlydocker.iso"
    _fake_iso(iso, tmp_path / "tree")
    first = _run_libvirt_stage(build).read_bytes()
    assert _run_libvirt_stage(build, tz="Asia/Tokyo").read_bytes() == first
    raw = _raw(build / "out" / box.LIBVIRT_DISK, tmp_path / "raw")
    iso_bytes = iso.read_bytes()
    with open(raw, "rb") as f:
        head = f.read(len(iso_bytes))
    # The ISO, byte for byte, but for MBR partition entry 2.
    entry = slice(446 + 16, 446 + 32)
    assert not any(iso_bytes[entry])
    assert head[:entry.start] == iso_bytes[:entry.start] and head[entry.stop:] == iso_bytes[entry.stop:]
    ptype, start, count = head[entry][4], *struct.unpack("<II", head[entry][8:16])
    assert ptype == 0x83
    assert start * 512 >= len(iso_bytes) and start % 2048 == 0
    assert (start + count) * 512 == 40 * 1024 ** 3
    with open(raw, "rb") as f:
        f.seek(start * 512)
        assert f.read(1 << 20) == bytes(1 << 20)       # empty: init formats it


ESP_TYPE = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
LINUX_TYPE = "0fc63daf-8483-4772-8e79-3d69d8477de4"


def _gpt(raw: Path) -> tuple[dict, list[dict]]:
    """The GPT of `raw`, read here (not by sfdisk, which wrote it): the
    primary header and its entries with their CRCs checked, and the backup
    header at the disk's last sector agreeing."""
    import uuid
    import zlib

    def header_at(f, lba: int) -> tuple[dict, bytes]:
        f.seek(lba * 512)
        h = f.read(512)
        assert h[:8] == b"EFI PART", f"no GPT header at LBA {lba}"
        size = struct.unpack_from("<I", h, 12)[0]
        crc = struct.unpack_from("<I", h, 16)[0]
        assert zlib.crc32(h[:16] + bytes(4) + h[20:size]) == crc, f"GPT header at LBA {lba}: bad CRC"
        current, backup, first, last = struct.unpack_from("<QQQQ", h, 24)
        entries_lba, count, entry_size, entries_crc = struct.unpack_from("<QIII", h, 72)
        f.seek(entries_lba * 512)
        table = f.read(count * entry_size)
        assert zlib.crc32(table) == entries_crc, f"GPT entries at LBA {entries_lba}: bad CRC"
        return {"current": current, "backup": backup, "first": first, "last": last,
                "disk_guid": str(uuid.UUID(bytes_le=h[56:72])), "entry_size": entry_size}, table

    with open(raw, "rb") as f:
        head, table = header_at(f, 1)
        f.seek(0, 2)
        end = f.tell() // 512 - 1
        assert head["current"] == 1 and head["backup"] == end, head
        backup, backup_table = header_at(f, end)
        assert backup_table == table and backup["disk_guid"] == head["disk_guid"]
    parts = []
    for i in range(0, len(table), head["entry_size"]):
        e = table[i:i + head["entry_size"]]
        if any(e[:16]):
            first, last, attrs = struct.unpack_from("<QQQ", e, 32)
            parts.append({"type": str(uuid.UUID(bytes_le=e[:16])), "guid": str(uuid.UUID(bytes_le=e[16:32])),
                          "first": first, "last": last, "attrs": attrs,
                          "name": e[56:128].decode("utf-16-le").rstrip("\0")})
    return head, parts


def _uefi_lane_build(build: Path, tree: Path) -> dict[str, bytes]:
    """deps/ as a UEFI lane's stages leave them: the ISO with its EFI
    partition, onlydocker.efi, the kernel and the initrd (small fakes)."""
    _fake_iso(build / "deps" / "iso" / "onlydocker.iso", tree, efi=True)
    files = {"iso/onlydocker.efi": b"MZ unified kernel image" * 4000, "kernel/bzImage": b"kernel" * 30000,
             "initrd/initrd.img": b"initrd" * 50000}
    for name, data in files.items():
        (build / "deps" / name).parent.mkdir(parents=True, exist_ok=True)
        (build / "deps" / name).write_bytes(data)
    return files


def test_libvirt_disk_of_a_uefi_lane_is_gpt_with_an_esp_for_both_firmwares_and_reproducible(tmp_path):
    build = tmp_path / "build"
    files = _uefi_lane_build(build, tmp_path / "tree")
    first = _run_libvirt_stage(build).read_bytes()
    time.sleep(2.1)     # FAT dates have 2 s steps: a clock that showed would show here
    assert _run_libvirt_stage(build, tz="America/New_York").read_bytes() == first
    raw = _raw(build / "out" / box.LIBVIRT_DISK, tmp_path / "raw")
    head, parts = _gpt(raw)
    mbr = raw.open("rb").read(512)
    # The protective MBR (one 0xEE entry over the disk, not active) with
    # SYSLINUX's GPT boot code, which starts the "legacy BIOS bootable" one.
    assert mbr[510:512] == b"\x55\xaa" and mbr[446 + 4] == 0xEE and mbr[446] == 0 and not any(mbr[462:510])
    assert mbr[:440] == Path("/usr/lib/SYSLINUX/gptmbr.bin").read_bytes()[:440]
    esp, data = parts
    assert esp["type"] == ESP_TYPE and esp["attrs"] & (1 << 2) and esp["first"] == 2048
    assert data["type"] == LINUX_TYPE and data["name"] == "DOCKER"
    assert data["first"] == esp["last"] + 1 and data["first"] % 2048 == 0
    assert (head["last"] - data["last"]) * 512 < (1 << 20)        # to the end of the disk
    with open(raw, "rb") as f:
        f.seek(data["first"] * 512)
        assert f.read(1 << 20) == bytes(1 << 20)                  # empty: init formats it
    # The EFI system partition: the UKI where UEFI looks, and SYSLINUX
    # with the kernel, initrd and the ISO's menu for BIOS (read by mtools).
    image = f"{raw}@@{esp['first'] * 512}"
    env = {"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"}

    def mtype(name: str) -> bytes:
        return subprocess.run([require_tool("mtype"), "-i", image, f"::{name}"], env=env, check=True,
                              capture_output=True).stdout

    assert mtype("/EFI/BOOT/BOOTX64.EFI") == files["iso/onlydocker.efi"]
    assert mtype("/boot/vmlinuz") == files["kernel/bzImage"] and mtype("/boot/initrd") == files["initrd/initrd.img"]
    assert mtype("/boot/syslinux/syslinux.cfg") == (STAGES / "libvirt" / "files" / "syslinux.cfg").read_bytes()
    assert mtype("/boot/syslinux/ldlinux.sys")[:4] and mtype("/boot/syslinux/ldlinux.c32")
    label = subprocess.run([require_tool("mlabel"), "-i", image, "-s", "::"], env=env, check=True,
                           capture_output=True, text=True).stdout
    with open(raw, "rb") as f:
        f.seek(esp["first"] * 512)
        boot_sector = f.read(512)
    # FAT32's boot sector: its file system type at 82; SYSLINUX's code in it.
    assert "ONLYDOCKER" in label and boot_sector[82:90] == b"FAT32   " and boot_sector[3:11] == b"SYSLINUX"
    # The GUIDs are the lane's: another SOURCE_DATE_EPOCH, others; none random.
    other = _gpt(_raw(_run_libvirt_stage(build, epoch=EPOCH + 86400), tmp_path / "raw2"))
    guids = {head["disk_guid"], esp["guid"], data["guid"]}
    assert len(guids) == 3 and guids.isdisjoint({other[0]["disk_guid"], *(p["guid"] for p in other[1])})
