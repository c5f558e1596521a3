"""The remote cache: any server of Bazel's HTTP remote-cache protocol
(bazel-remote, or nginx with WebDAV), shared by a team, and untrusted.

Layout (Bazel's):
  /cas/<sha256>   content blobs: source files, builder image entries and
                  stage entries (the .tar.zst bytes of the local cache)
  /ac/<key>       for a stage key (or a builder's input key), a small entry:
                  a DSSE envelope, Ed25519-signed, whose payload names the
                  blob and the record of what it holds

Nothing read from the server is believed unchecked:
- a blob is hashed as it is downloaded; bytes of another sha256 are
  discarded and reported with both hashes;
- an entry counts only if one of its signatures verifies with a trusted key
  (ONLYDOCKER_TRUSTED_KEYS, like Nix's trusted-public-keys, plus the key this
  machine signs with) and its payload names the key it was asked for, so a
  writer without a trusted key cannot make a client use their bytes, nor
  move a good entry to another key.
Everything that fails is a miss: the build goes on locally. A server that
does not answer costs one timeout, is reported once, and is not asked
again in this run. Uploads (never in read-only mode) go blob first, entry
last, and only for what was built here and succeeded.
"""
from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from .. import atomic, log
from ..canon import compact_json
from ..config import RemoteCacheSettings, Settings
from ..errors import SigningError, machine_cause, machine_error
from ..hashing import CHUNK
from ..sign import Key, dsse_sign, dsse_verify, load_key, minisign_public_key

PAYLOAD_TYPE = "application/vnd.onlydocker.cache-entry+json"
ENTRY_MAX = 16 << 20          # an /ac/ entry is a record, not a blob: refuse a huge one


def _say(text: str) -> None:
    log.say(text, "remote cache")


class RemoteCache:
    """One server, for one run. Thread-safe: doit's threads share it."""

    def __init__(self, settings: RemoteCacheSettings, signing_key: Key | None = None,
                 say: Callable[[str], None] = _say):
        self.settings = settings
        self.url = settings.url
        self.key = signing_key
        self.say = say
        self.trusted = list(settings.trusted_keys)
        if signing_key is not None:
            # What this machine signed, it may read back.
            self.trusted.append(minisign_public_key(signing_key).splitlines()[-1])
        self.session = requests.Session()
        self.session.verify = str(settings.ca_bundle) if settings.ca_bundle else True
        if settings.user:
            self.session.auth = (settings.user, settings.password or "")
        # else requests reads ~/.netrc (or $NETRC) for the host, as curl -n does.
        self.timeout = (settings.timeout, settings.timeout)
        self._lock = threading.Lock()
        self._down: str | None = None       # why the server is not asked again
        self._said: set[str] = set()
        self.counts = {"hits": 0, "misses": 0, "uploads": 0, "rejected": 0}

    @property
    def readonly(self) -> bool:
        return self.settings.readonly

    # --- reporting ------------------------------------------------------------

    def _once(self, topic: str, text: str) -> None:
        with self._lock:
            if topic in self._said:
                return
            self._said.add(topic)
        self.say(text)

    def _count(self, what: str) -> None:
        with self._lock:
            self.counts[what] += 1

    def _failed(self, e: Exception) -> None:
        with self._lock:
            if self._down is None:
                self._down = " ".join(str(e).split())[:300]
                report = True
            else:
                report = False
        if report:
            self.say(f"{self.url} does not answer ({type(e).__name__}: {self._down}); "
                     f"building locally, and not asking it again in this run")

    @property
    def available(self) -> bool:
        return self._down is None

    def _request(self, method: str, path: str, **kw: Any) -> requests.Response | None:
        """One request; None when the server is down or fails (said once)."""
        if self._down is not None:
            return None
        try:
            r = self.session.request(method, f"{self.url}/{path}", timeout=self.timeout, **kw)
        except (requests.ConnectionError, requests.Timeout) as e:
            self._failed(e)
            return None
        except requests.RequestException as e:
            self._failed(e)
            return None
        if r.status_code >= 500:
            r.close()
            self._failed(RuntimeError(f"HTTP {r.status_code} for {method} /{path}"))
            return None
        return r

    def _found(self, path: str, **kw: Any) -> requests.Response | None:
        """GET `path`: the response when the server has it; None (a miss) otherwise."""
        r = self._request("GET", path, **kw)
        if r is not None and r.status_code != 200:
            r.close()
            self._count("misses")
            return None
        return r

    # --- blobs ------------------------------------------------------------------

    def get_blob(self, sha256: str, dest: Path, size: int | None = None, hit: bool = False) -> bool:
        """Download /cas/<sha256> to `dest` (atomically), hashed on the way;
        False on a miss or on bytes that are not what their name says.
        `hit`: it completes an entry's restore (counted as a hit)."""
        r = self._found(f"cas/{sha256}", stream=True, headers={"Accept-Encoding": "identity"})
        if r is None:
            return False
        with r:
            h = hashlib.sha256()
            got = 0
            try:
                with atomic.replacing(dest) as out:
                    for chunk in r.raw.stream(CHUNK, decode_content=False):
                        got += len(chunk)
                        if size is not None and got > size:
                            raise _Refused(f"/cas/{sha256} is larger than the {size} bytes expected")
                        h.update(chunk)
                        out.write(chunk)
                    if h.hexdigest() != sha256:
                        raise _Refused(f"/cas/{sha256} holds bytes of sha256 {h.hexdigest()}, not {sha256}: "
                                       f"discarded, never used")
            except _Refused as e:
                self._count("rejected")
                self.say(str(e))
                return False
            except (requests.RequestException, OSError) as e:
                if isinstance(e, OSError) and not isinstance(e, (requests.RequestException, ConnectionError,
                                                                 TimeoutError)):
                    cause = machine_cause(e)
                    if cause is None:
                        raise
                    # This machine's disk, not the server nor the blob: said so, and nothing is counted against either.
                    raise machine_error(cause, cause.filename or dest, f"downloading /cas/{sha256[:16]}",
                                        need=size) from None
                self._failed(e)
                return False
            except Exception as e:           # urllib3's ProtocolError / ReadTimeoutError
                if type(e).__module__.startswith("urllib3"):
                    self._failed(e)
                    return False
                raise
        if hit:
            self._count("hits")
        return True

    def has_blob(self, sha256: str) -> bool:
        r = self._request("HEAD", f"cas/{sha256}")
        return r is not None and r.status_code == 200

    def put_blob(self, sha256: str, path: Path) -> bool:
        """Upload a blob unless the server has it already. Bazel's protocol
        has no other check: a server stores whatever a writer sends, which is
        why every download is hashed."""
        if not self._may_write() or self.has_blob(sha256):
            return self.available
        with open(path, "rb") as f:
            r = self._request("PUT", f"cas/{sha256}", data=f,
                              headers={"Content-Length": str(Path(path).stat().st_size)})
        return self._uploaded(r, f"/cas/{sha256}")

    # --- entries ----------------------------------------------------------------

    def get_entry(self, kind: str, key: str) -> dict | None:
        """The payload of /ac/<key>, if a trusted key signed it for this
        kind and key; else None (reported)."""
        r = self._found(f"ac/{key}")
        if r is None:
            return None
        with r:
            body = r.content
        where = f"/ac/{key}"
        try:
            if len(body) > ENTRY_MAX:
                raise _Refused(f"{len(body)} bytes, more than an entry can be")
            envelope = json.loads(body)
            if not isinstance(envelope, dict) or envelope.get("payloadType") != PAYLOAD_TYPE:
                raise _Refused(f"not an Only Docker cache entry (payloadType {PAYLOAD_TYPE})")
            payload = self._verified(envelope)
            entry = json.loads(payload)
            if not isinstance(entry, dict) or entry.get("kind") != kind or entry.get("key") != key:
                raise _Refused(f"signed for another entry ({entry.get('kind')!r} "
                               f"{str(entry.get('key'))[:16]}), not {kind} {key[:16]}")
            blob = entry.get("blob")
            if not (isinstance(blob, dict) and isinstance(blob.get("sha256"), str)
                    and len(blob["sha256"]) == 64 and isinstance(blob.get("size"), int)):
                raise _Refused("its blob is not named by sha256 and size")
        except (ValueError, UnicodeDecodeError) as e:
            self._count("rejected")
            self.say(f"{where}: unreadable ({e}): ignored")
            return None
        except _Refused as e:
            self._count("rejected")
            self.say(f"{where}: {e}: ignored")
            return None
        return entry

    def _verified(self, envelope: dict) -> bytes:
        if not self.trusted:
            raise _Refused("unsigned by any trusted key (ONLYDOCKER_TRUSTED_KEYS is empty)")
        for pub in self.trusted:
            try:
                return dsse_verify(pub, envelope)
            except SigningError:
                continue
        ids = ", ".join(str(s.get("keyid")) for s in envelope.get("signatures") or [] if isinstance(s, dict))
        raise _Refused(f"no valid signature by a trusted key (signed by: {ids or 'nobody'})")

    def put_entry(self, kind: str, key: str, blob_sha256: str, blob_size: int, record: dict) -> bool:
        if not self._may_write() or not self._may_sign():
            return False
        assert self.key is not None       # _may_sign said so
        payload = compact_json({"kind": kind, "key": key, "blob": {"sha256": blob_sha256, "size": blob_size},
                                "record": record})
        envelope = dsse_sign(self.key, payload, PAYLOAD_TYPE)
        r = self._request("PUT", f"ac/{key}", data=compact_json(envelope),
                          headers={"Content-Type": "application/json"})
        return self._uploaded(r, f"/ac/{key}")

    def share(self, kind: str, key: str, blob: Path, record: dict) -> None:
        """Upload a local entry: its blob, then the signed entry naming it."""
        if not self._may_write() or not self._may_sign():
            return
        with open(blob, "rb") as f:
            sha = hashlib.file_digest(f, "sha256").hexdigest()
        if self.put_blob(sha, blob):
            if self.put_entry(kind, key, sha, Path(blob).stat().st_size, record):
                self._count("uploads")

    # --- writing ------------------------------------------------------------------

    def writable(self) -> bool:
        """Whether this run uploads: not read-only, the server not found down,
        and a key to sign with."""
        return self._may_write() and self.key is not None

    def _may_write(self) -> bool:
        return not self.readonly and self._down is None and "forbidden" not in self._said

    def _may_sign(self) -> bool:
        if self.key is None:
            self._once("unsigned", "no signing key: nothing is uploaded, since an unsigned entry is never "
                                   "used (make one with `doit keygen`, or set ONLYDOCKER_REMOTE_CACHE_READONLY=1)")
            return False
        return True

    def _uploaded(self, r: requests.Response | None, what: str) -> bool:
        if r is None:
            return False
        with r:
            if r.status_code in (200, 201, 204):
                return True
            if r.status_code in (401, 403, 405):
                self._once("forbidden", f"PUT {what}: HTTP {r.status_code}: this client may not write; "
                                        f"uploads stop for this run (set ONLYDOCKER_REMOTE_CACHE_READONLY=1 "
                                        f"to say so)")
            else:
                self.say(f"PUT {what}: HTTP {r.status_code}: not uploaded")
            return False


class _Refused(Exception):
    """What the server sent is not to be used."""


def from_settings(settings: Settings) -> RemoteCache | None:
    """The remote cache the settings name, with this machine's signing key
    when it has one (a read-only client needs none)."""
    if settings.remote is None:
        return None
    key = None
    if not settings.remote.readonly and settings.signing_key.exists():
        key = load_key(settings.signing_key)
    return RemoteCache(settings.remote, key)
