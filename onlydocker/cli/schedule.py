"""The longest chain first: which ready task `doit -n N` starts next.

doit starts ready tasks in the order it happens to find them: when several
wait on one task (every container stage waits on the builder) they become
ready in a set's order. With two threads, the kernel, which is most of a cold
build, could then wait for a thread behind BusyBox and iptables, and the whole
build would end that much later. Like Ninja (1.12's critical-path
scheduling), we start the ready task with the most work after it first: its
weight is its own cost plus the heaviest chain of tasks that wait on it.

Costs are rough seconds on our 2-core machines, a task's `meta["cost"]`
(a stage's `cost` in its stage.toml; 1 when not given). They order the work
and do nothing else: no output depends on them.

doit has no setting for its dispatcher, so `install()` replaces the one
method of `doit.control.TaskControl` that makes it (doit is pinned).
"""
from __future__ import annotations

import graphlib
import heapq
import itertools
from collections.abc import Mapping

from doit import control

DEFAULT_COST = 1.0


def weights(tasks: Mapping, targets: Mapping[str, str]) -> dict[str, float]:
    """name -> the task's cost plus the heaviest chain of tasks that need it.

    `tasks` are doit Tasks (task_dep, setup_tasks, file_dep, meta); a
    file_dep that is another task's target is a dependency on that task."""
    needed_by: dict[str, set[str]] = {name: set() for name in tasks}
    for name, task in tasks.items():
        deps = set(task.task_dep) | set(task.setup_tasks)
        deps |= {targets[f] for f in task.file_dep if f in targets}
        for dep in deps & needed_by.keys():
            needed_by[dep].add(name)

    # Every task after the tasks that need it, so their weights are known.
    try:
        order = list(graphlib.TopologicalSorter(needed_by).static_order())
    except graphlib.CycleError:
        return {}       # no order to weigh by: doit handles the cycle as it would without us
    weight: dict[str, float] = {}
    for name in order:
        cost = float((tasks[name].meta or {}).get("cost", DEFAULT_COST))
        weight[name] = cost + max((weight[n] for n in needed_by[name]), default=0.0)
    return weight


class HeaviestFirst:
    """The dispatcher's queue of ready nodes (it uses only append, popleft
    and truth), popping the heaviest first and, among equals, the oldest."""

    def __init__(self, weight: Mapping[str, float]):
        self._weight = weight
        self._heap: list = []
        self._order = itertools.count()

    def append(self, node) -> None:
        heapq.heappush(self._heap, (-self._weight.get(node.task.name, DEFAULT_COST), next(self._order), node))

    def popleft(self):
        return heapq.heappop(self._heap)[2]

    def __len__(self) -> int:
        return len(self._heap)


class CriticalPathDispatcher(control.TaskDispatcher):
    def __init__(self, tasks, targets, selected_tasks):
        super().__init__(tasks, targets, selected_tasks)
        self.ready = HeaviestFirst(weights(tasks, targets))


def _task_dispatcher(self):
    assert self.selected_tasks is not None, "must call 'process' before this"
    return CriticalPathDispatcher(self.tasks, self.targets, self.selected_tasks)


def install() -> None:
    """Make doit's runners take the heaviest ready task first."""
    control.TaskControl.task_dispatcher = _task_dispatcher
