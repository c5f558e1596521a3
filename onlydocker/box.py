"""The Vagrant box for VirtualBox, as the original shipped it: a tar of
metadata.json, a Vagrantfile, box.ovf and the disk, with the ISO inside and
attached as a DVD by the box's Vagrantfile. Every id, MAC and date is
fixed, so the bytes are reproducible."""
from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import BinaryIO

from .tarball import write_entries

NAMESPACE = uuid.UUID("6f6e6c79-646f-636b-6572-000000000000")   # "onlydocker"
MAC = "080027D0C4E1"          # VirtualBox's OUI, fixed
DATA_DISK_GB = 40


def fixed_uuid(name: str) -> str:
    return str(uuid.uuid5(NAMESPACE, name))


def metadata_json() -> str:
    return json.dumps({"provider": "virtualbox"}) + "\n"


def vagrantfile(iso_name: str) -> str:
    return f'''# Only Docker: boots the ISO shipped in this box (attached as a DVD), with
# an empty {DATA_DISK_GB} GB data disk that init formats (label DOCKER) and keeps
# /var/lib/docker on.
Vagrant.configure("2") do |config|
  config.vm.base_mac = "{MAC}"
  config.ssh.username = "root"
  config.ssh.shell = "sh"
  config.vm.synced_folder ".", "/vagrant", disabled: true
  config.vm.provider "virtualbox" do |vb|
    vb.check_guest_additions = false
    vb.customize ["storageattach", :id, "--storagectl", "IDE Controller", "--port", "0",
                  "--device", "0", "--type", "dvddrive",
                  "--medium", File.expand_path("../{iso_name}", __FILE__)]
    vb.customize ["modifyvm", :id, "--boot1", "dvd", "--boot2", "disk"]
  end
end
'''


def box_ovf(name: str, disk_files: list[str], epoch: int, memory_mb: int = 1024, cpus: int = 1) -> str:
    disks, refs, items = [], [], []
    for i, f in enumerate(disk_files):
        refs.append(f'    <File ovf:id="file{i + 1}" ovf:href="{f}"/>')
        disks.append(f'    <Disk ovf:capacity="{DATA_DISK_GB * 1024 ** 3}" ovf:diskId="vmdisk{i + 1}" '
                     f'ovf:fileRef="file{i + 1}" ovf:format="http://www.vmware.com/interfaces/specifications/'
                     f'vmdk.html#streamOptimized" vbox:uuid="{fixed_uuid(f"{name}/{f}")}"/>')
        items.append(f'''      <Item>
        <rasd:AddressOnParent>{i}</rasd:AddressOnParent>
        <rasd:Caption>disk{i + 1}</rasd:Caption>
        <rasd:Description>Disk Image</rasd:Description>
        <rasd:ElementName>disk{i + 1}</rasd:ElementName>
        <rasd:HostResource>/disk/vmdisk{i + 1}</rasd:HostResource>
        <rasd:InstanceID>{10 + i}</rasd:InstanceID>
        <rasd:Parent>5</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>''')
    nl = "\n"
    return f'''<?xml version="1.0"?>
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
    <Network ovf:name="NAT"><Description>Logical network used by this appliance.</Description></Network>
  </NetworkSection>
  <VirtualSystem ovf:id="{name}">
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
        <vssd:VirtualSystemIdentifier>{name}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>virtualbox-2.2</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:Caption>{cpus} virtual CPU</rasd:Caption>
        <rasd:ElementName>{cpus} virtual CPU</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>{cpus}</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>MegaBytes</rasd:AllocationUnits>
        <rasd:Caption>{memory_mb} MB of memory</rasd:Caption>
        <rasd:ElementName>{memory_mb} MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>{memory_mb}</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Caption>ideController0</rasd:Caption>
        <rasd:ElementName>ideController0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>PIIX4</rasd:ResourceSubType>
        <rasd:ResourceType>5</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Caption>sataController0</rasd:Caption>
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
{nl.join(items)}
    </VirtualHardwareSection>
    <vbox:Machine ovf:required="false" version="1.16-linux" uuid="{{{fixed_uuid(name)}}}" name="{name}" OSType="Linux26_64" lastStateChange="{_date(epoch)}">
      <ovf:Info>Complete VirtualBox machine configuration in VirtualBox format</ovf:Info>
      <Hardware>
        <Network><Adapter slot="0" enabled="true" MACAddress="{MAC}" type="82540EM"><NAT/></Adapter></Network>
      </Hardware>
    </vbox:Machine>
  </VirtualSystem>
</Envelope>
'''


def _date(epoch: int) -> str:
    import datetime
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_box(files: dict[str, Path], out: BinaryIO, mtime: int) -> None:
    write_entries([(name, "file", 0o644, path) for name, path in files.items()], out, mtime)


def catalog_json(name: str, version: str, provider: str, url: str, sha256: str) -> str:
    """Vagrant's box metadata (catalog) format, for `vagrant box add <catalog.json>`."""
    return json.dumps({
        "name": name,
        "description": "Only Docker: a kernel, BusyBox and the Docker daemon as PID 1",
        "versions": [{"version": version, "providers": [
            {"name": provider, "url": url, "checksum_type": "sha256", "checksum": sha256}]}],
    }, indent=2, sort_keys=True) + "\n"
