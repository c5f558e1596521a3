"""The stage key: everything that can change a stage's output, as plain
data (`key_inputs`), and its sha256 (`key`, pure). An unchanged key is never
built twice.

A container stage's inputs: its declaration and files, its sources and
patches, the needed stages' output digests, the builder image, the engine's
version, and how the container is made (its environment and user as the
canonical build makes them, the code of engine.py, lanedata.py and tarball.py). A Python
stage's: the same without the builder and the container, and with its code:
its stage.py (one of its files) and every module of ours that stage.py
imports, followed through the source (`if TYPE_CHECKING:` imports left out),
plus the tar writer, and the compressors' versions when it compresses.
"""
from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import zstandard

from . import __version__, atomic
from .canon import compact_json
from .config import Variation
from .container import HELPERS, PRELUDE, container_env
from .decl import KINDS, StageDecl, file_digest
from .errors import BuildError
from .hashing import sha256_file
if TYPE_CHECKING:
    from .lock import Lane, Source

PACKAGE = Path(__file__).parent
# A Python stage's entry point: build(ctx) in its folder's stage.py.
ENTRY = f"{KINDS['python']}:build"


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
        try:
            tree = ast.parse(source, str(path))
        except SyntaxError as e:       # a stage.py being edited: one line, as any bad input
            raise BuildError(f"{path}: line {e.lineno}: {e.msg}") from None
        _parsed[digest] = sorted(set(_imports_of(tree)))
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


def code_closure(path: Path) -> set[str]:
    """Our modules that the file at `path` (a stage's stage.py, loaded by
    path, or a module of ours) imports, transitively, as bare names
    ("cpio", "compress", ...)."""
    try:
        todo = list(_module_imports(path))
    except OSError as e:
        raise BuildError(f"python stage code {path}: {e.strerror}") from None
    seen: set[str] = set()
    while todo:
        m = todo.pop()
        module = PACKAGE / f"{m}.py"
        if m in seen or not module.is_file():
            continue
        seen.add(m)
        todo.extend(_module_imports(module))
    return seen


def engine_version() -> str:
    """Everything of the engine that can change a stage's bytes."""
    h = hashlib.sha256(f"onlydocker {__version__} zstandard {zstandard.__version__}".encode())
    for path in (PRELUDE, *HELPERS.values()):
        h.update(path.read_bytes())
    return h.hexdigest()


def key_inputs(decl: StageDecl, lane: Lane, sources: Sequence[Source], patches: Iterable[tuple[str, Path]],
               needs: Mapping[str, str], builder: str | None, memo: Path) -> dict:
    """Everything that can change the stage's output, as plain data: `needs`
    maps each needed stage to its output digest, `builder` is the builder
    tar's sha256 (container stages), `memo` the imports memo (Python stages)."""
    inputs = {
        "stage": decl.name,
        "kind": decl.kind,
        # Where the code starts (None for a container stage: its build.sh).
        "function": ENTRY if decl.kind == "python" else None,
        "outputs": list(decl.outputs),
        "lane": lane.name,
        "source_date_epoch": lane.source_date_epoch,
        "files": {rel: file_digest(rel, p) for rel, p in decl.files(lane.name)},
        "sources": {s.name: s.sha256 for s in sources},
        "patches": {rel: sha256_file(p) for rel, p in patches},
        "needs": dict(needs),
        "engine": engine_version(),
    }
    if decl.kind == "container":
        inputs["builder"] = builder
        # How the container is made, as the canonical build makes it (the
        # job count is left out: outputs must not depend on it, and
        # `doit repro` proves they do not), and the code that makes it
        # and packs what comes out.
        env = container_env(decl, lane, Variation())
        del env["JOBS"]
        inputs["container"] = {"env": env, "user": "0:0" if decl.root else Variation().user,
                               "code": {m: sha256_file(PACKAGE / m) for m in ("engine.py", "tarball.py", "lanedata.py")}}
    else:
        # A python stage's code is an input too: its stage.py (in "files")
        # and every module of ours that it imports, and the tar writer that
        # packs its output. Not the rest: editing fetch.py need not rebuild
        # (and re-compress) the initrd.
        with remembered_imports(memo):
            closure = code_closure(decl.dir / KINDS["python"]) | {"tarball"}
        inputs["code"] = {f"{m}.py": sha256_file(PACKAGE / f"{m}.py") for m in sorted(closure)}
        if "compress" in closure:
            # The compressors' own versions (liblzma, zlib, zstandard) shape
            # the bytes as much as our code does.
            from .compress import FORMAT_VERSION
            inputs["compression"] = FORMAT_VERSION
    return inputs


def key(inputs: Mapping) -> str:
    """The stage key: the sha256 of its inputs, canonically written."""
    return hashlib.sha256(compact_json(inputs)).hexdigest()
