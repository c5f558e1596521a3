"""Shared fixtures. Tests that need a Docker engine skip without one; CI turns
such skips into failures (see .ci/run), so a missing engine cannot pass silently."""
import shutil

import pytest


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
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed")
    return path
