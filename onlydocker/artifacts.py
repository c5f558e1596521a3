"""The python stages that shape artifacts from other stages' outputs:
the bundled container image, the initrd and the Vagrant boxes. Each only
rearranges bytes, through the deterministic writers (tarball, cpio,
compress, dockerimage, box)."""
from __future__ import annotations

import shutil
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

from . import box as box_fmt
from . import compress, cpio, dockerimage
from .errors import BuildError
if TYPE_CHECKING:      # only a type: the stage engine is not part of this stage's code key
    from .stage import StageContext


def _lane_settings(ctx: StageContext, name: str) -> dict:
    path = ctx.lane_dir / name
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise BuildError(f"stage {ctx.name}: lane {ctx.lane} has no {path}") from None


def images(ctx: StageContext) -> None:
    """The image the original pulled from Docker Hub at build time (DHCP and
    default console), made from our own static BusyBox instead."""
    conf = _lane_settings(ctx, "images.toml")
    busybox = ctx.deps["busybox"]
    root = ctx.out.parent / "image-rootfs"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "busybox").write_bytes((busybox / "bin" / "busybox").read_bytes())
    (root / "bin" / "busybox").chmod(0o755)
    for link in (busybox / "bin" / "busybox.links").read_text().split():
        target = root / link.lstrip("/")
        if target.name == "busybox" or target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        depth = len(Path(link.lstrip("/")).parts) - 1
        target.symlink_to("../" * depth + "bin/busybox")
    for d in ("etc", "tmp", "root", "proc", "sys", "dev", "var/run"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    # udhcpc configures nothing without its script; run in a --net host
    # container, this one configures the host's interface.
    script = root / "usr" / "share" / "udhcpc" / "default.script"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_bytes((ctx.stage_dir / "udhcpc.script").read_bytes())
    script.chmod(0o755)
    (root / "etc" / "group").write_text("root:x:0:\n")
    out = ctx.out / "images"
    out.mkdir()
    with open(out / conf["file"], "wb") as f:
        dockerimage.write_image_archive(root, f, tags=conf["tags"], mtime=ctx.source_date_epoch,
                                        config={"Cmd": conf.get("cmd", ["/bin/sh"])})


def initrd(ctx: StageContext) -> None:
    """The initrd: one compressed cpio piece per needed stage, in stage.toml's
    order, one after another (Linux unpacks each in turn). A stage that made
    its piece already (`initrd-piece`: Docker's layer, compressed once when
    Docker changes) is taken as it is; a tree (the root filesystem) is written
    as cpio newc here and compressed as the lane's kernel can unpack (the
    lock's lane.initrd_compression)."""
    fmt = ctx.lock.lane.initrd_compression
    _check_layers(ctx)
    with open(ctx.out / "initrd.img", "wb") as dst:
        for dep in ctx.deps.values():
            piece = dep / "initrd-piece"
            if piece.is_file():
                with open(piece, "rb") as src:
                    shutil.copyfileobj(src, dst, 1 << 20)
                continue
            raw = ctx.out.parent / "piece.cpio"
            with open(raw, "wb") as f:
                cpio.write_newc(dep, f, mtime=ctx.source_date_epoch)
            with open(raw, "rb") as src:
                compress.compress(src, fmt, dst)
            raw.unlink()


def _tree_of(dep: Path) -> Path:
    return dep / "tree" if (dep / "initrd-piece").is_file() else dep


def _check_layers(ctx: StageContext) -> None:
    """Pieces may share directories, nothing else: Linux would not put a
    link where a directory of an earlier piece stands (lib -> usr/lib over
    lib/modules), and the image would lose files without a word."""
    seen: dict[str, tuple[str, str]] = {}
    for name, dep in ctx.deps.items():
        tree = _tree_of(dep)
        for p in sorted(tree.rglob("*")):
            rel = p.relative_to(tree).as_posix()
            kind = "dir" if p.is_dir() and not p.is_symlink() else "link" if p.is_symlink() else "file"
            if rel in seen and (kind != "dir" or seen[rel][1] != "dir"):
                raise BuildError(f"stage {ctx.name}: {rel} is a {seen[rel][1]} in stage {seen[rel][0]}'s "
                                 f"layer and a {kind} in stage {name}'s: layers may share directories only")
            seen.setdefault(rel, (name, kind))


def box(ctx: StageContext) -> None:
    """The Vagrant boxes. VirtualBox, as the original shipped it: the ISO
    inside, attached as a DVD by the box's Vagrantfile, and an empty 40 GB
    data disk that init formats and mounts on first boot. libvirt: box.img,
    the qcow2 disk it boots from (the ISO at its start, then an empty data
    partition). Both carry the guest plugin; the catalog template names both
    (publishing adds the URLs)."""
    from .hashing import sha256_file
    conf = _lane_settings(ctx, "box.toml")
    plugin = ctx.stage_dir / box_fmt.GUEST_PLUGIN
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
