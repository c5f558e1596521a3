"""The options a Kconfig tool's source knows, and a lane's fragment checked
against them before the build starts.

A lane's `lanes/<lane>/config` (Linux, BusyBox) names options as
`CONFIG_X=...` or `# CONFIG_X is not set`. kconfig-fragment.sh, in the
container, is the last word: it fails when the resolved .config does not
hold an option. That is a minute into the kernel stage; an option its
source defines nowhere (a typo, an option a newer kernel renamed) is known
from the tarball alone, so the fetch task's check of the archive (unpack.py)
collects every symbol its Kconfig files define, and the fragment is checked
against them before any build.

A symbol is "known" when any Kconfig file of the source defines it, for any
architecture: that the option also holds on this one is kconfig-fragment's
check. Linux's Kconfig files are named Kconfig*; BusyBox's are Config.in and
Config.src, and most of its options live in `//config:` comments of its .c
files (its gen_build_files.sh makes Config.in of them).
"""
from __future__ import annotations

import posixpath
import re
from pathlib import Path

# A Kconfig entry that defines a symbol (`config X`, `menuconfig X`).
_DEFINITION = re.compile(rb"^[ \t]*(?://config:[ \t]*)?(?:menu)?config[ \t]+([A-Za-z0-9_]+)[ \t]*$", re.M)
_EMBEDDED = b"//config:"
OPTION = re.compile(r"^(?:CONFIG_([A-Za-z0-9_]+)=.*|# CONFIG_([A-Za-z0-9_]+) is not set)$")


def is_kconfig_file(member: str) -> bool:
    """Whether a source's member (its path in the tar) can define symbols."""
    base = posixpath.basename(member)
    return base.startswith("Kconfig") or base in ("Config.in", "Config.src") or base.endswith(".c")


def symbols_in(member: str, data: bytes) -> set[str]:
    """The symbols the member's text defines."""
    if posixpath.basename(member).endswith(".c"):
        if _EMBEDDED not in data:      # most .c files: one memchr-speed search, no regex
            return set()
        data = b"\n".join(line for line in data.splitlines() if line.lstrip().startswith(_EMBEDDED))
    return {m.decode() for m in _DEFINITION.findall(data)}


def fragment_options(fragment: Path) -> list[tuple[int, str]]:
    """(line number, symbol) of every option line of a fragment."""
    out = []
    for n, line in enumerate(fragment.read_text().splitlines(), 1):
        m = OPTION.match(line)
        if m:
            out.append((n, m.group(1) or m.group(2)))
    return out


def unknown_options(fragment: Path, known: set[str]) -> list[tuple[int, str]]:
    """The fragment's options that no Kconfig file of the source defines."""
    return [(n, sym) for n, sym in fragment_options(fragment) if sym not in known]
