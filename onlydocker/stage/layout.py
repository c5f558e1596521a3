"""Laying out files from needed stages' outputs in a tree, for the Python
stages that make the image's layers (stages/rootfs, stages/rootfs-docker):
`[[install]]` entries of a lane's lane.toml, checked, and installed with
exactly the libraries their ELF headers ask for (elfdeps); relative links;
a lane file read as TOML with one-line errors."""
from __future__ import annotations

import os
import posixpath
import shutil
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from ..errors import BuildError

if TYPE_CHECKING:      # only a type: the stage engine is not part of a stage's code key
    from .pystage import StageContext

INSTALL_KEYS = {"from": True, "path": True, "to": True, "sysroot": False, "links": False, "mode": False}
# An install entry with a mode is a data file (a key, a config), not a program.
DATA_MODES = {"0644": 0o644, "0600": 0o600}


def fail(conf_path: Path, where: str, problem: str) -> NoReturn:
    raise BuildError(f"{conf_path}: {where}: {problem}")


def read_toml(conf_path: Path) -> dict:
    try:
        return tomllib.loads(conf_path.read_text())
    except FileNotFoundError:
        raise BuildError(f"{conf_path}: missing (every lane needs one)") from None
    except tomllib.TOMLDecodeError as e:
        raise BuildError(f"{conf_path}: not valid TOML: {e}") from None


def check_installs(conf_path: Path, items: list, needs: set[str]) -> None:
    for i, item in enumerate(items):
        where = f"[[install]] #{i + 1}"
        for key, required in INSTALL_KEYS.items():
            if required and not isinstance(item.get(key), str):
                fail(conf_path, f"{where} field {key!r}", "missing (expected a string)")
        for key in item:
            if key not in INSTALL_KEYS:
                fail(conf_path, f"{where} field {key!r}", "unknown")
        if item["from"] not in needs:
            fail(conf_path, f"{where} field 'from'", f"stage {item['from']!r} is not in stage.toml's needs")
        for key in ("path", "to"):
            if item[key].startswith("/") or ".." in item[key].split("/"):
                fail(conf_path, f"{where} field {key!r}", f"expected a relative path, got {item[key]!r}")
        if "mode" in item and item["mode"] not in DATA_MODES:
            fail(conf_path, f"{where} field 'mode'", f"expected one of {', '.join(DATA_MODES)}, got {item['mode']!r}")
        if item.get("sysroot") and not item["path"].startswith(item["sysroot"] + "/"):
            fail(conf_path, f"{where} field 'path'", f"{item['path']!r} is not inside sysroot {item['sysroot']!r}")


def clear(dst: Path) -> None:
    if dst.is_symlink() or dst.is_file():
        dst.unlink()


def symlink(root: Path, path: str, target: str) -> None:
    dst = root / path.lstrip("/")
    dst.parent.mkdir(parents=True, exist_ok=True)
    clear(dst)
    dst.symlink_to(target)


def link_to(root: Path, path: str, binary: str) -> None:
    """A relative symlink at `path` to `binary` (both relative to the root)."""
    rel = posixpath.relpath("/" + binary.lstrip("/"), posixpath.dirname("/" + path.lstrip("/")))
    symlink(root, path, rel)


def copy_file(src: Path, dst: Path, mode: int) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    clear(dst)
    shutil.copyfile(src, dst)
    dst.chmod(mode)


def write(dst: Path, text: str, mode: int = 0o644) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(text)
    dst.chmod(mode)


def copy_chain(sysroot: Path, rel: str, root: Path) -> None:
    """Copy a sysroot path into the root at the same place, recreating every
    symlink met on the way (of the file or of a parent folder), as it is, so
    the loader finds the library under the name it asks for."""
    rel = posixpath.normpath(rel.lstrip("/"))
    for _ in range(40):
        parts = rel.split("/")
        for i in range(1, len(parts) + 1):
            cand = "/".join(parts[:i])
            src = sysroot / cand
            if src.is_symlink():
                target = os.readlink(src)
                dst = root / cand
                if not (dst.is_symlink() or dst.exists()):
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    dst.symlink_to(target)
                base = "" if target.startswith("/") else posixpath.dirname(cand)
                rel = posixpath.normpath(posixpath.join(base, target.lstrip("/"), *parts[i:])).lstrip("/")
                while rel.startswith("../"):
                    rel = rel[3:]
                break
        else:
            src = sysroot / rel
            if not src.is_file():
                raise BuildError(f"{src}: not in the sysroot {sysroot}")
            dst = root / rel
            if not (dst.is_symlink() or dst.exists()):
                copy_file(src, dst, 0o755)
            return
    raise BuildError(f"{sysroot}/{rel}: too many levels of symlinks")


def install(ctx: StageContext, conf_path: Path, item: dict, root: Path) -> None:
    # Here, not at the top: pyelftools takes 40 ms to import, and a lane's
    # check before every run (lanecheck.py) loads this module for check_installs.
    from ..formats import elfdeps
    stage, path, to = item["from"], item["path"], item["to"]
    sysroot = item.get("sysroot")
    if sysroot:
        # Links in a sysroot (docker-init -> /usr/bin/tini-static) mean
        # places in that sysroot, never on the host.
        src = elfdeps.resolve_in(ctx.deps[stage] / sysroot, path[len(sysroot) + 1:])
    else:
        src = ctx.deps[stage] / path
    if not src.is_file():
        raise BuildError(f"{conf_path}: install {path!r} to {to!r}: {stage}/{path} does not exist "
                         f"in stage {stage}'s outputs")
    if "mode" in item:
        copy_file(src, root / to, DATA_MODES[item["mode"]])
        return
    copy_file(src, root / to, 0o755)
    if not elfdeps.is_static(src):
        if not sysroot:
            raise BuildError(f"{conf_path}: install {path!r}: the binary is dynamically linked "
                             f"but the entry names no sysroot to take its libraries from")
        try:
            libs = elfdeps.closure(src, ctx.deps[stage] / sysroot)
        except BuildError as e:
            raise BuildError(f"stage {ctx.name}, {conf_path.name} install {path!r}: {e}") from None
        for lib in libs:
            copy_chain(ctx.deps[stage] / sysroot, str(lib), root)
    for link in item.get("links", []):
        link_to(root, link, to)
