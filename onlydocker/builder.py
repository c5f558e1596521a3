"""The builder image: made, not pulled.

mmdebstrap bootstraps the lane's suite with its package list from the
configured Debian mirror, with SOURCE_DATE_EPOCH, into a rootfs tar (the
same archive state gives the same bytes). The tar's sha256 is the image's
identity; it is cached zstd-compressed with its resolved package list and
imported into the engine. When the archive has moved on and a rebuild
resolves other versions, the packages that changed are named.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import zstandard

from . import atomic, engine
from .errors import BuildError, ConfigError
from .hashing import sha256_file

VERSION = "1"
ZSTD_LEVEL = 10


@dataclass(frozen=True)
class BuilderImage:
    tag: str
    tar_sha256: str
    packages: list[str]
    input_key: str


def mirror_url(lock_builder, settings) -> str:
    """The mirror the lock's [builder] names: a scheme such as `debian:`
    resolved against the settings, or a URL as written."""
    mirror = lock_builder.mirror
    scheme = mirror[:-1]
    if mirror.endswith(":") and ":" not in scheme:
        try:
            return settings.mirror_for(scheme)
        except ConfigError as e:
            raise ConfigError(f"builder image ({lock_builder.suite}): the lock's [builder] mirror = "
                              f"{mirror!r} cannot be resolved: {e}") from None
    return mirror


def input_key(lock_builder, settings, source_date_epoch: int) -> str:
    """Everything mmdebstrap is told; the archive's state is not in it (that
    is what the tar's sha256 and the package list record)."""
    data = {
        "suite": lock_builder.suite, "mirror": mirror_url(lock_builder, settings),
        "variant": lock_builder.variant, "packages": sorted(lock_builder.packages),
        "options": list(lock_builder.mmdebstrap_options), "epoch": source_date_epoch, "version": VERSION,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def packages_in(tar_path: Path) -> list[str]:
    """name=version of every installed package, from the tar's dpkg status, sorted."""
    with tarfile.open(tar_path) as tf:
        for name in ("./var/lib/dpkg/status", "var/lib/dpkg/status"):
            try:
                text = tf.extractfile(name).read().decode()
                break
            except KeyError:
                continue
        else:
            raise BuildError(f"{tar_path}: no var/lib/dpkg/status: not a Debian rootfs")
    out = []
    for stanza in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and not line[0].isspace())
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            out.append(f"{fields['Package']}={fields['Version']}")
    return sorted(out)


def changed_packages(old: list[str], new: list[str]) -> list[str]:
    """`name: old -> new` for every package whose version differs ((none) if absent)."""
    o = dict(p.split("=", 1) for p in old)
    n = dict(p.split("=", 1) for p in new)
    return [f"{k}: {o.get(k, '(none)')} -> {n.get(k, '(none)')}"
            for k in sorted(set(o) | set(n)) if o.get(k) != n.get(k)]


def _index(settings) -> Path:
    return settings.cache_dir / "builders"


def _check_options(lock_builder) -> None:
    # A keyring the host lacks would fail deep inside apt; say which one.
    for opt in lock_builder.mmdebstrap_options:
        if opt.startswith("--keyring=") and not Path(opt.split("=", 1)[1]).exists():
            raise ConfigError(f"builder image ({lock_builder.suite}): mmdebstrap option {opt!r}: no such file "
                              f"on this host (apt-get install debian-archive-keyring)")


def _bootstrap(lock_builder, settings, epoch: int, log_path: Path, work: Path) -> tuple[Path, float]:
    url = mirror_url(lock_builder, settings)
    _check_options(lock_builder)
    tar = work / "rootfs.tar"
    # --mode=auto is root mode when run as root: no user-namespace tricks needed.
    cmd = ["mmdebstrap", f"--variant={lock_builder.variant}", "--mode=auto",
           f"--include={','.join(lock_builder.packages)}", *lock_builder.mmdebstrap_options,
           lock_builder.suite, str(tar), url]
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(epoch))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"builder: mmdebstrap {lock_builder.suite} from {url} (log: {log_path})", file=sys.stderr)
    start = time.monotonic()
    with open(log_path, "w", buffering=1) as log:
        log.write("$ SOURCE_DATE_EPOCH=%d %s\n" % (epoch, " ".join(cmd)))
        try:
            r = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        except FileNotFoundError:
            raise BuildError("mmdebstrap is not installed: run ./setup.sh (apt-get install mmdebstrap)") from None
    if r.returncode != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-20:]
        raise BuildError(f"builder image: mmdebstrap {lock_builder.suite} from {url} failed "
                         f"(exit {r.returncode}); log {log_path}; last lines:\n    " + "\n    ".join(tail))
    seconds = time.monotonic() - start
    print(f"builder: bootstrapped in {seconds:.0f} s", file=sys.stderr)
    return tar, seconds


def _previous(index: Path, key: str, sha: str) -> dict | None:
    """The latest earlier record for the same input key with another tar."""
    found = []
    for p in index.glob("*.json"):
        try:
            old = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(old, dict) and old.get("input_key") == key and old.get("tar_sha256") != sha:
            found.append(old)
    return max(found, key=lambda r: r.get("created", ""), default=None)


def _tar_sha256(entry: Path) -> str:
    h = hashlib.sha256()
    with open(entry, "rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as reader:
        while b := reader.read(1 << 20):
            h.update(b)
    return h.hexdigest()


def _import(client, entry: Path, sha: str, tag: str) -> None:
    """docker import of the decompressed cache entry, once its bytes are known
    to be the tar its name says (cache entries are untrusted: a wrong tar is
    never imported, not even for a moment)."""
    try:
        actual = _tar_sha256(entry)
    except (OSError, zstandard.ZstdError) as e:
        raise BuildError(f"builder cache entry {entry} is unreadable ({e}); delete it and run again "
                         f"to rebuild") from None
    if actual != sha:
        raise BuildError(f"builder cache entry {entry}: its tar has sha256 {actual}, not {sha} as its "
                         f"name says; delete it and run again to rebuild")
    print(f"builder: importing {entry.name} into the engine as {tag}", file=sys.stderr)
    with open(entry, "rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as reader:
        engine.import_image(client, iter(lambda: reader.read(1 << 20), b""), tag)


def _read_record(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def ensure(client, lock_builder, settings, source_date_epoch: int, log_path: Path, *,
           rebuild: bool = False) -> BuilderImage:
    """The builder image for `lock_builder`: from the cache when an earlier
    bootstrap had the same input key (unless `rebuild`), else bootstrapped with
    mmdebstrap, stored and recorded; imported into the engine when missing.
    Runs that share the cache bootstrap one input key one at a time: the
    others wait, then take the result from the cache."""
    key = input_key(lock_builder, settings, source_date_epoch)
    index = _index(settings)
    index.mkdir(parents=True, exist_ok=True)
    by_input = index / f"input-{key}.json"

    def cached() -> dict | None:
        record = _read_record(by_input)
        if record is None or not (index / f"{record.get('tar_sha256')}.tar.zst").exists():
            return None
        return record

    record = None if rebuild else cached()
    if record is None:
        say = lambda text: print(f"builder: {text}", file=sys.stderr, flush=True)  # noqa: E731
        with atomic.entry_lock(index / "locks" / f"input-{key}.lock", "making the builder", say):
            atomic.clear_leftovers(by_input)
            record = None if rebuild else cached()
            if record is None:
                record = _bootstrap_and_store(lock_builder, settings, source_date_epoch, log_path, index, key)
            else:
                say("another run made it meanwhile: taken from the cache")

    sha = record["tar_sha256"]
    entry = index / f"{sha}.tar.zst"
    tag = f"onlydocker-builder:{sha[:16]}"
    if not engine.image_exists(client, tag):
        _import(client, entry, sha, tag)
    return BuilderImage(tag=tag, tar_sha256=sha, packages=list(record["packages"]), input_key=key)


def _bootstrap_and_store(lock_builder, settings, source_date_epoch: int, log_path: Path,
                         index: Path, key: str) -> dict:
    """Bootstrap, then cache the tar (by its sha256) and its record. Called
    under the input key's lock."""
    work = index / f".input-{key}.json.{os.getpid()}{atomic.TMP_SUFFIX}"   # cleared as a leftover if we die
    work.mkdir()
    try:
        tar, seconds = _bootstrap(lock_builder, settings, source_date_epoch, log_path, work)
        sha = sha256_file(tar)
        packages = packages_in(tar)
        previous = _previous(index, key, sha)
        changes = changed_packages(previous["packages"], packages) if previous else []
        if previous:
            print(f"builder: the archive has moved on since the bootstrap of {previous.get('created', '?')} "
                  f"(tar {previous['tar_sha256'][:16]} -> {sha[:16]}); changed packages:\n  "
                  + ("\n  ".join(changes) or "(none: same versions, other bytes)"), file=sys.stderr)
        entry = index / f"{sha}.tar.zst"
        if not entry.exists():
            with open(tar, "rb") as src, atomic.replacing(entry) as dst:
                # Fixed level, single-threaded: the same tar gives the same .zst.
                zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=0).copy_stream(src, dst)
        record = {
            "input_key": key, "tar_sha256": sha, "tar_size": tar.stat().st_size, "packages": packages,
            "suite": lock_builder.suite, "variant": lock_builder.variant,
            "source_date_epoch": source_date_epoch,
            "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "bootstrap_seconds": round(seconds, 1),
            "compression": f"zstd level {ZSTD_LEVEL}, single-threaded, zstandard {zstandard.__version__}",
            "changed_since_previous": changes,
            "previous_tar_sha256": previous["tar_sha256"] if previous else None,
        }
        atomic.write_json(index / f"{sha}.json", record)
        atomic.write_json(index / f"input-{key}.json", record)
        return record
    finally:
        shutil.rmtree(work, ignore_errors=True)
