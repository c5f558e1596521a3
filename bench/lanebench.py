"""Shared by bench/cold and bench/incremental: run `doit` in a throw-away
copy of the project (tests/workspace.py's), with a cache of the bench's own,
and take every task's start, end and result from the run record doit
writes (out/<lane>/last-run.json, onlydocker/cli/report.py); then find the
critical path through the stages' needs."""
from __future__ import annotations

import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests import workspace as wsmod  # noqa: E402


@dataclass
class Run:
    wall: float
    start: dict[str, float] = field(default_factory=dict)
    end: dict[str, float] = field(default_factory=dict)
    how: dict[str, str] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)      # stages only
    output: str = ""

    def seconds(self, task: str) -> float:
        return self.end.get(task, self.start.get(task, 0.0)) - self.start.get(task, 0.0)


def copy_project(dest: Path, cache: Path) -> wsmod.Workspace:
    """A copy of every tracked file at `dest`, its builds using `cache`."""
    ws = wsmod.make(dest, copy_project=True, cache=cache)
    ws.env.pop("ONLYDOCKER_STAGE_CACHE", None)
    return ws


def doit(ws: wsmod.Workspace, args: list[str]) -> Run:
    t0 = time.monotonic()
    r = ws.doit(*args, check=False, timeout=7200)
    run = Run(wall=time.monotonic() - t0, output=r.stdout + r.stderr)
    if r.returncode != 0 or r.record is None:
        sys.exit(f"doit {' '.join(args)} failed ({r.returncode}):\n{run.output[-4000:]}")
    for t in r.record["tasks"]:
        name = t["name"].removeprefix("build:")
        run.start[name], run.end[name], run.how[name] = t["start"], t["end"], t["result"]
        if "key" in t:
            run.keys[name] = t["key"]
    return run


def stage_needs(ws: wsmod.Workspace) -> dict[str, list[str]]:
    needs = {}
    for d in sorted((ws.root / "stages").iterdir()):
        decl = tomllib.loads((d / "stage.toml").read_text())
        kind = decl.get("kind", "container")
        needs[d.name] = list(decl.get("needs", [])) + (["builder"] if kind == "container" else [])
    needs["dist"] = [n for n in needs]
    needs["builder"] = []
    return needs


def critical_path(run: Run, needs: dict[str, list[str]]) -> list[str]:
    """Back from dist: each step, the need that finished last."""
    path, task = [], "dist"
    while task:
        path.append(task)
        before = [n for n in needs.get(task, []) if n in run.end]
        task = max(before, key=lambda n: run.end[n], default=None)
    return list(reversed(path))


def table(run: Run, tasks: list[str]) -> str:
    rows = [f"  {'task':<16} {'start':>8} {'end':>8} {'time':>8}  how"]
    for t in sorted(tasks, key=lambda t: run.start.get(t, 0)):
        rows.append(f"  {t:<16} {run.start.get(t, 0):8.1f} {run.end.get(t, 0):8.1f} {run.seconds(t):8.1f}"
                    f"  {run.how.get(t, '')}")
    return "\n".join(rows)
