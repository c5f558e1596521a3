"""The builder image: made, not pulled, from the files the lock pins.

A lock's [builder] pins every .deb the bootstrap installs (name, version,
architecture, file, sha256, size, `debian:pool/...` URL), resolved once
online by `resolve` (mmdebstrap against the configured mirror, reading the
installed set and apt's verified Packages index). Making the image fetches
and verifies each pinned file like any source, writes a flat repository of
exactly those files and bootstraps from it with no network (mmdebstrap with
SOURCE_DATE_EPOCH, in a network namespace of its own when run as root). The
tar is then a function of the lock; its sha256 is the image's identity. It
is cached zstd-compressed with its package list and imported into the engine.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import os
import shlex
import shutil
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zstandard

# engine (the Docker SDK, about 150 ms to import) is imported where an image
# is imported or looked up: a no-op's up-to-date checks do without it.
from .. import atomic, log
from ..cache.store import ZSTD_LEVEL, StageStore
from ..canon import rfc3339
from ..errors import BuildError, ConfigError, FetchError, OnlyDockerError, UnpinnedSource
from ..formats.unpack import check_source, member_file
from ..hashing import is_sha256, sha256_file
from ..inputs import debs as debs_mod

VERSION = "2"
# The image's apt sources: fixed, so no path of the machine that made it is in
# the tar (the bootstrap's own repository is a temporary directory).
SOURCES_LIST = ("# This builder image has no package sources: it was bootstrapped offline from\n"
                "# the .deb files pinned by the lock of its lane ([builder] debs).\n")


@dataclass(frozen=True)
class BuilderImage:
    tag: str
    tar_sha256: str
    packages: list[str]
    input_key: str


# Rough seconds of a bootstrap from the pinned packages on 2 cores; it only
# orders the work (onlydocker/cli/schedule.py): the builder is on every container
# stage's chain, the kernel's too.
COST = 60.0


def _say(text: str) -> None:
    log.say(text, "builder")


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


def unpinned_message(lock_builder, settings) -> str:
    """Why a [builder] without pinned debs cannot be made, and what to run."""
    try:
        where = f"the {lock_builder.mirror} mirror ({mirror_url(lock_builder, settings)})"
    except ConfigError as e:
        where = f"the {lock_builder.mirror} mirror, not configured here ({str(e).split('resolved: ', 1)[-1]})"
    return (f"builder image ({lock_builder.suite}): the lock's [builder] pins no packages yet (debs = []), "
            f"and the builder is made only from pinned files. Pin them with `doit lock --builder --lock "
            f"<this lane's lock>`, which resolves its {len(lock_builder.packages)} packages and their "
            f"dependencies against {where}")


def input_key(lock_builder, settings, source_date_epoch: int) -> str:
    """Everything the bootstrap is made of: the [builder] table and every
    pinned .deb by its sha256. The mirror is not in it: the same files from
    any mirror make the same tar."""
    if not lock_builder.pinned:
        raise UnpinnedSource(unpinned_message(lock_builder, settings))
    data = {
        "suite": lock_builder.suite, "variant": lock_builder.variant, "packages": sorted(lock_builder.packages),
        "options": list(lock_builder.mmdebstrap_options), "epoch": source_date_epoch, "version": VERSION,
        "debs": sorted([d.name, d.version, d.architecture, d.sha256] for d in lock_builder.debs),
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def packages_in(tar_path: Path) -> list[str]:
    """name=version of every installed package, from the tar's dpkg status, sorted."""
    with tarfile.open(tar_path) as tf:
        for name in ("./var/lib/dpkg/status", "var/lib/dpkg/status"):
            try:
                text = member_file(tf, name).read().decode()
                break
            except KeyError:
                continue
        else:
            raise BuildError(f"{tar_path}: no var/lib/dpkg/status: not a Debian rootfs")
    return sorted(f"{p['Package']}={p['Version']}" for p in debs_mod.paragraphs(text)
                  if p.get("Status", "").endswith(" installed") and "Package" in p)


def changed_packages(old: list[str], new: list[str]) -> list[str]:
    """`name: old -> new` for every package whose version differs ((none) if absent)."""
    o = dict(p.split("=", 1) for p in old)
    n = dict(p.split("=", 1) for p in new)
    return [f"{k}: {o.get(k, '(none)')} -> {n.get(k, '(none)')}"
            for k in sorted(set(o) | set(n)) if o.get(k) != n.get(k)]


def _record_ok(record: dict) -> bool:
    """A builder record read back (untrusted) names its tar by a sha256 and
    lists the packages in it."""
    return is_sha256(record.get("tar_sha256")) and isinstance(record.get("packages"), list)


def store(settings, remote=None) -> StageStore:
    """The builder's cache: the stage store's kind "builder", an entry per
    input key (`<key>.tar.zst`, the tar; `<key>.json`, its record)."""
    return StageStore(settings.cache_dir / "builders", remote, kind="builder", record_ok=_record_ok)


def _check_options(lock_builder) -> None:
    # A keyring the host lacks would fail deep inside apt; say which one.
    for opt in lock_builder.mmdebstrap_options:
        if opt.startswith("--keyring=") and not Path(opt.split("=", 1)[1]).exists():
            raise ConfigError(f"builder image ({lock_builder.suite}): mmdebstrap option {opt!r}: no such file "
                              f"on this host (apt-get install debian-archive-keyring)")


def changed_debs(old, new) -> list[str]:
    """What a new pin changes against the old one: `name: old -> new` per
    version, and a same version with other bytes named by its sha256."""
    changes = changed_packages([f"{d.name}={d.version}" for d in old], [f"{d.name}={d.version}" for d in new])
    o = {(d.name, d.version): d.sha256 for d in old}
    for d in new:
        if o.get((d.name, d.version), d.sha256) != d.sha256:
            changes.append(f"{d.name}: {d.version} (sha256 {o[(d.name, d.version)][:16]} -> {d.sha256[:16]})")
    return sorted(changes)


def _mmdebstrap(variant: str, include, lock_builder, extra: list[str], target: str, mirror: str) -> list[str]:
    # --mode=auto is root mode when run as root: no user-namespace tricks needed.
    return ["mmdebstrap", f"--variant={variant}", "--mode=auto", f"--include={','.join(include)}",
            *lock_builder.mmdebstrap_options, *extra, lock_builder.suite, target, mirror]


def _run_logged(cmd: list[str], epoch: int | None, log_path: Path, what: str) -> float:
    env = dict(os.environ, **({"SOURCE_DATE_EPOCH": str(epoch)} if epoch is not None else {}))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(log_path, "w", buffering=1) as log:
        prefix = f"SOURCE_DATE_EPOCH={epoch} " if epoch is not None else ""
        log.write(f"$ {prefix}{shlex.join(cmd)}\n")
        try:
            r = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        except FileNotFoundError:
            raise BuildError(f"{cmd[0]} is not installed: run ./setup.sh (apt-get install mmdebstrap)") from None
    if r.returncode != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-20:]
        raise BuildError(f"{what} failed (exit {r.returncode}); log {log_path}; last lines:\n    "
                         + "\n    ".join(tail))
    return time.monotonic() - start


def resolve(lock_builder, settings, log_path: Path, work: Path) -> list:
    """`doit lock --builder`: bootstrap once online from the configured
    mirror (into /dev/null) and pin what got installed, with each file's
    name, sha256 and size from the Packages index apt verified against the
    signed Release file (the archive's own hashes, not a download's)."""
    from ..inputs.lock import Deb
    url = mirror_url(lock_builder, settings)
    _check_options(lock_builder)
    out = work / "resolved"
    out.mkdir(parents=True)
    q = shlex.quote(str(out))
    hooks = [
        # The host's dpkg-query reads the chroot's database: nothing runs inside.
        f'--customize-hook=dpkg-query --admindir="$1/var/lib/dpkg" -W -f \'${{Package}}\\t${{Version}}\\t'
        f'${{Architecture}}\\t${{db:Status-Abbrev}}\\n\' > {q}/installed',
        # Before mmdebstrap's cleanup empties them: apt's verified indexes.
        f'--customize-hook=cp "$1"/var/lib/apt/lists/*_Packages* {q}/',
    ]
    _say(f"resolving {lock_builder.suite}'s {len(lock_builder.packages)} packages against {url} "
         f"(log: {log_path})")
    seconds = _run_logged(_mmdebstrap(lock_builder.variant, lock_builder.packages, lock_builder, hooks,
                                      "/dev/null", url), None, log_path,
                          f"builder: resolving {lock_builder.suite} against {url} with mmdebstrap")
    installed = []
    for line in (out / "installed").read_text().splitlines():
        name, version, arch, status = line.split("\t")
        if status.strip() == "ii":
            installed.append((name, version, arch))
    texts = []
    # apt keeps its lists uncompressed unless told otherwise (GzipIndexes).
    openers: dict[str, Callable[..., Any]] = {"_Packages": open, "_Packages.gz": gzip.open, "_Packages.xz": lzma.open}
    for p in sorted(out.glob("*_Packages*")):
        opener = openers.get("_Packages" + p.name.rsplit("_Packages", 1)[1])
        if opener is None:
            raise BuildError(f"builder: {p.name}: an index compression this code does not read")
        with opener(p, "rt") as f:
            texts.append(f.read())
    if not texts:
        raise BuildError(f"builder: resolving {lock_builder.suite}: no Packages index in apt's lists; "
                         f"log {log_path}")
    prefix = lock_builder.mirror if lock_builder.mirror.endswith(":") else lock_builder.mirror.rstrip("/") + "/"
    pinned = [Deb(**d) for d in debs_mod.pinned_from_index(installed, texts, prefix)]
    _say(f"resolved {len(pinned)} packages in {seconds:.0f} s")
    return pinned


# Downloads and archive checks of the pinned .debs at once: most of the time
# is the mirror's latency and lzma (which runs without the GIL).
FETCH_WORKERS = 4


def fetch_debs(lock_builder, settings, check=None, remote=None) -> list[tuple[str, Path, str, int]]:
    """Every pinned .deb, fetched and verified like any source (its URL, the
    global mirrors, the cache, downloads/), and passed to `check(path, file)`
    when given, several at once; one error lists every file that could not
    be had, with its sha256 and the ways to provide it."""
    from ..inputs.fetch import Fetcher
    if not lock_builder.pinned:
        raise UnpinnedSource(unpinned_message(lock_builder, settings))
    local = threading.local()      # a Fetcher (and its HTTP session) a thread

    def one(d):
        if not hasattr(local, "fetcher"):
            local.fetcher = Fetcher(settings, remote=remote)
        try:
            path = local.fetcher.fetch(d.source(), progress=False)
        except OnlyDockerError as e:
            return None, (f"{d.name} {d.version} ({d.architecture}) {d.file} sha256 {d.sha256}:\n      "
                          + str(e).replace("\n", "\n      "))
        if check:
            check(path, d.file)    # an untrusted archive is an error of its own, raised as it is
        return (d.file, path, d.sha256, d.size), None

    with ThreadPoolExecutor(FETCH_WORKERS) as pool:
        results = list(pool.map(one, lock_builder.debs))   # in the lock's order
    got = [r for r, _ in results if r]
    missing = [m for _, m in results if m]
    if missing:
        scheme = lock_builder.mirror[:-1] if lock_builder.mirror.endswith(":") else ""
        mirror_env = ("ONLYDOCKER_" + {"debian": "DEBIAN_MIRROR", "debian-security": "DEBIAN_SECURITY_MIRROR",
                                       "debian-archive": "DEBIAN_ARCHIVE_MIRROR"}.get(scheme, "DEBIAN_MIRROR"))
        raise FetchError(
            f"builder image ({lock_builder.suite}): {len(missing)} of the {len(lock_builder.debs)} pinned "
            f"package(s) cannot be obtained:\n  " + "\n  ".join(missing) + "\n"
            f"Provide each file, by its sha256, in one of these ways: "
            f"(1) the source cache: a machine that has it can copy "
            f"{settings.cache_dir / 'sources' / 'sha256'}/<sha256>; "
            f"(2) a Debian mirror or snapshot that still has that pool file: set {mirror_env} "
            f"(or [debian] in the config file); "
            f"(3) a global source mirror serving it by file name: ONLYDOCKER_MIRRORS; "
            f"(4) the .deb itself placed in {settings.downloads_dir}/. "
            f"Or re-pin the builder with `doit lock --builder` (another builder: every container stage "
            f"rebuilds).")
    return got


def _network_isolated(cmd: list[str]) -> list[str]:
    """As root, the bootstrap runs in a new network namespace: it cannot
    reach anything, so it uses nothing but the pinned files."""
    if os.geteuid() == 0 and shutil.which("unshare"):
        # Some containers forbid new namespaces; the repository is then still
        # the only package source mmdebstrap is given.
        if subprocess.run(["unshare", "--net", "--", "true"], capture_output=True).returncode == 0:
            return ["unshare", "--net", "--", *cmd]
        _say("cannot make a network namespace here; bootstrapping without one")
    return cmd


def _bootstrap(lock_builder, settings, epoch: int, log_path: Path, work: Path,
               remote=None) -> tuple[Path, float, list[str]]:
    _check_options(lock_builder)
    started = time.monotonic()
    # Untrusted like any source, and unpacked as root by dpkg: every member
    # checked first (setuid allowed: su and mount are, by design).
    files = fetch_debs(lock_builder, settings, check=lambda path, file: check_source(path, file, setuid_ok=True),
                       remote=remote)
    _say(f"{len(files)} pinned packages fetched and checked in {time.monotonic() - started:.1f} s")
    repo = work / "repo"
    debs_mod.write_flat_repo(repo, files, lock_builder.suite)
    tar = work / "rootfs.tar"
    hooks = [
        # copy:// copies each .deb into the chroot's apt cache (mmdebstrap's
        # cleanup empties it and apt's lists); the sources.list is fixed text.
        f"--customize-hook=printf %s {shlex.quote(SOURCES_LIST)} > \"$1/etc/apt/sources.list\"",
        # dpkg's fsyncs keep a live system whole through a power cut; a
        # bootstrap cut short is thrown away anyway. Without them mmdebstrap
        # took 65.6 s instead of 82.6 s here, for the same tar (sha256
        # 402f7145…): mmdebstrap writes the option into the chroot, and this
        # hook takes it out again before the tar is made.
        "--dpkgopt=force-unsafe-io",
        '--customize-hook=rm -f "$1/etc/dpkg/dpkg.cfg.d/99mmdebstrap"',
    ]
    # The variant chose the set when it was resolved; now the set is the pin:
    # the Essential packages and every pinned one by name. (A variant such as
    # minbase would select by Priority, which the archive overrides and a
    # .deb's own control data does not always agree with.)
    names = sorted({d.name for d in lock_builder.debs})
    cmd = _network_isolated(_mmdebstrap("essential", names, lock_builder, hooks, str(tar),
                                        f"deb [trusted=yes] copy://{repo} ./"))
    _say(f"mmdebstrap {lock_builder.suite} offline from its {len(files)} pinned packages "
         f"(log: {log_path})")
    seconds = _run_logged(cmd, epoch, log_path, f"builder image: mmdebstrap {lock_builder.suite} from the "
                                                f"pinned packages")
    got = packages_in(tar)
    want = sorted(f"{d.name}={d.version}" for d in lock_builder.debs)
    if got != want:
        raise BuildError(f"builder image ({lock_builder.suite}): the bootstrap installed another set than the "
                         f"lock pins ({'; '.join(changed_packages(want, got))}); re-pin with "
                         f"`doit lock --builder`")
    _say(f"bootstrapped in {seconds:.0f} s")
    return tar, seconds, got


def tag_of(sha: str) -> str:
    return f"onlydocker-builder:{sha[:16]}"


def _import(client, entry: Path, sha: str, tag: str) -> None:
    """docker import of the decompressed cache entry, once its bytes are known
    to be the tar its name says (cache entries are untrusted: a wrong tar is
    never imported). One open file serves both passes, so the bytes hashed
    are the bytes imported even if the entry is replaced meanwhile."""
    from ..engine import client as dockerclient
    try:
        with open(entry, "rb") as f:
            with zstandard.ZstdDecompressor().stream_reader(f, closefd=False) as reader:
                h = hashlib.file_digest(reader, "sha256")
            if h.hexdigest() != sha:
                raise BuildError(f"builder cache entry {entry}: its tar has sha256 {h.hexdigest()}, not {sha} as "
                                 f"its name says; delete it and run again to rebuild")
            f.seek(0)
            _say(f"importing {entry.name} into the engine as {tag}")
            with zstandard.ZstdDecompressor().stream_reader(f, closefd=False) as reader:
                dockerclient.import_image(client, iter(lambda: reader.read(1 << 20), b""), tag)
    except (OSError, zstandard.ZstdError) as e:
        raise BuildError(f"builder cache entry {entry} is unreadable ({e}); delete it and run again "
                         f"to rebuild") from None


def _import_tar(client, tar: Path, tag: str) -> None:
    """docker import of the tar this process just made and hashed."""
    from ..engine import client as dockerclient
    with open(tar, "rb") as f:
        dockerclient.import_image(client, iter(lambda: f.read(1 << 20), b""), tag)


def ensure(client, lock_builder, settings, source_date_epoch: int, log_path: Path, *,
           rebuild: bool = False, remote=None) -> BuilderImage:
    """The builder image for `lock_builder`: from the cache when an earlier
    bootstrap had the same input key (unless `rebuild`), else bootstrapped with
    mmdebstrap, stored and recorded; imported into the engine when missing.
    Runs that share the cache bootstrap one input key one at a time: the
    others wait, then take the result from the cache."""
    from ..engine import client as dockerclient
    key = input_key(lock_builder, settings, source_date_epoch)
    cache = store(settings, remote)
    record = None if rebuild else cache.record(key)
    if record is None:
        with cache.producing(key, "making the builder", _say):
            record = None if rebuild else cache.record(key)
            if record is None and not rebuild and cache.has(key):     # brought from the remote cache
                record = cache.record(key)
                if record is not None:
                    _say(f"taken from the remote cache ({record['tar_sha256'][:16]})")
            elif record is not None:
                _say("another run made it meanwhile: taken from the cache")
            if record is None:
                record = _bootstrap_and_store(client, lock_builder, settings, source_date_epoch, log_path,
                                              cache, key)
    elif remote is not None and remote.writable() and cache.remote_record(key) is None:
        # Made before this remote cache was (or by a run without it): the
        # remote gets it now, so a fresh clone restoring from it does not
        # bootstrap the builder again.
        cache.share(key, record)

    sha = record["tar_sha256"]
    tag = tag_of(sha)
    if not dockerclient.image_exists(client, tag):
        _import(client, cache.entry(key), sha, tag)
    return BuilderImage(tag=tag, tar_sha256=sha, packages=list(record["packages"]), input_key=key)


def known_tar_sha256(lock_builder, settings, source_date_epoch: int, remote=None) -> str | None:
    """The builder tar's sha256 for this lock, if a cache already knows it
    (the local one, or a trusted entry of the remote one), before the builder
    task has run; None when it would have to be bootstrapped."""
    try:
        key = input_key(lock_builder, settings, source_date_epoch)
    except UnpinnedSource:
        return None
    cache = store(settings, remote)
    record = cache.record(key) or cache.remote_record(key)
    return record["tar_sha256"] if record else None


def _bootstrap_and_store(client, lock_builder, settings, source_date_epoch: int, log_path: Path,
                         cache: StageStore, key: str) -> dict:
    """Bootstrap, then store the tar and its record under the input key, and
    import the tar just made into the engine while it is compressed for the
    cache (the kernel waits for the image, not for the cache entry). Called
    under the input key's lock (`cache.producing`)."""
    from ..engine import client as dockerclient
    previous = cache.record(key)       # a --rebuild's: what the archive gave before
    cache.root.mkdir(parents=True, exist_ok=True)
    # Named as a leftover of this entry's writers: `producing` clears it if we die.
    work = cache.root / f".{key}.json.{os.getpid()}{atomic.TMP_SUFFIX}"
    work.mkdir()
    try:
        tar, seconds, packages = _bootstrap(lock_builder, settings, source_date_epoch, log_path, work, cache.remote)
        sha = sha256_file(tar)
        if previous and previous["tar_sha256"] == sha:
            previous = None
        changes = changed_packages(previous["packages"], packages) if previous else []
        if previous:
            _say(f"the archive has moved on since the bootstrap of {previous.get('created', '?')} "
                 f"(tar {previous['tar_sha256'][:16]} -> {sha[:16]}); changed packages:\n  "
                 + ("\n  ".join(changes) or "(none: same versions, other bytes)"))
        fields = {
            "tar_sha256": sha, "tar_size": tar.stat().st_size, "packages": packages,
            "suite": lock_builder.suite, "variant": lock_builder.variant,
            "source_date_epoch": source_date_epoch,
            "created": rfc3339(time.time()),
            "bootstrap_seconds": round(seconds, 1),
            "compression": f"zstd level {ZSTD_LEVEL}, single-threaded, zstandard {zstandard.__version__}",
            "changed_since_previous": changes,
            "previous_tar_sha256": previous["tar_sha256"] if previous else None,
        }
        stored = time.monotonic()
        with ThreadPoolExecutor(1) as pool:
            tag = tag_of(sha)
            importing = None if dockerclient.image_exists(client, tag) else pool.submit(_import_tar, client, tar, tag)
            # The record first, then the tar at a fixed zstd level, single-threaded
            # (the same tar, the same .zst), then shared with the remote cache.
            cache.put(key, tar, **fields)
            if importing:
                importing.result()
        _say(f"stored in the cache and imported as {tag} in {time.monotonic() - stored:.1f} s")
        return dict(fields, key=key)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def cached_tar(settings, key: str) -> Path:
    """The cache entry of the builder of this input key."""
    return store(settings).entry(key)


def import_cached(client, settings, builder: dict) -> str:
    """docker import of the cached builder tar (`builder`: out/<lane>/builder.json,
    its input key and tar sha256) into an engine that lacks it (engine/pool.py:
    each further engine gets the builder when a stage first runs there),
    checked as every import is. Returns the image's tag."""
    entry = cached_tar(settings, builder["input_key"])
    sha = builder["tar_sha256"]
    if not entry.exists():
        raise BuildError(f"builder cache entry {entry} is missing; run `doit build:builder` to make it again")
    tag = tag_of(sha)
    _import(client, entry, sha, tag)
    return tag
