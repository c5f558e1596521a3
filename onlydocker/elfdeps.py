"""The shared libraries a dynamic binary needs, found from its ELF headers
(PT_INTERP, DT_NEEDED, DT_RUNPATH/DT_RPATH) inside a sysroot; a static
binary needs none. A library that cannot be found fails the build, naming
the binary and the library."""
from __future__ import annotations

import os
import posixpath
from pathlib import Path

from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile

from .errors import BuildError

SEARCH = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "usr/lib64", "lib", "usr/lib")


def _read(path: Path) -> tuple[str | None, list[str], list[str]]:
    with open(path, "rb") as f:
        elf = ELFFile(f)
        interp, needed, runpath = None, [], []
        for seg in elf.iter_segments():
            if seg.header.p_type == "PT_INTERP":
                interp = seg.get_interp_name()
        for sec in elf.iter_sections():
            if isinstance(sec, DynamicSection):
                for tag in sec.iter_tags():
                    if tag.entry.d_tag == "DT_NEEDED":
                        needed.append(tag.needed)
                    elif tag.entry.d_tag in ("DT_RUNPATH", "DT_RPATH"):
                        runpath += (tag.runpath if tag.entry.d_tag == "DT_RUNPATH" else tag.rpath).split(":")
    return interp, needed, runpath


def resolve_in(sysroot: Path, path: str) -> Path:
    """Follow symlinks inside the sysroot (absolute ones are relative to it)."""
    rel = path.lstrip("/")
    for _ in range(40):
        p = sysroot / rel
        # Resolve parent folders first (lib64 may itself be a link).
        parts = Path(rel).parts
        cur = ""
        for i, part in enumerate(parts):
            cand = posixpath.join(cur, part) if cur else part
            full = sysroot / cand
            if full.is_symlink():
                target = os.readlink(full)
                base = "" if target.startswith("/") else posixpath.dirname(cand)
                rest = "/".join(parts[i + 1:])
                rel = posixpath.normpath(posixpath.join(base, target.lstrip("/"), rest)).lstrip("/")
                break
            cur = cand
        else:
            return sysroot / rel
    raise BuildError(f"{sysroot}/{path}: too many symlinks")


def closure(binary: Path, sysroot: Path) -> list[str]:
    """Paths (relative to the sysroot, as the binary will see them) of the
    interpreter and every library, recursively. Empty for a static binary."""
    sysroot = Path(sysroot)
    found: dict[str, None] = {}
    todo = [(binary, str(binary))]
    seen: set[Path] = set()
    while todo:
        path, label = todo.pop()
        real = path.resolve()
        if real in seen:
            continue
        seen.add(real)
        interp, needed, runpath = _read(real)
        if interp:
            if not resolve_in(sysroot, interp).is_file():
                raise BuildError(f"{label}: its ELF interpreter {interp} is not in {sysroot}")
            found[interp.lstrip("/")] = None
        origin = posixpath.dirname("/" + str(real.relative_to(sysroot.resolve()))) if \
            sysroot.resolve() in real.parents else "/"
        dirs = [d.replace("$ORIGIN", origin).lstrip("/") for d in runpath if d] + list(SEARCH)
        for lib in needed:
            for d in dirs:
                cand = posixpath.join(d, lib)
                target = resolve_in(sysroot, cand)
                if target.is_file():
                    found[cand] = None
                    todo.append((target, f"{label} -> {lib}"))
                    break
            else:
                raise BuildError(f"{label} needs {lib}, which is not in {sysroot} "
                                 f"(searched {', '.join(dirs)})")
    return sorted(found)


def is_static(binary: Path) -> bool:
    interp, needed, _ = _read(binary)
    return interp is None and not needed
