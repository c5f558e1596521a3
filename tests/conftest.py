"""Shared fixtures. Tests that need a Docker engine skip without one; CI turns
such skips into failures (see .ci/run), so a missing engine cannot pass silently."""
import os
import shutil
from pathlib import Path

import pytest

pytest_plugins = ["tests.budget"]     # the table of where CI's minutes went


def _engine():
    try:
        import docker
        client = docker.from_env(timeout=10)
        client.ping()
        return client
    except Exception:
        return None


@pytest.fixture(scope="session")
def docker_client():
    client = _engine()
    if client is None:
        pytest.skip("no Docker engine answers (start dockerd)")
    return client


def require_tool(name: str) -> str:
    """The tool's path; without it the test skips, which fails the test
    under ONLYDOCKER_NO_SKIP=1 (as CI sets: setup.sh installs every tool)."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed")
    return path


def pytest_collection_modifyitems(config, items):
    # The end-to-end lane build runs last: the quick tests fail fast first.
    items.sort(key=lambda item: item.get_closest_marker("slow") is not None)


# The lane that gets every end-to-end test (build, repro, every boot,
# Vagrant): the default one. Bookworm is built and booted once
# (test_bookworm_lane.py).
MODERN_LOCK = "locks/trixie.lock"
MODERN_LANE = "trixie"


@pytest.fixture(scope="session")
def modern_lane(tmp_path_factory, docker_client):
    """The modern lane, built once for real with `doit` in a copy of the
    project (signing key made first), as CI would: uploading to a remote
    cache (a real nginx with WebDAV on loopback, `ws.remote`) as it builds.
    Its local cache is the run's (ONLYDOCKER_CACHE: in CI the builder image
    is already there, made by the quick tests; the remote cache gets it all
    the same), else one of its own. The one build of the lane in a run:
    the end-to-end tests, the boots and Vagrant all read it; its dist/
    holds vmlinuz, initrd and the ISO."""
    from tests import budget
    from tests import workspace as wsmod
    from tests.nginx import Nginx
    require_tool("nginx")
    base = tmp_path_factory.mktemp("lane")
    remote = Nginx(base / "remote-cache").start()
    cache = Path(os.environ["ONLYDOCKER_CACHE"]) if os.environ.get("ONLYDOCKER_CACHE") else base / "cache"
    ws = wsmod.make(base / "workspace", copy_project=True, cache=cache)
    ws.env.pop("ONLYDOCKER_STAGE_CACHE", None)
    ws.env.update(remote.env(write=True))
    ws.remote = remote
    ws.doit("keygen")
    # Its stages start from fresh extractions (no kept tree of an earlier
    # build on this engine, kept.py): what it builds is a clean build, the
    # reference the kernel's incremental test compares with.
    # (A kernel's tree is 1.5 GB of small files: its removal outlasts the
    # session client's 10 s timeout on a busy machine, so a client of its own.)
    import docker

    from onlydocker.stage import kept
    patient = docker.from_env(timeout=600)      # the engine docker_client found, as it found it
    for v in patient.volumes.list(filters={"label": kept.LABEL}):
        if (v.attrs.get("Labels") or {}).get(kept.LABEL, "").startswith(f"{MODERN_LANE}/"):
            v.remove(force=True)
    with budget.charge(f"lane build: {MODERN_LANE}"):
        ws.first = ws.doit("-n", "2", f"lock={MODERN_LOCK}", timeout=5400)
    ws.dist = ws.out(MODERN_LANE) / "dist"
    yield ws
    remote.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("ONLYDOCKER_NO_SKIP") == "1" and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped, but ONLYDOCKER_NO_SKIP=1 forbids skips here: {reason}"
