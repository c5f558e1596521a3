"""Fetching sources: never lets an unverified byte into the cache.

A download streams into cache/sources/partial/, hashed while it is written;
only when its size and every pinned hash match is it renamed to
cache/sources/sha256/<hex>. Bytes that do not match are moved to
cache/sources/rejected/ for inspection and never used. URLs are tried in
order, then the global mirrors (like Buildroot's BR2_PRIMARY_SITE /
BR2_BACKUP_SITE or Yocto's MIRRORS); transient errors are retried with
backoff and resumed with Range.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import requests

from .config import MIRROR_SCHEMES, Settings
from .errors import FetchError, HashMismatch, OnlyDockerError, UnpinnedSource
from .hashing import CHUNK, MultiHasher

CONNECT_TIMEOUT = 15
READ_TIMEOUT = 60
ATTEMPTS = 4            # per URL, for transient errors
BACKOFF = 1.0           # seconds, doubled each retry
PROGRESS_MIN = 8 << 20  # show a progress bar above this size


def resolve_url(url: str, settings: Settings) -> str:
    scheme = url.split(":", 1)[0]
    if scheme in MIRROR_SCHEMES:
        return f"{settings.mirror_for(scheme)}/{url[len(scheme) + 1:]}"
    return url


@dataclass(frozen=True)
class SourceStatus:
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
        line = f"{self.state:<9} {self.name:<20} {self.file}"
        if self.state == "CORRUPT":
            line += f"  expected={self.expected} actual={self.actual}"
        return line


class _Transient(Exception):
    """Worth retrying: a reset, a timeout, a 5xx."""


class _Fatal(Exception):
    """Not worth retrying at this URL: a 404, a mismatch, a body too large."""


class Fetcher:
    def __init__(self, settings: Settings, session: requests.Session | None = None):
        self.settings = settings
        self.session = session or requests.Session()
        self.root = settings.cache_dir / "sources"

    # --- cache layout -------------------------------------------------------

    def cache_path(self, source) -> Path:
        return self.root / "sha256" / (source.sha256 or "unpinned")

    def _partial(self, source) -> Path:
        return self.root / "partial" / f"{source.sha256 or source.name}.part"

    def _reject(self, path: Path, source) -> Path:
        d = self.root / "rejected"
        d.mkdir(parents=True, exist_ok=True)
        fd, dest = tempfile.mkstemp(prefix=f"{source.file}.", dir=d)
        os.close(fd)
        os.replace(path, dest)
        return Path(dest)

    def _mkdirs(self) -> None:
        for d in ("sha256", "partial", "rejected"):
            (self.root / d).mkdir(parents=True, exist_ok=True)

    # --- verification -------------------------------------------------------

    def _verify(self, path: Path, source, what: str) -> dict[str, str]:
        """Hash a complete file and compare to every pin; a mismatch moves
        the bytes aside and raises HashMismatch naming what they came from."""
        h = MultiHasher(tuple(source.hashes()))
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
        return self._compare(path, source, what, h)

    def _compare(self, path: Path, source, what: str, h: MultiHasher) -> dict[str, str]:
        digests = h.hexdigests()
        if source.size is not None and h.size != source.size:
            kept = self._reject(path, source)
            raise HashMismatch(what, "size", str(source.size), str(h.size), kept)
        for algo, expected in source.hashes().items():
            if digests[algo] != expected:
                kept = self._reject(path, source)
                raise HashMismatch(what, algo, expected, digests[algo], kept)
        return digests

    def _admit(self, path: Path, digests: dict[str, str]) -> Path:
        final = self.root / "sha256" / digests["sha256"]
        os.replace(path, final)
        return final

    def check(self, source) -> SourceStatus:
        """Re-hash a cached source (`doit verify`)."""
        if not source.pinned:
            return SourceStatus(source.name, source.file, "UNPINNED")
        path = self.cache_path(source)
        if not path.is_file():
            return SourceStatus(source.name, source.file, "MISSING", path=path)
        h = MultiHasher(tuple(source.hashes()))
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
        digests = h.hexdigests()
        if source.size is not None and h.size != source.size:
            return SourceStatus(source.name, source.file, "CORRUPT", f"size {source.size}", f"size {h.size}", path)
        for algo, expected in source.hashes().items():
            if digests[algo] != expected:
                return SourceStatus(source.name, source.file, "CORRUPT", f"{algo}:{expected}",
                                    f"{algo}:{digests[algo]}", path)
        return SourceStatus(source.name, source.file, "OK", path=path)

    # --- fetching -----------------------------------------------------------

    def fetch(self, source, progress: bool = True) -> Path:
        """The verified cached file of a pinned source, fetched if needed."""
        if not source.pinned:
            raise UnpinnedSource(f"source {source.name!r} ({source.file}) has no sha256 in the lock: "
                                 f"run `doit lock` to fetch and pin it")
        final = self.cache_path(source)
        if final.is_file():
            return final
        self._mkdirs()
        return self._obtain(source, progress)

    def fetch_for_pinning(self, source) -> tuple[Path, str, int]:
        """Fetch a source that has no sha256 yet, checking whatever hash it
        has (a legacy sha1); returns the cached path, its sha256 and size."""
        self._mkdirs()
        path = self._obtain(source, progress=True)
        return path, path.name, path.stat().st_size

    def _obtain(self, source, progress: bool) -> Path:
        errors: list[str] = []
        hand = self.settings.downloads_dir / source.file
        if hand.is_file():
            # A hand-placed file is verified like any download, on a copy:
            # the user's file stays where they put it.
            tmp = self._partial(source).with_suffix(".hand")
            with open(hand, "rb") as src, open(tmp, "wb") as dst:
                while chunk := src.read(CHUNK):
                    dst.write(chunk)
            digests = self._verify(tmp, source, f"{hand} (placed by hand)")
            return self._admit(tmp, digests)
        if self.settings.offline:
            raise FetchError(f"source {source.name!r}: {source.file} is not in the cache "
                             f"({self.cache_path(source)}) nor in {self.settings.downloads_dir}, "
                             f"and ONLYDOCKER_OFFLINE is set: fetch it online once, or place it there by hand")
        for url in self._candidates(source, errors):
            try:
                return self._download(url, source, progress)
            except HashMismatch as e:
                errors.append(f"{url}: {e}")
            except _Fatal as e:
                errors.append(f"{url}: {e}")
            except OnlyDockerError as e:
                errors.append(f"{url}: {e}")
        raise FetchError(f"source {source.name!r} ({source.file}): no URL gave the pinned bytes:\n  "
                         + "\n  ".join(errors))

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
                self._transfer(url, part, source, progress)
                break
            except _Fatal as e:
                if part.exists() and part.stat().st_size:
                    raise _Fatal(f"{e} (bytes kept at {self._reject(part, source)})") from None
                raise
            except _Transient as e:
                if attempt == ATTEMPTS:
                    raise _Fatal(f"gave up after {ATTEMPTS} attempts: {e}") from None
                print(f"fetch {source.file}: {e}; retrying in {delay:.0f} s (attempt {attempt + 1}/{ATTEMPTS})",
                      file=sys.stderr)
                time.sleep(delay)
                delay *= 2
        digests = self._verify(part, source, url)
        origin.unlink(missing_ok=True)
        return self._admit(part, digests)

    def _transfer(self, url: str, part: Path, source, progress: bool) -> None:
        scheme = urlsplit(url).scheme
        if scheme == "file":
            src = Path(unquote(urlsplit(url).path))
            if not src.is_file():
                raise _Fatal(f"no such file {src}")
            with open(src, "rb") as f, open(part, "wb") as out:
                self._copy(f.read, out, source, 0)
            return
        have = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            r = self.session.get(url, stream=True, headers=headers, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))
        except (requests.ConnectionError, requests.Timeout) as e:
            raise _Transient(f"{type(e).__name__}: {e}") from None
        with r:
            if r.status_code == 416 and have:
                part.unlink()      # our partial is past the end: start again
                raise _Transient("stale partial download discarded")
            if r.status_code >= 500 or r.status_code == 429:
                raise _Transient(f"HTTP {r.status_code}")
            if r.status_code == 404:
                hint = ""
                if "/pool/" in url:
                    hint = (" (Debian's archive keeps only current versions: this file may have left the "
                            "pool; use a mirror that kept it, the cache, or update the lock)")
                raise _Fatal(f"HTTP 404 Not Found{hint}")
            if r.status_code not in (200, 206):
                raise _Fatal(f"HTTP {r.status_code}")
            if r.status_code == 200:
                have = 0           # the server ignored Range: start over
            mode = "ab" if have else "wb"
            total = None
            if r.headers.get("Content-Length", "").isdigit():
                total = have + int(r.headers["Content-Length"])
                if source.size is not None and total > source.size:
                    raise _Fatal(f"the server announces {total} bytes, more than the pinned size {source.size}")
            with open(part, mode) as out:
                try:
                    # Small reads: what arrived before a reset is kept for the resume.
                    self._copy(lambda n: r.raw.read(min(n, 1 << 16), decode_content=False), out, source, have,
                               total=total, progress=progress)
                except (requests.ConnectionError, requests.Timeout, OSError) as e:
                    if isinstance(e, OSError) and not _is_network_error(e):
                        raise
                    raise _Transient(f"connection lost after {part.stat().st_size} bytes: {e}") from None
                except Exception as e:   # urllib3's ProtocolError / ReadTimeoutError
                    if type(e).__module__.startswith("urllib3"):
                        raise _Transient(f"connection lost after {part.stat().st_size} bytes: {e}") from None
                    raise

    def _copy(self, read, out, source, have: int, total: int | None = None, progress: bool = False) -> None:
        bar = None
        if progress and (total or source.size or 0) >= PROGRESS_MIN and sys.stderr.isatty():
            from tqdm import tqdm
            bar = tqdm(total=total or source.size, initial=have, unit="B", unit_scale=True,
                       desc=source.file, leave=False)
        written = have
        try:
            while True:
                chunk = read(CHUNK)
                if not chunk:
                    break
                written += len(chunk)
                if source.size is not None and written > source.size:
                    raise _Fatal(f"the body is larger than the pinned size {source.size}: refused")
                out.write(chunk)
                if bar:
                    bar.update(len(chunk))
        finally:
            if bar:
                bar.close()


def _is_network_error(e: OSError) -> bool:
    import errno
    return e.errno in (errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE, errno.ETIMEDOUT, None)
