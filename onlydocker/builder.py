"""The builder image: made, not pulled.

mmdebstrap bootstraps the lane's suite with its package list from the
configured Debian mirror, with SOURCE_DATE_EPOCH, into a rootfs tar (the
same archive state gives the same bytes). The tar's sha256 is the image's
identity; it is cached zstd-compressed with its resolved package list and
imported into the engine. When the archive has moved on and a rebuild
resolves other versions, the packages that changed are named.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import zstandard

from . import engine
from .errors import BuildError, ConfigError, EngineError

VERSION = "1"
ZSTD_LEVEL = 10


@dataclass(frozen=True)
class BuilderImage:
    tag: str
    tar_sha256: str
    packages: list[str]
    input_key: str


def mirror_url(lock_builder, settings) -> str:
    mirror = lock_builder.mirror
    scheme = mirror.rstrip(":")
    if mirror.endswith(":") and ":" not in scheme:
        return settings.mirror_for(scheme)
    return mirror


def input_key(lock_builder, settings, source_date_epoch: int) -> str:
    data = {
        "suite": lock_builder.suite, "mirror": mirror_url(lock_builder, settings),
        "variant": lock_builder.variant, "packages": sorted(lock_builder.packages),
        "options": list(lock_builder.mmdebstrap_options), "epoch": source_date_epoch, "version": VERSION,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def packages_in(tar_path: Path) -> list[str]:
    """name=version of every installed package, from the tar's dpkg status."""
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
    o = dict(p.split("=", 1) for p in old)
    n = dict(p.split("=", 1) for p in new)
    return [f"{k}: {o.get(k, '(none)')} -> {n.get(k, '(none)')}"
            for k in sorted(set(o) | set(n)) if o.get(k) != n.get(k)]


def _index(settings) -> Path:
    return settings.cache_dir / "builders"


def _bootstrap(lock_builder, settings, epoch: int, log_path: Path, work: Path) -> Path:
    url = mirror_url(lock_builder, settings)
    tar = work / "rootfs.tar"
    cmd = ["mmdebstrap", f"--variant={lock_builder.variant}", "--mode=auto",
           f"--include={','.join(lock_builder.packages)}", *lock_builder.mmdebstrap_options,
           lock_builder.suite, str(tar), url]
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(epoch))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"builder: mmdebstrap {lock_builder.suite} from {url} (log: {log_path})", file=sys.stderr)
    start = time.monotonic()
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        try:
            r = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        except FileNotFoundError:
            raise BuildError("mmdebstrap is not installed: run ./setup.sh (apt-get install mmdebstrap)") from None
    if r.returncode != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-20:]
        raise BuildError(f"builder image: mmdebstrap {lock_builder.suite} from {url} failed "
                         f"(exit {r.returncode}); log {log_path}; last lines:\n    " + "\n    ".join(tail))
    print(f"builder: bootstrapped in {time.monotonic() - start:.0f} s", file=sys.stderr)
    return tar


def ensure(client, lock_builder, settings, source_date_epoch: int, log_path: Path) -> BuilderImage:
    key = input_key(lock_builder, settings, source_date_epoch)
    index = _index(settings)
    index.mkdir(parents=True, exist_ok=True)
    by_input = index / f"input-{key}.json"
    record = json.loads(by_input.read_text()) if by_input.exists() else None
    entry = index / f"{record['tar_sha256']}.tar.zst" if record else None

    if record is None or not entry.exists():
        with tempfile.TemporaryDirectory(prefix="builder-", dir=index) as tmp:
            tar = _bootstrap(lock_builder, settings, source_date_epoch, log_path, Path(tmp))
            h = hashlib.sha256()
            with open(tar, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            sha = h.hexdigest()
            packages = packages_in(tar)
            changes = []
            previous = sorted(index.glob("*.json"))
            for p in previous:
                try:
                    old = json.loads(p.read_text())
                except ValueError:
                    continue
                if old.get("input_key") == key and old.get("tar_sha256") != sha:
                    changes = changed_packages(old["packages"], packages)
            if changes:
                print("builder: the archive has moved on since the last bootstrap; changed packages:\n  "
                      + "\n  ".join(changes), file=sys.stderr)
            entry = index / f"{sha}.tar.zst"
            part = entry.with_name(entry.name + ".part")
            with open(tar, "rb") as src, open(part, "wb") as dst:
                zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=0).copy_stream(src, dst)
            os.replace(part, entry)
            record = {"input_key": key, "tar_sha256": sha, "packages": packages, "suite": lock_builder.suite,
                      "changed_since_previous": changes}
            for path in (index / f"{sha}.json", by_input):
                tmpf = path.with_name(path.name + ".part")
                tmpf.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
                os.replace(tmpf, path)

    sha = record["tar_sha256"]
    tag = f"onlydocker-builder:{sha[:16]}"
    if not engine.image_exists(client, tag):
        print(f"builder: importing {entry.name} into the engine as {tag}", file=sys.stderr)
        with open(entry, "rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as reader:
            def chunks():
                while b := reader.read(1 << 20):
                    yield b
            engine.import_image(client, chunks(), tag)
    return BuilderImage(tag=tag, tar_sha256=sha, packages=record["packages"], input_key=key)
