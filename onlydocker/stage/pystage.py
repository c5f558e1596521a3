"""The Python-stage runner: a stage's `stages/<name>/stage.py`, loaded by
path, its `build(ctx)` called with a StageContext; what it wrote to ctx.out
is packed as a tar (tarball.py)."""
from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import BuildError, OnlyDockerError
from ..progress import for_stage
from .decl import KINDS
from .paths import LanePaths
from .sources import LaneSources

if TYPE_CHECKING:
    from ..inputs.lock import Lock
    from .decl import StageDecl


@dataclass
class StageContext:
    """What a python stage's build(ctx) gets; a container stage gets the same
    things copied into /build (see docs/design.md)."""
    name: str
    out: Path
    deps: dict[str, Path]
    stage_dir: Path
    lane_dir: Path
    lane: str
    source_date_epoch: int
    sources: dict[str, Path] = field(default_factory=dict)
    lock: Lock | None = None

    @property
    def files(self) -> Path:
        """The stage's files/ folder."""
        return self.stage_dir / "files"


def load_module(stage_dir: Path) -> types.ModuleType:
    """`stage_dir`/stage.py, run as a module of its own whose name no import
    statement can spell ("onlydocker-stage:<name>"), so it clashes with
    nothing; compiled from the source, so no __pycache__ lands in the stage
    folder."""
    path = stage_dir / KINDS["python"]
    module = types.ModuleType(f"onlydocker-stage:{stage_dir.name}")
    module.__file__ = str(path)
    try:
        exec(compile(path.read_bytes(), str(path), "exec"), module.__dict__)
    except OSError as e:
        raise BuildError(f"{path}: {e.strerror}") from None
    except OnlyDockerError:
        raise
    except Exception as e:       # a broken stage.py: said in one line, as any build failure
        raise BuildError(f"{path} does not load: {type(e).__name__}: {e}") from None
    return module


def load_build(stage_dir: Path) -> Callable[[StageContext], None]:
    """build() of `stage_dir`/stage.py."""
    fn = getattr(load_module(stage_dir), "build", None)
    if not callable(fn):
        raise BuildError(f"{stage_dir / KINDS['python']}: defines no build(ctx)")
    return fn


@dataclass(frozen=True)
class PythonRunner:
    lock: Lock
    paths: LanePaths
    sources: LaneSources

    def build(self, decl: StageDecl, tmp: Path, raw_tar: Path) -> None:
        """Call the stage's build(ctx) with ctx.out under `tmp`; the result as
        a tar at `raw_tar`."""
        from ..formats.tarball import write_tree
        out = tmp / "out"
        out.mkdir()
        lane = self.lock.lane
        fn = load_build(decl.dir)
        sources = {s.name: p for s, p in self.sources.verified(decl)}
        ctx = StageContext(name=decl.name, out=out, deps={n: self.paths.stage_dir(n) for n in decl.needs},
                           stage_dir=decl.dir, lane_dir=decl.lane_dir(lane.name), lane=lane.name,
                           source_date_epoch=lane.source_date_epoch, sources=sources, lock=self.lock)
        log_path = self.paths.log_path(decl.name)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with for_stage(decl.name):
                fn(ctx)
        except OnlyDockerError as e:
            log_path.write_text(f"{e}\n")
            raise BuildError(f"stage {decl.name} failed: {e}") from None
        log_path.write_text(f"stage {decl.name}: {decl.dir / KINDS['python']} build() done\n")
        with open(raw_tar, "wb") as f:
            write_tree(out, f, mtime=lane.source_date_epoch, prefix="out")
