"""The doit task graph: fetch every source, make the builder image, build or
restore every stage, then publish and sign the artifacts.

dodo.py only calls `build_tasks`; everything here is importable and
testable without doit's command line.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import threading
from pathlib import Path

from .. import atomic
from .. import config as config_mod
from ..cache.store import StageStore
from ..engine import pool as engines
from ..errors import OnlyDockerError
from ..inputs import lock as lock_mod
from ..inputs.fetch import Fetcher
from ..stage import lanecheck
from ..stage.build import Workspace
from ..stage.decl import load_stages
from .report import RESULTS, run_reporting


class RunLock:
    """One doit run per lane and tree at a time: a second one gets a clear
    message instead of two builds writing the same out/ folder."""

    def __init__(self, path: Path, on_acquire=None):
        self.path = path
        self.on_acquire = on_acquire
        self._fd: int | None = None
        self._mutex = threading.Lock()

    def acquire(self) -> None:
        with self._mutex:
            if self._fd is not None:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                other = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise OnlyDockerError(
                    f"another doit run (pid {other}) is building in {self.path.parent}; "
                    f"wait for it to finish (the lock is {self.path})") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            self._fd = fd
            if self.on_acquire:
                self.on_acquire()


def workspace_from_env(lock_path: str | None = None, root: Path | None = None) -> tuple[config_mod.Settings, Workspace]:
    settings = config_mod.load(lock=lock_path, root=root or config_mod.PROJECT_ROOT)
    engines.parse_all(settings.engines)       # a bad entry is said before anything runs
    # Valid license expressions are remembered in the tree's own out/ (not
    # the shared cache: whoever can write that must not vouch for them).
    lock = lock_mod.load(settings.lock_path, licenses_memo=settings.out_root / ".licenses.json")
    remote = None
    if settings.remote is not None:
        from ..cache import remote as remote_mod  # requests and cryptography: only when one is set
        remote = remote_mod.from_settings(settings)
    ws = Workspace(root=settings.root, out=settings.out_root / lock.lane.name,
                   store=StageStore(settings.stage_cache, remote), lock=lock,
                   fetcher=Fetcher(settings, remote=remote),
                   variation=settings.variation, rebuild=settings.rebuild,
                   clean=settings.clean)
    return settings, ws


def _guard(run_lock: RunLock, fn, what: str, log_path: Path):
    """A doit python-action: take the run lock, then run `fn`; a failure is
    said in one line (see report.py), an unexpected one with its traceback
    appended to `log_path`. What `fn` returns, when it is one of
    report.RESULTS (a stage's "built", "restored", "up-to-date"), becomes
    the task's result, which the reporter writes to the run record."""
    def action():
        returned = []

        def body():
            run_lock.acquire()
            returned.append(fn())
        failed = run_reporting(what, body, log_path)
        if failed is not None:
            return failed
        return returned[0] if returned[0] in RESULTS else None
    action.__name__ = getattr(fn, "__name__", "action")
    return action


def _unless_failing(check):
    """An up-to-date check that fails says "not up to date": the task's
    action then meets the same cause and reports it in one line (doit
    would end the whole run with a traceback)."""
    def uptodate():
        try:
            return bool(check())
        except Exception:
            return False
    return uptodate


def _once(fn):
    """`fn()`'s value, computed by the first caller (doit's threads share it)."""
    mutex = threading.Lock()
    value: list = []

    def get():
        with mutex:
            if not value:
                value.append(fn())
            return value[0]
    return get


def _run_and_record(ws: Workspace, decl) -> str:
    """Build or restore the stage, then keep its key's inputs beside its
    manifest for `doit explain` (explain.py; not part of the key)."""
    from . import explain
    result = ws.run(decl)
    explain.record(ws, decl)
    return result


def _recorded(ws: Workspace, decl) -> bool:
    """An up-to-date stage made before its inputs were recorded gets its
    record now (its key is the current one); True whatever happens."""
    from . import explain
    if not explain.inputs_path(ws, decl.name).exists():
        try:
            explain.record(ws, decl)
        except (OSError, ValueError):
            pass
    return True


class _LaneRun:
    """What the tasks of one run of a lane share: its stages, the run lock,
    the engines, and two answers asked once a run (doit asks every task's
    up-to-date check before any stage runs, and several tasks share a
    stage): is a stage in the cache, and will it stay as out/ holds it."""

    def __init__(self, settings: config_mod.Settings, ws: Workspace, stages: dict):
        from ..builder import image as builder_mod
        self.settings, self.ws, self.stages = settings, ws, stages
        # A killed run may have left half-made stage trees in tmp/: nothing there
        # ever counts (manifests are written last), and the lock says no run owns them.
        self.run_lock = RunLock(ws.out / ".run.lock",
                                on_acquire=lambda: shutil.rmtree(ws.out / "tmp", ignore_errors=True))
        self.builder_sha = _once(lambda: builder_mod.known_tar_sha256(
            ws.lock.builder, settings, ws.lock.lane.source_date_epoch, ws.store.remote))
        self.engine_pool = engines.pool(settings)
        self.users_of: dict[str, list] = {}
        for d in stages.values():
            for s in ws.sources.of(d):
                self.users_of.setdefault(s.name, []).append(d)
        self._cached: dict[str, bool] = {}
        self._settled: dict[str, bool] = {}

    def _action(self, fn, what: str, log: str):
        return _guard(self.run_lock, fn, what, self.ws.paths.log_path(log))

    def users(self, s) -> list:
        return self.users_of.get(s.name, [])

    def cached(self, d) -> bool:
        # A stage that needs others has a key that their outputs make, known
        # only once they are made: it counts as cached when every stage it
        # needs does. A guess on the side of not fetching: when it is wrong,
        # the stage builds and fetches its sources itself (sources.verified).
        if d.name not in self._cached:
            self._cached[d.name] = (all(self.cached(self.stages[n]) for n in d.needs) if d.needs
                                    else self.ws.cached(d, self.builder_sha()))
        return self._cached[d.name]

    def settled(self, d) -> bool:
        """Whether the stage will stay as out/ holds it this run: its outputs
        are there and so are those of every stage it needs (none of them runs)."""
        if d.name not in self._settled:
            self._settled[d.name] = self.ws.materialised(d) and all(self.settled(self.stages[n]) for n in d.needs)
        return self._settled[d.name]

    # --- fetch:<source> ------------------------------------------------------

    def _fetch(self, s) -> None:
        ws = self.ws
        if self.users(s) and all(self.cached(d) for d in self.users(s)):
            print(f"fetch {s.file}: not needed: every stage that uses it is in the cache", flush=True)
            return
        ws.sources.check(s, ws.fetcher.fetch(s))
        # Its Kconfig symbols are known now: a fragment that names an option
        # they lack fails here, before the stage (dodo.py checks it when the
        # source was checked in an earlier run).
        for d in self.users(s):
            lanecheck.check_fragments(d, ws.lock.lane.name, ws.sources)

    def fetch_task(self, s) -> dict:
        ws = self.ws
        return {
            "name": f"fetch:{s.name}",
            "doc": f"fetch and verify {s.file}, and check it as an archive",
            # Checked as an archive right after the fetch, off the kernel's
            # critical path (beside the builder's bootstrap).
            "actions": [self._action(lambda: self._fetch(s), f"fetch {s.file}", "fetch")],
            # Up to date when fetched and checked, or when nothing needs it:
            # every stage that uses it is settled (in out/, and so is every
            # stage it needs: none of them runs).
            "uptodate": [_unless_failing(lambda: s.pinned and (
                (ws.fetcher.cache_path(s).exists() and ws.sources.checked(s))
                or (bool(self.users(s)) and all(self.settled(d) for d in self.users(s)))))],
            "verbosity": 2,
        }

    # --- builder -------------------------------------------------------------

    def _make_builder(self) -> None:
        from ..builder import image as builder_mod
        ws = self.ws
        # mmdebstrap runs on the host; the image goes into the first engine
        # that answers, the others get it when a stage first runs there.
        first = self.engine_pool.first()
        with self.engine_pool.speaking_for(first, "builder"):
            img = builder_mod.ensure(first.client, ws.lock.builder, self.settings,
                                     ws.lock.lane.source_date_epoch, ws.paths.log_path("builder"),
                                     remote=ws.store.remote)
        record = ws.paths.builder_record
        record.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_json(record, {"tag": img.tag, "tar_sha256": img.tar_sha256,
                                   "input_key": img.input_key, "packages": img.packages})

    def _builder_uptodate(self) -> bool:
        from ..builder import image as builder_mod
        ws, settings = self.ws, self.settings
        try:
            rec = json.loads(ws.paths.builder_record.read_text())
            key = builder_mod.input_key(ws.lock.builder, settings, ws.lock.lane.source_date_epoch)
            if rec["input_key"] != key:
                return False
            # The image is needed only by a container stage that runs: when
            # none will, the engine is not asked (the no-op's largest cost).
            if all(self.settled(d) for d in self.stages.values() if d.kind == "container"):
                return True
            from ..engine import client as dockerclient
            # Several engines: the others import the cached tar, so it must be there.
            return (dockerclient.image_exists(self.engine_pool.first().client, rec["tag"])
                    and (not self.engine_pool.several
                         or builder_mod.cached_tar(settings, rec["input_key"]).exists()))
        except (OSError, ValueError, KeyError, OnlyDockerError):
            return False

    def builder_task(self) -> dict:
        from ..builder import image as builder_mod
        return {
            "name": "builder",
            "doc": f"the builder image ({self.ws.lock.builder.suite}, made with mmdebstrap)",
            "actions": [self._action(self._make_builder, "builder", "builder")],
            "uptodate": [_unless_failing(self._builder_uptodate)],
            "verbosity": 2,
            "meta": {"cost": builder_mod.COST},
        }

    # --- <stage> -------------------------------------------------------------

    def stage_task(self, decl) -> dict:
        # One decision per task: its `uptodate`, the engine's own check (see
        # docs/design.md, "When a task runs"); no file_dep or targets, so doit
        # neither hashes inputs again nor keeps a second opinion. The order is
        # task_dep: a stage after its fetches, the builder and the stages it needs.
        ws = self.ws
        task_dep = [f"build:fetch:{s.name}" for s in ws.sources.of(decl)]
        task_dep += [f"build:{n}" for n in decl.needs]
        if decl.kind == "container":
            task_dep.append("build:builder")
        return {
            "name": decl.name,
            "doc": decl.description,
            "actions": [self._action(lambda: _run_and_record(ws, decl), f"stage {decl.name}", decl.name)],
            "task_dep": task_dep,
            "uptodate": [_unless_failing(lambda: ws.materialised(decl) and _recorded(ws, decl))],
            "verbosity": 2,
            "meta": {"cost": decl.cost,
                     "stage_key": lambda: (ws.paths.read_manifest(decl.name) or {}).get("key"),
                     "engine": lambda: self.engine_pool.ran_on.get(decl.name)},
        }

    # --- dist ----------------------------------------------------------------

    def dist_task(self) -> dict:
        from ..publish import dist as dist_mod
        ws, stages, settings = self.ws, self.stages, self.settings
        return {
            "name": "dist",
            "doc": "publish the artifacts to out/<lane>/dist with SHA256SUMS, signatures and provenance",
            "actions": [self._action(lambda: dist_mod.publish(ws, stages, settings), "dist", "dist")],
            "task_dep": [f"build:{n}" for n in stages],
            "uptodate": [_unless_failing(lambda: dist_mod.is_current(ws, stages, settings))],
            "verbosity": 2,
        }


def build_tasks(settings: config_mod.Settings, ws: Workspace, stages: dict | None = None):
    """Yield doit task dicts for the lane of `ws`: a fetch per source, the
    builder, a task per stage, dist. `stages`: as load_stages gives them
    (dodo.py loads them once for the run)."""
    run = _LaneRun(settings, ws, stages if stages is not None else load_stages(settings.root / "stages"))
    for s in ws.lock.sources:
        yield run.fetch_task(s)
    yield run.builder_task()
    for decl in run.stages.values():
        yield run.stage_task(decl)
    yield run.dist_task()


# Names a shortcut task must not take: doit's own commands and ours (a task
# of that name could only be run as `doit run NAME`).
COMMAND_NAMES = frozenset({"auto", "clean", "dumpdb", "forget", "help", "ignore", "info", "list", "reset-dep",
                           "run", "strace", "tabcompletion", "build", "boot", "cache", "diff", "explain",
                           "keygen", "legal-info", "lock", "rebuild", "repro", "verify"})


def stage_shortcuts(settings: config_mod.Settings, stages: dict | None = None):
    """One top-level task per stage, and `dist`, named as the stage and
    with its one-line description: doit lists top-level tasks (the stages
    of `build` are its subtasks, listed only under `doit list --all`), and
    `doit kernel` builds the kernel and what it needs, as `doit build:kernel`
    does. They do nothing themselves (their only work is their task_dep)."""
    stages = stages if stages is not None else load_stages(settings.root / "stages")
    for decl in stages.values():
        if decl.name in COMMAND_NAMES:
            continue
        yield {"basename": decl.name, "doc": decl.description, "actions": None,
               "task_dep": [f"build:{decl.name}"]}
    if "dist" not in stages:
        yield {"basename": "dist", "doc": "the whole lane, its artifacts published to out/<lane>/dist, signed",
               "actions": None, "task_dep": ["build:dist"]}
