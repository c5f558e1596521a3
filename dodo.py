"""Only Docker's build: `doit` builds the lane of sources.lock (the 2015
target), `doit lock=locks/trixie.lock` (or ONLYDOCKER_LOCK=...) the default
modern one, `lock=locks/bookworm.lock` the previous one.

The task graph comes from the lock and stages/; see docs/design.md.
"""
import faulthandler
from collections.abc import Iterator
from pathlib import Path

from doit import get_var
from doit.exceptions import InvalidDodoFile

from onlydocker.cli.report import Reporter, quiet_on_closed_pipe
from onlydocker.cli.schedule import install as start_the_longest_chain_first
from onlydocker.cli.tasks import build_tasks, stage_shortcuts, workspace_from_env
from onlydocker.errors import OnlyDockerError
from onlydocker.stage.decl import load_stages
from onlydocker.stage.lanecheck import check_lane, check_secureboot

quiet_on_closed_pipe()
# A crash of the interpreter itself (a segfault in a C extension, in one of
# doit's threads) would otherwise end the run with no word: this prints
# every thread's Python stack on standard error first.
faulthandler.enable()
start_the_longest_chain_first()
try:
    settings, workspace = workspace_from_env(get_var("lock", None), root=Path(__file__).resolve().parent)
    stages = load_stages(settings.root / "stages")     # once for the run: every task reads them
    check_lane(stages, workspace.lock.lane.name, workspace.sources)
    check_secureboot(stages, workspace.lock.lane.name, settings, workspace.lock.lane.source_date_epoch,
                     workspace.out / "checked")
except OnlyDockerError as e:
    # A bad lock, setting or lane's data: doit says this one line, with no traceback.
    raise InvalidDodoFile(str(e)) from None
workspace.out.mkdir(parents=True, exist_ok=True)
Reporter.log_dir = workspace.out / "logs"
Reporter.out_dir = workspace.out     # its last-run.json

DOIT_CONFIG = {
    "default_tasks": ["build"],
    # One state database per lane, beside that lane's outputs.
    "dep_file": str(workspace.out / ".doit.db"),
    "backend": "sqlite3",
    # Stages wait on the engine: threads, not processes (see docs/design.md).
    "par_type": "thread",
    "verbosity": 2,
    # Failures in one line each, never a function's repr (onlydocker/cli/report.py).
    "reporter": Reporter,
}


def task_build() -> Iterator[dict]:
    """Build the lane: sources, builder image, stages, signed artifacts."""
    yield from build_tasks(settings, workspace, stages)


def task_stages() -> Iterator[dict]:
    """Shortcuts: one task per stage (`doit kernel`), listed by `doit list`."""
    yield from stage_shortcuts(settings, stages)
