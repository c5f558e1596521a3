"""Stage declarations: `stages/<name>/stage.toml`, the folder's shape, and
the order of all stages.

Every stage folder has one shape (like Buildroot's package/ folders, checked
at load as its check-package would):

    stage.toml              the declaration
    build.sh | stage.py     a container stage's script XOR a Python stage's code
    lanes/<lane>/config     a Kconfig fragment (only with `kconfig = true`)
    lanes/<lane>/lane.toml  the lane's data
    files/...               anything the script or the code reads
"""
from __future__ import annotations

import graphlib
import hashlib
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ..canon import compact_json
from ..errors import StageError
from ..hashing import sha256_file

STAGE_KEYS = {"description", "sources", "needs", "outputs", "artifacts", "kind", "root", "cost", "kconfig", "keep",
              "lane_settings", "secureboot"}
# Keys that change no byte, left out of the stage key: `cost` orders the work,
# `kconfig` allows a folder's shape (the fragment itself is in the key), `keep`
# makes the next build faster and never different (kept.py; `doit repro` and
# the tests prove it), `lane_settings` checks a lane's lane.toml before any
# build (lanecheck.py; the lane.toml itself is in the key).
KEYLESS = {"cost", "kconfig", "keep", "lane_settings"}
# What a stage's `[lane_settings]` may say of a key of its lane.toml: its
# type; with a trailing "?", a lane may leave it out.
LANE_SETTING_TYPES = {"string", "integer", "boolean", "strings", "table", "tables"}
KINDS = {"container": "build.sh", "python": "stage.py"}     # kind -> the file that does the work
LANE_FILES = {"config", "lane.toml"}
# Python's own cache files: never a stage's (nor in its key).
IGNORED = "__pycache__"


@dataclass(frozen=True)
class StageDecl:
    name: str
    dir: Path
    description: str
    sources: tuple[str, ...]
    needs: tuple[str, ...]
    outputs: tuple[str, ...]
    kind: str = "container"
    artifacts: tuple[tuple[str, str], ...] = ()   # (output path, name in dist/)
    root: bool = False      # the build needs uid 0 in its container (none of ours does)
    cost: float = 1.0       # rough seconds on 2 cores: the longest chain starts first (schedule.py)
    kconfig: bool = False   # the tool has Kconfig: lanes/<lane>/config is a fragment
    keep: bool = False      # its build tree (/build/src) is kept for its next build (kept.py)
    # (key, type) of every setting its lanes' lane.toml may hold (lanecheck.py)
    lane_settings: tuple[tuple[str, str], ...] = ()
    # The boolean lane setting that makes it sign for Secure Boot (iso:
    # "uefi"): where it is true, the configured key and certificate are its
    # inputs (/build/secureboot/, never its outputs) and the certificate's
    # digest is in its key. None: it never signs.
    secureboot: str | None = None

    @property
    def required_outputs(self) -> tuple[str, ...]:
        """The outputs every build must make. An output written `name?` is
        made only where the lane's data asks for it (the ISO's UEFI files:
        the 2015 lane's builder has no EFI stub); its artifact is published
        when it is there."""
        return tuple(o for o in self.outputs if not o.endswith("?"))

    def optional(self, output: str) -> bool:
        return f"{output}?" in self.outputs

    def lane_dir(self, lane: str) -> Path:
        return self.dir / "lanes" / lane

    def files(self, lane: str) -> list[tuple[str, Path]]:
        """(path as seen in the container, host path) of the stage's own files:
        everything in its folder except other lanes' folders."""
        out = []
        for p in sorted(self.dir.rglob("*")):
            rel = p.relative_to(self.dir)
            if not p.is_file() or IGNORED in rel.parts:
                continue
            if rel.parts[0] == "lanes":
                if len(rel.parts) < 3 or rel.parts[1] != lane:
                    continue
                rel = Path("lane", *rel.parts[2:])
            out.append((rel.as_posix(), p))
        return out


def shape_problems(path: Path, kind: str, kconfig: bool) -> list[str]:
    """What a stage folder has that its shape does not allow, or lacks."""
    problems = []
    want = KINDS[kind]
    other = next(f for k, f in KINDS.items() if k != kind)
    if not (path / want).is_file():
        problems.append(f"missing {want} (a {kind} stage)")
    if (path / other).exists():
        problems.append(f"extra {other} (a {kind} stage has {want}, not both)")
    for p in sorted(path.iterdir()):
        if p.name in ("stage.toml", want, other, IGNORED):
            continue
        if p.name == "files" and p.is_dir():
            continue
        if p.name != "lanes" or not p.is_dir():
            problems.append(f"extra {p.name} (put it in files/)")
            continue
        for lane in sorted(p.iterdir()):
            if not lane.is_dir():
                problems.append(f"extra lanes/{lane.name} (lanes/ holds a folder per lane)")
                continue
            for f in sorted(lane.iterdir()):
                rel = f"lanes/{lane.name}/{f.name}"
                if f.name == "config" and f.is_file() and not kconfig:
                    problems.append(f"extra {rel} (a Kconfig fragment needs `kconfig = true` in stage.toml)")
                elif f.name not in LANE_FILES or not f.is_file():
                    problems.append(f"extra {rel} (a lane folder holds only config and lane.toml)")
    return problems


def load_stage(path: Path) -> StageDecl:
    toml_path = path / "stage.toml"
    try:
        data = tomllib.loads(toml_path.read_text())
    except FileNotFoundError:
        raise StageError(f"{path}: missing stage.toml (every stage folder has one)") from None
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise StageError(f"{toml_path}: {e}") from None
    unknown = set(data) - STAGE_KEYS
    if unknown:
        raise StageError(f"{toml_path}: unknown keys {sorted(unknown)}; known are {sorted(STAGE_KEYS)}")
    for key in ("description", "outputs"):
        if key not in data:
            raise StageError(f"{toml_path}: missing key {key!r}")
    kind = data.get("kind", "container")
    if kind not in KINDS:
        raise StageError(f"{toml_path}: kind {kind!r} is not one of {sorted(KINDS)}")
    root = data.get("root", False)
    if not isinstance(root, bool) or (root and kind != "container"):
        raise StageError(f"{toml_path}: root = true|false, for a container stage only")
    cost = data.get("cost", 1.0)
    if not isinstance(cost, (int, float)) or isinstance(cost, bool) or cost < 0:
        raise StageError(f"{toml_path}: cost = <seconds, a number ≥ 0>, not {cost!r}")
    kconfig = data.get("kconfig", False)
    if not isinstance(kconfig, bool):
        raise StageError(f"{toml_path}: kconfig = true|false, not {kconfig!r}")
    keep = data.get("keep", False)
    if not isinstance(keep, bool) or (keep and kind != "container"):
        raise StageError(f"{toml_path}: keep = true|false, for a container stage only, not {keep!r}")
    lane_settings = data.get("lane_settings", {})
    secureboot = data.get("secureboot")
    if secureboot is not None and (kind != "container" or not isinstance(lane_settings, dict)
                                   or lane_settings.get(secureboot) != "boolean"):
        raise StageError(f"{toml_path}: secureboot = \"<a boolean setting of [lane_settings]>\", for a container "
                         f"stage only, not {secureboot!r}")
    if not isinstance(lane_settings, dict) or any(
            not isinstance(t, str) or t.removesuffix("?") not in LANE_SETTING_TYPES for t in lane_settings.values()):
        raise StageError(f"{toml_path}: [lane_settings]: each key = one of {sorted(LANE_SETTING_TYPES)}, "
                         f"with a trailing '?' if a lane may leave it out; not {lane_settings!r}")
    problems = shape_problems(path, kind, kconfig)
    if problems:
        raise StageError(f"{path}: {'; '.join(problems)}")
    return StageDecl(
        name=path.name, dir=path, description=data["description"],
        sources=tuple(data.get("sources", ())), needs=tuple(data.get("needs", ())),
        outputs=tuple(data["outputs"]), kind=kind,
        artifacts=tuple(sorted(data.get("artifacts", {}).items())), root=root, cost=float(cost), kconfig=kconfig,
        keep=keep, lane_settings=tuple(sorted(lane_settings.items())), secureboot=secureboot)


def file_digest(rel: str, path: Path) -> str:
    """A stage file's digest for the stage key: its bytes, except that
    stage.toml's keyless keys are left out (they change no output)."""
    if rel != "stage.toml":
        return sha256_file(path)
    data = tomllib.loads(path.read_text())
    return hashlib.sha256(compact_json({k: v for k, v in data.items() if k not in KEYLESS})).hexdigest()


def load_stages(stages_dir: Path) -> dict[str, StageDecl]:
    """All stages (every folder of `stages_dir`, each of the one shape), in
    dependency order, names sorted where the order is free; refuses unknown
    needs and cycles."""
    stages = {p.name: load_stage(p) for p in sorted(stages_dir.iterdir()) if p.is_dir() and p.name != IGNORED}
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for name, decl in stages.items():
        for need in decl.needs:
            if need not in stages:
                raise StageError(f"{decl.dir / 'stage.toml'}: needs unknown stage {need!r}")
        sorter.add(name, *decl.needs)
    try:
        sorter.prepare()
    except graphlib.CycleError as e:
        raise StageError(f"stages: dependency cycle {' -> '.join(reversed(e.args[1]))}") from None
    order: list[str] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready())
        order += ready
        sorter.done(*ready)
    return {name: stages[name] for name in order}
