"""Finding the Docker engine and talking to it, for everything but a build's
container: where the engine is (as the Docker CLI finds it), one client per
endpoint, whether an image is there, `docker import`.

Nothing here decides a stage's bytes, so no stage key covers this module:
editing a message here rebuilds nothing. What does decide them (the run
spec, the input tar, the container's settings, the output) is engine/run.py's,
which every container stage's key covers (stage/key.py).
"""
from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import docker
import docker.context.config
import docker.errors
import docker.tls
import docker.utils
from docker.context import ContextAPI
from docker.utils.config import find_config_file

from ..errors import EngineError

HOW_TO_START = ("start one with `sudo dockerd &` (or `sudo systemctl start docker`), "
                "or point DOCKER_HOST / `docker context use` at a running engine")


@dataclass(frozen=True)
class Endpoint:
    """Where the engine is, as the Docker CLI would find it."""
    host: str | None            # None: docker.from_env's own rules (DOCKER_HOST, else the local socket)
    source: str                 # how it was chosen, for error messages
    tls: docker.tls.TLSConfig | None = None


def endpoint() -> Endpoint:
    """The engine the usual settings name, in the Docker CLI's order:
    DOCKER_HOST (with DOCKER_TLS_VERIFY / DOCKER_CERT_PATH), then the context
    named by DOCKER_CONTEXT, then the current context (`docker context use`),
    then the local socket. Contexts are read with the Docker SDK's ContextAPI
    (it reads config.json's currentContext, not DOCKER_CONTEXT)."""
    if os.environ.get("DOCKER_HOST"):
        return Endpoint(None, f"DOCKER_HOST={os.environ['DOCKER_HOST']}")
    if name := os.environ.get("DOCKER_CONTEXT"):
        return context_endpoint(name, "DOCKER_CONTEXT")
    current: str = docker.context.config.get_current_context_name()
    return context_endpoint(current, f"currentContext in {find_config_file()}")


def context_endpoint(name: str, source: str) -> Endpoint:
    """The endpoint of the Docker context `name` (`source`: where the name
    came from, for messages); "default" is DOCKER_HOST, else the local
    socket, as for the Docker CLI."""
    if name == "default":
        return Endpoint(None, "the default socket (unix:///var/run/docker.sock)")
    if not find_config_file():
        # The SDK finds contexts beside config.json, as the CLI does once it has written one.
        raise EngineError(f"Docker context {name!r} (from {source}): no Docker config.json in $DOCKER_CONFIG or "
                          f"~/.docker, beside which contexts are found; `docker context use {name}` writes one")
    try:
        ctx = ContextAPI.get_context(name)
    except Exception as e:  # the SDK raises bare Exception and KeyError for a malformed meta.json
        raise EngineError(f"Docker context {name!r} (from {source}) is unreadable ({type(e).__name__}: {e}) "
                          f"in {docker.context.config.get_meta_file(name)}; `docker context ls` lists the contexts"
                          ) from None
    if ctx is None or not ctx.Host:
        what = "is not defined (no" if ctx is None else "has no docker endpoint (in"
        raise EngineError(f"Docker context {name!r} (from {source}) {what} "
                          f"{docker.context.config.get_meta_file(name)}); `docker context ls` lists the contexts")
    return Endpoint(ctx.Host, f"Docker context {name!r} ({ctx.Host}, from {source})", ctx.TLSConfig)


def client_args(ep: Endpoint) -> dict:
    """docker.DockerClient's arguments for the endpoint: where, TLS (the
    context's; with no host, DOCKER_HOST's own, from DOCKER_TLS_VERIFY and
    DOCKER_CERT_PATH), and ssh:// through the ssh binary, as the Docker CLI
    does (no paramiko needed)."""
    host: str | None
    if ep.host:
        host, tls = ep.host, ep.tls or False
    else:
        host, tls = os.environ.get("DOCKER_HOST") or None, env_tls(ep.source)
    return {"base_url": host, "tls": tls, "use_ssh_client": bool(host and host.startswith("ssh://"))}


def env_tls(source: str) -> docker.tls.TLSConfig | bool:
    """The TLS settings DOCKER_TLS_VERIFY and DOCKER_CERT_PATH make (False: none)."""
    try:
        return docker.utils.kwargs_from_env(environment=os.environ).get("tls", False)
    except docker.errors.TLSParameterError as e:
        raise EngineError(f"{source}: the TLS files of DOCKER_CERT_PATH do not serve: {e}") from None


# One client per endpoint for the life of the process: every stage (and every
# doit thread) shares its connection pool instead of pinging afresh.
_clients: dict[str, docker.DockerClient] = {}
_clients_lock = threading.Lock()


def connect() -> docker.DockerClient:
    """A client for the engine the usual settings name (see `endpoint`).
    Raises EngineError naming the endpoint tried and how to start one."""
    ep = endpoint()
    with _clients_lock:
        if ep.source in _clients:
            return _clients[ep.source]
        host = ep.host or os.environ.get("DOCKER_HOST") or ""
        # ssh:// through the ssh binary, as the Docker CLI does (no paramiko needed).
        ssh = host.startswith("ssh://")
        try:
            if ep.host:
                client = docker.DockerClient(base_url=ep.host, tls=ep.tls or False, timeout=600,
                                             use_ssh_client=ssh, max_pool_size=32)
            else:
                client = docker.from_env(timeout=600, use_ssh_client=ssh, max_pool_size=32)
            client.ping()
        except Exception as e:  # the SDK raises several types for "nobody answers"
            why = " ".join(str(e).split())     # one line, whatever the SDK's text
            raise EngineError(f"no Docker engine answers at {ep.source} ({type(e).__name__}: {why}); "
                              f"{HOW_TO_START}") from None
        _clients[ep.source] = client
        return client


def image_exists(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False



def import_image(client: docker.DockerClient, tar_stream: Iterable[bytes] | bytes, tag: str) -> str:
    """`docker import` of a rootfs tar (bytes or an iterable of chunks, sent
    as it is read); returns the image id."""
    repo, _, version = tag.partition(":")
    if isinstance(tar_stream, (bytes, bytearray)):
        # The API is sent chunked: an iterable of chunks, not one bytes object.
        tar_stream = iter([bytes(tar_stream)])
    try:
        resp = client.api.import_image_from_stream(tar_stream, repository=repo, tag=version or "latest")
    except docker.errors.APIError as e:
        raise EngineError(f"docker import of {tag} failed: {e.explanation or e}") from None
    text = resp.decode("utf-8", "replace") if isinstance(resp, bytes) else str(resp)
    # The engine answers with JSON progress messages; a failure is one with "error".
    for line in text.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if isinstance(msg, dict) and (msg.get("error") or msg.get("errorDetail")):
            raise EngineError(f"docker import of {tag} failed: {msg.get('error') or msg.get('errorDetail')}")
    try:
        return client.images.get(tag).id
    except docker.errors.ImageNotFound:
        raise EngineError(f"docker import of {tag} reported no error, yet the engine has no {tag}: {text[:300]}") \
            from None
