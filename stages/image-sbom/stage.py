"""The SBOM of the image's own contents, in the image (as Talos keeps
/usr/share/spdx): an SPDX 2.3 document (sbom.image_document) of every
regular file of the image's other layers (the rootfs tree, Docker's layer)
and the packages they come from. A file is traced to its package by
content: the sha256 of a member of one of the docker stage's .debs names
that .deb; the sha256 of an output of an upstream stage built from source
names that stage's sources (BusyBox, the kernel, ...); else it is the
pipeline's own (init, the scripts). Each package carries its copyright
notices and the sha512 of its file, as the source-notices stage read them
from the sources: dist/'s SBOMs take them from this document. It describes
neither itself nor the artifacts that hold the image: nothing circular."""
from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

from onlydocker import __version__
from onlydocker.canon import readable_json
from onlydocker.publish import sbom
from onlydocker.stage.decl import load_stages

if TYPE_CHECKING:      # only a type: the stage engine is not part of this stage's code key
    from pathlib import Path

    from onlydocker.stage.pystage import StageContext

LAYERS = ("rootfs", "rootfs-docker")
NOTICES = "source-notices"       # the stage that read the sources (its output is not a layer)


def _tree(dep: Path) -> Path:
    return dep / "tree" if (dep / "initrd-piece").is_file() else dep


def _files(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


def _sha(path: Path, algo: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algo).hexdigest()


def build(ctx: StageContext) -> None:
    stages = load_stages(ctx.stage_dir.parent)
    by_group = {}
    for s in ctx.lock.sources:
        by_group.setdefault(s.group, []).append(s)
    stage_sources = {n: [s for g in stages[n].sources for s in by_group.get(g, [])] for n in ctx.deps}
    empty = hashlib.sha256(b"").hexdigest()
    origin: dict[str, tuple[str, ...]] = {}
    # Built from source: an output file names the stage's sources.
    for name, dep in ctx.deps.items():
        if name == NOTICES:
            continue
        tars = tuple(s.name for s in stage_sources[name] if not s.file.endswith((".deb", ".udeb")))
        if name in LAYERS or not tars:
            continue
        for p in _files(dep).values():
            origin.setdefault(_sha(p, "sha256"), tars)
    # Unpacked from a .deb: the member's hash names it (source-notices read the .debs).
    facts = json.loads((ctx.deps[NOTICES] / "source-notices.json").read_text())
    for s in ctx.lock.sources:
        if s.name in facts and s.file.endswith((".deb", ".udeb")):
            for h in facts[s.name]["members"]:
                origin[h] = (s.name,)
    files = []
    for layer in LAYERS:
        for rel, p in _files(_tree(ctx.deps[layer])).items():
            sha256 = _sha(p, "sha256")
            files.append(sbom.ImageFile(path=rel, sha256=sha256, sha1=_sha(p, "sha1"),
                                        origins=origin.get(sha256, ()) if sha256 != empty else ()))
    # The packages: every source of the stages the layers are made of.
    names = {s.name for n in ctx.deps if n != NOTICES for s in stage_sources[n]}
    sources = [s for s in ctx.lock.sources if s.name in names]
    version = "unknown"
    for line in (ctx.deps["rootfs"] / "etc" / "os-release").read_text().splitlines():
        if line.startswith("VERSION_ID="):
            version = line.split("=", 1)[1].strip('"')
    # What the sources say of themselves: copyright notices, sha512.
    notices, sha512 = {}, {}
    for s in sources:
        if s.name in facts:
            notices[s.name] = facts[s.name]["copyright"]
            sha512[s.name] = facts[s.name]["sha512"]
    doc = sbom.image_document(ctx.lane, ctx.source_date_epoch, f"onlydocker-{__version__}", version, sources,
                              ctx.lock.builder.suite, tuple(files), copyrights=notices, sha512=sha512)
    out = ctx.out / sbom.IMAGE_PATH
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(readable_json(doc))
