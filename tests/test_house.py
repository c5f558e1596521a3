"""House rules that keep one implementation per job: a test fails naming the
module that grows a second one."""
from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "onlydocker"


def test_dist_s_file_names_are_spelt_in_paths_py_only():
    # A file name as a string literal: "SHA256SUMS", 'provenance.intoto.json', ...
    literal = re.compile(r"""["'](SHA256SUMS(\.minisig)?|provenance\.intoto(\.dsse)?\.json|onlydocker\.spdx\.json)["']""")
    found = [f"{p.name}:{n}" for p in sorted(PACKAGE.rglob("*.py")) if p.name != "paths.py"
             for n, line in enumerate(p.read_text().splitlines(), 1) if literal.search(line)]
    assert found == [], f"dist/'s file names belong to paths.py; spelt again in {found}"


def test_out_lane_paths_are_made_by_paths_py():
    # `settings.out_root / lane / "dist"` and the like bypass LanePaths.
    by_hand = re.compile(r"""out_root\s*/\s*[\w.]+\s*/\s*["']""")
    found = [f"{p.name}:{n}" for p in sorted(PACKAGE.rglob("*.py"))
             for n, line in enumerate(p.read_text().splitlines(), 1) if by_hand.search(line)]
    assert found == [], f"out/<lane>/... is LanePaths' (paths.py); made by hand in {found}"


def test_messages_go_through_log_py():
    # print(..., file=sys.stderr) anywhere else is a second way to say things.
    found = [f"{p.name}:{n}" for p in sorted(PACKAGE.rglob("*.py")) if p.name != "log.py"
             for n, line in enumerate(p.read_text().splitlines(), 1) if "file=sys.stderr" in line]
    assert found == [], f"messages to the user go through onlydocker/log.py; printed directly in {found}"


# The layers, lowest first (onlydocker/__init__.py and docs/design.md say
# why): a module may import its own layer and the ones before it. The
# foundation is the package's top-level modules.
LAYERS = ("", "formats", "cache", "inputs", "engine", "builder", "stage", "publish", "cli")


def _layer(dotted: str) -> str:
    """The layer of a module named below the package ("formats.cpio" ->
    "formats"; "errors", or the package itself, -> the foundation)."""
    first = dotted.split(".")[0]
    return first if first in LAYERS else ""


def _imports(path: Path, here: str, package: Path) -> list[tuple[int, str]]:
    """(line, dotted name below the package) of each import of ours in a
    module of package `here`, at the top or inside functions; `from X import
    n` counts as X.n when n is a module (it is then what runs)."""
    import ast
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = here.split(".") if here else []
                base = ".".join([*parts[:len(parts) - (node.level - 1)], *filter(None, [node.module])])
            elif (node.module or "").startswith("onlydocker"):
                base = (node.module or "").removeprefix("onlydocker").removeprefix(".")
            else:
                continue
            for a in node.names:
                sub = f"{base}.{a.name}" if base else a.name
                is_module = (package / Path(*sub.split("."))).with_suffix(".py").is_file() \
                    or (package / Path(*sub.split(".")) / "__init__.py").is_file()
                found.append((node.lineno, sub if is_module else base))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name.removeprefix("onlydocker.")) for a in node.names
                      if a.name.startswith("onlydocker.")]
    return found


def layer_violations(package: Path = PACKAGE) -> list[str]:
    bad = []
    for p in sorted(package.rglob("*.py")):
        rel = p.relative_to(package).with_suffix("")
        dotted = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        here = dotted if rel.name == "__init__" else dotted.rpartition(".")[0]
        mine = LAYERS.index(_layer(dotted))
        for line, target in _imports(p, here, package):
            if LAYERS.index(_layer(target)) > mine:
                bad.append(f"onlydocker/{rel.as_posix()}.py:{line} ({_layer(dotted) or 'foundation'}) imports "
                           f"onlydocker.{target} ({_layer(target)}), a higher layer")
    return bad


def test_every_subpackage_says_its_job_and_what_it_may_import():
    for layer in LAYERS[1:]:
        init = PACKAGE / layer / "__init__.py"
        doc = init.read_text()
        assert doc.startswith('"""') and "Imports:" in doc, f"{init}: a docstring saying its job and its imports"
    top = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert top == {"errors", "config", "log", "canon", "hashing", "atomic", "progress", "sign", "secureboot"}, \
        f"the foundation grew or shrank: {sorted(top)} (say so in onlydocker/__init__.py and docs/design.md)"


def test_no_module_imports_a_higher_layer():
    bad = layer_violations()
    assert bad == [], "\n".join(bad)


def test_the_layer_check_names_both_ends_of_a_wrong_import(tmp_path):
    """The check is real: a foundation module that imports the CLI fails it."""
    import shutil
    pkg = tmp_path / "onlydocker"
    shutil.copytree(PACKAGE, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "canon.py").write_text((pkg / "canon.py").read_text() + "\nfrom .cli import report  # noqa\n")
    bad = layer_violations(pkg)
    assert len(bad) == 1 and bad[0].startswith("onlydocker/canon.py:") and "(foundation) imports onlydocker.cli.report (cli)" in bad[0], bad
