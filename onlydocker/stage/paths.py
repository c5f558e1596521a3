"""Where one lane's build lives in out/<lane>/, and the records kept there
(stage manifests, the builder's record), and the names of what dist/ holds:
names only, no build logic. The one owner of out/'s layout: dist.py,
verify.py and the commands go through it."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import BuildError

# dist/: the published artifacts, and the files made from them (dist.py
# writes them, verify.py audits them).
SUMS = "SHA256SUMS"
SUMS_SIG = "SHA256SUMS.minisig"
STATEMENT = "provenance.intoto.json"
ENVELOPE = "provenance.intoto.dsse.json"
SBOM = "onlydocker.spdx.json"
# Files that SHA256SUMS cannot list because they are made from it.
METADATA = frozenset({SUMS, SUMS_SIG, STATEMENT, ENVELOPE})


@dataclass(frozen=True)
class LanePaths:
    out: Path                       # out/<lane>

    @classmethod
    def of(cls, out_root: Path, lane: str) -> LanePaths:
        return cls(out_root / lane)

    @property
    def dist(self) -> Path:
        """The published artifacts (dist.py)."""
        return self.out / "dist"

    @property
    def legal_info(self) -> Path:
        """`doit legal-info`'s folder (legal.py)."""
        return self.out / "legal-info"

    @property
    def rebuild(self) -> Path:
        """`doit rebuild`'s work and the release's artifacts it rebuilt (rebuild.py)."""
        return self.out / "rebuild"

    @property
    def boot(self) -> Path:
        """`doit boot`'s state: its disk, its ssh keys and config (vm.py)."""
        return self.out / "boot"

    def stage_dir(self, name: str) -> Path:
        return self.out / "stages" / name

    def manifest_path(self, name: str) -> Path:
        return self.out / "stages" / f"{name}.manifest.json"

    def snapshot_path(self, name: str) -> Path:
        return self.out / "stages" / f"{name}.snapshot.json"

    def log_path(self, name: str) -> Path:
        return self.out / "logs" / f"{name}.log"

    @property
    def builder_record(self) -> Path:
        return self.out / "builder.json"

    @property
    def code_imports(self) -> Path:
        """The memo of which of our modules a file imports (stage/key.py)."""
        return self.out / "code-imports.json"

    def checked_marker(self, sha256: str) -> Path:
        """The verdict that the archive with these bytes was checked (sources.py)."""
        return self.out / "checked" / sha256

    def tmp(self) -> Path:
        d = self.out / "tmp"
        d.mkdir(parents=True, exist_ok=True)
        return d

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

    def builder(self) -> dict:
        try:
            return json.loads(self.builder_record.read_text())
        except FileNotFoundError:
            raise BuildError(f"no builder image recorded at {self.builder_record}: run `doit build:builder` first") from None
