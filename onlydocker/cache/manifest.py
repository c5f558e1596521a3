"""A stage's outputs as data: path -> {type, sha256|target, mode}, read from
its tar or from its tree in out/, and the digest downstream keys depend on."""
from __future__ import annotations

import hashlib
import os
import tarfile
from functools import partial
from pathlib import Path

from ..canon import compact_json
from ..errors import BuildError
from ..formats.unpack import member_file
from ..hashing import sha256_file


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
                f = member_file(tf, m)
                for chunk in iter(partial(f.read, 1 << 20), b""):
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
    return hashlib.sha256(compact_json({k: {kk: vv for kk, vv in v.items() if kk != "mode"}
                                     for k, v in files.items()})).hexdigest()


def first_difference(expected: dict[str, dict], actual: dict[str, dict]) -> str:
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
