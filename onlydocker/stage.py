"""Stages: their declarations, their keys, and building or restoring them.

A stage is data (`stages/<name>/stage.toml`, its files, its lane's files) plus
one script that runs in the builder container, or one Python function for the
steps that only rearrange bytes (rootfs, initrd, box). Either way the engine
owns behaviour: it computes the stage's key from every input, restores the
outputs from the cache when the key is known, and otherwise builds, packs the
outputs into a deterministic tar, caches it by key and materialises it.
"""
from __future__ import annotations

import ast
import hashlib
import importlib
import json
import os
import shutil
import tarfile
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import zstandard

from . import __version__, atomic, snapshot
from .errors import BuildError, HashMismatch, OnlyDockerError
from .hashing import sha256_file
from .canon import compact_json, rfc2822
from .config import Variation
from .progress import Heartbeat
from .store import StageStore, compress_file

STAGE_KEYS = {"description", "sources", "needs", "outputs", "artifacts", "kind", "function", "root", "cost"}
# Keys that order the work and change no byte: left out of the stage key.
SCHEDULING_KEYS = {"cost"}
KINDS = {"container", "python"}
PRELUDE = Path(__file__).with_name("prelude.sh")
# Shell helpers shipped to /build/engine/ in every container stage.
PACKAGE = Path(__file__).parent
HELPERS = {"kconfig-fragment": Path(__file__).with_name("kconfig-fragment.sh")}


def _imports_of(tree: ast.AST) -> Iterable[str]:
    """The names of our own modules a module's source imports (at the top or
    inside functions), except under `if TYPE_CHECKING:` (types only)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                yield node.module.split(".")[0]
            elif node.level == 1:
                yield from (a.name for a in node.names)
            elif node.level == 0 and (node.module or "").startswith(f"{PACKAGE.name}."):
                yield node.module.split(".")[1]
            elif node.level == 0 and node.module == PACKAGE.name:
                yield from (a.name for a in node.names)
        elif isinstance(node, ast.Import):
            yield from (a.name.split(".")[1] for a in node.names if a.name.startswith(f"{PACKAGE.name}."))


# sha256 of a module's source -> the modules of ours it imports: a pure
# function of the bytes, so it is remembered (per process, and across runs in
# out/<lane>/code-imports.json): a no-op need not parse the same modules again.
_parsed: dict[str, list[str]] = {}


def _module_imports(path: Path) -> list[str]:
    source = path.read_bytes()
    digest = hashlib.sha256(source).hexdigest()
    if digest not in _parsed:
        _parsed[digest] = sorted(set(_imports_of(ast.parse(source, str(path)))))
    return _parsed[digest]


def remembered_imports(memo: Path):
    """Use and keep the parse results in `memo` around a block of key work.
    They hold for this parser only (this file's own hash is in the memo)."""
    parser = sha256_file(Path(__file__))

    class _Memo:
        def __enter__(self):
            try:
                known = json.loads(memo.read_text())
                if isinstance(known, dict) and known.get("parser") == parser:
                    _parsed.update({k: v for k, v in known.get("modules", {}).items() if isinstance(v, list)})
            except (OSError, ValueError, AttributeError):
                pass
            self.before = len(_parsed)
            return self

        def __exit__(self, *exc):
            if len(_parsed) != self.before:
                memo.parent.mkdir(parents=True, exist_ok=True)
                atomic.write_text(memo, json.dumps({"parser": parser, "modules": _parsed}, sort_keys=True))
    return _Memo()


def code_closure(module: str) -> set[str]:
    """`module` (e.g. "onlydocker.artifacts") and our modules it imports,
    transitively, as bare names ("artifacts", "cpio", ...)."""
    name = module.removeprefix(f"{PACKAGE.name}.")
    seen: set[str] = set()
    todo = [name]
    while todo:
        m = todo.pop()
        path = PACKAGE / f"{m}.py"
        if m in seen or not path.is_file():
            continue
        seen.add(m)
        todo.extend(_module_imports(path))
    if name not in seen:
        raise BuildError(f"python stage module {module}: no {PACKAGE / (name + '.py')}")
    return seen


def engine_version() -> str:
    """Everything of the engine that can change a stage's bytes."""
    h = hashlib.sha256(f"onlydocker {__version__} zstandard {zstandard.__version__}".encode())
    for path in (PRELUDE, *HELPERS.values()):
        h.update(path.read_bytes())
    return h.hexdigest()


canonical = compact_json


# --- declarations -----------------------------------------------------------

@dataclass(frozen=True)
class StageDecl:
    name: str
    dir: Path
    description: str
    sources: tuple[str, ...]
    needs: tuple[str, ...]
    outputs: tuple[str, ...]
    kind: str = "container"
    function: str | None = None
    artifacts: tuple[tuple[str, str], ...] = ()   # (output path, name in dist/)
    root: bool = False      # the build needs uid 0 in its container (none of ours does)
    cost: float = 1.0       # rough seconds on 2 cores: the longest chain starts first (schedule.py)

    def lane_dir(self, lane: str) -> Path:
        return self.dir / "lanes" / lane

    def files(self, lane: str) -> list[tuple[str, Path]]:
        """(path as seen in the container, host path) of the stage's own files:
        everything in its folder except other lanes' folders."""
        out = []
        for p in sorted(self.dir.rglob("*")):
            rel = p.relative_to(self.dir)
            if not p.is_file() or "__pycache__" in rel.parts:
                continue
            if rel.parts[0] == "lanes":
                if len(rel.parts) < 3 or rel.parts[1] != lane:
                    continue
                rel = Path("lane", *rel.parts[2:])
            out.append((rel.as_posix(), p))
        return out


def load_stage(path: Path) -> StageDecl:
    toml_path = path / "stage.toml"
    try:
        data = tomllib.loads(toml_path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise OnlyDockerError(f"{toml_path}: {e}") from None
    unknown = set(data) - STAGE_KEYS
    if unknown:
        raise OnlyDockerError(f"{toml_path}: unknown keys {sorted(unknown)}; known are {sorted(STAGE_KEYS)}")
    for key in ("description", "outputs"):
        if key not in data:
            raise OnlyDockerError(f"{toml_path}: missing key {key!r}")
    kind = data.get("kind", "container")
    if kind not in KINDS:
        raise OnlyDockerError(f"{toml_path}: kind {kind!r} is not one of {sorted(KINDS)}")
    if kind == "python" and not data.get("function"):
        raise OnlyDockerError(f"{toml_path}: a python stage names its `function` (module:name)")
    root = data.get("root", False)
    if not isinstance(root, bool) or (root and kind != "container"):
        raise OnlyDockerError(f"{toml_path}: root = true|false, for a container stage only")
    cost = data.get("cost", 1.0)
    if not isinstance(cost, (int, float)) or isinstance(cost, bool) or cost < 0:
        raise OnlyDockerError(f"{toml_path}: cost = <seconds, a number ≥ 0>, not {cost!r}")
    if kind == "container" and not (path / "build.sh").is_file():
        raise OnlyDockerError(f"{path}: a container stage needs build.sh")
    return StageDecl(
        name=path.name, dir=path, description=data["description"],
        sources=tuple(data.get("sources", ())), needs=tuple(data.get("needs", ())),
        outputs=tuple(data["outputs"]), kind=kind, function=data.get("function"),
        artifacts=tuple(sorted(data.get("artifacts", {}).items())), root=root, cost=float(cost))


def file_digest(rel: str, path: Path) -> str:
    """A stage file's digest for the stage key: its bytes, except that
    stage.toml's scheduling keys are left out (they change no output)."""
    if rel != "stage.toml":
        return sha256_file(path)
    data = tomllib.loads(path.read_text())
    return hashlib.sha256(canonical({k: v for k, v in data.items() if k not in SCHEDULING_KEYS})).hexdigest()


def load_stages(stages_dir: Path) -> dict[str, StageDecl]:
    """All stages, in dependency order; refuses unknown needs and cycles."""
    stages = {p.name: load_stage(p) for p in sorted(stages_dir.iterdir()) if (p / "stage.toml").is_file()}
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, chain: tuple[str, ...]):
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            raise OnlyDockerError(f"stages: dependency cycle {' -> '.join(chain + (name,))}")
        state[name] = "visiting"
        for need in stages[name].needs:
            if need not in stages:
                raise OnlyDockerError(f"{stages[name].dir / 'stage.toml'}: needs unknown stage {need!r}")
            visit(need, chain + (name,))
        state[name] = "done"
        order.append(name)

    for name in stages:
        visit(name, ())
    return {name: stages[name] for name in order}


# --- manifests --------------------------------------------------------------

def manifest_of_tar(tar_path: Path) -> dict[str, dict]:
    """Path -> {type, sha256|target, mode} for every member of a stage tar."""
    files: dict[str, dict] = {}
    with tarfile.open(tar_path) as tf:
        for m in tf:
            if m.isdir():
                files[m.name] = {"type": "dir"}
            elif m.issym():
                files[m.name] = {"type": "symlink", "target": m.linkname}
            elif m.isfile():
                h = hashlib.sha256()
                f = tf.extractfile(m)
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
                files[m.name] = {"type": "file", "sha256": h.hexdigest(), "mode": m.mode & 0o7777}
            else:
                raise BuildError(f"{tar_path}: member {m.name} is neither file, dir nor symlink")
    return files


def manifest_of_tree(root: Path) -> dict[str, dict]:
    files: dict[str, dict] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = Path(dirpath, name)
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                files[rel] = {"type": "symlink", "target": os.readlink(p)}
            elif p.is_dir():
                files[rel] = {"type": "dir"}
            else:
                files[rel] = {"type": "file", "sha256": sha256_file(p), "mode": p.stat().st_mode & 0o7777}
    return files


def digest(files: dict[str, dict]) -> str:
    """Identity of a stage's outputs: what downstream keys depend on. Modes of
    materialised files follow the host's umask, so only content counts here."""
    return hashlib.sha256(canonical({k: {kk: vv for kk, vv in v.items() if kk != "mode"}
                                     for k, v in files.items()})).hexdigest()


def _first_difference(expected: dict[str, dict], actual: dict[str, dict]) -> str:
    for path in sorted(set(expected) | set(actual)):
        want, got = expected.get(path), actual.get(path)
        if want is None:
            return f"{path} is extra"
        if got is None:
            return f"{path} is missing"
        if want.get("type") != got.get("type"):
            return f"{path} is a {got.get('type')}, not a {want.get('type')}"
        if want.get("sha256") != got.get("sha256"):
            return f"{path}: expected sha256 {want.get('sha256')}, got {got.get('sha256')}"
        if want.get("target") != got.get("target"):
            return f"{path}: a link to {got.get('target')}, not to {want.get('target')}"
    return "the contents differ"


# --- context and keys -------------------------------------------------------

@dataclass
class StageContext:
    """What a python stage's function gets; a container stage gets the same
    things copied into /build (see docs/design.md)."""
    name: str
    out: Path
    deps: dict[str, Path]
    stage_dir: Path
    lane_dir: Path
    lane: str
    source_date_epoch: int
    sources: dict[str, Path] = field(default_factory=dict)
    lock: object = None


@dataclass
class Workspace:
    """Where one lane's build lives and what it is built from."""
    root: Path                      # the project tree (stages/, patches/)
    out: Path                       # out/<lane>
    store: StageStore               # the stage cache
    lock: object                    # onlydocker.lock.Lock
    fetcher: object                 # onlydocker.fetch.Fetcher
    variation: Variation = Variation()
    # Stages to build from scratch whatever the cache holds, and never cache
    # (`doit repro`'s second build); "all" for every stage.
    rebuild: frozenset[str] = frozenset()

    def forced(self, name: str) -> bool:
        return name in self.rebuild or "all" in self.rebuild

    @property
    def lane(self) -> str:
        return self.lock.lane.name

    def stage_dir(self, name: str) -> Path:
        return self.out / "stages" / name

    def manifest_path(self, name: str) -> Path:
        return self.out / "stages" / f"{name}.manifest.json"

    def log_path(self, name: str) -> Path:
        return self.out / "logs" / f"{name}.log"

    def builder(self) -> dict:
        path = self.out / "builder.json"
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise BuildError(f"no builder image recorded at {path}: run `doit builder` first") from None

    def patches(self, source) -> list[tuple[str, Path]]:
        d = self.root / "patches" / source.name / source.version
        if not d.is_dir():
            return []
        return [(f"{source.name}/{p.name}", p) for p in sorted(d.iterdir()) if p.is_file()]

    def sources_of(self, decl: StageDecl) -> list:
        return [s for group in decl.sources for s in self.lock.group(group)]

    def key_inputs(self, decl: StageDecl, stages: dict[str, StageDecl]) -> dict:
        """Everything that can change the stage's output, as plain data."""
        inputs = {
            "stage": decl.name,
            "kind": decl.kind,
            "function": decl.function,
            "outputs": list(decl.outputs),
            "lane": self.lane,
            "source_date_epoch": self.lock.lane.source_date_epoch,
            "files": {rel: file_digest(rel, p) for rel, p in decl.files(self.lane)},
            "sources": {s.name: s.sha256 for s in self.sources_of(decl)},
            "patches": {rel: sha256_file(p) for s in self.sources_of(decl) for rel, p in self.patches(s)},
            "needs": {n: self.output_digest(n) for n in decl.needs},
            "engine": engine_version(),
        }
        if decl.kind == "container":
            inputs["builder"] = self.builder()["tar_sha256"]
            # How the container is made, as the canonical build makes it (the
            # job count is left out: outputs must not depend on it, and
            # `doit repro` proves they do not), and the code that makes it
            # and packs what comes out.
            env = self._container_env(decl, Variation())
            del env["JOBS"]
            inputs["container"] = {"env": env, "user": "0:0" if decl.root else Variation().user,
                                   "code": {m: sha256_file(PACKAGE / m) for m in ("engine.py", "tarball.py", "lanedata.py")}}
        else:
            # A python stage's code is an input too: its function's module and
            # every module of ours that it imports, and the tar writer that
            # packs its output. Not the rest: editing fetch.py need not
            # rebuild (and re-compress) the initrd.
            module = decl.function.partition(":")[0]
            with remembered_imports(self.out / "code-imports.json"):
                closure = code_closure(module) | {"tarball"}
            inputs["code"] = {f"{m}.py": sha256_file(PACKAGE / f"{m}.py") for m in sorted(closure)}
            if "compress" in closure:
                # The compressors' own versions (liblzma, zlib, zstandard) shape
                # the bytes as much as our code does.
                from .compress import FORMAT_VERSION
                inputs["compression"] = FORMAT_VERSION
        return inputs

    def key(self, decl: StageDecl, stages: dict[str, StageDecl]) -> str:
        return hashlib.sha256(canonical(self.key_inputs(decl, stages))).hexdigest()

    def read_manifest(self, name: str) -> dict | None:
        try:
            return json.loads(self.manifest_path(name).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def output_digest(self, name: str) -> str:
        m = self.read_manifest(name)
        if m is None:
            raise BuildError(f"stage {name!r} has not been built (no {self.manifest_path(name)})")
        return m["digest"]

    # --- is it done? --------------------------------------------------------

    def materialised(self, decl: StageDecl, stages) -> bool:
        """True when out/ holds this key's outputs, unchanged since."""
        m = self.read_manifest(decl.name)
        try:
            key = self.key(decl, stages)
        except BuildError:
            return False
        if m is None or m.get("key") != key:
            return False
        tree = self.stage_dir(decl.name)
        if not tree.is_dir():
            return False
        # By stat, with git's rule for racily clean files (snapshot.py); a
        # tree without a snapshot is hashed whole.
        if self._snapshot_path(decl.name).exists():
            return snapshot.unchanged(self._snapshot_path(decl.name), tree)
        return digest(manifest_of_tree(tree)) == m["digest"]

    def _snapshot_path(self, name: str) -> Path:
        return self.out / "stages" / f"{name}.snapshot.json"

    def refresh_snapshot(self, path: Path, sha256: str, before: list[int]) -> None:
        """A stage output at `path` was hashed (sha256, its stat `before`)
        and then something moved its ctime (a hard link): take its stat again."""
        rel = Path(path).relative_to(self.out / "stages")
        name = rel.parts[0]
        snapshot.restat(self._snapshot_path(name), self.stage_dir(name), Path(*rel.parts[1:]).as_posix(),
                        sha256, before)

    # --- build or restore ---------------------------------------------------

    def run(self, decl: StageDecl, stages: dict[str, StageDecl], log: Callable[[str], None] = print) -> str:
        """Make the stage's outputs present in out/: restore or build. Returns
        "up-to-date", "restored" or "built". Several runs may share the store:
        one of them builds a key while the others wait, then restore it."""
        if self.materialised(decl, stages):
            return "up-to-date"
        key = self.key(decl, stages)
        if self.forced(decl.name):
            return self._build(decl, key, log, store=False)
        if self._restore(decl, key, log, locked=False):
            return "restored"
        with self.store.producing(key, f"building stage {decl.name} ({key[:16]})", log):
            # Again under the lock: another run may have built it while we
            # waited, and only the lock's holder may set a bad entry aside.
            if self._restore(decl, key, log, locked=True):
                return "restored"
            return self._build(decl, key, log, store=self.variation.canonical)

    def _restore(self, decl: StageDecl, key: str, log: Callable[[str], None], locked: bool) -> bool:
        if not self.store.has(key):
            return False
        try:
            self._materialise(decl, key, self.store.entry(key), self.store.recorded_files(key))
        except (OnlyDockerError, zstandard.ZstdError, OSError) as e:
            if not locked:
                return False      # the locked attempt decides, and says why
            # The cache is untrusted input too: a damaged entry is set
            # aside for inspection, and the stage is built again.
            kept = self.store.reject(key)
            log(f"{decl.name}: the cache entry {key[:16]} is unusable ({e}); moved to {kept}; building")
            return False
        log(f"{decl.name}: restored from the cache ({key[:16]})")
        return True

    def _build(self, decl: StageDecl, key: str, log: Callable[[str], None], store: bool) -> str:
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"stage-{decl.name}-", dir=self._tmp()) as tmp:
            raw = Path(tmp) / "raw.tar"
            if decl.kind == "container":
                self._build_container(decl, raw)
            else:
                self._build_python(decl, Path(tmp), raw)
            packed = Path(tmp) / "out.tar"
            from .tarball import normalize
            with open(raw, "rb") as src, open(packed, "wb") as dst:
                normalize(src, dst, mtime=self.lock.lane.source_date_epoch, strip_top=True)
            files = manifest_of_tar(packed)
            missing = [o for o in decl.outputs if o.rstrip("/") not in files]
            if missing:
                raise BuildError(f"stage {decl.name}: declared outputs missing: {', '.join(missing)} "
                                 f"(log: {self.log_path(decl.name)})")
            if store:
                source = self.store.put(key, packed, files)
            else:
                # Outputs of a varied or forced build prove something; they are
                # not the canonical bytes for this key, so they stay out of the cache.
                source = Path(tmp) / "out.tar.zst"
                compress_file(packed, source)
            self._materialise(decl, key, source, files)
        log(f"{decl.name}: built ({key[:16]}) in {time.monotonic() - started:.1f} s")
        return "built"

    def _tmp(self) -> Path:
        d = self.out / "tmp"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _materialise(self, decl: StageDecl, key: str, entry: Path, expected: dict) -> None:
        """Unpack a cache entry (untrusted: checked like any archive) into
        out/, check every file against `expected` (what was stored), then
        write the manifest last: without it, nothing counts."""
        from .unpack import extract
        dest = self.stage_dir(decl.name)
        self.manifest_path(decl.name).unlink(missing_ok=True)
        self._snapshot_path(decl.name).unlink(missing_ok=True)
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
            raise BuildError(f"{entry} does not hold what was stored: {_first_difference(expected, files)}")
        snapshot.write(self._snapshot_path(decl.name), dest, files, before)
        manifest = {"stage": decl.name, "key": key, "digest": digest(files), "lane": self.lane}
        atomic.write_json(self.manifest_path(decl.name), manifest)

    def _verified_sources(self, decl: StageDecl) -> list[tuple[object, Path]]:
        """The stage's sources, re-hashed now (the cache is untrusted too),
        and checked as archives before anything uses them."""
        out = []
        for s in self.sources_of(decl):
            path = self.fetcher.fetch(s, progress=False)
            actual = sha256_file(path)
            if actual != s.sha256:
                raise HashMismatch(f"cached {s.file} ({path})", "sha256", s.sha256, actual)
            self.check_source(s, path)
            out.append((s, path))
        return out

    # --- sources as archives ------------------------------------------------

    def _checked_marker(self, source) -> Path:
        return self.out / "checked" / source.sha256

    @staticmethod
    def _checker_verdict(source) -> str:
        # The verdict holds for these bytes (the marker's name), under this
        # file name (which says tar, .deb or plain) and this checker's code.
        return f"{source.file} {sha256_file(PACKAGE / 'unpack.py')}\n"

    def source_checked(self, source) -> bool:
        try:
            return self._checked_marker(source).read_text() == self._checker_verdict(source)
        except OSError:
            return False

    def check_source(self, source, path: Path) -> None:
        """Check every member of a tar or .deb source on the host (unpack.py):
        once per tree for given bytes, since a 140 MB kernel tarball takes
        about 10 s. The verdict is kept in out/, not in the shared cache:
        whoever can write the cache must not be able to vouch for an archive."""
        from .unpack import check_source
        if self.source_checked(source):
            return
        check_source(path, source.file)
        self._checked_marker(source).parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(self._checked_marker(source), self._checker_verdict(source))

    def _build_container(self, decl: StageDecl, raw_tar: Path) -> None:
        from . import engine, lanedata
        v = self.variation
        sources = self._verified_sources(decl)
        inputs: list[tuple[Path, str]] = [(PRELUDE, "/build/engine/prelude.sh")]
        inputs += [(path, f"/build/engine/{name}") for name, path in HELPERS.items()]
        from .unpack import kind_of
        # The prelude unpacks what the host checked as a tar: one decision.
        listing = "".join(f"{s.name} {s.file} {s.version} {kind_of(s.file)}\n" for s, _ in sources)
        with tempfile.TemporaryDirectory(prefix="inputs-", dir=self._tmp()) as tmp:
            (Path(tmp) / "sources.txt").write_text(listing)
            inputs.append((Path(tmp) / "sources.txt", "/build/engine/sources.txt"))
            for rel, path in decl.files(self.lane):
                inputs.append((path, f"/build/stage/{rel}"))
            inputs += lanedata.container_inputs(decl.lane_dir(self.lane), Path(tmp))   # lane.toml -> lane.env
            for s, path in sources:
                inputs.append((path, f"/build/sources/{s.file}"))
                for rel, p in self.patches(s):
                    inputs.append((p, f"/build/patches/{rel}"))
            for need in decl.needs:
                inputs.append((self.stage_dir(need), f"/build/deps/{need}"))
            env = self._container_env(decl, v)
            spec = engine.RunSpec(image=self.builder()["tag"], command=["sh", "/build/engine/prelude.sh"],
                                  env=env, workdir="/build", hostname=v.hostname, inputs=inputs,
                                  user=v.user, root=decl.root, memory=engine.memory_for(int(env["JOBS"])))
            client = engine.connect()
            self.log_path(decl.name).parent.mkdir(parents=True, exist_ok=True)
            try:
                with self._heartbeat(decl) as beat:
                    engine.run(client, spec, output_tar=raw_tar, log_path=self.log_path(decl.name),
                               name_prefix=f"onlydocker-{self.lane}-{decl.name}", on_line=beat.note)
            except BuildError as e:
                raise BuildError(f"stage {decl.name} failed: {e}") from None

    def _container_env(self, decl: StageDecl, v: Variation) -> dict[str, str]:
        epoch = self.lock.lane.source_date_epoch
        env = {
            "SOURCE_DATE_EPOCH": str(epoch),
            "KBUILD_BUILD_TIMESTAMP": rfc2822(epoch),
            "KBUILD_BUILD_USER": "onlydocker",
            "KBUILD_BUILD_HOST": "onlydocker",
            "KBUILD_BUILD_VERSION": "1",
            "TZ": v.tz,
            "LC_ALL": v.locale,
            "HOME": "/build/home",
            "XZ_OPT": "-T1",
            "JOBS": str(v.jobs or os.cpu_count() or 1),
            "LANE": self.lane,
            "STAGE": decl.name,
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "ONLYDOCKER_UMASK": v.umask,
        }
        if v.faketime:
            env["FAKETIME"] = v.faketime
            env["ONLYDOCKER_FAKETIME"] = "1"
        return env

    @staticmethod
    def _heartbeat(decl: StageDecl) -> Heartbeat:
        return Heartbeat(lambda text: print(f"{decl.name} {text}", flush=True))

    def _build_python(self, decl: StageDecl, tmp: Path, raw_tar: Path) -> None:
        from .tarball import write_tree
        out = tmp / "out"
        out.mkdir()
        module, _, func = decl.function.partition(":")
        fn = getattr(importlib.import_module(module), func)
        sources = {s.name: p for s, p in self._verified_sources(decl)}
        ctx = StageContext(name=decl.name, out=out, deps={n: self.stage_dir(n) for n in decl.needs},
                           stage_dir=decl.dir, lane_dir=decl.lane_dir(self.lane), lane=self.lane,
                           source_date_epoch=self.lock.lane.source_date_epoch, sources=sources,
                           lock=self.lock)
        log_path = self.log_path(decl.name)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self._heartbeat(decl):
                fn(ctx)
        except OnlyDockerError as e:
            log_path.write_text(f"{e}\n")
            raise BuildError(f"stage {decl.name} failed: {e}") from None
        log_path.write_text(f"stage {decl.name}: {decl.function} done\n")
        with open(raw_tar, "wb") as f:
            write_tree(out, f, mtime=self.lock.lane.source_date_epoch, prefix="out")

