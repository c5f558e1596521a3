"""A build's container on the Docker engine: the only way a build touches one.

Inputs go in and outputs come out through the engine's API (put_archive /
get_archive), never through bind mounts of host paths, so an engine on
another machine (DOCKER_HOST=ssh://..., a Docker context) works the same.
Every container runs with no network.

Everything here can change a stage's bytes (the input tar, the container's
settings, the output), so every container stage's key covers this module
(stage/key.py); finding the engine and connecting to it is engine/client.py's,
which no key covers.
"""
from __future__ import annotations

import os
import posixpath
import secrets
import stat
import tarfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors
import requests

from .. import log
from ..errors import BuildError, EngineError, machine_cause, machine_error

# Limits of every build container: a kernel build at -j2 peaks near 2 GiB and
# a few hundred processes; a runaway build stops here instead of taking the machine.
MEMORY_LIMIT = "8g"
PIDS_LIMIT = 4096


def memory_for(jobs: int) -> str:
    """The memory limit of a build with `jobs` jobs: 8 GiB, or 1 GiB a job
    when there are more than 8 (a kernel build at -j2 peaks near 2 GiB)."""
    return f"{max(8, jobs)}g"


@dataclass
class RunSpec:
    image: str
    command: list[str]
    env: dict[str, str]
    workdir: str = "/build"
    hostname: str = "onlydocker-build"
    # uid:gid the container runs as; the inputs are copied in owned by it.
    # Not root, no capabilities, no new privileges, unless `root` (a stage
    # that says so in its stage.toml): then uid 0 with Docker's default set.
    user: str = "1000:1000"
    root: bool = False
    memory: str = MEMORY_LIMIT
    inputs: list[tuple[Path, str]] = field(default_factory=list)   # host file or dir -> absolute container path
    output_path: str = "/build/out"
    # Named volumes of the engine -> absolute container path (a stage's kept
    # tree, kept.py); each mount point is made owned by the build's user.
    volumes: dict[str, str] = field(default_factory=dict)

    @property
    def owner(self) -> tuple[int, int]:
        if self.root:
            return 0, 0
        uid, _, gid = self.user.partition(":")
        return int(uid), int(gid or uid)


BLOCK = 512
_NUL = b"\0" * BLOCK


def _dir_info(name: str, mtime: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, mtime
    return info


def _entries(inputs: list[tuple[Path, str]], owner: tuple[int, int] = (0, 0), dirs: Iterable[str] = ()
             ) -> Iterator[tuple[tarfile.TarInfo, Path | None]]:
    """Tar headers for the inputs, parents before children, each with the host
    file whose bytes follow it (None for directories and links). Modes, mtimes
    and symlinks are kept; everything belongs to `owner` (uid, gid), the user
    the build runs as; hardlinks within the inputs stay hardlinks. `dirs` are
    directories made first (the build's working directory)."""
    made: set[str] = set()
    inodes: dict[tuple[int, int], str] = {}

    def folders(parts: list[str]) -> Iterator[tuple[tarfile.TarInfo, None]]:
        """Each folder of the path `parts` not made yet, outermost first."""
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in made:
                made.add(d)
                info = _dir_info(d)
                info.uid, info.gid = owner
                yield info, None

    for d in dirs:
        yield from folders(posixpath.normpath(d).lstrip("/").split("/"))
    for host, target in inputs:
        host = Path(host)
        name = posixpath.normpath(target).lstrip("/")
        if not target.startswith("/") or ".." in name.split("/") or name in ("", "."):
            raise EngineError(f"input {host}: container path {target!r} must be absolute, below /, without '..'")
        if not os.path.lexists(host):
            raise EngineError(f"input {host} (for {target}) does not exist")
        yield from folders(name.split("/")[:-1])
        items = [(host, name)]
        if host.is_dir() and not host.is_symlink():
            # rglob does not descend into symlinked directories; sorting by parts puts parents first.
            items += [(p, f"{name}/{p.relative_to(host).as_posix()}") for p in sorted(host.rglob("*"))]
        for path, arc in items:
            st = os.lstat(path)
            info = tarfile.TarInfo(arc)
            info.mode, info.mtime = stat.S_IMODE(st.st_mode), int(st.st_mtime)
            info.uid, info.gid = owner
            info.uname = info.gname = ""
            made.add(arc)
            if stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
                yield info, None
            elif stat.S_ISLNK(st.st_mode):
                info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
                yield info, None
            elif stat.S_ISREG(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and key in inodes:
                    info.type, info.linkname = tarfile.LNKTYPE, inodes[key]
                    yield info, None
                    continue
                if st.st_nlink > 1:
                    inodes[key] = arc
                info.size = st.st_size
                yield info, path
            else:
                raise EngineError(f"input {path}: a socket, fifo or device node, not a file, directory "
                                  f"or symlink: refused")


def tar_stream(inputs: list[tuple[Path, str]], chunk: int = 1 << 20,
               owner: tuple[int, int] = (0, 0), dirs: Iterable[str] = ()) -> Iterator[bytes]:
    """A GNU tar of the inputs, produced piece by piece as it is sent: a 140 MB
    tarball crosses to the engine in 1 MiB reads, never whole in memory.
    Small pieces (headers) are gathered into chunks of at least 64 KiB so a
    tree of many small files does not become thousands of tiny HTTP chunks."""
    pending: list[bytes] = []
    size = 0

    def pieces():
        for info, path in _entries(inputs, owner, dirs):
            yield info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")
            if path is None:
                continue
            remaining = info.size
            with open(path, "rb") as f:
                while remaining:
                    b = f.read(min(chunk, remaining))
                    if not b:
                        raise EngineError(f"input {path} shrank while it was being copied in")
                    remaining -= len(b)
                    yield b
            if info.size % BLOCK:
                yield _NUL[: BLOCK - info.size % BLOCK]
        yield _NUL * 2      # the end-of-archive marker

    for piece in pieces():
        pending.append(piece)
        size += len(piece)
        if size >= 1 << 16:
            yield b"".join(pending)
            pending, size = [], 0
    if pending:
        yield b"".join(pending)


# Bounds of the engine calls that end a stage. The output copy may be long (a
# 600 MB tree) but never silent for this long; removing a container is quick
# once nothing streams from it.
COPY_SILENCE = 120
REMOVE_TIMEOUT = 30


def _say(text: str) -> None:
    log.say(text, "engine")


def _copy_out(client: docker.DockerClient, container, path: str, part: Path) -> None:
    """GET the container's `path` as a tar into `part`. Unlike the SDK's
    get_archive, the socket keeps a read timeout (COPY_SILENCE), and the
    response is closed whatever happens: a stream abandoned half-read keeps
    the engine writing into it, and the container busy, until it is closed."""
    api = client.api
    res = api._get(api._url("/containers/{0}/archive", container.id), params={"path": path}, stream=True,
                   headers={"Accept-Encoding": "identity"}, timeout=(REMOVE_TIMEOUT, COPY_SILENCE))
    try:
        api._raise_for_status(res)
        with open(part, "wb") as f:
            for chunk in res.iter_content(1 << 20):
                f.write(chunk)
    finally:
        res.close()


def _remove(client: docker.DockerClient, container, name: str) -> None:
    """Remove the container, waiting at most REMOVE_TIMEOUT; when the engine
    does not do it by then, the container is left and said (with the command
    that removes it), rather than the stage waiting on it."""
    api = client.api
    try:
        res = api._delete(api._url("/containers/{0}", container.id), params={"force": True, "v": True},
                          timeout=REMOVE_TIMEOUT)
        try:
            if res.status_code not in (204, 404):
                api._raise_for_status(res)
        finally:
            res.close()
    except (requests.RequestException, docker.errors.APIError) as e:
        why = " ".join(str(e).split())
        _say(f"container {name} was not removed ({type(e).__name__}: {why}); it is left: "
             f"`docker rm -f {name}` removes it")


def run(client: docker.DockerClient, spec: RunSpec, *, output_tar: Path | None, log_path: Path,
        name_prefix: str = "onlydocker", on_line: Callable[[str], None] | None = None) -> None:
    """Run one build container: create it with no network, copy the inputs in,
    start it, write its output to `log_path` line by line as it comes (and
    hand each line to `on_line`), wait, and on success copy `spec.output_path`
    out as a tar into `output_tar`. The container is removed whatever happens."""
    name = f"{name_prefix}-{secrets.token_hex(6)}"
    what = f"`{' '.join(spec.command)}` in {spec.image}"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # Check the inputs before anything is created: a typo fails at once and clearly.
    for host, target in spec.inputs:
        if not os.path.lexists(host):
            raise EngineError(f"{what}: input {host} (for {target}) does not exist")
    try:
        container = client.containers.create(
            spec.image, spec.command, name=name, environment=spec.env, working_dir=spec.workdir,
            hostname=spec.hostname, user="0:0" if spec.root else spec.user,
            network_mode="none", network_disabled=True,
            cap_drop=None if spec.root else ["ALL"], security_opt=["no-new-privileges"],
            mem_limit=spec.memory, memswap_limit=spec.memory, pids_limit=PIDS_LIMIT,
            volumes={v: {"bind": p, "mode": "rw"} for v, p in spec.volumes.items()} or None,
            labels={"org.onlydocker.build": name_prefix})
    except docker.errors.ImageNotFound:
        raise BuildError(f"{what}: image {spec.image} is not in the engine: run `doit build:builder`") from None
    except docker.errors.APIError as e:
        raise EngineError(f"the engine refused to create {name} for {what}: {e.explanation or e}") from None
    tail: deque[str] = deque(maxlen=30)
    part = output_tar.with_name(f".{output_tar.name}.{name}.part") if output_tar is not None else None
    step = "copying the inputs in"
    try:
        # The inputs, and the working directory and the volumes' mount points
        # owned by the build's user (the engine would make them root's).
        dirs = [spec.workdir, *spec.volumes.values()]
        try:
            ok = container.put_archive("/", tar_stream(spec.inputs, owner=spec.owner, dirs=dirs))
        except docker.errors.APIError as e:
            raise EngineError(f"the engine refused the inputs of {name} ({what}): {e.explanation or e}") from None
        if not ok:
            raise EngineError(f"the engine refused the inputs of {name} ({what})")
        step = "starting it"
        container.start()
        step = "following its output"
        with open(log_path, "w", buffering=1) as log:     # line-buffered: `tail -f` follows it
            pending = b""
            for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=True):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    line = raw.decode("utf-8", "replace")
                    log.write(line + "\n")
                    tail.append(line)
                    if on_line:
                        on_line(line)
            if pending:
                line = pending.decode("utf-8", "replace")
                log.write(line + "\n")
                tail.append(line)
        step = "waiting for its exit code"
        code = container.wait().get("StatusCode", -1)
        if code != 0:
            raise BuildError(f"{what} exited with {code}; full log: {log_path}; last lines:\n    "
                             + "\n    ".join(tail))
        if output_tar is not None:
            assert part is not None          # made with output_tar
            step = f"copying {spec.output_path} out"
            try:
                _copy_out(client, container, spec.output_path, part)
            except docker.errors.NotFound:
                raise BuildError(f"{what} succeeded but left no {spec.output_path} to copy out; "
                                 f"log: {log_path}") from None
            except OSError as e:
                cause = machine_cause(e)
                if cause is None or isinstance(e, requests.RequestException):
                    raise
                raise machine_error(cause, cause.filename or part,
                                    f"copying the outputs of container {name} out") from None
            os.replace(part, output_tar)
    except requests.RequestException as e:
        # Named: which call on which container, and that the engine is the one that stopped.
        why = " ".join(str(e).split())
        raise EngineError(f"the engine stopped answering while {step} of {name} ({what}): "
                          f"{type(e).__name__}: {why}") from None
    finally:
        if part is not None:
            part.unlink(missing_ok=True)
        _remove(client, container, name)
