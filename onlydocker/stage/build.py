"""Stages built or restored: the small entry the task graph calls.

A stage is data (`stages/<name>/`, decl.py) plus one script that runs in
the builder container (container.py) or one Python stage.py for the steps
that only rearrange bytes (pystage.py). Either way the engine owns
behaviour: it computes the stage's key from every input (stage/key.py),
restores the outputs from the stage store (store.py) when the key is known,
and otherwise builds, packs the outputs into a deterministic tar, stores it
by key and materialises it in out/<lane>/ (paths.py).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import zstandard

from .. import atomic
from ..cache import snapshot
from ..cache.manifest import digest, first_difference, manifest_of_tar, manifest_of_tree
from ..cache.store import StageStore, compress_file
from ..config import Variation
from ..errors import BuildError, MachineError, OnlyDockerError, check_free, machine_cause, machine_error
from . import kept
from . import key as stagekey
from .container import ContainerRunner
from .decl import StageDecl
from .kept import Keep
from .paths import LanePaths
from .pystage import PythonRunner
from .sources import LaneSources

if TYPE_CHECKING:
    from .. import secureboot
    from ..inputs.fetch import Fetcher
    from ..inputs.lock import Lock


@dataclass
class Workspace:
    """One lane's build: where it lives, what it is built from, and the
    parts that build it."""
    root: Path                      # the project tree (stages/, patches/)
    out: Path                       # out/<lane>
    store: StageStore               # the stage cache
    lock: Lock
    fetcher: Fetcher
    variation: Variation = Variation()
    # Stages to build from scratch whatever the cache holds, and never cache
    # (`doit repro`'s second build); "all" for every stage.
    rebuild: frozenset[str] = frozenset()
    # Every container stage from a fresh extraction (ONLYDOCKER_CLEAN=1): no kept trees.
    clean: bool = False
    paths: LanePaths = field(init=False)
    sources: LaneSources = field(init=False)

    def __post_init__(self) -> None:
        self.paths = LanePaths(self.out)
        self.sources = LaneSources(self.root, self.lock, self.fetcher, self.paths)

    @property
    def lane(self) -> str:
        return self.lock.lane.name

    def forced(self, name: str) -> bool:
        return name in self.rebuild or "all" in self.rebuild

    def key_inputs(self, decl: StageDecl, builder_sha: str | None = None) -> dict:
        """`builder_sha`: the builder tar's sha256 when it is known before the
        builder task has recorded it (see `cached`)."""
        sources = self.sources.of(decl)
        if decl.kind == "container":
            builder_sha = builder_sha or self.paths.builder()["tar_sha256"]
        sb = self.secureboot(decl)
        return stagekey.key_inputs(
            decl, self.lock.lane, sources, [rp for s in sources for rp in self.sources.patches(s)],
            {n: self.paths.output_digest(n) for n in decl.needs},
            builder_sha if decl.kind == "container" else None, self.paths.code_imports,
            secureboot_cert=sb.cert_sha256() if sb else None)

    def secureboot(self, decl: StageDecl) -> secureboot.SecureBootKey | None:
        """The Secure Boot key a signing stage signs with; None when the
        stage does not sign or no key is configured (unsigned images)."""
        from .lanecheck import signs
        if not signs(decl, self.lane):
            return None          # this lane does not sign (the 2015 and bookworm ISOs: BIOS only)
        from .. import secureboot  # cryptography's x509: only for a signing stage
        settings = self.fetcher.settings
        return secureboot.configured(settings.secureboot_key, settings.secureboot_cert)

    def key(self, decl: StageDecl, builder_sha: str | None = None) -> str:
        return stagekey.key(self.key_inputs(decl, builder_sha))

    def cached(self, decl: StageDecl, builder_sha: str | None) -> bool:
        """Its outputs can be had without building it: out/ holds them, or
        the stage store (local, or a trusted entry of the remote cache) has
        its key. Known before anything is built only for a stage that needs
        no other stage's outputs, and (a container stage) once the builder's
        tar is known by its sha256. A fetch whose every user is cached is not
        needed, as a Nix substituter does not fetch the sources of what it
        can substitute; a stage that builds after all fetches what it uses."""
        if decl.needs or (decl.kind == "container" and builder_sha is None):
            return False
        if self.materialised(decl):
            return True
        try:
            return self.store.known(self.key(decl, builder_sha))
        except OnlyDockerError:
            return False

    # --- is it done? --------------------------------------------------------

    def materialised(self, decl: StageDecl) -> bool:
        """True when out/ holds this key's outputs, unchanged since."""
        m = self.paths.read_manifest(decl.name)
        try:
            key = self.key(decl)
        except BuildError:
            return False
        if m is None or m.get("key") != key:
            return False
        tree = self.paths.stage_dir(decl.name)
        if not tree.is_dir():
            return False
        # By stat, with git's rule for racily clean files (snapshot.py); a
        # tree without a snapshot is hashed whole.
        snap = self.paths.snapshot_path(decl.name)
        if snap.exists():
            return snapshot.unchanged(snap, tree)
        return digest(manifest_of_tree(tree)) == m["digest"]

    def refresh_snapshot(self, path: Path, sha256: str, before: list[int]) -> None:
        """A stage output at `path` was hashed (sha256, its stat `before`)
        and then something moved its ctime (a hard link): take its stat again."""
        rel = Path(path).relative_to(self.out / "stages")
        name = rel.parts[0]
        snapshot.restat(self.paths.snapshot_path(name), self.paths.stage_dir(name),
                        Path(*rel.parts[1:]).as_posix(), sha256, before)

    # --- build or restore ---------------------------------------------------

    def run(self, decl: StageDecl, log: Callable[[str], None] = print) -> str:
        """Make the stage's outputs present in out/: restore or build. Returns
        "up-to-date", "restored" or "built". Several runs may share the store:
        one of them builds a key while the others wait, then restore it."""
        if self.materialised(decl):
            return "up-to-date"
        try:
            return self._run(decl, log)
        except MachineError as e:
            if str(e).startswith(f"stage {decl.name}: "):
                raise
            raise MachineError(f"stage {decl.name}: {e}") from None
        except OSError as e:
            # Anywhere else (bringing an entry from the remote cache, taking
            # a lock): this machine's state is said as that too.
            cause = machine_cause(e)
            if cause is None:
                raise
            raise machine_error(cause, cause.filename, f"stage {decl.name}") from None

    def _run(self, decl: StageDecl, log: Callable[[str], None]) -> str:
        key = self.key(decl)
        if self.forced(decl.name):
            return self._build(decl, key, log, store=False)
        if self._restore(decl, key, log, locked=False):
            return "restored"
        with self.store.producing(key, f"building stage {decl.name} ({key[:16]})", log):
            # Again under the lock: another run may have built it while we
            # waited, and only the lock's holder may set a bad entry aside.
            if self._restore(decl, key, log, locked=True):
                return "restored"
            store = self.variation.canonical
            if store and not self.store.writable:
                # A read-only cache (a CI volume mounted ro, a folder not
                # ours) is read for every stage; what must be built is built.
                self.store.not_stored("not writable (read-only, or not ours)", log)
                store = False
            return self._build(decl, key, log, store=store)

    def _restore(self, decl: StageDecl, key: str, log: Callable[[str], None], locked: bool) -> bool:
        if not self.store.has(key):
            return False
        dest = self.paths.stage_dir(decl.name)
        # Said before it happens: an entry whose record gives its size is
        # not unpacked onto a file system without room for it.
        check_free(dest.parent, self._room_needed(dest, self.store.recorded_size(key)), str(dest))
        try:
            self._materialise(decl, key, self.store.entry(key), self.store.recorded_files(key))
        except MachineError:
            raise             # this machine's state, not the entry's fault: the entry stays
        except (OnlyDockerError, zstandard.ZstdError, OSError) as e:
            cause = machine_cause(e)
            if cause is not None:
                raise machine_error(cause, cause.filename or dest, f"restoring "
                                    f"{key[:16]} into {dest}") from None
            if not locked:
                return False      # the locked attempt decides, and says why
            # The cache is untrusted input too: a damaged entry is set
            # aside for inspection, and the stage is built again.
            if not self.store.writable:
                log(f"{decl.name}: the cache entry {key[:16]} is unusable ({e}); the cache is read-only, "
                    f"so it stays there; building")
                return False
            kept = self.store.reject(key)
            log(f"{decl.name}: the cache entry {key[:16]} is unusable ({e}); moved to {kept}; building")
            return False
        log(f"{decl.name}: restored from the cache ({key[:16]})")
        return True

    def _build(self, decl: StageDecl, key: str, log: Callable[[str], None], store: bool) -> str:
        try:
            return self._build_in_tmp(decl, key, log, store)
        except OSError as e:
            # Writing out/ (the output tar, the tree) met this machine's
            # state: said in one line naming the path; nothing half-made counts
            # (the manifest is written last).
            cause = machine_cause(e)
            if cause is None:
                raise
            raise machine_error(cause, cause.filename or self.paths.stage_dir(decl.name),
                                f"building into {self.out}") from None

    def _build_in_tmp(self, decl: StageDecl, key: str, log: Callable[[str], None], store: bool) -> str:
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"stage-{decl.name}-", dir=self.paths.tmp()) as tmp:
            raw = Path(tmp) / "raw.tar"
            incremental = False
            if decl.kind == "container":
                incremental = ContainerRunner(self.lock.lane, self.paths, self.sources, self.variation).build(
                    decl, raw, keep=self.keep(decl))
            else:
                PythonRunner(self.lock, self.paths, self.sources).build(decl, Path(tmp), raw)
            packed = Path(tmp) / "out.tar"
            from ..formats.tarball import normalize
            with open(raw, "rb") as src, open(packed, "wb") as dst:
                normalize(src, dst, mtime=self.lock.lane.source_date_epoch, strip_top=True)
            files = manifest_of_tar(packed)
            missing = [o for o in decl.required_outputs if o.rstrip("/") not in files]
            if missing:
                raise BuildError(f"stage {decl.name}: declared outputs missing: {', '.join(missing)} "
                                 f"(log: {self.paths.log_path(decl.name)})")
            source = None
            if store:
                try:
                    source = self.store.put(key, packed, files)
                except MachineError as e:
                    # A full or read-only cache does not fail the build: the
                    # outputs are used from out/, and the run says so once.
                    self.store.not_stored(str(e), log)
            if source is None:
                # Outputs of a varied or forced build prove something; they are
                # not the canonical bytes for this key, so they stay out of the cache.
                source = Path(tmp) / "out.tar.zst"
                compress_file(packed, source)
            self._materialise(decl, key, source, files)
        how = ", incrementally from its kept tree" if incremental else ""
        log(f"{decl.name}: built ({key[:16]}) in {time.monotonic() - started:.1f} s{how}")
        return "built"

    def keep(self, decl: StageDecl) -> Keep | None:
        """The stage's kept tree for this build (kept.py), or None: a stage
        without `keep = true`, a varied or forced build (`doit repro`'s
        second), or ONLYDOCKER_CLEAN=1. Those build from a fresh extraction
        and leave every kept tree as it is."""
        if not decl.keep or self.clean or not self.variation.canonical or self.forced(decl.name):
            return None
        return Keep(kept.volume_name(self.lane, decl.name), kept.identity(self.key_inputs(decl)))

    @staticmethod
    def _room_needed(dest: Path, size: int | None) -> int | None:
        """Bytes the file system must have free to unpack `size` bytes into
        `dest`: the tree there now is removed first, so its files count as room."""
        if not size:
            return None
        held = 0
        if dest.is_dir() and not dest.is_symlink():
            for dirpath, _, names in os.walk(dest):
                for n in names:
                    try:
                        held += os.lstat(os.path.join(dirpath, n)).st_size
                    except OSError:
                        pass
        return max(size - held, 0)

    def _materialise(self, decl: StageDecl, key: str, entry: Path, expected: dict) -> None:
        """Unpack a cache entry (untrusted: checked like any archive) into
        out/, check every file against `expected` (what was stored), then
        write the manifest last: without it, nothing counts."""
        from ..formats.unpack import extract
        dest = self.paths.stage_dir(decl.name)
        self.paths.manifest_path(decl.name).unlink(missing_ok=True)
        self.paths.snapshot_path(decl.name).unlink(missing_ok=True)
        dctx = zstandard.ZstdDecompressor()
        with open(entry, "rb") as f, dctx.stream_reader(f) as reader:
            if dest.exists():
                shutil.rmtree(dest)
            dest.parent.mkdir(parents=True, exist_ok=True)
            extract(reader, dest, absolute_symlinks=True)
        before = snapshot.take(dest)
        files = manifest_of_tree(dest)
        if digest(files) != digest(expected):
            shutil.rmtree(dest)
            raise BuildError(f"{entry} does not hold what was stored: {first_difference(expected, files)}")
        snapshot.write(self.paths.snapshot_path(decl.name), dest, files, before)
        manifest = {"stage": decl.name, "key": key, "digest": digest(files), "lane": self.lane}
        atomic.write_json(self.paths.manifest_path(decl.name), manifest)
