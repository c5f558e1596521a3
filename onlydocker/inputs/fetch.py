"""Fetching sources: never lets an unverified byte into the cache.

A download streams into cache/sources/partial/, hashed while it is written;
only when its size and every pinned hash match is it renamed to
cache/sources/sha256/<hex>. Bytes that do not match are moved to
cache/sources/rejected/ for inspection and never used. URLs are tried in
order, then the global mirrors (like Buildroot's BR2_PRIMARY_SITE /
BR2_BACKUP_SITE or Yocto's MIRRORS), then the remote cache's /cas/<sha256>
as the mirror of last resort (remote.py; a source fetched from its URLs is
shared there, so an old lock keeps building when Debian's pool has dropped
its versions); transient errors are retried with
backoff and resumed with Range. One process at a time works on a given
source (an flock beside its partial file); the others wait and then find it
in the cache.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from .. import log
from ..config import MIRROR_SCHEMES, Settings
from ..errors import (
    FetchError,
    HashMismatch,
    MachineError,
    OnlyDockerError,
    UnpinnedSource,
    machine_cause,
    machine_error,
)
from ..hashing import CHUNK, MultiHasher
from ..progress import Heartbeat

if TYPE_CHECKING:
    import requests

    from ..cache.remote import RemoteCache

CONNECT_TIMEOUT = 15
READ_TIMEOUT = 60
ATTEMPTS = 4            # per URL, for transient errors
BACKOFF = 1.0           # seconds, doubled each retry
PROGRESS_MIN = 8 << 20  # show progress above this size
NET_READ = 1 << 16      # small network reads: what arrived before a reset is kept


def resolve_url(url: str, settings: Settings) -> str:
    """A lock URL as a real one: mirror schemes (`debian:pool/...`) are
    resolved against the configured mirror; others are returned as they are."""
    scheme = url.split(":", 1)[0]
    if scheme in MIRROR_SCHEMES:
        return f"{settings.mirror_for(scheme)}/{url[len(scheme) + 1:]}"
    return url


@dataclass(frozen=True)
class SourceStatus:
    """What `doit verify` found for one source of the lock."""
    name: str
    file: str
    state: str              # OK, MISSING, CORRUPT, UNPINNED
    expected: str | None = None
    actual: str | None = None
    path: Path | None = None

    @property
    def ok(self) -> bool:
        return self.state == "OK"

    def __str__(self) -> str:
        if self.state == "UNPINNED":
            return f"UNPINNED {self.name} ({self.file}: no {self.expected} in the lock; run `doit lock`)"
        line = f"{self.state} {self.name} {self.file}"
        if self.state == "CORRUPT":
            line += f" expected={self.expected} actual={self.actual}"
        return line


class _Transient(Exception):
    """Worth retrying: a reset, a timeout, a 5xx."""


class _Fatal(Exception):
    """Not worth retrying at this URL: a 404, a body too large."""


def _log(msg: str) -> None:
    log.say(msg)


class Fetcher:
    def __init__(self, settings: Settings, session: requests.Session | None = None,
                 remote: RemoteCache | None = None):
        self.settings = settings
        self._session = session
        self.remote = remote
        self.root = settings.cache_dir / "sources"

    @property
    def session(self) -> requests.Session:
        # requests (about 60 ms to import) is needed by a download only: a
        # no-op, which downloads nothing, does without it.
        if self._session is None:
            import requests
            self._session = requests.Session()
        return self._session

    # --- cache layout -------------------------------------------------------

    def cache_path(self, source) -> Path:
        """Where a source's verified bytes live: cache/sources/sha256/<hex>."""
        return self.root / "sha256" / (source.sha256 or "unpinned")

    def _key(self, source) -> str:
        return source.sha256 or source.name

    def _partial(self, source) -> Path:
        return self.root / "partial" / f"{self._key(source)}.part"

    def _reject(self, path: Path, source) -> Path:
        """Move bytes that failed verification aside, under a fresh name."""
        d = self.root / "rejected"
        d.mkdir(parents=True, exist_ok=True)
        fd, dest = tempfile.mkstemp(prefix=f"{self._key(source)}-", dir=d)
        os.close(fd)
        shutil.move(path, dest)   # across file systems for a hand-placed file
        return Path(dest)

    def _mkdirs(self) -> None:
        for d in ("sha256", "partial", "rejected"):
            (self.root / d).mkdir(parents=True, exist_ok=True)

    @contextmanager
    def _locked(self, source):
        """Only one process fetches a given source at a time."""
        self._mkdirs()
        with open(self.root / "partial" / f"{self._key(source)}.lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # --- verification -------------------------------------------------------

    @staticmethod
    def _hash_file(path: Path, source) -> MultiHasher:
        with open(path, "rb", buffering=0) as f:
            # typeshed: FileIO's readinto may return None, and file_digest's digest object must be a
            # hashlib hash; it only calls update (and returns the object), which MultiHasher has
            return hashlib.file_digest(f, lambda: MultiHasher(tuple(source.hashes())))  # type: ignore[arg-type, return-value]

    @staticmethod
    def _mismatch(source, h: MultiHasher) -> tuple[str, str, str] | None:
        """(what, expected, actual) of the first check that fails, or None."""
        if source.size is not None and h.size != source.size:
            return "size", str(source.size), str(h.size)
        digests = h.hexdigests()
        for algo, expected in source.hashes().items():
            if digests[algo] != expected:
                return algo, expected, digests[algo]
        return None

    def _compare(self, path: Path, source, what: str, h: MultiHasher) -> dict[str, str]:
        """Compare size and every pinned hash; a mismatch moves the bytes aside
        and raises HashMismatch naming where they came from."""
        bad = self._mismatch(source, h)
        if bad:
            raise HashMismatch(what, *bad, kept_at=self._reject(path, source))
        return h.hexdigests()

    def _admit(self, path: Path, digests: dict[str, str]) -> Path:
        final = self.root / "sha256" / digests["sha256"]
        os.replace(path, final)   # atomic: the final path is whole or absent
        return final

    def check(self, source) -> SourceStatus:
        """Re-hash a cached source (`doit verify`)."""
        if not source.pinned:
            missing = " and ".join(f for f in ("sha256", "size") if getattr(source, f) is None)
            return SourceStatus(source.name, source.file, "UNPINNED", expected=missing)
        path = self.cache_path(source)
        if not path.is_file():
            return SourceStatus(source.name, source.file, "MISSING", path=path)
        bad = self._mismatch(source, self._hash_file(path, source))
        if bad:
            algo, expected, actual = bad
            return SourceStatus(source.name, source.file, "CORRUPT", f"{algo}:{expected}", f"{algo}:{actual}", path)
        return SourceStatus(source.name, source.file, "OK", path=path)

    # --- fetching -----------------------------------------------------------

    def fetch(self, source, progress: bool = True) -> Path:
        """The verified cached file of a pinned source, fetched if needed."""
        if not source.pinned:
            missing = " and ".join(f for f in ("sha256", "size") if getattr(source, f) is None)
            raise UnpinnedSource(f"source {source.name!r} ({source.file}) has no {missing} in the lock: "
                                 f"run `doit lock` to fetch, verify and pin it")
        final = self.cache_path(source)
        if final.is_file():
            return final
        with self._machine(source):
            with self._locked(source):
                if final.is_file():          # another process fetched it meanwhile
                    return final
                return self._obtain(source, progress)

    @contextmanager
    def _machine(self, source):
        """A write into the source cache that fails for this machine (full
        disk, read-only or vanished folder) is said as that, in one line
        naming the path; the partial download stays for the next run to resume."""
        try:
            yield
        except OSError as e:
            cause = machine_cause(e)
            if cause is None:
                raise
            raise machine_error(cause, cause.filename or self.root,
                                f"fetching {source.file} into the source cache", need=source.size) from None

    def fetch_for_pinning(self, source) -> tuple[Path, str, int]:
        """Fetch a source the lock does not fully pin yet, checking whatever
        it does give (a legacy sha1, a sha256 without size); returns the
        cached path, its sha256 and its size."""
        if source.sha256 and self.cache_path(source).is_file():
            h = self._hash_file(self.cache_path(source), source)
            if h.hexdigests()["sha256"] == source.sha256:
                return self.cache_path(source), source.sha256, h.size
        with self._machine(source), self._locked(source):
            path = self._obtain(source, progress=True)
        return path, path.name, path.stat().st_size

    def _obtain(self, source, progress: bool) -> Path:
        errors: list[str] = []
        hand = self.settings.downloads_dir / source.file
        if hand.is_file():
            return self._from_hand(hand, source)
        if self.settings.offline:
            raise FetchError(f"source {source.name!r}: {source.file} is not in the cache "
                             f"({self.cache_path(source)}) nor in {self.settings.downloads_dir}, "
                             f"and ONLYDOCKER_OFFLINE is set (offline: cache and downloads folder only): "
                             f"fetch it online once, or place it there by hand")
        for url in self._candidates(source, errors):
            try:
                path = self._download(url, source, progress)
            except MachineError:
                raise              # this machine, not the URL: another URL would meet it too
            except (HashMismatch, _Fatal, OnlyDockerError) as e:
                errors.append(f"{url}: {e}")
                continue
            if self.remote is not None:
                self.remote.put_blob(source.sha256, path)
            return path
        if self.remote is not None:
            found = self._from_remote(source)
            if found:
                return found
            errors.append(f"{self.remote.url}/cas/{source.sha256}: not there (or unusable: see above)")
        raise FetchError(f"source {source.name!r} ({source.file}): no URL gave the pinned bytes; tried:\n  "
                         + "\n  ".join(errors))

    def _from_remote(self, source) -> Path | None:
        """The mirror of last resort: the remote cache's blob of this sha256,
        verified like any download (size and every pinned hash)."""
        assert self.remote is not None     # called only with one
        part = self._partial(source).with_suffix(".cas")
        if not self.remote.get_blob(source.sha256, part, source.size):
            return None
        digests = self._compare(part, source, f"{self.remote.url}/cas/{source.sha256}",
                                self._hash_file(part, source))
        _log(f"fetch {source.file}: no URL had it; taken from the remote cache ({self.remote.url}/cas/)")
        return self._admit(part, digests)

    def _from_hand(self, hand: Path, source) -> Path:
        """A file placed in the downloads folder by hand, verified like any
        download. It is copied, so the user's file stays where they put it;
        a bad one is moved aside to rejected/ so it cannot fail again."""
        what = f"{hand} (placed by hand)"
        found = hand.stat().st_size
        if source.size is not None and found != source.size:
            kept = self._reject(hand, source)     # no need to read it: the size says enough
            raise HashMismatch(what, "size", str(source.size), str(found), kept)
        tmp = self._partial(source).with_suffix(".hand")
        h = MultiHasher(tuple(source.hashes()))
        with open(hand, "rb") as src, open(tmp, "wb") as dst:
            while chunk := src.read(CHUNK):
                h.update(chunk)
                dst.write(chunk)
        bad = self._mismatch(source, h)
        if bad:
            tmp.unlink()
            raise HashMismatch(what, *bad, kept_at=self._reject(hand, source))
        digests = h.hexdigests()
        _log(f"fetch {source.file}: verified the copy placed by hand in {hand.parent}")
        return self._admit(tmp, digests)

    def _candidates(self, source, errors: list[str]):
        for url in source.urls:
            try:
                yield resolve_url(url, self.settings)
            except OnlyDockerError as e:
                errors.append(f"{url}: {e}")
        for mirror in self.settings.source_mirrors:
            yield f"{mirror.rstrip('/')}/{source.file}"

    def _download(self, url: str, source, progress: bool) -> Path:
        part = self._partial(source)
        # Resume only what this same URL started: never splice two servers' bytes.
        origin = part.with_name(part.name + ".url")
        if part.exists() and (not origin.exists() or origin.read_text() != url):
            part.unlink()
        origin.write_text(url)
        delay = BACKOFF
        for attempt in range(1, ATTEMPTS + 1):
            try:
                h = self._transfer(url, part, source, progress)
                break
            except _Fatal as e:
                if part.exists() and part.stat().st_size:
                    raise _Fatal(f"{e} (bytes kept at {self._reject(part, source)})") from None
                raise
            except _Transient as e:
                if attempt == ATTEMPTS:
                    raise _Fatal(f"gave up after {ATTEMPTS} attempts: {e}") from None
                _log(f"fetch {source.file}: {e}; retrying in {delay:g} s (attempt {attempt + 1}/{ATTEMPTS})")
                time.sleep(delay)
                delay *= 2
        digests = self._compare(part, source, url, h)
        origin.unlink(missing_ok=True)
        return self._admit(part, digests)

    def _transfer(self, url: str, part: Path, source, progress: bool) -> MultiHasher:
        """One attempt: append what the server sends to `part`, hashing as it
        is written (after re-hashing what an earlier attempt left)."""
        h = MultiHasher(tuple(source.hashes()))
        scheme = urlsplit(url).scheme
        if scheme == "file":
            src = Path(unquote(urlsplit(url).path))
            if not src.is_file():
                raise _Fatal(f"no such file {src}")
            with open(src, "rb") as f, open(part, "wb") as out:
                self._copy(f.read, out, h, source, url)
            return h
        import requests
        have = part.stat().st_size if part.exists() else 0
        # identity: the bytes as stored, never a transfer-compressed variant
        headers = {"Accept-Encoding": "identity"}
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            r = self.session.get(url, stream=True, headers=headers, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))
        except (requests.ConnectionError, requests.Timeout) as e:
            raise _Transient(f"{type(e).__name__}: {e}") from None
        with r:
            if r.status_code == 416 and have:
                part.unlink()      # our partial is past the end: start again
                raise _Transient("stale partial download discarded")
            if r.status_code >= 500 or r.status_code in (408, 429):
                raise _Transient(f"HTTP {r.status_code}")
            if r.status_code == 404:
                hint = ""
                if "/pool/" in url:
                    hint = (" (Debian's archive keeps only current versions: this file may have left the "
                            "pool; use a mirror or snapshot that kept it, the cache, or update the lock)")
                raise _Fatal(f"HTTP 404 Not Found{hint}")
            if r.status_code not in (200, 206):
                raise _Fatal(f"HTTP {r.status_code}")
            if r.status_code == 206 and not r.headers.get("Content-Range", "").startswith(f"bytes {have}-"):
                have = 0           # not the range we asked for: start over
                part.unlink(missing_ok=True)
                raise _Transient(f"unexpected Content-Range {r.headers.get('Content-Range')!r}")
            if r.status_code == 200:
                have = 0           # the server ignored Range: start over
            elif have:
                with open(part, "rb") as f:   # keep the hash whole across a resume
                    while chunk := f.read(CHUNK):
                        h.update(chunk)
            total = None
            if r.headers.get("Content-Length", "").isdigit():
                total = have + int(r.headers["Content-Length"])
                if source.size is not None and total > source.size:
                    raise _Fatal(f"the server announces {total} bytes, more than the pinned size {source.size}")
            with open(part, "ab" if have else "wb") as out:
                try:
                    self._copy(lambda n: r.raw.read(min(n, NET_READ), decode_content=False), out, h, source,
                               url, total=total, progress=progress)
                except (requests.ConnectionError, requests.Timeout, OSError) as e:
                    if isinstance(e, OSError) and not _is_network_error(e):
                        raise
                    raise _Transient(f"connection lost after {h.size} bytes: {e}") from None
                except Exception as e:   # urllib3's ProtocolError / ReadTimeoutError
                    if type(e).__module__.startswith("urllib3"):
                        raise _Transient(f"connection lost after {h.size} bytes: {e}") from None
                    raise
        return h

    def _copy(self, read, out, h: MultiHasher, source, url: str, total: int | None = None,
              progress: bool = False) -> None:
        """Copy until EOF, hashing; refuse to go past the pinned size. Long
        downloads show a tqdm bar on a terminal, else (a CI log) a line at
        each end and one every 30 s with how far it got."""
        expect = total or source.size or 0
        shown = progress and expect >= PROGRESS_MIN
        bar = None
        started = time.monotonic()
        with ExitStack() as stack:
            beat = None
            if shown and sys.stderr.isatty():
                from tqdm import tqdm
                bar = stack.enter_context(tqdm(total=expect, initial=h.size, unit="B", unit_scale=True,
                                               desc=source.file, leave=False))
            elif shown:
                _log(f"fetch {source.file}: {expect / 1e6:.1f} MB from {url}"
                     + (f" (resuming at {h.size} bytes)" if h.size else ""))
                beat = stack.enter_context(Heartbeat(lambda text: _log(f"fetch {source.file} {text}")))
            while True:
                chunk = read(CHUNK)
                if not chunk:
                    break
                if source.size is not None and h.size + len(chunk) > source.size:
                    raise _Fatal(f"the body is larger than the pinned size {source.size}: refused")
                h.update(chunk)
                out.write(chunk)
                if bar:
                    bar.update(len(chunk))
                elif beat:
                    beat.note(f"{h.size / 1e6:.1f} of {expect / 1e6:.1f} MB")
        if shown:
            _log(f"fetch {source.file}: {h.size} bytes in {time.monotonic() - started:.1f} s")


def _is_network_error(e: OSError) -> bool:
    return e.errno in (errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE, errno.ETIMEDOUT, None)
