"""Several Docker engines side by side: which engines, which one is free for
the next container stage, and the builder image on each.

`ONLYDOCKER_ENGINES` (config.py's `Settings.engines`) lists them: Docker
context names or DOCKER_HOST-style URLs (unix://, tcp:// with TLS as for
DOCKER_HOST, ssh://). Empty: the one engine the usual Docker settings name
(dockerclient.connect), as with no list at all.

Every engine is reached only through its API, as engine/run.py reaches one:
inputs cross by put_archive and outputs by get_archive, so an engine on
another machine works like the local one. A container stage leases the
engine with the fewest stages running (ties: the first listed) before its
container starts and gives it back after. An engine without the builder
image gets it from the cache by the builder's input key
(cache/builders/<key>.tar.zst, its tar checked against the recorded sha256
before the import, once per engine). Nothing of the engine enters a stage's key or its outputs: the
container is the same on every engine (container.py).

Engines are asked once, when a run first needs one: one that does not answer
is said once and left out of the run while another answers; one that stops
answering during a stage fails that stage, naming it, and is left out of the
rest of the run.
"""
from __future__ import annotations

import os
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import log
from ..errors import ConfigError, EngineError

if TYPE_CHECKING:
    import docker
    import docker.tls

    from ..config import Settings
# The Docker SDK (and engine/run.py, which imports it) is imported where an engine
# is asked for, not when the task graph loads: `doit list` need not pay for it.

SETTING = "ONLYDOCKER_ENGINES"
FORMS = "a Docker context name, or a unix:///path, tcp://host[:port] or ssh://[user@]host[:port] URL"
# Seconds an engine has to answer when the run asks for it (and after a
# failure, to tell "the stage failed" from "the engine is gone"); work itself
# gets dockerclient.connect's 600.
ANSWER_TIMEOUT = 10
WORK_TIMEOUT = 600
# Docker's own rule for context names (docker context create).
CONTEXT_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.+-]*")


@dataclass(frozen=True)
class Entry:
    """One engine of the setting, as written: every message names it so."""
    name: str
    kind: str        # "context", "unix", "tcp", "ssh"; "usual": no list, dockerclient.connect's engine


def parse(text: str) -> Entry:
    """One entry of ONLYDOCKER_ENGINES; ConfigError naming it when it is
    neither a context name nor a URL of a kind Docker serves."""
    def bad(why: str) -> ConfigError:
        return ConfigError(f"{SETTING}: engine {text!r} {why}; expected {FORMS}")

    if "://" not in text:
        if ":" in text or "/" in text:
            raise bad("is not a URL (no scheme://) nor a context name" + (
                f" (did you mean tcp://{text}?)" if re.fullmatch(r"[\w.-]+:\d+", text) else ""))
        if not CONTEXT_NAME.fullmatch(text):
            raise bad("is not a valid context name")
        return Entry(text, "context")
    scheme, rest = text.split("://", 1)
    if scheme == "unix":
        if not rest.startswith("/") or rest.rstrip("/") == "":
            raise bad("has no absolute socket path (unix:///var/run/docker.sock has three slashes)")
        return Entry(text, "unix")
    if scheme not in ("tcp", "ssh"):
        raise bad(f"has the scheme {scheme}://, which Docker does not serve")
    url = urllib.parse.urlsplit(text)
    try:
        _ = url.port          # parsed on access: a port that is not a number raises here
    except ValueError:
        raise bad("has a port that is not a number from 1 to 65535") from None
    if not url.hostname:
        raise bad("names no host")
    if url.path not in ("", "/") or url.query or url.fragment:
        raise bad("has a path, query or fragment after the host")
    if scheme == "tcp" and (url.username or url.password):
        raise bad("has a user name: tcp:// authenticates with TLS certificates (DOCKER_CERT_PATH)")
    return Entry(text, scheme)


def parse_all(names: Sequence[str]) -> tuple[Entry, ...]:
    """Every entry of the setting, in its order; one named twice is refused."""
    entries = tuple(parse(n) for n in names)
    seen: set[str] = set()
    for e in entries:
        if e.name in seen:
            raise ConfigError(f"{SETTING}: engine {e.name!r} is named twice")
        seen.add(e.name)
    return entries


def _usual() -> Entry:
    """The one engine the Docker settings name (dockerclient.endpoint), by its URL."""
    from . import client as dockerclient
    ep = dockerclient.endpoint()
    return Entry(ep.host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock", "usual")


def _client_args(entry: Entry) -> dict:
    """docker.DockerClient's arguments for the entry: where, TLS, ssh (one
    resolver for all: dockerclient's, as for the usual engine)."""
    from . import client as dockerclient
    if entry.kind == "usual":
        ep = dockerclient.endpoint()
    elif entry.kind == "context":
        ep = dockerclient.context_endpoint(entry.name, SETTING)
    elif entry.kind == "tcp":
        # A tcp:// engine takes DOCKER_TLS_VERIFY / DOCKER_CERT_PATH, as DOCKER_HOST would.
        return {"base_url": entry.name, "tls": dockerclient.env_tls(f"engine {entry.name}"), "use_ssh_client": False}
    else:
        ep = dockerclient.Endpoint(entry.name, f"engine {entry.name}")
    return dockerclient.client_args(ep)


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"


def _answering_client(entry: Entry, timeout: float) -> docker.DockerClient:
    """A client whose engine answered a ping within `timeout` seconds."""
    import docker
    client = docker.DockerClient(timeout=timeout, max_pool_size=32, **_client_args(entry))
    client.ping()
    return client


@dataclass(eq=False)
class Member:
    """An engine that answered when the run began."""
    entry: Entry
    client: docker.DockerClient
    running: int = 0             # container stages leased to it now
    lost: bool = False           # stopped answering during the run: no more leases

    @property
    def name(self) -> str:
        return self.entry.name


@dataclass(eq=False)
class Pool:
    """The engines of one run, shared by its doit threads."""
    entries: tuple[Entry, ...]          # (): the usual engine (dockerclient.connect)
    settings: Settings
    ran_on: dict[str, str] = field(default_factory=dict)     # stage -> the engine it last leased
    _members: list[Member] | None = None
    _failure: EngineError | None = None
    _mutex: threading.Lock = field(default_factory=threading.Lock)
    _starting: threading.Lock = field(default_factory=threading.Lock)
    _imports: dict[tuple[str, str], threading.Lock] = field(default_factory=dict)

    @property
    def several(self) -> bool:
        return len(self.entries) > 1

    # --- which engines ------------------------------------------------------

    def members(self) -> list[Member]:
        """The engines that answered when the run first asked (asked once)."""
        with self._starting:
            if self._members is None and self._failure is None:
                try:
                    self._members = self._start()
                except EngineError as e:
                    self._failure = e      # said once, by whoever asks first; the rest get the same
            if self._failure is not None:
                raise self._failure
            assert self._members is not None     # started, or failed above
            return self._members

    def _start(self) -> list[Member]:
        if not self.entries:
            # As before there was a list: dockerclient.connect, its errors and its advice.
            from . import client as dockerclient
            client = dockerclient.connect()
            return [Member(_usual(), client)]

        def ask(entry: Entry) -> Member | str:
            try:
                client = _answering_client(entry, ANSWER_TIMEOUT)
            except EngineError:
                raise                     # a context that cannot be read: a setting to mend, not an engine away
            except Exception as e:        # the SDK raises several types for "nobody answers"
                return _one_line(e)
            client.api.timeout = WORK_TIMEOUT
            return Member(entry, client)

        with ThreadPoolExecutor(len(self.entries)) as ask_all:
            answers = list(ask_all.map(ask, self.entries))
        members: list[Member] = []
        silent: list[tuple[str, str]] = []
        for entry, answer in zip(self.entries, answers, strict=True):
            if isinstance(answer, str):
                silent.append((entry.name, answer))
                continue
            members.append(answer)
        if not members:
            raise EngineError(f"none of the engines in {SETTING} answers: "
                              f"{'; '.join(f'{name} ({why})' for name, why in silent)}; start one of them (`sudo dockerd &`), "
                              f"or name running ones")
        for name, why in silent:
            _say(f"engine {name} does not answer ({why}): left out of this run")
        return members

    def first(self) -> Member:
        """The first listed engine that answers: the builder is imported there
        by the builder task; the others get it when a stage first leases them."""
        return self._alive()[0]

    def _alive(self) -> list[Member]:
        members = self.members()
        with self._mutex:
            alive = [m for m in members if not m.lost]
        if not alive:
            raise EngineError(f"every engine of this run has stopped answering: "
                              f"{', '.join(m.name for m in members)}")
        return alive

    # --- which one is free --------------------------------------------------

    @contextmanager
    def lease(self, stage: str) -> Iterator[Member]:
        """The engine with the fewest container stages running, for the
        stage's container; failures inside name it (see `speaking_for`)."""
        alive = self._alive()
        with self._mutex:
            chosen = min(alive, key=lambda m: (m.lost, m.running))     # the first listed among equals
            chosen.running += 1
            self.ran_on[stage] = chosen.name
        try:
            with self.speaking_for(chosen, f"stage {stage}"):
                yield chosen
        finally:
            with self._mutex:
                chosen.running -= 1

    @contextmanager
    def speaking_for(self, member: Member, what: str) -> Iterator[None]:
        """Failures while `member` works for `what`: when the engine no longer
        answers, one EngineError naming it (and it gets no more work in this
        run); an engine error otherwise names it too; the rest is left as it is."""
        try:
            yield
        except Exception as e:
            if self._answers(member):
                if isinstance(e, EngineError) and member.name not in str(e):
                    raise EngineError(f"{what}: engine {member.name}: {e}") from None
                raise
            with self._mutex:
                member.lost = True
            raise EngineError(f"{what}: engine {member.name} stopped answering ({_one_line(e)}); it gets no more "
                              f"work in this run") from None

    def _answers(self, member: Member) -> bool:
        try:
            _answering_client(member.entry, ANSWER_TIMEOUT).close()
            return True
        except Exception:      # whatever the SDK raises, or a context gone unreadable
            return False

    # --- the builder image on each ------------------------------------------

    def provide_builder(self, member: Member, builder: dict,
                        import_cached: Callable[[Any, Settings, dict], object]) -> str:
        """The builder image's tag on `member`, imported with `import_cached`
        (the builder's own, given by the caller: the engine layer knows no
        builder) if that engine lacks it: once per engine, whatever the threads."""
        tag, sha = builder["tag"], builder["tar_sha256"]
        with self._mutex:
            importing = self._imports.setdefault((member.name, sha), threading.Lock())
        with importing:
            from . import client as dockerclient
            if not dockerclient.image_exists(member.client, tag):
                _say(f"engine {member.name} has no {tag}: importing the builder from the cache")
                import_cached(member.client, self.settings, builder)
        return tag


def _say(text: str) -> None:
    log.say(text, "engines")


_pools: dict[tuple, Pool] = {}
_pools_mutex = threading.Lock()


def pool(settings: Settings) -> Pool:
    """The run's engines for these settings: one pool per process, shared by
    the builder task and every stage (doit's threads)."""
    key = (settings.engines, settings.cache_dir)
    with _pools_mutex:
        if key not in _pools:
            _pools[key] = Pool(parse_all(settings.engines), settings)
        return _pools[key]
