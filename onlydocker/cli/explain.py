"""`doit explain [STAGE ...]`: why each stage would not be up to date.

Every stage made or restored in out/ has its key's inputs recorded beside
its manifest (`out/<lane>/stages/<stage>.inputs.json`, the exact data whose
sha256 is the key in `<stage>.manifest.json`; see `record`). Explaining is
then a diff, as bitbake-diffsigs does for two signatures: the inputs a build
would use now against those recorded, said as the user knows them (a
source's sha256, a file of the stage by path, a lane setting by name, the
builder image, a module of ours, a needed stage's outputs), then what the
build would do with the new key (restore it from the local or the remote
cache, or build it). Nothing is built, fetched or changed.

A stage whose needed stage changes first is explained with that stage's
outputs as they will be when they come from a cache (their record says
them); when they must be built, the stage's key cannot be known before.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from .. import atomic
from ..cache import snapshot
from ..cache.manifest import digest, first_difference, manifest_of_tree
from ..errors import OnlyDockerError
from ..stage import key as stagekey


def inputs_path(ws, name: str) -> Path:
    return ws.paths.out / "stages" / f"{name}.inputs.json"


def record(ws, decl) -> None:
    """After a stage's task: keep its key's inputs beside its manifest
    (only when they are the manifest's key; a build never depends on it)."""
    m = ws.paths.read_manifest(decl.name)
    if m is None:
        return
    path = inputs_path(ws, decl.name)
    try:
        if stagekey.key(json.loads(path.read_text())) == m["key"]:
            return
    except (OSError, ValueError, TypeError, KeyError):
        pass
    try:
        inputs = ws.key_inputs(decl)
    except OnlyDockerError:
        return
    if stagekey.key(inputs) == m.get("key"):
        atomic.write_json(path, inputs)


def _short(v) -> str:
    return v[:12] if isinstance(v, str) and len(v) == 64 else json.dumps(v)


def _changes(kind: str, old: dict, new: dict, what: str) -> list[str]:
    said = []
    for name in sorted(set(old) | set(new)):
        if name not in old:
            said.append(f"{what} {name} added")
        elif name not in new:
            said.append(f"{what} {name} removed")
        elif old[name] != new[name]:
            if kind == "hash":
                said.append(f"{what} {name} changed ({_short(old[name])} -> {_short(new[name])})")
            else:
                said.append(f"{what} {name}: {_short(old[name])} -> {_short(new[name])}")
    return said


def diff_inputs(old: dict, new: dict) -> list[str]:
    """What changed between two recorded key inputs, in the user's terms."""
    said: list[str] = []
    said += _changes("hash", old.get("sources", {}), new.get("sources", {}), "source")
    said = [s.replace(" changed (", " sha256 ", 1)[:-1] if s.endswith(")") else s for s in said]
    said += _changes("hash", old.get("files", {}), new.get("files", {}), "file")
    said += _changes("hash", old.get("patches", {}), new.get("patches", {}), "patch")
    for k in ("lane", "source_date_epoch", "outputs", "kind", "function", "compression"):
        if old.get(k) != new.get(k):
            said.append(f"lane setting {k}: {json.dumps(old.get(k))} -> {json.dumps(new.get(k))}"
                        if k in ("lane", "source_date_epoch") else f"{k}: {json.dumps(old.get(k))} -> {json.dumps(new.get(k))}")
    oc, nc = old.get("container") or {}, new.get("container") or {}
    said += _changes("value", oc.get("env", {}), nc.get("env", {}), "lane setting")
    if oc.get("user") != nc.get("user"):
        said.append(f"container user: {oc.get('user')} -> {nc.get('user')}")
    said += _changes("hash", {**oc.get("code", {}), **old.get("code", {})},
                     {**nc.get("code", {}), **new.get("code", {})}, "project module")
    if old.get("builder") != new.get("builder"):
        said.append(f"builder image: {_short(old.get('builder'))} -> {_short(new.get('builder'))}")
    if old.get("engine") != new.get("engine"):
        said.append(f"engine (onlydocker's version, zstandard's, prelude.sh or a helper) changed "
                    f"({_short(old.get('engine'))} -> {_short(new.get('engine'))})")
    for name in sorted(set(old.get("needs", {})) | set(new.get("needs", {}))):
        o, n = old.get("needs", {}).get(name), new.get("needs", {}).get(name)
        if o != n:
            said.append(f"needed stage {name}: its outputs changed ({_short(o)} -> {_short(n)})"
                        if o and n else f"needed stage {name} {'added' if n else 'removed'}")
    known = {"stage", "sources", "files", "patches", "lane", "source_date_epoch", "outputs", "kind",
             "function", "compression", "container", "code", "builder", "engine", "needs"}
    for k in sorted((set(old) | set(new)) - known):
        if old.get(k) != new.get(k):
            said.append(f"{k} changed")
    return said


def _tree_unchanged(ws, name: str, manifest: dict) -> bool:
    """out/ holds what the manifest says (as Workspace.materialised checks, without the key)."""
    tree = ws.paths.stage_dir(name)
    if not tree.is_dir():
        return False
    snap = ws.paths.snapshot_path(name)
    if snap.exists():
        return snapshot.unchanged(snap, tree)
    return digest(manifest_of_tree(tree)) == manifest.get("digest")


@dataclass
class Verdict:
    stage: str
    uptodate: bool
    line: str
    digest: str | None = None      # its outputs' digest after the build, when it can be known


class Explainer:
    def __init__(self, ws, stages: dict, settings):
        self.ws, self.stages, self.settings = ws, stages, settings
        self.done: dict[str, Verdict] = {}
        self._builder: tuple[str | None, str] | None = None

    def builder_sha(self) -> tuple[str | None, str]:
        """(the builder tar's sha256 a build would use, or None; why it is unknown)."""
        if self._builder is None:
            from ..builder import image as builder_mod
            lk = self.ws.lock
            try:
                rec = self.ws.paths.builder()
            except OnlyDockerError:
                rec = {}
            try:
                key = builder_mod.input_key(lk.builder, self.settings, lk.lane.source_date_epoch)
            except OnlyDockerError as e:
                self._builder = (None, f"the builder cannot be made: {e}")
                return self._builder
            if rec.get("input_key") == key:
                self._builder = (rec.get("tar_sha256"), "")
            else:
                sha = builder_mod.known_tar_sha256(lk.builder, self.settings, lk.lane.source_date_epoch,
                                                   self.ws.store.remote)
                self._builder = (sha, "" if sha else
                                 "the builder image would be bootstrapped first ([builder] in the lock changed), "
                                 "so its identity and this stage's key are known only then")
        return self._builder

    def _entry_digest(self, key: str) -> tuple[str | None, str]:
        """Where a key would come from and its outputs' digest (from its record)."""
        store = self.ws.store
        if store.entry(key).exists():
            try:
                return digest(store.recorded_files(key)), "restored from the local cache"
            except OnlyDockerError:
                return None, "restored from the local cache (its record is unreadable: it would be built)"
        remote = store.remote
        if remote is not None:
            entry = remote.get_entry("stage", key)
            if entry is not None:
                files = (entry.get("record") or {}).get("files")
                return (digest(files) if isinstance(files, dict) else None), "restored from the remote cache"
        return None, "built"

    def explain(self, name: str) -> Verdict:
        if name in self.done:
            return self.done[name]
        decl = self.stages[name]
        for n in decl.needs:
            self.explain(n)
        v = self._explain(decl)
        self.done[name] = v
        return v

    def _explain(self, decl) -> Verdict:
        ws, name = self.ws, decl.name
        needs_changed = [n for n in decl.needs if not self.done[n].uptodate]
        if not needs_changed and ws.materialised(decl):
            return Verdict(name, True, f"{name}: up to date", ws.paths.read_manifest(name)["digest"])
        unknown = [n for n in needs_changed if self.done[n].digest is None]
        if unknown:
            return Verdict(name, False, f"{name}: would be built or restored after {', '.join(unknown)}, "
                                        f"whose new outputs are known only once built")
        builder = None
        if decl.kind == "container":
            builder, why = self.builder_sha()
            if builder is None:
                return Verdict(name, False, f"{name}: {why}")
        sources = ws.sources.of(decl)
        need_digests: dict[str, str] = {}
        for n in decl.needs:
            d = self.done[n].digest
            assert d is not None       # up to date (its manifest's), or known: `unknown` above
            need_digests[n] = d
        try:
            now = stagekey.key_inputs(
                decl, ws.lock.lane, sources, [rp for s in sources for rp in ws.sources.patches(s)],
                need_digests, builder, ws.paths.code_imports)
        except OnlyDockerError as e:
            return Verdict(name, False, f"{name}: its key cannot be computed: {e}")
        key = stagekey.key(now)
        manifest = ws.paths.read_manifest(name)
        new_digest, fate = self._entry_digest(key)
        if manifest is not None and manifest.get("key") == key:
            if _tree_unchanged(ws, name, manifest):
                # Its needs are made again with the same outputs: nothing to do here.
                return Verdict(name, True, f"{name}: up to date (once {', '.join(needs_changed)} is made again)",
                               manifest["digest"])
            tree = ws.paths.stage_dir(name)
            if not tree.is_dir():
                return Verdict(name, False, f"{name}: its outputs {tree} are gone; the key is the same, so it would be {fate}",
                               manifest["digest"])
            found = manifest_of_tree(tree)
            try:
                expected = ws.store.recorded_files(key)
                what = re.sub(r"\b([0-9a-f]{12})[0-9a-f]{52}\b", r"\1", first_difference(expected, found))
            except OnlyDockerError:
                what = f"digest {_short(manifest['digest'])} -> {_short(digest(found))}"
            return Verdict(name, False, f"{name}: its outputs in {tree} were changed since it was made "
                                        f"({what}); the key is the same, so it would be {fate}", manifest["digest"])
        if manifest is None:
            why = f"never made in this tree (no {ws.paths.manifest_path(name)})"
        else:
            try:
                old = json.loads(inputs_path(ws, name).read_text())
                if stagekey.key(old) != manifest.get("key"):
                    raise ValueError
            except (OSError, ValueError):
                old = None
            if old is None:
                why = (f"its key changed ({_short(manifest.get('key'))} -> {_short(key)}); the inputs of the "
                       f"last build were not recorded (made before `doit explain` existed)")
            else:
                changes = diff_inputs(old, now)
                why = "; ".join(changes) if changes else f"its key changed ({_short(manifest.get('key'))} -> {_short(key)})"
        return Verdict(name, False, f"{name}: {why}: key {key[:12]} would be {fate}", new_digest)


def run(ws, stages: dict, settings, names: list[str], out) -> int:
    """Print one line per stage that would not be up to date (every stage
    named, when named); 0 either way."""
    ex = Explainer(ws, stages, settings)
    order = list(stages)
    for n in order:
        ex.explain(n)
    shown = names or [n for n in order if not ex.done[n].uptodate]
    if not names and not shown:
        print(f"lane {ws.lane}: every stage is up to date in {ws.paths.out}", file=out)
        return 0
    for n in shown:
        print(ex.done[n].line, file=out)
    return 0
