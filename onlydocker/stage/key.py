"""The stage key: everything that can change a stage's output, as plain
data (`key_inputs`), and its sha256 (`key`, pure). An unchanged key is never
built twice.

A container stage's inputs: its declaration and files, its sources and
patches, the needed stages' output digests, the builder image, the engine's
version, and how the container is made (its environment and user as the
canonical build makes them, the code of engine/run.py, stage/lanedata.py and formats/tarball.py). A Python
stage's: the same without the builder and the container, and with its code:
its stage.py (one of its files) and every module of ours that stage.py
imports, followed through the source (`if TYPE_CHECKING:` imports left out),
plus the tar writer, and the compressors' versions when it compresses.
"""
from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import zstandard

from .. import __version__, atomic
from ..canon import compact_json
from ..config import Variation
from ..errors import BuildError
from ..hashing import sha256_file
from .container import HELPERS, PRELUDE, container_env
from .decl import KINDS, StageDecl, file_digest

if TYPE_CHECKING:
    from ..inputs.lock import Lane, Source

PACKAGE = Path(__file__).parent.parent     # onlydocker/, whose modules keys name
# The code that makes a container stage's container and packs what comes out
# (dotted names below the package): in every container stage's key.
CONTAINER_CODE = ("engine.run", "formats.tarball", "stage.lanedata")
# A Python stage's entry point: build(ctx) in its folder's stage.py.
ENTRY = f"{KINDS['python']}:build"


def _imports_of(tree: ast.AST) -> Iterable[tuple[int, str, tuple[str, ...]]]:
    """Every import statement of a module's source (at the top or inside
    functions) as (level, module, names), except under `if TYPE_CHECKING:`
    (types only). `import a.b` is (0, "a.b", ())."""
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))
        if isinstance(node, ast.ImportFrom):
            yield node.level, node.module or "", tuple(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            yield from ((0, a.name, ()) for a in node.names)


def module_file(dotted: str) -> Path | None:
    """Our module by its dotted name below the package ("cpio", "formats.cpio";
    a subpackage is its __init__.py), or None when it is not ours."""
    base = PACKAGE.joinpath(*dotted.split("."))
    for p in (base.with_name(base.name + ".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def module_key(dotted: str) -> str:
    """How a module is named in a key: its path below the package
    ("cpio.py", "formats/cpio.py", "formats/__init__.py")."""
    return _our_file(dotted).relative_to(PACKAGE).as_posix()


def _our_file(dotted: str) -> Path:
    """module_file of a module known to be ours (one of a code closure)."""
    path = module_file(dotted)
    assert path is not None, f"{dotted}: not a module of the package"
    return path


def _ours(level: int, module: str, names: tuple[str, ...], here: str) -> Iterator[str]:
    """The dotted names (below the package) of our modules one import
    statement runs, in the module whose package is `here` ("" at the top):
    the module named and, for `from X import n`, n when n is a module of X;
    each with the packages above it (Python runs their __init__.py first)."""
    if level:
        parts = here.split(".") if here else []
        if level - 1 > len(parts):
            return
        target = ".".join([*parts[:len(parts) - (level - 1)], *filter(None, [module])])
    elif module == PACKAGE.name or module.startswith(f"{PACKAGE.name}."):
        target = module[len(PACKAGE.name) + 1:]
    else:
        return
    found = [target] if target else []
    for n in names:
        sub = f"{target}.{n}" if target else n
        if module_file(sub) is not None:
            found.append(sub)
    for name in found:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            if module_file(".".join(parts[:i])) is not None:
                yield ".".join(parts[:i])


# sha256 of a module's source -> its import statements: a pure function of
# the bytes, so it is remembered (per process, and across runs in
# out/<lane>/code-imports.json): a no-op need not parse the same modules again.
_parsed: dict[str, list] = {}


def _module_imports(path: Path, here: str = "") -> list[str]:
    """Our modules (dotted names) that the module at `path`, in the package
    `here`, imports."""
    source = path.read_bytes()
    digest = hashlib.sha256(source).hexdigest()
    if digest not in _parsed:
        try:
            tree = ast.parse(source, str(path))
        except SyntaxError as e:       # a stage.py being edited: one line, as any bad input
            raise BuildError(f"{path}: line {e.lineno}: {e.msg}") from None
        _parsed[digest] = sorted({(lv, m, n) for lv, m, n in _imports_of(tree)})
    return sorted({name for lv, m, n in _parsed[digest] for name in _ours(lv, m, tuple(n), here)})


def _well_formed(imports) -> bool:
    return isinstance(imports, list) and all(
        isinstance(i, list) and len(i) == 3 and isinstance(i[0], int) and isinstance(i[1], str)
        and isinstance(i[2], list) and all(isinstance(n, str) for n in i[2]) for i in imports)


def remembered_imports(memo: Path):
    """Use and keep the parse results in `memo` around a block of key work.
    They hold for this parser only (this file's own hash is in the memo)."""
    parser = sha256_file(Path(__file__))

    class _Memo:
        def __enter__(self):
            try:
                known = json.loads(memo.read_text())
                if isinstance(known, dict) and known.get("parser") == parser:
                    # Each entry checked for its shape: a memo is a cache, never trusted to be right.
                    _parsed.update({k: [(i[0], i[1], tuple(i[2])) for i in v]
                                    for k, v in known.get("modules", {}).items() if _well_formed(v)})
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
        module = module_file(m)
        if m in seen or module is None:
            continue
        seen.add(m)
        # Relative imports resolve from the module's package (its own name, for an __init__.py).
        here = m if module.name == "__init__.py" else m.rpartition(".")[0]
        todo.extend(_module_imports(module, here))
    return seen


def engine_version() -> str:
    """Everything of the engine that can change a stage's bytes."""
    h = hashlib.sha256(f"onlydocker {__version__} zstandard {zstandard.__version__}".encode())
    for path in (PRELUDE, *HELPERS.values()):
        h.update(path.read_bytes())
    return h.hexdigest()


def key_inputs(decl: StageDecl, lane: Lane, sources: Sequence[Source], patches: Iterable[tuple[str, Path]],
               needs: Mapping[str, str], builder: str | None, memo: Path, secureboot_cert: str | None = None) -> dict:
    """Everything that can change the stage's output, as plain data: `needs`
    maps each needed stage to its output digest, `builder` is the builder
    tar's sha256 (container stages), `memo` the imports memo (Python stages),
    `secureboot_cert` the digest of the certificate a signing stage signs
    for (None: it makes unsigned images)."""
    inputs: dict[str, object] = {
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
    if secureboot_cert is not None:
        # Another key signs other bytes: never one's outputs for the other's.
        inputs["secureboot_cert"] = secureboot_cert
    if decl.kind == "container":
        inputs["builder"] = builder
        # How the container is made, as the canonical build makes it (the
        # job count is left out: outputs must not depend on it, and
        # `doit repro` proves they do not), and the code that makes it
        # and packs what comes out.
        env = container_env(decl, lane, Variation())
        del env["JOBS"]
        inputs["container"] = {"env": env, "user": "0:0" if decl.root else Variation().user,
                               "code": {module_key(m): sha256_file(_our_file(m)) for m in CONTAINER_CODE}}
    else:
        # A python stage's code is an input too: its stage.py (in "files")
        # and every module of ours that it imports, and the tar writer that
        # packs its output. Not the rest: editing fetch.py need not rebuild
        # (and re-compress) the initrd.
        with remembered_imports(memo):
            closure = code_closure(decl.dir / KINDS["python"]) | {"formats.tarball"}
        inputs["code"] = {module_key(m): sha256_file(_our_file(m)) for m in sorted(closure)}
        if "formats.compress" in closure:
            # The compressors' own versions (liblzma, zlib, zstandard) shape
            # the bytes as much as our code does.
            from ..formats.compress import FORMAT_VERSION
            inputs["compression"] = FORMAT_VERSION
    return inputs


def key(inputs: Mapping) -> str:
    """The stage key: the sha256 of its inputs, canonically written."""
    return hashlib.sha256(compact_json(inputs)).hexdigest()
