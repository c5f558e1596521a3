"""Where the suite's minutes go: a pytest plugin that sums every test's
setup, call and teardown into a few named groups and prints them as a table
at the end of the run, so that every change sees the cost of what it adds.

A test's group is its `budget` marker (`@pytest.mark.budget("boots")`), else
"quick tests" or, for a slow test, "slow tests (other)". An expensive fixture
charges its own time to a group of its own with `charge(...)` (the lane's
build is paid in the setup of whichever test asks for it first, which says
nothing about that test). `.ci/run` passes the seconds of its own steps
before pytest (setup.sh, ruff, mypy) in ONLYDOCKER_CI_STEPS as `name=seconds,...`."""
from __future__ import annotations

import contextlib
import os
import time
from collections import defaultdict

import pytest

QUICK = "quick tests"
SLOW_OTHER = "slow tests (other)"
# The suite's budget (issue 22): the whole CI, setup included.
BUDGET_MINUTES = 60

_seconds: dict[str, float] = defaultdict(float)
_tests: dict[str, int] = defaultdict(int)
_charged_in_phase = 0.0


@contextlib.contextmanager
def charge(group: str):
    """Charge the time of the block to `group` rather than to the test
    whose setup it runs in."""
    global _charged_in_phase
    start = time.monotonic()
    try:
        yield
    finally:
        took = time.monotonic() - start
        _seconds[group] += took
        _charged_in_phase += took


def group_of(item) -> str:
    marker = item.get_closest_marker("budget")
    if marker is not None:
        return marker.args[0]
    return SLOW_OTHER if item.get_closest_marker("slow") is not None else QUICK


def pytest_configure(config):
    config.addinivalue_line("markers", "budget(group): the group of the CI budget table this test's time counts in")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    global _charged_in_phase
    report = outcome.get_result()
    group = group_of(item)
    _seconds[group] += max(0.0, report.duration - _charged_in_phase)
    _charged_in_phase = 0.0
    if report.when == "call":
        _tests[group] += 1


def _steps() -> list[tuple[str, float]]:
    steps = []
    for part in filter(None, os.environ.get("ONLYDOCKER_CI_STEPS", "").split(",")):
        name, _, seconds = part.partition("=")
        try:
            steps.append((name, float(seconds)))
        except ValueError:
            continue
    return steps


def table() -> list[str]:
    rows = _steps() + sorted(_seconds.items(), key=lambda kv: -kv[1])
    total = sum(s for _, s in rows)
    width = max([len(n) for n, _ in rows] + [10])
    lines = [f"{'where':<{width}}  {'tests':>5}  {'seconds':>8}  {'minutes':>7}  share"]
    for name, seconds in rows:
        n = _tests.get(name, "")
        share = 100 * seconds / total if total else 0.0
        lines.append(f"{name:<{width}}  {n!s:>5}  {seconds:8.0f}  {seconds / 60:7.1f}  {share:4.0f} %")
    lines.append(f"{'total':<{width}}  {sum(_tests.values()):>5}  {total:8.0f}  {total / 60:7.1f}  "
                 f"(budget {BUDGET_MINUTES} min; CI's limit 90)")
    return lines


def pytest_terminal_summary(terminalreporter):
    if not _seconds:
        return
    terminalreporter.section("where the minutes went (tests/budget.py)")
    for line in table():
        terminalreporter.write_line(line)
