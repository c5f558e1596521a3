"""The run record (report.py): what every task of a real doit run did, as
data: written at the end of a run that failed too."""
import json
import time
import types

from doit.cmd_base import ModuleTaskLoader
from doit.doit_cmd import DoitMain

from onlydocker.cli.report import RUN_RECORD, Reporter, read_run_record
from onlydocker.cli.tasks import RunLock, _guard
from onlydocker.errors import OnlyDockerError


def _run(tmp_path, args=("-n", "2", "--continue")) -> tuple[int, dict]:
    def slow(result, seconds=0.3):
        def fn():
            time.sleep(seconds)
            return result
        return fn

    def broken():
        raise OnlyDockerError("stage d: it broke")

    # A lock of this run's own: the lock of an earlier run in this process is still held.
    lock = RunLock(tmp_path / f".run.{len(list(tmp_path.glob('.run.*')))}.lock")

    def task_t():
        def task(name, fn, **kw):
            return {"name": name, "actions": [_guard(lock, fn, name, tmp_path / f"{name}.log")],
                    "verbosity": 0, **kw}
        yield task("fetch", slow(None))                              # an action that says nothing
        yield task("a", slow("built"), task_dep=["t:fetch"], meta={"stage_key": lambda: "a" * 64})
        yield task("b", slow("restored"), task_dep=["t:a"], meta={"stage_key": lambda: "b" * 64})
        yield task("c", slow("up-to-date", 0), meta={"stage_key": lambda: "c" * 64})
        yield task("skipped", slow("built"), uptodate=[True])      # doit skips it
        yield task("d", broken, meta={"stage_key": lambda: "d" * 64})
        yield task("e", slow("built"), task_dep=["t:d"])

    class Record(Reporter):
        out_dir = tmp_path / "out"

    module = types.ModuleType("dodo_run_record_test")
    module.task_t = task_t
    module.DOIT_CONFIG = {"dep_file": str(tmp_path / ".doit.db"), "backend": "json", "verbosity": 0,
                          "par_type": "thread", "reporter": Record}
    code = DoitMain(ModuleTaskLoader(module)).run(list(args))
    return code, read_run_record(tmp_path / "out" / RUN_RECORD)


def test_every_task_its_result_times_and_stage_key_even_when_the_run_fails(tmp_path):
    code, record = _run(tmp_path)
    assert code != 0 and record["ok"] is False
    tasks = {t["name"]: t for t in record["tasks"]}
    assert {n: t["result"] for n, t in tasks.items()} == {
        "t:fetch": "built", "t:a": "built", "t:b": "restored", "t:c": "up-to-date",
        "t:skipped": "up-to-date", "t:d": "failed", "t:e": "failed"}
    # The key where there is one: a stage that did not fail.
    assert {n: t.get("key") for n, t in tasks.items() if "key" in t} == {
        "t:a": "a" * 64, "t:b": "b" * 64, "t:c": "c" * 64}
    for t in tasks.values():
        assert 0 <= t["start"] <= t["end"] <= record["seconds"], t
    # What waits starts after what it waits on ended; the sleeps are seen.
    assert tasks["t:fetch"]["end"] <= tasks["t:a"]["start"] and tasks["t:a"]["end"] <= tasks["t:b"]["start"]
    assert tasks["t:a"]["end"] - tasks["t:a"]["start"] >= 0.3
    assert [t["name"] for t in record["tasks"]] == sorted(tasks, key=lambda n: (tasks[n]["start"], n))
    # Written whole, by rename: nothing else is left in the folder.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [RUN_RECORD]
    json.loads((tmp_path / "out" / RUN_RECORD).read_text())


def test_the_next_run_replaces_the_record(tmp_path):
    _run(tmp_path)
    code, record = _run(tmp_path, ("t:a", "t:b"))
    assert code == 0 and record["ok"] is True
    # Only this run's tasks (tasks without dependencies always run), not the earlier run's.
    assert [(t["name"], t["result"]) for t in record["tasks"]] == [
        ("t:fetch", "built"), ("t:a", "built"), ("t:b", "restored")]
