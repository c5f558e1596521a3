"""What a user sees when something fails: one line, once.

A task action of ours prints its own error (`error: <stage>: <cause>`) and
returns `Reported`; the reporter then adds nothing. An unexpected exception
in our code is caught by the same action, its traceback written to the
stage's log, and named in one line with the log's path. Failures that doit
itself detects (a task not run because another failed, an error in doit's
own checks) also get one line, never a function's repr; a traceback goes to
out/<lane>/logs/doit.log. A closed pipe (`doit list | head`) ends the
command quietly, as `git log | head` does.
"""
from __future__ import annotations

import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from doit.exceptions import BaseFail, TaskFailed, UnmetDependency
from doit.reporter import ConsoleReporter

from .errors import OnlyDockerError


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
        print(f"error: {e}", file=sys.stderr, flush=True)
        return Reported(str(e))
    except Exception as e:   # our bug or the machine's: the user still gets one line
        where = _write_traceback(log_path)
        print(f"error: {what}: unexpected {type(e).__name__}: {e} (traceback in {where})",
              file=sys.stderr, flush=True)
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
    """doit's console reporter, with failures said in one line. `log_dir`
    is set by dodo.py to the lane's logs folder."""
    log_dir: Path | None = None

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
