"""What the image's sources say of themselves, read once per source change:
for each source, its copyright notices (legal.copyright_text: None when the
archive states none), the sha512 of its file and, for a .deb, the sha256 of
each of its members (how the image-sbom stage traces a file of the image to
the .deb it came from). A pure function of the sources' bytes: a change of
the kernel's configuration does not scan the kernel's tarball again."""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from onlydocker.canon import readable_json
from onlydocker.publish import legal

if TYPE_CHECKING:      # only a type: the stage engine is not part of this stage's code key
    from onlydocker.stage.pystage import StageContext

OUTPUT = "source-notices.json"
EMPTY = hashlib.sha256(b"").hexdigest()


def build(ctx: StageContext) -> None:
    facts = {}
    for s in ctx.lock.sources:
        if s.name not in ctx.sources:
            continue
        path = ctx.sources[s.name]
        with open(path, "rb") as f:
            sha512 = hashlib.file_digest(f, "sha512").hexdigest()
        members = []
        if s.file.endswith((".deb", ".udeb")):
            hashes = (hashlib.sha256(data).hexdigest() for _, data in
                      legal._archive_files(path, s.file, lambda parts, m: True))
            members = [h for h in hashes if h != EMPTY]
        facts[s.name] = {"copyright": legal.copyright_text(path, s.file), "sha512": sha512,
                         "members": members}
    (ctx.out / OUTPUT).write_bytes(readable_json(facts))
