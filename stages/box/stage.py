"""The Vagrant boxes. VirtualBox, as the original shipped it: the ISO
inside, attached as a DVD by the box's Vagrantfile, and an empty 40 GB
data disk that init formats and mounts on first boot. libvirt: box.img,
the qcow2 disk image it boots from (stages/libvirt: its empty data
partition formatted on first boot). Both carry the guest plugin (files/); the catalog template
names both (publishing adds the URLs). lanes/<lane>/lane.toml: the box's
name and version."""
from __future__ import annotations

from typing import TYPE_CHECKING

from onlydocker.formats import box as box_fmt
from onlydocker.hashing import sha256_file
from onlydocker.stage.layout import read_toml

if TYPE_CHECKING:      # only a type: the stage engine is not part of this stage's code key
    from onlydocker.stage.pystage import StageContext


def build(ctx: StageContext) -> None:
    conf = read_toml(ctx.lane_dir / "lane.toml")
    plugin = ctx.files / box_fmt.GUEST_PLUGIN
    work = ctx.out.parent / "box"
    boxes = {}
    for provider, files in (
        ("virtualbox", {"Vagrantfile": box_fmt.vagrantfile("onlydocker.iso"),
                        "box.ovf": box_fmt.box_ovf(conf["name"], ["data-disk.vmdk"], ctx.source_date_epoch),
                        "data-disk.vmdk": ctx.deps["disk"] / "data-disk.vmdk",
                        "onlydocker.iso": ctx.deps["iso"] / "onlydocker.iso"}),
        ("libvirt", {"Vagrantfile": box_fmt.libvirt_vagrantfile(),
                     box_fmt.LIBVIRT_DISK: ctx.deps["libvirt"] / box_fmt.LIBVIRT_DISK}),
    ):
        d = work / provider
        d.mkdir(parents=True)
        files = {"metadata.json": box_fmt.metadata_json(provider), box_fmt.GUEST_PLUGIN: plugin, **files}
        paths = {}
        for name, content in files.items():
            if isinstance(content, str):
                (d / name).write_text(content)
                content = d / name
            paths[name] = content
        box_name = f"onlydocker-{provider}.box"
        with open(ctx.out / box_name, "wb") as f:
            box_fmt.write_box(paths, f, mtime=ctx.source_date_epoch)
        boxes[provider] = (box_name, sha256_file(ctx.out / box_name))
    (ctx.out / box_fmt.CATALOG_TEMPLATE).write_text(
        box_fmt.catalog_template(conf["name"], conf["version"], boxes))
