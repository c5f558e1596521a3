"""What the pipeline's own source was when it built: the git commit and
tree of the project folder, and whether the work tree differed from that
commit (uncommitted or untracked files). The provenance names it, so a
release says which code built it; a build from uncommitted changes is
called dirty, with a digest of those changes, and never anything else.

Only git's own answers are used (`rev-parse`, `status`, `diff`): nothing is
written to the repository. A folder that is not a git work tree (a copy, a
source tarball) says so."""
from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

PYTHON_LOCK = "requirements.lock"


def _git(root: Path, *args: str) -> bytes | None:
    try:
        # GIT_OPTIONAL_LOCKS=0: `git status` does not refresh the index either.
        r = subprocess.run(["git", "-C", str(root), *args], capture_output=True, timeout=60,
                           env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout if r.returncode == 0 else None


def describe(root: Path) -> dict:
    """{"git_commit", "git_tree", "dirty", and when dirty "changes_sha256"
    and "changed"}; or {"git": None} outside a git work tree."""
    top = _git(root, "rev-parse", "--show-toplevel")
    if top is None or Path(top.decode().strip()).resolve() != root.resolve():
        return {"git": None}
    ids = _git(root, "rev-parse", "HEAD", "HEAD^{tree}")
    if ids is None:
        return {"git": None}     # a repository with no commit yet
    commit, tree = ids.decode().split()
    status = _git(root, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames")
    entries = sorted((e for e in (status or b"").split(b"\0") if e), key=lambda e: e[3:])
    state = {"git_commit": commit, "git_tree": tree, "dirty": bool(entries)}
    if entries:
        # The changes themselves, as bytes: what tracked files differ by, and
        # every untracked file's content; the same changes give the same digest.
        h = hashlib.sha256(_git(root, "diff", "--binary", "--no-ext-diff", "HEAD") or b"")
        for e in entries:
            code, path = e[:2], e[3:]
            if code == b"??":
                h.update(b"\0untracked\0" + path + b"\0")
                try:
                    h.update(hashlib.sha256((root / path.decode()).read_bytes()).digest())
                except OSError:
                    pass
        state["changes_sha256"] = h.hexdigest()
        state["changed"] = [e[3:].decode("utf-8", "replace") for e in entries]
    return state


def summary(state: dict) -> str:
    """One line for the console."""
    if state.get("git") is None and "git_commit" not in state:
        return "not a git work tree: the provenance names no commit"
    text = f"git commit {state['git_commit'][:12]}"
    if state["dirty"]:
        n = len(state["changed"])
        return (f"{text} with {n} uncommitted change(s) ({', '.join(state['changed'][:5])}"
                f"{', …' if n > 5 else ''}): DIRTY, and the provenance says so")
    return text + " (clean)"


def file_digest(root: Path, name: str) -> dict | None:
    """{"path": name, "sha256": ...} of a file of the project, or None."""
    try:
        return {"path": name, "sha256": hashlib.sha256((root / name).read_bytes()).hexdigest()}
    except OSError:
        return None
