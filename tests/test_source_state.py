"""The pipeline's own source, as the provenance names it (source_state.py):
a real git repository of the test's own; and the Python lock that pins every
package of the pipeline by version and hash (requirements.lock)."""
from __future__ import annotations

import hashlib
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from onlydocker.cli import repro
from onlydocker.inputs import source_state
from tests.conftest import require_tool

REPO = Path(__file__).resolve().parent.parent


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t.invalid", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def project(tmp_path):
    require_tool("git")
    root = tmp_path / "project"
    (root / "stages").mkdir(parents=True)
    (root / "dodo.py").write_text("# dodo\n")
    (root / "stages" / "build.sh").write_text("echo built\n")
    (root / ".gitignore").write_text("/out/\n")
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "first")
    return root


def test_a_clean_work_tree_is_named_by_its_commit_and_tree(project):
    (project / "out").mkdir()
    (project / "out" / "artifact").write_text("ignored: an output")
    state = source_state.describe(project)
    assert state == {"git_commit": _git(project, "rev-parse", "HEAD"),
                     "git_tree": _git(project, "rev-parse", "HEAD^{tree}"), "dirty": False}
    assert source_state.summary(state).endswith("(clean)")


def test_uncommitted_and_untracked_changes_make_it_dirty_with_a_digest_of_them(project):
    (project / "stages" / "build.sh").write_text("echo changed\n")
    state = source_state.describe(project)
    assert state["dirty"] is True and state["changed"] == ["stages/build.sh"]
    first = state["changes_sha256"]
    (project / "new.py").write_text("x = 1\n")
    state = source_state.describe(project)
    assert state["changed"] == ["new.py", "stages/build.sh"] and state["changes_sha256"] != first
    (project / "new.py").write_text("x = 2\n")      # another content, another digest
    assert source_state.describe(project)["changes_sha256"] != state["changes_sha256"]
    assert "DIRTY" in source_state.summary(state)
    # Nothing was written into the repository: the index is as it was.
    assert "stages/build.sh" in _git(project, "diff", "--name-only")


def test_repro_s_copy_names_the_same_source_clean_or_dirty(project, tmp_path):
    """`doit repro` builds again in a copy: the copy's provenance must name
    the same commit and the same changes as the first build's."""
    repro._copy_tree(project, tmp_path / "clean-copy")
    assert source_state.describe(tmp_path / "clean-copy") == source_state.describe(project)
    (project / "stages" / "build.sh").write_text("echo changed\n")
    (project / "dodo.py").unlink()
    (project / "stages" / "extra.sh").write_text("echo extra\n")
    repro._copy_tree(project, tmp_path / "dirty-copy")
    assert source_state.describe(tmp_path / "dirty-copy") == source_state.describe(project)
    assert not (tmp_path / "dirty-copy" / "dodo.py").exists()


def test_a_folder_that_is_not_a_git_work_tree_says_so(tmp_path):
    assert source_state.describe(tmp_path) == {"git": None}
    assert "names no commit" in source_state.summary({"git": None})


def test_every_python_package_is_locked_by_version_and_hash():
    """requirements.lock (pip-compile --generate-hashes, installed by
    setup.sh with --require-hashes) pins what pyproject.toml asks for, at the
    same versions: a bump in one without the other fails here."""
    lock = (REPO / source_state.PYTHON_LOCK).read_text()
    entries = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\\n((?:    --hash=sha256:[0-9a-f]{64}(?: \\)?\n)+)", lock, re.M)
    pinned = {name.lower().replace("_", "-"): version for name, version, _ in entries}
    assert len(entries) == len(re.findall(r"^[A-Za-z0-9_.-]+==", lock, re.M)), "an entry without a hash"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + [d for ds in project["optional-dependencies"].values() for d in ds]
    for dep in wanted:
        name, _, version = dep.split("#")[0].strip().partition("==")
        assert version, f"pyproject.toml: {dep!r} is not pinned with =="
        assert pinned.get(name.lower().replace("_", "-")) == version, \
            f"requirements.lock pins {name} at {pinned.get(name.lower())}, pyproject.toml at {version}: " \
            f"regenerate it (README: the pipeline's own tools)"
    assert source_state.file_digest(REPO, source_state.PYTHON_LOCK)["sha256"] == \
        hashlib.sha256(lock.encode()).hexdigest()
