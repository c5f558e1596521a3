"""The Vagrant boxes. VirtualBox, as the original shipped it: a tar of
metadata.json, a Vagrantfile, box.ovf and the disk, with the ISO inside and
attached as a DVD by the box's Vagrantfile. libvirt: metadata.json, a
Vagrantfile and box.img, the qcow2 disk it boots from (stages/libvirt). Both
carry the guest plugin (stages/box/files/onlydocker_guest.rb). Every id, MAC and
date is fixed, so the bytes are reproducible; the catalog that names both is
written at publishing time, from the configured base URL."""
from __future__ import annotations

import json
import re
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import BinaryIO

from ..canon import rfc3339
from ..errors import BuildError
from ..hashing import is_sha256
from .tarball import write_entries

NAMESPACE = uuid.UUID("6f6e6c79-646f-636b-6572-000000000000")   # "onlydocker"
MAC = "080027D0C4E1"          # VirtualBox's OUI, fixed
DATA_DISK_GB = 40


def fixed_uuid(name: str) -> str:
    return str(uuid.uuid5(NAMESPACE, name))


GUEST_PLUGIN = "onlydocker_guest.rb"
LIBVIRT_DISK = "box.img"
PROVIDERS = ("virtualbox", "libvirt")


def metadata_json(provider: str = "virtualbox", virtual_size_gb: int = DATA_DISK_GB) -> str:
    """The box's metadata.json; vagrant-libvirt also wants the disk's format
    and virtual size (GB)."""
    if provider == "virtualbox":
        return json.dumps({"provider": "virtualbox"}) + "\n"
    if provider == "libvirt":
        return json.dumps({"provider": "libvirt", "format": "qcow2",
                           "virtual_size": int(virtual_size_gb)}, sort_keys=True) + "\n"
    raise ValueError(f"box provider {provider!r}: expected one of {', '.join(PROVIDERS)}")


def _common_vagrantfile(header: str) -> str:
    """What both providers' Vagrantfiles say: the guest plugin shipped in the
    box, ssh as root with BusyBox's sh (Dropbear, key only: Vagrant's insecure
    key on a fresh disk, replaced by a fresh pair on the first `vagrant up`),
    no sudo (everything already runs as root), no synced folder (no guest
    additions, no NFS server here)."""
    return f'''# Only Docker: {header}
# Docker from the host, over SSH (no TCP socket):
#   vagrant ssh-config --host onlydocker >> ~/.ssh/config
#   docker -H ssh://onlydocker info
require File.expand_path("../{GUEST_PLUGIN}", __FILE__)

Vagrant.configure("2") do |config|
  config.vm.guest = :onlydocker
  config.vm.box_check_update = false
  config.ssh.username = "root"
  config.ssh.shell = "sh"
  config.ssh.sudo_command = "%c"
  config.vm.synced_folder ".", "/vagrant", disabled: true
'''


def vagrantfile(iso_name: str) -> str:
    """The VirtualBox box's own Vagrantfile: before every boot, mount the ISO
    shipped in the box in the empty DVD drive of the OVF's "IDE Controller";
    the fixed MAC of box.ovf; no guest additions."""
    if not re.fullmatch(r"[A-Za-z0-9._-]+", iso_name):
        raise ValueError(f"ISO file name {iso_name!r}: letters, digits, . _ - only")
    return _common_vagrantfile(
        f"boots the ISO shipped in this box (mounted as a DVD), with\n# an empty "
        f"{DATA_DISK_GB} GB data disk that init formats (label DOCKER) and keeps\n"
        f"# /var/lib/docker on.") + f'''  config.vm.base_mac = "{MAC}"
  config.vm.provider "virtualbox" do |vb|
    vb.check_guest_additions = false
    vb.functional_vboxsf = false
    vb.customize "pre-boot", ["storageattach", :id, "--storagectl", "IDE Controller",
                              "--port", "0", "--device", "0", "--type", "dvddrive",
                              "--medium", File.expand_path("../{iso_name}", __FILE__)]
  end
end
'''


def libvirt_vagrantfile(memory_mb: int = 1024) -> str:
    """The libvirt box's own Vagrantfile: the domain boots from box.img (the
    disk image; init formats its empty data partition), on virtio
    (/dev/vda), with enough memory for the initrd unpacked in RAM."""
    return _common_vagrantfile(
        f"boots from box.img, under BIOS or UEFI; its empty\n# data partition (to {DATA_DISK_GB} GB) "
        f"is formatted by init (label DOCKER) and keeps\n# /var/lib/docker.") + f'''  config.vm.provider "libvirt" do |lv|
    lv.memory = {int(memory_mb)}
    lv.disk_bus = "virtio"
  end
end
'''


def _vm_name(name: str) -> str:
    # A box name has a "/" (org/name); a VirtualBox machine name must not.
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "onlydocker"


# box.ovf's namespaces, declared as VirtualBox's exports declare them: the
# envelope's namespace is also the default one (the vbox:Machine's own
# elements are unprefixed) and xsi is declared unused. Names are written with
# these prefixes as plain names, not as ElementTree's {uri}name, which would
# choose its own prefixes and declare them in another order.
OVF_NAMESPACES = {
    "xmlns": "http://schemas.dmtf.org/ovf/envelope/1",
    "xmlns:ovf": "http://schemas.dmtf.org/ovf/envelope/1",
    "xmlns:rasd": "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData",
    "xmlns:vssd": "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData",
    "xmlns:xsi": "http://www.w3.org/2001/XMLSchema-instance",
    "xmlns:vbox": "http://www.virtualbox.org/ovf/machine",
}
VMDK_FORMAT = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"
OS_TYPE = "Linux26_64"


def _items(cpus: int, memory_mb: int, disks: int) -> list[dict[str, object]]:
    """The generic hardware section's Items (rasd fields): CPUs, memory, two
    IDE controllers and a SATA one, the NAT adapter, the CD-ROM on IDE
    (InstanceID 3) and the disks on SATA (InstanceID 5)."""
    def item(caption: str, **fields: object) -> dict[str, object]:
        return {"Caption": caption, "ElementName": caption, **fields}
    return [
        item(f"{cpus} virtual CPU", Description="Number of virtual CPUs", InstanceID=1, ResourceType=3,
             VirtualQuantity=cpus),
        item(f"{memory_mb} MB of memory", AllocationUnits="MegaBytes", Description="Memory Size", InstanceID=2,
             ResourceType=4, VirtualQuantity=memory_mb),
        item("ideController0", Address=0, Description="IDE Controller", InstanceID=3, ResourceSubType="PIIX4",
             ResourceType=5),
        item("ideController1", Address=1, Description="IDE Controller", InstanceID=4, ResourceSubType="PIIX4",
             ResourceType=5),
        item("sataController0", Address=0, Description="SATA Controller", InstanceID=5, ResourceSubType="AHCI",
             ResourceType=20),
        item("Ethernet adapter on 'NAT'", AutomaticAllocation="true", Connection="NAT", InstanceID=6,
             ResourceSubType="E1000", ResourceType=10),
        item("cdrom1", AddressOnParent=0, AutomaticAllocation="true", Description="CD-ROM Drive", InstanceID=7,
             Parent=3, ResourceType=15),
    ] + [item(f"disk{i + 1}", AddressOnParent=i, Description="Disk Image", HostResource=f"/disk/vmdisk{i + 1}",
              InstanceID=10 + i, Parent=5, ResourceType=17) for i in range(disks)]


def _sub(parent: ET.Element, tag: str, attrs: dict[str, object] | None = None, text: object = None) -> ET.Element:
    e = ET.SubElement(parent, tag, {k: str(v) for k, v in (attrs or {}).items()})
    if text is not None:
        e.text = str(text)
    return e


def box_ovf(name: str, disk_files: list[str], epoch: int, memory_mb: int = 1024, cpus: int = 1,
            disk_gb: int = DATA_DISK_GB) -> str:
    """The box's OVF 1.0 descriptor, as VirtualBox exports one: the generic
    hardware section, then the complete VirtualBox machine (which VirtualBox
    imports instead), with an "IDE Controller" holding an empty DVD drive at
    port 0 (the Vagrantfile mounts the ISO there) and a "SATA Controller"
    with the disks, the first being the data disk that init mounts. Ids,
    MAC and date are constants or derived from `name`, `disk_files` and
    `epoch`."""
    for f in disk_files:
        if not re.fullmatch(r"[A-Za-z0-9._-]+", f):
            raise ValueError(f"disk file name {f!r}: letters, digits, . _ - only")
    vm = _vm_name(name)
    disks = [(n, f, fixed_uuid(f"{name}/{f}")) for n, f in enumerate(disk_files, 1)]
    envelope = ET.Element("Envelope", {"ovf:version": "1.0", "xml:lang": "en-US", **OVF_NAMESPACES})
    refs = _sub(envelope, "References")
    section = _sub(envelope, "DiskSection")
    _sub(section, "Info", text="List of the virtual disks used in the package")
    for n, f, disk_uuid in disks:
        _sub(refs, "File", {"ovf:id": f"file{n}", "ovf:href": f})
        _sub(section, "Disk", {"ovf:capacity": disk_gb * 1024 ** 3, "ovf:diskId": f"vmdisk{n}",
                               "ovf:fileRef": f"file{n}", "ovf:format": VMDK_FORMAT, "vbox:uuid": disk_uuid})
    networks = _sub(envelope, "NetworkSection")
    _sub(networks, "Info", text="Logical networks used in the package")
    _sub(_sub(networks, "Network", {"ovf:name": "NAT"}), "Description", text="Logical network used by this appliance.")

    system = _sub(envelope, "VirtualSystem", {"ovf:id": vm})
    _sub(system, "Info", text="A virtual machine")
    guest = _sub(system, "OperatingSystemSection", {"ovf:id": 101})
    _sub(guest, "Info", text="The kind of installed guest operating system")
    _sub(guest, "Description", text=OS_TYPE)
    _sub(guest, "vbox:OSType", {"ovf:required": "false"}, OS_TYPE)
    hardware = _sub(system, "VirtualHardwareSection")
    _sub(hardware, "Info", text="Virtual hardware requirements for a virtual machine")
    family = _sub(hardware, "System")
    for field, value in (("ElementName", "Virtual Hardware Family"), ("InstanceID", 0),
                         ("VirtualSystemIdentifier", vm), ("VirtualSystemType", "virtualbox-2.2")):
        _sub(family, f"vssd:{field}", text=value)
    for fields in _items(cpus, memory_mb, len(disks)):
        item = _sub(hardware, "Item")
        for field in sorted(fields):            # the CIM schema's order: alphabetical
            _sub(item, f"rasd:{field}", text=fields[field])

    machine = _sub(system, "vbox:Machine", {
        "ovf:required": "false", "version": "1.16-linux", "uuid": f"{{{fixed_uuid(name)}}}", "name": vm,
        "OSType": OS_TYPE, "snapshotFolder": "Snapshots", "lastStateChange": rfc3339(epoch)})
    _sub(machine, "ovf:Info", text="Complete VirtualBox machine configuration in VirtualBox format")
    media = _sub(_sub(machine, "MediaRegistry"), "HardDisks")
    for _, f, disk_uuid in disks:
        _sub(media, "HardDisk", {"uuid": f"{{{disk_uuid}}}", "location": f, "format": "VMDK", "type": "Normal"})
    vbox_hw = _sub(machine, "Hardware")
    cpu = _sub(vbox_hw, "CPU", {"count": cpus})
    for feature, enabled in (("PAE", "true"), ("LongMode", "true"), ("HardwareVirtExLargePages", "false")):
        _sub(cpu, feature, {"enabled": enabled})
    _sub(vbox_hw, "Memory", {"RAMSize": memory_mb})
    boot = _sub(vbox_hw, "Boot")
    for position, device in enumerate(("DVD", "HardDisk", "None", "None"), 1):
        _sub(boot, "Order", {"position": position, "device": device})
    _sub(_sub(vbox_hw, "BIOS"), "IOAPIC", {"enabled": "true"})
    adapter = _sub(_sub(vbox_hw, "Network"), "Adapter",
                   {"slot": 0, "enabled": "true", "MACAddress": MAC, "type": "82540EM"})
    _sub(adapter, "NAT")
    _sub(vbox_hw, "RTC", {"localOrUTC": "UTC"})
    controllers = _sub(machine, "StorageControllers")
    ide = _sub(controllers, "StorageController", {"name": "IDE Controller", "type": "PIIX4", "PortCount": 2,
                                                  "useHostIOCache": "true", "Bootable": "true"})
    _sub(ide, "AttachedDevice", {"passthrough": "false", "type": "DVD", "hotpluggable": "false", "port": 0,
                                 "device": 0})
    sata = _sub(controllers, "StorageController", {"name": "SATA Controller", "type": "AHCI",
                                                   "PortCount": max(1, len(disks)), "useHostIOCache": "false",
                                                   "Bootable": "true"})
    for n, _, disk_uuid in disks:
        attached = _sub(sata, "AttachedDevice", {"type": "HardDisk", "hotpluggable": "false", "port": n - 1,
                                                 "device": 0})
        _sub(attached, "Image", {"uuid": f"{{{disk_uuid}}}"})

    ET.indent(envelope, space="  ")
    # ElementTree closes an empty element with " />", VirtualBox's exports
    # (and the bytes we ship) with "/>"; it escapes ">" in every text and
    # attribute, so " />" stands nowhere else.
    return '<?xml version="1.0"?>\n' + ET.tostring(envelope, encoding="unicode").replace(" />", "/>") + "\n"


def write_box(files: dict[str, Path], out: BinaryIO, mtime: int) -> None:
    """The .box: a deterministic tar (tarball.py) of `files` (name in the box
    -> file), every member 0644 at `mtime`."""
    for name in files:
        if "/" in name or name in ("", ".", ".."):
            raise ValueError(f"box member {name!r}: a plain file name")
    write_entries([(name, "file", 0o644, Path(path)) for name, path in files.items()], out, mtime)


def catalog_json(name: str, version: str, providers: list[tuple[str, str, str]]) -> str:
    """Vagrant's box metadata (catalog) format, for `vagrant box add <catalog.json>`:
    one version; for each provider (name, URL, sha256) its URL and the box's sha256."""
    if not re.fullmatch(r"[A-Za-z0-9._-]+/[A-Za-z0-9._-]+", name):
        raise ValueError(f"box catalog: name {name!r} is not org/name")
    entries = []
    for provider, url, sha256 in providers:
        if provider not in PROVIDERS:
            raise ValueError(f"box catalog {name!r}: provider {provider!r} is not one of {', '.join(PROVIDERS)}")
        if not is_sha256(sha256):
            raise ValueError(f"box catalog {name!r}: checksum {sha256!r} is not a sha256 (64 lower-case hex)")
        entries.append({"name": provider, "url": url, "checksum_type": "sha256", "checksum": sha256})
    return json.dumps({
        "name": name,
        "description": "Only Docker: a kernel, BusyBox and the Docker daemon as PID 1",
        "versions": [{"version": version, "providers": entries}],
    }, indent=2, sort_keys=True) + "\n"


# --- the catalog, at publishing time -----------------------------------------
# The box stage writes CATALOG_TEMPLATE (name, version, each provider's box
# file and sha256) among its outputs; publishing turns it into CATALOG with
# URLs under the configured base URL (ONLYDOCKER_BOX_BASE_URL), so changing
# where boxes are published rebuilds no box.

CATALOG_TEMPLATE = "catalog-template.json"
CATALOG = "onlydocker.json"


def catalog_template(name: str, version: str, boxes: dict[str, tuple[str, str]]) -> str:
    """boxes: provider -> (box file name, sha256)."""
    return json.dumps({"name": name, "version": version,
                       "providers": [{"name": p, "file": f, "sha256": h} for p, (f, h) in sorted(boxes.items())]},
                      indent=2, sort_keys=True) + "\n"


def catalog_from_template(template_path: Path, base_url: str, lane: str) -> str:
    """The catalog for boxes published at <base_url>/<lane>/<box file>."""
    try:
        t = json.loads(Path(template_path).read_text())
        providers = [(p["name"], f"{base_url.rstrip('/')}/{lane}/{p['file']}", p["sha256"]) for p in t["providers"]]
        return catalog_json(t["name"], t["version"], providers)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BuildError(f"{template_path}: not a box catalog template ({e})") from None
