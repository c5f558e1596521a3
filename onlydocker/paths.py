"""Where one lane's build lives in out/<lane>/, and the records kept there
(stage manifests, the builder's record): names only, no build logic."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import BuildError


@dataclass(frozen=True)
class LanePaths:
    out: Path                       # out/<lane>

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
        """The memo of which of our modules a file imports (stagekey.py)."""
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
