"""Docker's layer of the image, which seldom changes: its binaries and the
libraries they load (lanes/<lane>/lane.toml's [[install]] entries), laid
out as `tree/`, and written once as the initrd's piece `initrd-piece` (cpio
newc, compressed as the lane's kernel unpacks), so that a BusyBox or init
change never compresses it again. The initrd stage puts the pieces one
after another."""
from __future__ import annotations

from typing import TYPE_CHECKING

from onlydocker.formats import compress, cpio
from onlydocker.stage.layout import check_installs, fail, install, read_toml

if TYPE_CHECKING:      # only a type: the stage engine is not part of this stage's code key
    from pathlib import Path

    from onlydocker.stage.pystage import StageContext


def check_lane(conf_path: Path, needs: set[str]) -> dict:
    """lane.toml: only [[install]] entries, checked as the rootfs stage's are."""
    conf = read_toml(conf_path)
    for key in conf:
        if key != "install":
            fail(conf_path, f"key {key!r}", "unknown (expected install)")
    if not conf.get("install"):
        fail(conf_path, "[[install]]", "missing: a layer installs something")
    check_installs(conf_path, conf["install"], needs)
    return conf


def build(ctx: StageContext) -> None:
    conf_path = ctx.lane_dir / "lane.toml"
    conf = check_lane(conf_path, set(ctx.deps))
    tree = ctx.out / "tree"
    tree.mkdir()
    for item in conf["install"]:
        install(ctx, conf_path, item, tree)
    raw = ctx.out.parent / "layer.cpio"
    with open(raw, "wb") as f:
        cpio.write_newc(tree, f, mtime=ctx.source_date_epoch, extra_devices=())
    with open(raw, "rb") as src, open(ctx.out / "initrd-piece", "wb") as dst:
        compress.compress(src, ctx.lock.lane.initrd_compression, dst)
    raw.unlink()
