"""`doit cache push`: fill a remote cache from the local one, as `nix copy
--to` does: every stage entry the lane's outputs in out/ were made from
(their manifests name the keys) and the lane's builder image, when the
remote cache lacks them. Each goes up as a build uploads it (remote.py's
`share`): the blob first, then the entry naming it, signed with this
machine's key. A fresh tree then restores the lane without building.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, OnlyDockerError


@dataclass(frozen=True)
class Candidate:
    kind: str          # "stage" or "builder"
    name: str          # the stage, or "builder (<suite>)"
    key: str
    blob: Path
    record: dict


def candidates(settings, lk, out: Path) -> tuple[list[Candidate], list[str]]:
    """The lane's local entries, and what could not be found locally."""
    from ..builder import image as builder_mod
    from ..cache.store import StageStore
    store = StageStore(settings.stage_cache)
    found, missing = [], []
    try:
        key = builder_mod.input_key(lk.builder, settings, lk.lane.source_date_epoch)
        builders = builder_mod.store(settings)
        made = builders.record(key)
        if made is None:
            raise FileNotFoundError(builders.entry(key))
        found.append(Candidate("builder", f"builder ({lk.builder.suite})", key, builders.entry(key), made))
    except (OSError, ValueError, KeyError, TypeError, OnlyDockerError):
        missing.append(f"builder ({lk.builder.suite}): not in the local cache {settings.cache_dir / 'builders'}")
    names = {}
    for m in sorted((out / "stages").glob("*.manifest.json")):
        names[m.name[:-len(".manifest.json")]] = m
    for name, m in names.items():
        try:
            key = json.loads(m.read_text())["key"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        try:
            record = json.loads((store.root / f"{key}.json").read_text())
            store.recorded_files(key)          # a whole record of this entry, or refused
        except (OSError, ValueError, OnlyDockerError):
            missing.append(f"stage {name} ({key[:12]}): not in the local stage cache {store.root}")
            continue
        if not store.entry(key).exists():
            missing.append(f"stage {name} ({key[:12]}): not in the local stage cache {store.root}")
            continue
        found.append(Candidate("stage", f"stage {name}", key, store.entry(key), record))
    return found, missing


def push(settings, lk, out: Path, say=print) -> int:
    """Upload what the remote cache lacks; 0 when every entry is there after."""
    from ..cache import remote as remote_mod
    if settings.remote is None:
        raise ConfigError("no remote cache is set (ONLYDOCKER_REMOTE_CACHE or [remote_cache] url)")
    if settings.remote.readonly:
        raise ConfigError(f"the remote cache {settings.remote.url} is read-only here "
                          f"(ONLYDOCKER_REMOTE_CACHE_READONLY): nothing can be pushed")
    if not settings.signing_key.exists():
        raise ConfigError(f"no signing key at {settings.signing_key}: an unsigned entry is never used "
                          f"(make one with `doit keygen`)")
    if not (out / "stages").is_dir():
        raise ConfigError(f"no stages in {out}: build the lane (`doit lock={lk.path}`) before pushing it")
    remote = remote_mod.from_settings(settings)
    assert remote is not None           # settings.remote is set (above)
    found, missing = candidates(settings, lk, out)
    for m in missing:
        say(f"not pushed: {m}")
    pushed = there = failed = 0
    size = 0
    for c in found:
        entry = remote.get_entry(c.kind, c.key)
        if not remote.available:
            break
        if entry is not None and remote.has_blob(entry["blob"]["sha256"]):
            there += 1
            continue
        with open(c.blob, "rb") as f:
            sha = hashlib.file_digest(f, "sha256").hexdigest()
        blob_there = remote.has_blob(sha)
        before = remote.counts["uploads"]
        remote.share(c.kind, c.key, c.blob, c.record)
        if remote.counts["uploads"] > before:
            pushed += 1
            sent = 0 if blob_there else c.blob.stat().st_size
            size += sent
            say(f"pushed {c.name} {c.key[:12]} ({sent / 1e6:.1f} MB{', blob already there' if blob_there else ''})")
        else:
            failed += 1
            say(f"not pushed: {c.name} {c.key[:12]}: the upload failed (said above)")
    if not remote.available:
        raise ConfigError(f"the remote cache {remote.url} does not answer: nothing more pushed "
                          f"({pushed} pushed before)")
    say(f"lane {lk.lane.name} -> {remote.url}: pushed {pushed} entr{'y' if pushed == 1 else 'ies'}, "
        f"{size / 1e6:.1f} MB; {there} already there" + (f"; {failed} failed" if failed else "")
        + (f"; {len(missing)} not in the local cache" if missing else ""))
    return 1 if failed else 0
