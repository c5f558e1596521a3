"""What a user sees when something fails: one line, once.

A task action of ours prints its own error (`error: <stage>: <cause>`) and
returns `Reported`; the reporter then adds nothing. An unexpected exception
in our code is caught by the same action, its traceback written to the
stage's log, and named in one line with the log's path. Failures that doit
itself detects (a task not run because another failed, an error in doit's
own checks) also get one line, never a function's repr; a traceback goes to
out/<lane>/logs/doit.log. A closed pipe (`doit list | head`) ends the
command quietly, as `git log | head` does.

What a run did is also written as data, for tests and benchmarks (never
scraped from the wording above): at the end of every doit run, failed or not,
the reporter writes `out/<lane>/last-run.json` (atomically):

    {"ok": true, "seconds": 12.3,
     "tasks": [{"name": "build:busybox", "result": "built", "start": 0.41,
                "end": 11.9, "key": "<the stage key>"}, ...]}

one entry for every task doit ran or checked, by start: `result` is "built"
(doit ran it and it made its outputs: a stage built, a source fetched,
dist published), "restored" (a stage taken from the cache), "up-to-date"
(doit skipped it, or the stage found its outputs already in out/) or
"failed" (including "not run because a task it needs failed"); `start`
and `end` are seconds on the monotonic clock since doit began running
tasks; `key` is a stage's key as its manifest in out/ holds it (not for
failed stages, nor for tasks that are not stages); `engine` is the Docker
engine a container stage's container ran on (as ONLYDOCKER_ENGINES names it;
engine/pool.py), when doit built it in this run.
"""
from __future__ import annotations

import json
import signal
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from doit.exceptions import BaseFail, TaskFailed, UnmetDependency
from doit.reporter import ConsoleReporter

from .. import atomic, log
from ..errors import OnlyDockerError

# What our actions may return (a stage's `Workspace.run`); any other
# successful task counts as "built".
RESULTS = ("built", "restored", "up-to-date")
RUN_RECORD = "last-run.json"


class Reported(TaskFailed):
    """A failure whose message the user has already seen."""


def quiet_on_closed_pipe() -> None:
    """Die silently on SIGPIPE, like any Unix filter, instead of a BrokenPipeError traceback."""
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)


def run_reporting(what: str, fn: Callable[[], None], log_path: Path | None) -> Reported | None:
    """Run `fn`; turn any failure into one printed line and a `Reported`."""
    try:
        fn()
    except OnlyDockerError as e:
        log.error(str(e))
        return Reported(str(e))
    except Exception as e:   # our bug or the machine's: the user still gets one line
        where = _write_traceback(log_path)
        log.error(f"{what}: unexpected {type(e).__name__}: {e} (traceback in {where})")
        return Reported(f"{what}: {type(e).__name__}: {e}")
    return None


def _write_traceback(log_path: Path | None) -> str:
    text = traceback.format_exc()
    if log_path is None:
        return "stderr:\n" + text
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a") as f:
            f.write("\n--- unexpected error (traceback) ---\n" + text)
    except OSError:
        return "stderr (the log could not be written):\n" + text
    return str(log_path)


class Reporter(ConsoleReporter):
    """doit's console reporter, with failures said in one line, and the run
    record (see above). `log_dir` and `out_dir` are set by dodo.py to the
    lane's logs folder and the lane's out/ folder. A task's meta "stage_key",
    when given, is a function that reads the stage's key from out/; its meta
    "engine", the engine its container ran on (None if none did)."""
    log_dir: Path | None = None
    out_dir: Path | None = None

    def __init__(self, outstream, options):
        super().__init__(outstream, options)
        self._t0 = time.monotonic()
        self._mutex = threading.Lock()      # `doit -n N` reports from its threads
        self._tasks: dict[str, dict] = {}
        self._objects: dict = {}

    def _note(self, task, result: str | None = None) -> None:
        """The task starts now (its first note), or ends now with `result`."""
        if not task.actions:      # a group task (`build`): its members are in the record
            return
        now = round(time.monotonic() - self._t0, 3)
        with self._mutex:
            entry = self._tasks.setdefault(task.name, {"name": task.name, "start": now})
            self._objects[task.name] = task
            if result is not None:
                entry.update(result=result, end=now)

    def execute_task(self, task):
        self._note(task)
        super().execute_task(task)

    def add_success(self, task):
        self._note(task, task.result if task.result in RESULTS else "built")
        super().add_success(task)

    def skip_uptodate(self, task):
        self._note(task, "up-to-date")
        super().skip_uptodate(task)

    def add_failure(self, task, fail):
        self._note(task, "failed")
        super().add_failure(task, fail)

    def complete_run(self):
        super().complete_run()
        if self.out_dir is not None:
            write_run_record(self.out_dir / RUN_RECORD, self.run_record())

    def run_record(self) -> dict:
        with self._mutex:
            tasks = [dict(t) for t in self._tasks.values() if "result" in t]
        for t in tasks:
            meta = self._objects[t["name"]].meta or {}
            ran_on = meta["engine"]() if meta.get("engine") else None
            if ran_on:
                t["engine"] = ran_on
            stage_key = meta.get("stage_key")
            if stage_key is not None and t["result"] != "failed":
                try:
                    key = stage_key()
                except (OSError, ValueError):    # out/ damaged: the task's own check says so
                    key = None
                if key:
                    t["key"] = key
        tasks.sort(key=lambda t: (t["start"], t["name"]))
        return {"ok": all(t["result"] != "failed" for t in tasks) and not self.runtime_errors,
                "seconds": round(time.monotonic() - self._t0, 3), "tasks": tasks}

    def _write_failure(self, result, write_exception=True):
        task, fail = result["task"], result["exception"]
        if isinstance(fail, Reported):
            return
        if isinstance(fail, UnmetDependency):
            self.write(f"not run: {task.name} (it needs {fail.message}, which failed)\n")
            return
        self.write(f"error: {task.name}: {self._summary(fail)}\n")

    def _summary(self, fail: BaseFail) -> str:
        first = (fail.message or fail.get_name()).strip().splitlines()[0]
        if not fail.traceback:
            return first
        cause = "".join(fail.traceback).strip().splitlines()[-1]
        where = "stderr"
        if self.log_dir is not None:
            try:
                self.log_dir.mkdir(parents=True, exist_ok=True)
                with open(self.log_dir / "doit.log", "a") as f:
                    f.write(f"--- {first} ---\n{''.join(fail.traceback)}\n")
                where = str(self.log_dir / "doit.log")
            except OSError:
                pass
        return f"{first}: {cause} (traceback in {where})"


def write_run_record(path: Path, record: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_json(path, record)
    except OSError as e:      # out/ unwritable: the run's own errors say more
        log.warning(f"could not write the run record {path}: {e}")


def read_run_record(path: Path) -> dict:
    """The record a run wrote (see the module's docstring)."""
    return json.loads(Path(path).read_text())
