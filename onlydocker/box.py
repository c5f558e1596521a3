"""The Vagrant boxes. VirtualBox, as the original shipped it: a tar of
metadata.json, a Vagrantfile, box.ovf and the disk, with the ISO inside and
attached as a DVD by the box's Vagrantfile. libvirt: metadata.json, a
Vagrantfile and box.img, the qcow2 disk it boots from (stages/libvirt). Both
carry the guest plugin (stages/box/onlydocker_guest.rb). Every id, MAC and
date is fixed, so the bytes are reproducible; the catalog that names both is
written at publishing time, from the configured base URL."""
from __future__ import annotations

import json
import os
import re
import struct
import uuid
from pathlib import Path
from typing import BinaryIO
from xml.sax.saxutils import escape, quoteattr

from .canon import rfc3339
from .errors import BuildError
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
    ISO at its start; init formats the empty partition after it), on virtio
    (/dev/vda), with enough memory for the initrd unpacked in RAM."""
    return _common_vagrantfile(
        f"boots from box.img: the ISO at its start, an empty\n# {DATA_DISK_GB} GB partition "
        f"after it that init formats (label DOCKER) and keeps\n# /var/lib/docker on.") + f'''  config.vm.provider "libvirt" do |lv|
    lv.memory = {int(memory_mb)}
    lv.disk_bus = "virtio"
  end
end
'''


def _vm_name(name: str) -> str:
    # A box name has a "/" (org/name); a VirtualBox machine name must not.
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "onlydocker"


def box_ovf(name: str, disk_files: list[str], epoch: int, memory_mb: int = 1024, cpus: int = 1,
            disk_gb: int = DATA_DISK_GB) -> str:
    """The box's OVF 1.0 descriptor, as VirtualBox exports one: the generic
    hardware section, then the complete VirtualBox machine (which VirtualBox
    imports instead), with an "IDE Controller" holding an empty DVD drive at
    port 0 (the Vagrantfile mounts the ISO there) and a "SATA Controller"
    with the disks, the first being the data disk that init mounts. Ids,
    MAC and date are constants or derived from `name`, `disk_files` and
    `epoch`."""
    vm = _vm_name(name)
    a = quoteattr
    capacity = disk_gb * 1024 ** 3
    refs, disks, items, attached, media = [], [], [], [], []
    for i, f in enumerate(disk_files):
        n = i + 1
        disk_uuid = fixed_uuid(f"{name}/{f}")
        refs.append(f'    <File ovf:id="file{n}" ovf:href={a(f)}/>')
        disks.append(f'    <Disk ovf:capacity="{capacity}" ovf:diskId="vmdisk{n}" ovf:fileRef="file{n}" '
                     f'ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized" '
                     f'vbox:uuid="{disk_uuid}"/>')
        items.append(f"""      <Item>
        <rasd:AddressOnParent>{i}</rasd:AddressOnParent>
        <rasd:Caption>disk{n}</rasd:Caption>
        <rasd:Description>Disk Image</rasd:Description>
        <rasd:ElementName>disk{n}</rasd:ElementName>
        <rasd:HostResource>/disk/vmdisk{n}</rasd:HostResource>
        <rasd:InstanceID>{10 + i}</rasd:InstanceID>
        <rasd:Parent>5</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>""")
        attached.append(f"""          <AttachedDevice type="HardDisk" hotpluggable="false" port="{i}" device="0">
            <Image uuid="{{{disk_uuid}}}"/>
          </AttachedDevice>""")
        media.append(f'          <HardDisk uuid="{{{disk_uuid}}}" location={a(f)} format="VMDK" type="Normal"/>')
    nl = "\n"
    return f"""<?xml version="1.0"?>
<Envelope ovf:version="1.0" xml:lang="en-US" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:vbox="http://www.virtualbox.org/ovf/machine">
  <References>
{nl.join(refs)}
  </References>
  <DiskSection>
    <Info>List of the virtual disks used in the package</Info>
{nl.join(disks)}
  </DiskSection>
  <NetworkSection>
    <Info>Logical networks used in the package</Info>
    <Network ovf:name="NAT">
      <Description>Logical network used by this appliance.</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id={a(vm)}>
    <Info>A virtual machine</Info>
    <OperatingSystemSection ovf:id="101">
      <Info>The kind of installed guest operating system</Info>
      <Description>Linux26_64</Description>
      <vbox:OSType ovf:required="false">Linux26_64</vbox:OSType>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements for a virtual machine</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>{escape(vm)}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>virtualbox-2.2</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:Caption>{cpus} virtual CPU</rasd:Caption>
        <rasd:Description>Number of virtual CPUs</rasd:Description>
        <rasd:ElementName>{cpus} virtual CPU</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>{cpus}</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>MegaBytes</rasd:AllocationUnits>
        <rasd:Caption>{memory_mb} MB of memory</rasd:Caption>
        <rasd:Description>Memory Size</rasd:Description>
        <rasd:ElementName>{memory_mb} MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>{memory_mb}</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Caption>ideController0</rasd:Caption>
        <rasd:Description>IDE Controller</rasd:Description>
        <rasd:ElementName>ideController0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>PIIX4</rasd:ResourceSubType>
        <rasd:ResourceType>5</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:Address>1</rasd:Address>
        <rasd:Caption>ideController1</rasd:Caption>
        <rasd:Description>IDE Controller</rasd:Description>
        <rasd:ElementName>ideController1</rasd:ElementName>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:ResourceSubType>PIIX4</rasd:ResourceSubType>
        <rasd:ResourceType>5</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Caption>sataController0</rasd:Caption>
        <rasd:Description>SATA Controller</rasd:Description>
        <rasd:ElementName>sataController0</rasd:ElementName>
        <rasd:InstanceID>5</rasd:InstanceID>
        <rasd:ResourceSubType>AHCI</rasd:ResourceSubType>
        <rasd:ResourceType>20</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Caption>Ethernet adapter on 'NAT'</rasd:Caption>
        <rasd:Connection>NAT</rasd:Connection>
        <rasd:ElementName>Ethernet adapter on 'NAT'</rasd:ElementName>
        <rasd:InstanceID>6</rasd:InstanceID>
        <rasd:ResourceSubType>E1000</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Caption>cdrom1</rasd:Caption>
        <rasd:Description>CD-ROM Drive</rasd:Description>
        <rasd:ElementName>cdrom1</rasd:ElementName>
        <rasd:InstanceID>7</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>15</rasd:ResourceType>
      </Item>
{nl.join(items)}
    </VirtualHardwareSection>
    <vbox:Machine ovf:required="false" version="1.16-linux" uuid="{{{fixed_uuid(name)}}}" name={a(vm)} OSType="Linux26_64" snapshotFolder="Snapshots" lastStateChange="{_date(epoch)}">
      <ovf:Info>Complete VirtualBox machine configuration in VirtualBox format</ovf:Info>
      <MediaRegistry>
        <HardDisks>
{nl.join(media)}
        </HardDisks>
      </MediaRegistry>
      <Hardware>
        <CPU count="{cpus}">
          <PAE enabled="true"/>
          <LongMode enabled="true"/>
          <HardwareVirtExLargePages enabled="false"/>
        </CPU>
        <Memory RAMSize="{memory_mb}"/>
        <Boot>
          <Order position="1" device="DVD"/>
          <Order position="2" device="HardDisk"/>
          <Order position="3" device="None"/>
          <Order position="4" device="None"/>
        </Boot>
        <BIOS>
          <IOAPIC enabled="true"/>
        </BIOS>
        <Network>
          <Adapter slot="0" enabled="true" MACAddress="{MAC}" type="82540EM">
            <NAT/>
          </Adapter>
        </Network>
        <RTC localOrUTC="UTC"/>
      </Hardware>
      <StorageControllers>
        <StorageController name="IDE Controller" type="PIIX4" PortCount="2" useHostIOCache="true" Bootable="true">
          <AttachedDevice passthrough="false" type="DVD" hotpluggable="false" port="0" device="0"/>
        </StorageController>
        <StorageController name="SATA Controller" type="AHCI" PortCount="{max(1, len(disk_files))}" useHostIOCache="false" Bootable="true">
{nl.join(attached)}
        </StorageController>
      </StorageControllers>
    </vbox:Machine>
  </VirtualSystem>
</Envelope>
"""


def _date(epoch: int) -> str:
    return rfc3339(epoch)


def write_box(files: dict[str, Path], out: BinaryIO, mtime: int) -> None:
    """The .box: a deterministic tar (tarball.py) of `files` (name in the box
    -> file), every member 0644 at `mtime`."""
    for name in files:
        if "/" in name or name in ("", ".", ".."):
            raise ValueError(f"box member {name!r}: a plain file name")
    write_entries([(name, "file", 0o644, Path(path)) for name, path in files.items()], out, mtime)


# --- the data disk -----------------------------------------------------------

DISK_NAME = "data-disk.vmdk"
FIXED_CID = "0d0c4e72"


def vmdk_commands(size_gb: int = DATA_DISK_GB, out: str = DISK_NAME) -> list[list[str]]:
    """qemu-img commands (for the builder container) making the empty,
    sparse data disk as a streamOptimized VMDK; then fix_vmdk_cid(out).
    The extent line of the descriptor holds the file's base name: keep `out`'s
    name fixed."""
    return [["qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=streamOptimized", out, f"{int(size_gb)}G"]]


def _descriptor_region(f: BinaryIO, path) -> tuple[int, int]:
    header = f.read(512)
    if len(header) < 64 or header[:4] != b"KDMV":
        raise BuildError(f"{path}: not a sparse VMDK (magic {header[:4]!r}, expected b'KDMV')")
    # SparseExtentHeader: magic, version, flags, capacity, grainSize,
    # descriptorOffset, descriptorSize (sectors).
    _version, _flags, _capacity, _grain, offset, size = struct.unpack_from("<IIQQQQ", header, 4)
    if offset == 0 or size == 0:
        raise BuildError(f"{path}: VMDK without an embedded descriptor")
    return offset * 512, size * 512


def fix_vmdk_cid(path: Path, cid: str = FIXED_CID) -> None:
    """Overwrite the random `CID=` of the VMDK's embedded descriptor with a
    constant. qemu-img writes it unpadded (1 to 8 hex digits), so the text
    is rewritten and re-padded with NULs inside its fixed-size region:
    nothing else in the file moves."""
    if not re.fullmatch(r"[0-9a-f]{1,8}", cid):
        raise ValueError(f"CID {cid!r}: 1 to 8 lower-case hex digits")
    with open(path, "r+b") as f:
        offset, size = _descriptor_region(f, path)
        f.seek(offset)
        region = f.read(size)
        text, nul, _ = region.partition(b"\0")
        new, n = re.subn(rb"(?m)^CID=[0-9a-fA-F]{1,8}$", b"CID=" + cid.encode(), text)
        if n != 1:
            raise BuildError(f"{path}: expected one CID= line in the VMDK descriptor, found {n}")
        if len(new) > size:
            raise BuildError(f"{path}: the descriptor outgrows its {size}-byte region")
        f.seek(offset)
        f.write(new + b"\0" * (size - len(new)))
        f.flush()
        os.fsync(f.fileno())


def vmdk_cid(path: Path) -> str:
    """The CID of a VMDK's embedded descriptor."""
    with open(path, "rb") as f:
        offset, size = _descriptor_region(f, path)
        f.seek(offset)
        text = f.read(size).partition(b"\0")[0]
    m = re.search(rb"(?m)^CID=([0-9a-fA-F]+)$", text)
    if not m:
        raise BuildError(f"{path}: no CID= line in the VMDK descriptor")
    return m.group(1).decode()


def catalog_json(name: str, version: str, providers: list[tuple[str, str, str]]) -> str:
    """Vagrant's box metadata (catalog) format, for `vagrant box add <catalog.json>`:
    one version; for each provider (name, URL, sha256) its URL and the box's sha256."""
    if not re.fullmatch(r"[A-Za-z0-9._-]+/[A-Za-z0-9._-]+", name):
        raise ValueError(f"box catalog: name {name!r} is not org/name")
    entries = []
    for provider, url, sha256 in providers:
        if provider not in PROVIDERS:
            raise ValueError(f"box catalog {name!r}: provider {provider!r} is not one of {', '.join(PROVIDERS)}")
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
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
