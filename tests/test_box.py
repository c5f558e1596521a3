"""box.py: the Vagrant box's parts, its data disk (qemu-img on the host) and
its catalog."""
from __future__ import annotations

import io
import json
import subprocess
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from onlydocker import box
from onlydocker.errors import BuildError
from tests.conftest import require_tool

EPOCH = 1686355200
NS = {"ovf": "http://schemas.dmtf.org/ovf/envelope/1", "vbox": "http://www.virtualbox.org/ovf/machine",
      "rasd": "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"}


def make_vmdk(dirpath: Path) -> Path:
    dirpath.mkdir(parents=True, exist_ok=True)
    (cmd,) = box.vmdk_commands()
    subprocess.run(cmd, cwd=dirpath, check=True, capture_output=True)
    return dirpath / box.DISK_NAME


def test_two_data_disks_are_identical_once_their_cid_is_fixed(tmp_path):
    require_tool("qemu-img")
    a, b = make_vmdk(tmp_path / "a"), make_vmdk(tmp_path / "b")
    for p in (a, b):
        box.fix_vmdk_cid(p)
        assert box.vmdk_cid(p) == box.FIXED_CID
    assert a.read_bytes() == b.read_bytes()
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(a)], capture_output=True,
                                     text=True, check=True).stdout)
    assert info["format"] == "vmdk" and info["virtual-size"] == 40 * 1024 ** 3
    assert info["format-specific"]["data"]["create-type"] == "streamOptimized"
    subprocess.run(["qemu-img", "check", str(a)], check=True, capture_output=True)
    assert a.stat().st_size < 8 * 1024 ** 2     # sparse: a few MB for 40 GB


def test_a_short_cid_is_fixed_without_moving_anything(tmp_path):
    # qemu-img prints the CID unpadded: 1 to 8 digits.
    require_tool("qemu-img")
    a, b = make_vmdk(tmp_path / "a"), make_vmdk(tmp_path / "b")
    box.fix_vmdk_cid(a, cid="5")
    assert box.vmdk_cid(a) == "5"
    box.fix_vmdk_cid(b)
    subprocess.run(["qemu-img", "check", str(a)], check=True, capture_output=True)
    box.fix_vmdk_cid(a)
    assert a.read_bytes() == b.read_bytes()


def test_not_a_vmdk_is_refused(tmp_path):
    (tmp_path / "x.vmdk").write_bytes(b"\0" * 1024)
    with pytest.raises(BuildError, match="not a sparse VMDK"):
        box.fix_vmdk_cid(tmp_path / "x.vmdk")


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


def test_vagrantfile_mounts_the_iso_before_boot_and_keeps_the_mac():
    vf = box.vagrantfile("onlydocker.iso")
    assert f'config.vm.base_mac = "{box.MAC}"' in vf
    assert 'vb.customize "pre-boot", ["storageattach", :id, "--storagectl", "IDE Controller"' in vf
    assert 'File.expand_path("../onlydocker.iso", __FILE__)' in vf
    assert 'config.ssh.username = "root"' in vf and "disabled: true" in vf
    with pytest.raises(ValueError):
        box.vagrantfile('x".iso')
    ruby = require_tool_or_none("ruby")
    if ruby:
        r = subprocess.run([ruby, "-c", "-e", vf], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr


def require_tool_or_none(name: str):
    import shutil
    return shutil.which(name)


def test_the_box_is_a_stable_tar_of_its_parts(tmp_path):
    parts = {"metadata.json": box.metadata_json(), "Vagrantfile": box.vagrantfile("onlydocker.iso"),
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
    cat = json.loads(box.catalog_json("onlydocker/onlydocker-bookworm", "1.0.0", "virtualbox",
                                      "https://x.invalid/b.box", "a" * 64))
    assert cat["name"] == "onlydocker/onlydocker-bookworm"
    assert cat["versions"] == [{"version": "1.0.0", "providers": [
        {"name": "virtualbox", "url": "https://x.invalid/b.box", "checksum_type": "sha256",
         "checksum": "a" * 64}]}]
    with pytest.raises(ValueError):
        box.catalog_json("o/o", "1.0.0", "virtualbox", "https://x.invalid/b.box", "xyz")
