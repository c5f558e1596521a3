"""The Docker engine: the only way a build touches a container.

Inputs go in and outputs come out through the engine's API (put_archive /
get_archive), never through bind mounts of host paths, so an engine on
another machine (DOCKER_HOST=ssh://..., a Docker context) works the same.
Every container runs with no network.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import sys
import tarfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors

from .errors import BuildError, EngineError

HOW_TO_START = ("start one with `sudo dockerd &` (or `sudo systemctl start docker`), "
                "or point DOCKER_HOST / `docker context use` at a running engine")


def _context_host() -> str | None:
    """The endpoint of the Docker CLI's current context, if one is set."""
    cfg_dir = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")
    name = os.environ.get("DOCKER_CONTEXT")
    if not name:
        try:
            name = json.loads((cfg_dir / "config.json").read_text()).get("currentContext")
        except (OSError, ValueError):
            name = None
    if not name or name == "default":
        return None
    meta = cfg_dir / "contexts" / "meta" / hashlib.sha256(name.encode()).hexdigest() / "meta.json"
    try:
        return json.loads(meta.read_text())["Endpoints"]["docker"]["Host"]
    except (OSError, ValueError, KeyError):
        raise EngineError(f"Docker context {name!r} has no readable endpoint at {meta}") from None


_clients: dict[str, docker.DockerClient] = {}
_clients_lock = threading.Lock()


def connect() -> docker.DockerClient:
    """A client for the engine the usual settings name: DOCKER_HOST (with
    DOCKER_TLS_VERIFY / DOCKER_CERT_PATH), else the current Docker context,
    else the local socket."""
    host = os.environ.get("DOCKER_HOST") or _context_host()
    where = host or "the default socket (unix:///var/run/docker.sock)"
    with _clients_lock:
        if where in _clients:
            return _clients[where]
        try:
            if host and not os.environ.get("DOCKER_HOST"):
                client = docker.DockerClient(base_url=host, timeout=600)
            else:
                client = docker.from_env(timeout=600)
            client.ping()
        except Exception as e:  # the SDK raises several types for "nobody answers"
            raise EngineError(f"no Docker engine answers at {where} ({type(e).__name__}: {e}); "
                              f"{HOW_TO_START}") from None
        _clients[where] = client
        return client


def image_exists(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


@dataclass
class RunSpec:
    image: str
    command: list[str]
    env: dict[str, str]
    workdir: str = "/build"
    hostname: str = "onlydocker"
    user: str = "0:0"
    inputs: list[tuple[Path, str]] = field(default_factory=list)   # host path -> absolute container path
    output_path: str = "/build/out"


class _TarStream:
    """A file-like object producing a tar of the inputs as it is read, so a
    140 MB tarball crosses to the engine without being held in memory."""

    def __init__(self, inputs: list[tuple[Path, str]]):
        self._buf = bytearray()
        self._gen = self._produce(inputs)
        self._done = False

    def _produce(self, inputs):
        sink = self

        class W:
            def write(self, b):
                sink._buf.extend(b)
                return len(b)

        tf = tarfile.open(fileobj=W(), mode="w|", format=tarfile.GNU_FORMAT)
        made: set[str] = set()
        for host, target in inputs:
            parts = Path(target.lstrip("/")).parts
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in made:
                    made.add(d)
                    info = tarfile.TarInfo(d)
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tf.addfile(info)
                    yield
            host = Path(host)
            items = [(host, target.lstrip("/"))]
            if host.is_dir() and not host.is_symlink():
                items += [(p, f"{target.lstrip('/')}/{p.relative_to(host).as_posix()}")
                          for p in sorted(host.rglob("*"))]
            for path, name in items:
                info = tf.gettarinfo(str(path), arcname=name)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                made.add(name)
                if info.isreg():
                    with open(path, "rb") as f:
                        tf.addfile(info, f)
                else:
                    tf.addfile(info)
                yield
        tf.close()
        yield

    def read(self, n: int = -1) -> bytes:
        while not self._done and (n < 0 or len(self._buf) < n):
            try:
                next(self._gen)
            except StopIteration:
                self._done = True
        if n < 0:
            n = len(self._buf)
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out


def _chunks(stream: _TarStream, size: int = 1 << 20):
    while True:
        b = stream.read(size)
        if not b:
            return
        yield b


def run(client: docker.DockerClient, spec: RunSpec, *, output_tar: Path | None, log_path: Path,
        name_prefix: str = "onlydocker", echo=None) -> None:
    """Run one build container: copy in, start, stream the log, wait, copy out."""
    name = f"{name_prefix}-{secrets.token_hex(4)}"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        container = client.containers.create(
            spec.image, spec.command, name=name, environment=spec.env, working_dir=spec.workdir,
            hostname=spec.hostname, user=spec.user, network_mode="none", network_disabled=True,
            labels={"org.onlydocker.build": name_prefix})
    except docker.errors.ImageNotFound:
        raise BuildError(f"image {spec.image} is not in the engine: run `doit build:builder`") from None
    except docker.errors.APIError as e:
        raise EngineError(f"the engine refused to create {name}: {e.explanation or e}") from None
    tail: deque[str] = deque(maxlen=30)
    try:
        if spec.inputs:
            if not container.put_archive("/", _chunks(_TarStream(spec.inputs))):
                raise EngineError(f"the engine refused the inputs of {name}")
        container.start()
        started = time.monotonic()
        last_echo = 0.0
        with open(log_path, "w", buffering=1) as log:
            pending = b""
            for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=True):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    line = raw.decode("utf-8", "replace")
                    log.write(line + "\n")
                    tail.append(line)
                    now = time.monotonic()
                    # A sign of life every half minute, not the whole log.
                    if echo and now - last_echo > 30:
                        echo(f"  [{now - started:5.0f} s] {line[:150]}")
                        last_echo = now
            if pending:
                line = pending.decode("utf-8", "replace")
                log.write(line + "\n")
                tail.append(line)
        status = container.wait()
        code = status.get("StatusCode", -1)
        if code != 0:
            raise BuildError(f"`{' '.join(spec.command)}` in {spec.image} exited with {code}; "
                             f"full log: {log_path}; last lines:\n    " + "\n    ".join(tail))
        if output_tar is not None:
            stream, _ = container.get_archive(spec.output_path)
            tmp = output_tar.with_name(output_tar.name + ".part")
            with open(tmp, "wb") as f:
                for chunk in stream:
                    f.write(chunk)
            os.replace(tmp, output_tar)
    finally:
        try:
            container.remove(force=True)
        except docker.errors.APIError:
            pass


def import_image(client: docker.DockerClient, tar_stream, tag: str) -> str:
    """`docker import` of a rootfs tar stream; returns the image id."""
    repo, _, version = tag.partition(":")
    if isinstance(tar_stream, (bytes, bytearray)):
        # The API is sent chunked: an iterable of chunks, not one bytes object.
        tar_stream = iter([bytes(tar_stream)])
    resp = client.api.import_image_from_stream(tar_stream, repository=repo, tag=version or "latest")
    text = resp if isinstance(resp, str) else resp.decode() if isinstance(resp, bytes) else json.dumps(resp)
    if "error" in text.lower() and "status" not in text.lower():
        raise EngineError(f"docker import of {tag} failed: {text}")
    return client.images.get(tag).id
