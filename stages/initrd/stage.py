"""The initrd: one compressed cpio piece per needed stage, in stage.toml's
order, one after another (Linux unpacks each in turn). A stage that made
its piece already (`initrd-piece`: Docker's layer, compressed once when
Docker changes) is taken as it is; a tree (the root filesystem) is written
as cpio newc here and compressed as the lane's kernel can unpack (the
lock's lane.initrd_compression)."""
from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

from onlydocker.errors import BuildError
from onlydocker.formats import compress, cpio

if TYPE_CHECKING:      # only a type: the stage engine is not part of this stage's code key
    from pathlib import Path

    from onlydocker.stage.pystage import StageContext


def build(ctx: StageContext) -> None:
    fmt = ctx.lock.lane.initrd_compression
    check_layers(ctx)
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


def tree_of(dep: Path) -> Path:
    return dep / "tree" if (dep / "initrd-piece").is_file() else dep


def check_layers(ctx: StageContext) -> None:
    """Pieces may share directories, nothing else: Linux would not put a
    link where a directory of an earlier piece stands (lib -> usr/lib over
    lib/modules), and the image would lose files without a word."""
    seen: dict[str, tuple[str, str]] = {}
    for name, dep in ctx.deps.items():
        tree = tree_of(dep)
        for p in sorted(tree.rglob("*")):
            rel = p.relative_to(tree).as_posix()
            kind = "dir" if p.is_dir() and not p.is_symlink() else "link" if p.is_symlink() else "file"
            if rel in seen and (kind != "dir" or seen[rel][1] != "dir"):
                raise BuildError(f"stage {ctx.name}: {rel} is a {seen[rel][1]} in stage {seen[rel][0]}'s "
                                 f"layer and a {kind} in stage {name}'s: layers may share directories only")
            seen.setdefault(rel, (name, kind))
