"""The image the original pulled from Docker Hub at build time (DHCP and
default console), made from our own static BusyBox instead, as a
docker-load archive (lanes/<lane>/lane.toml: its file name, tags, command)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from onlydocker.formats import dockerimage
from onlydocker.stage.layout import read_toml

if TYPE_CHECKING:      # only a type: the stage engine is not part of this stage's code key
    from onlydocker.stage.pystage import StageContext


def build(ctx: StageContext) -> None:
    conf = read_toml(ctx.lane_dir / "lane.toml")
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
    script.write_bytes((ctx.files / "udhcpc.script").read_bytes())
    script.chmod(0o755)
    (root / "etc" / "group").write_text("root:x:0:\n")
    out = ctx.out / "images"
    out.mkdir()
    with open(out / conf["file"], "wb") as f:
        dockerimage.write_image_archive(root, f, tags=conf["tags"], mtime=ctx.source_date_epoch,
                                        config={"Cmd": conf.get("cmd", ["/bin/sh"])})
