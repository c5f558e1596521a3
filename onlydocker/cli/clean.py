"""`doit clean`: remove one lane's outputs in out/<lane>/, never a cache.

What each option removes (said before anything is removed; `-n` only says):

  (default)  the lane's outputs: stages/ (trees, manifests, snapshots),
             dist/ and its records (dist.*.json), legal-info/, logs/,
             last-run.json, tmp/. The next build restores every stage
             from the cache (or builds what the cache lacks).
  --state    also the lane's kept incremental state: doit's database
             (.doit.db*), the verdicts that sources were checked as archives
             (checked/), the imports memo (code-imports.json) and the
             builder's record (builder.json). The next build checks the
             sources again and asks the builder cache again.
  --cache    also the stage cache entries (<key>.tar.zst and <key>.json)
             of the keys the lane's stages in out/ were made from, read
             from their manifests before anything is removed. Entries of
             other keys (other lanes, older builds) and the builder images
             (shared by every lane with the same [builder]) stay; the
             remote cache is never touched.
  --kept     also the lane's kept build trees (kept.py: Docker volumes on
             every engine of ONLYDOCKER_ENGINES, or the usual one); the next
             build of those stages starts from a fresh extraction.

A lane being built by another doit run is not cleaned (its run lock is held).
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..hashing import is_sha256

OUTPUTS = ("stages", "dist", "dist.snapshot.json", "dist.state.json", "legal-info", "logs",
           "last-run.json", "tmp")
STATE = ("checked", "code-imports.json", "builder.json")
STATE_GLOBS = (".doit.db*",)


@dataclass(frozen=True)
class Removal:
    path: Path
    what: str        # "output", "state" or "cache entry"
    size: int


def _size(path: Path) -> int:
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if not p.is_dir() or p.is_symlink())


def lane_cache_keys(out: Path) -> list[str]:
    """The keys the lane's stages in out/ were made from (their manifests)."""
    keys = []
    for m in sorted((out / "stages").glob("*.manifest.json")):
        try:
            key = json.loads(m.read_text()).get("key")
        except (OSError, ValueError, AttributeError):
            continue
        if is_sha256(key):
            keys.append(key)
    return keys


def plan(out: Path, stage_cache: Path, state: bool = False, cache: bool = False) -> list[Removal]:
    """What `doit clean` with these options removes, in order (cache entries
    are found before the manifests that name them go)."""
    found: list[Removal] = []
    if cache:
        for key in lane_cache_keys(out):
            for p in (stage_cache / f"{key}.tar.zst", stage_cache / f"{key}.json"):
                if p.exists():
                    found.append(Removal(p, "cache entry", _size(p)))
    for name in OUTPUTS:
        p = out / name
        if p.exists() or p.is_symlink():
            found.append(Removal(p, "output", _size(p)))
    if state:
        paths = [out / n for n in STATE] + [p for g in STATE_GLOBS for p in sorted(out.glob(g))]
        found += [Removal(p, "state", _size(p)) for p in paths if p.exists()]
    return found


def remove(items: list[Removal]) -> None:
    for r in items:
        if r.path.is_dir() and not r.path.is_symlink():
            shutil.rmtree(r.path)
        else:
            r.path.unlink(missing_ok=True)


def human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"
