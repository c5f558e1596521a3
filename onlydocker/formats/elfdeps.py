"""The shared libraries a dynamic binary needs, found from its ELF headers
(PT_INTERP, DT_NEEDED, DT_RUNPATH/DT_RPATH) inside a sysroot; a static
binary needs none. A library that cannot be found fails the build, naming
the binary and the library."""
from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.segments import InterpSegment

from ..errors import BuildError

# The dynamic loader's default directories on Debian amd64 (multiarch
# first), as /etc/ld.so.conf.d and the built-in list give them.
SEARCH = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "usr/lib64", "lib", "usr/lib")


@dataclass(frozen=True)
class ElfInfo:
    interp: str | None
    needed: tuple[str, ...]
    runpath: tuple[str, ...]   # DT_RUNPATH: this object's own lookups only
    rpath: tuple[str, ...]     # DT_RPATH: also used for its dependencies (when no RUNPATH)


def read(path: Path) -> ElfInfo:
    """The dynamic-linking facts of one ELF file."""
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            interp, needed, runpath, rpath = None, [], [], []
            for seg in elf.iter_segments():
                if seg.header.p_type == "PT_INTERP" and isinstance(seg, InterpSegment):   # (pyelftools' class of one)
                    interp = seg.get_interp_name()
            for sec in elf.iter_sections():
                if isinstance(sec, DynamicSection):
                    for tag in sec.iter_tags():
                        # needed, runpath, rpath: attributes pyelftools sets on a tag of that kind (untyped)
                        if tag.entry.d_tag == "DT_NEEDED":
                            needed.append(tag.needed)  # type: ignore[attr-defined]
                        elif tag.entry.d_tag == "DT_RUNPATH":
                            runpath += [d for d in tag.runpath.split(":") if d]  # type: ignore[attr-defined]
                        elif tag.entry.d_tag == "DT_RPATH":
                            rpath += [d for d in tag.rpath.split(":") if d]  # type: ignore[attr-defined]
    except (ELFError, OSError) as e:
        raise BuildError(f"{path}: not a readable ELF file ({e})") from None
    return ElfInfo(interp, tuple(needed), tuple(runpath), tuple(rpath))


def resolve_in(sysroot: Path, path: str) -> Path:
    """Follow symlinks inside the sysroot, absolute ones relative to it (a
    link to /usr/bin/tini-static means the sysroot's, never the host's).
    The result may not exist."""
    rel = posixpath.normpath(path.lstrip("/")).lstrip("/")
    for _ in range(40):
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        cur = ""
        for i, part in enumerate(parts):
            cand = posixpath.join(cur, part) if cur else part
            full = sysroot / cand
            if full.is_symlink():
                target = os.readlink(full)
                base = "" if target.startswith("/") else posixpath.dirname(cand)
                rest = "/".join(parts[i + 1:])
                rel = posixpath.normpath(posixpath.join(base, target.lstrip("/"), rest)).lstrip("/")
                # ".." above the sysroot's top stays at the top, as in a chroot.
                while rel.startswith("../"):
                    rel = rel[3:]
                if rel == "..":
                    rel = "."
                break
            cur = cand
        else:
            return sysroot / rel
    raise BuildError(f"{sysroot}/{path}: too many levels of symlinks")


def _inside(sysroot: Path, real: Path) -> str:
    """`real`'s path as seen from inside the sysroot ("/usr/bin/x")."""
    try:
        return "/" + str(real.relative_to(sysroot.resolve()))
    except ValueError:
        return "/"


def closure(binary: Path, sysroot: Path) -> list[Path]:
    """The ELF interpreter and every shared library `binary` needs,
    recursively, as paths relative to the sysroot, spelt the way the loader
    looks them up (a symlink such as lib64/ld-linux-x86-64.so.2 is listed
    itself; copy it with its target). Sorted; empty for a static binary."""
    sysroot = Path(sysroot)
    found: set[str] = set()
    # (file on disk, how we got there, RPATHs inherited from the loaders above)
    todo: list[tuple[Path, str, tuple[str, ...]]] = [(Path(binary), str(binary), ())]
    seen: set[Path] = set()
    while todo:
        path, label, inherited = todo.pop()
        real = path.resolve()
        if real in seen:
            continue
        seen.add(real)
        info = read(real)
        origin = posixpath.dirname(_inside(sysroot, real))
        if info.interp:
            if not resolve_in(sysroot, info.interp).is_file():
                raise BuildError(f"{label}: its ELF interpreter {info.interp} is not in {sysroot}")
            found.add(posixpath.normpath(info.interp.lstrip("/")))

        def expand(dirs: Iterable[str], origin: str = origin) -> list[str]:
            return [d.replace("${ORIGIN}", origin).replace("$ORIGIN", origin).lstrip("/") or "."
                    for d in dirs]
        # ld.so: DT_RPATH (own, then the loaders') only when there is no DT_RUNPATH.
        rpath = () if info.runpath else tuple(expand(info.rpath)) + inherited
        dirs = list(rpath) + expand(info.runpath) + list(SEARCH)
        for lib in info.needed:
            if "/" in lib:
                candidates = [lib.lstrip("/")]
            else:
                candidates = [posixpath.normpath(posixpath.join(d, lib)) for d in dirs]
            for cand in candidates:
                target = resolve_in(sysroot, cand)
                if target.is_file():
                    found.add(cand)
                    todo.append((target, f"{label} -> {lib}", rpath))
                    break
            else:
                raise BuildError(f"{label} needs {lib}, which is not in {sysroot} "
                                 f"(searched {', '.join(dict.fromkeys(posixpath.dirname(c) for c in candidates))})")
    return [Path(p) for p in sorted(found)]


def is_static(binary: Path) -> bool:
    """No interpreter and no libraries: the file runs alone."""
    info = read(binary)
    return info.interp is None and not info.needed
