"""Shared by bench/cold and bench/incremental: run `doit` in a throw-away
copy of the project, with a cache of the bench's own, and time every task
from the moment doit starts it (". build:X") to the moment it says it is
done ("X: built|restored ... in N s", or the next task's start for tasks that
say nothing), then find the critical path through the stages' needs."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START = re.compile(r"^[.-] +build:(\S+)")
DONE = re.compile(r"^(\S+): (built|restored)")
BOOTSTRAPPED = re.compile(r"^builder: bootstrapped in")


@dataclass
class Run:
    wall: float
    start: dict[str, float] = field(default_factory=dict)
    end: dict[str, float] = field(default_factory=dict)
    how: dict[str, str] = field(default_factory=dict)
    output: str = ""

    def seconds(self, task: str) -> float:
        return self.end.get(task, self.start.get(task, 0.0)) - self.start.get(task, 0.0)


def copy_project(dest: Path) -> Path:
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], check=True,
                           capture_output=True).stdout.decode().split("\0")
    for f in filter(None, files):
        src = ROOT / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)
    return dest


def doit(tree: Path, cache: Path, args: list[str]) -> Run:
    env = dict(os.environ, ONLYDOCKER_CACHE=str(cache), ONLYDOCKER_OUT=str(tree / "out"), PYTHONPATH=str(tree))
    env.pop("ONLYDOCKER_STAGE_CACHE", None)
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "doit", *args], cwd=tree, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    run = Run(wall=0.0)
    lines = []

    def read():
        for line in proc.stdout:
            now = time.monotonic() - t0
            lines.append(line)
            if m := START.match(line):
                run.start[m.group(1)] = now
            elif m := DONE.match(line):
                run.end[m.group(1)] = now
                run.how[m.group(1)] = m.group(2)
            elif BOOTSTRAPPED.match(line):
                run.end["builder"] = now
    reader = threading.Thread(target=read)
    reader.start()
    code = proc.wait()
    reader.join()
    run.wall = time.monotonic() - t0
    run.output = "".join(lines)
    if code != 0:
        sys.exit(f"doit {' '.join(args)} failed ({code}):\n{run.output[-4000:]}")
    # Tasks that print no "done" line (fetches, dist) end when doit is done with them:
    # at the latest, when the run ends.
    for task in run.start:
        run.end.setdefault(task, run.wall if task == "dist" else run.start[task])
    return run


def stage_needs(tree: Path) -> dict[str, list[str]]:
    needs = {}
    for d in sorted((tree / "stages").iterdir()):
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
