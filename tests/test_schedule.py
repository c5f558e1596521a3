"""`doit -n N` starts the ready task with the heaviest chain after it first
(onlydocker/cli/schedule.py), for real doit runs."""
import subprocess
import sys
import time
import types
from pathlib import Path

from doit.cmd_base import ModuleTaskLoader
from doit.doit_cmd import DoitMain

from onlydocker.cli import schedule


def _run(tmp_path, tasks: dict, args=("-n", "1"), seconds=None) -> list[str]:
    """Run doit over `tasks` (name -> (cost, task_dep)) and return the
    order their actions started in; an action lasts `seconds[name]`."""
    seconds = seconds or {}
    ran = tmp_path / "ran"
    ran.write_text("")

    def task_t():
        for name, (cost, deps) in tasks.items():
            def action(n=name):
                with ran.open("a") as f:
                    f.write(n + "\n")
                time.sleep(seconds.get(n, 0))
            yield {"name": name, "actions": [action],
                   "task_dep": [f"t:{d}" for d in deps], "meta": {"cost": cost}, "verbosity": 0}

    module = types.ModuleType("dodo_schedule_test")
    module.task_t = task_t
    module.DOIT_CONFIG = {"dep_file": str(tmp_path / ".doit.db"), "backend": "json", "verbosity": 0,
                          "par_type": "thread"}
    assert DoitMain(ModuleTaskLoader(module)).run(list(args)) == 0
    return ran.read_text().split()


def test_weights_are_a_cost_plus_the_heaviest_chain_that_waits_on_it():
    class T:
        def __init__(self, cost, deps=(), file_dep=()):
            self.meta, self.task_dep, self.setup_tasks, self.file_dep = {"cost": cost}, list(deps), [], set(file_dep)

    tasks = {"builder": T(60), "fetch": T(1), "kernel": T(340, ["builder", "fetch"]),
             "busybox": T(40, ["builder"]), "rootfs": T(1, file_dep=["kernel.json", "busybox.json"]),
             "dist": T(7, file_dep=["rootfs.json"])}
    targets = {"kernel.json": "kernel", "busybox.json": "busybox", "rootfs.json": "rootfs"}
    w = schedule.weights(tasks, targets)
    assert w == {"dist": 7, "rootfs": 8, "kernel": 348, "busybox": 48, "builder": 408, "fetch": 349}


def test_plain_doit_runs_in_definition_order_and_ours_runs_the_heaviest_first(tmp_path):
    tasks = {"small": (1, []), "medium": (40, []), "kernel": (340, [])}
    saved = schedule.control.TaskControl.task_dispatcher
    try:
        plain = _run(tmp_path, tasks)
        schedule.install()
        ours = _run(tmp_path, tasks, ("-n", "1", "--always-execute"))
    finally:
        schedule.control.TaskControl.task_dispatcher = saved
    assert plain == ["small", "medium", "kernel"]
    assert ours == ["kernel", "medium", "small"]


def test_a_dependency_of_the_heaviest_task_runs_before_everything_else(tmp_path):
    # The kernel's fetch is defined last and costs nothing, but it is on the
    # kernel's chain: it goes first, the kernel next, with two threads too.
    tasks = {"busybox": (40, []), "iptables": (25, []), "fetch-linux": (1, []),
             "kernel": (340, ["fetch-linux"])}
    saved = schedule.control.TaskControl.task_dispatcher
    try:
        schedule.install()
        order = _run(tmp_path, tasks)
        # BusyBox lasts long enough that the fetch ends first and frees its
        # thread while iptables and the kernel are both ready.
        two = _run(tmp_path, tasks, ("-n", "2", "-P", "thread", "--always-execute"), {"busybox": 1.0})
    finally:
        schedule.control.TaskControl.task_dispatcher = saved
    assert order[:2] == ["fetch-linux", "kernel"] and order[2:] == ["busybox", "iptables"]
    # The order the actions start in, not the dispatch order: the kernel may
    # start before BusyBox's thread writes its line (a busy CI machine did),
    # but never after iptables, which plain doit starts first (test above).
    assert "fetch-linux" in two[:2] and two.index("kernel") < two.index("iptables"), two


def test_a_cycle_gets_no_weights_and_doit_ends_as_plain_doit_does(tmp_path):
    class T:
        def __init__(self, deps):
            self.meta, self.task_dep, self.setup_tasks, self.file_dep = {}, list(deps), [], set()

    assert schedule.weights({"a": T(["b"]), "b": T(["a"])}, {}) == {}
    # A whole run: it ends (it used to loop for ever), with plain doit's code.
    code = (
        "import sys, types\n"
        "from doit.cmd_base import ModuleTaskLoader\n"
        "from doit.doit_cmd import DoitMain\n"
        "from onlydocker.cli import schedule\n"
        "if sys.argv[1] == 'ours':\n"
        "    schedule.install()\n"
        "def task_t():\n"
        "    yield {'name': 'a', 'actions': [lambda: None], 'task_dep': ['t:b']}\n"
        "    yield {'name': 'b', 'actions': [lambda: None], 'task_dep': ['t:a']}\n"
        "m = types.ModuleType('d'); m.task_t = task_t\n"
        f"m.DOIT_CONFIG = {{'dep_file': {str(tmp_path / 'db')!r}, 'backend': 'json'}}\n"
        "sys.exit(DoitMain(ModuleTaskLoader(m)).run([]))\n")
    root = Path(__file__).resolve().parent.parent
    codes = [subprocess.run([sys.executable, "-c", code, which], cwd=root, capture_output=True,
                            timeout=60).returncode for which in ("plain", "ours")]
    assert codes[0] == codes[1] != 0
