"""A lane's sources as stages use them: which a stage asks for (by group),
their patches, and their bytes re-hashed and checked as archives before use."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .. import atomic
from ..errors import HashMismatch
from ..hashing import sha256_file
from .paths import LanePaths

if TYPE_CHECKING:
    from ..inputs.fetch import Fetcher
    from ..inputs.lock import Lock, Source
    from .decl import StageDecl

# The archive checker, whose code a verdict holds for.
CHECKER = Path(__file__).resolve().parent.parent / "formats" / "unpack.py"


@dataclass(frozen=True)
class LaneSources:
    root: Path                      # the project tree (patches/)
    lock: Lock
    fetcher: Fetcher
    paths: LanePaths

    def of(self, decl: StageDecl) -> list[Source]:
        return [s for group in decl.sources for s in self.lock.group(group)]

    def patches(self, source: Source) -> list[tuple[str, Path]]:
        d = self.root / "patches" / source.name / source.version
        if not d.is_dir():
            return []
        return [(f"{source.name}/{p.name}", p) for p in sorted(d.iterdir()) if p.is_file()]

    def verified(self, decl: StageDecl) -> list[tuple[Source, Path]]:
        """The stage's sources, re-hashed now (the cache is untrusted too),
        and checked as archives before anything uses them."""
        out = []
        for s in self.of(decl):
            path = self.fetcher.fetch(s, progress=False)
            actual = sha256_file(path)
            if actual != s.sha256:
                raise HashMismatch(f"cached {s.file} ({path})", "sha256", s.sha256, actual)
            self.check(s, path)
            out.append((s, path))
        return out

    @staticmethod
    def _verdict(source: Source) -> str:
        # The verdict holds for these bytes (the marker's name), under this
        # file name (which says tar, .deb or plain) and this checker's code.
        return f"{source.file} {sha256_file(CHECKER)}\n"

    def _marker(self, source: Source) -> Path:
        """Where the verdict on the source's bytes is kept: named by their
        sha256 (a source checked here is pinned, or `checked` says no)."""
        assert source.sha256 is not None, f"source {source.name!r} is not pinned"
        return self.paths.checked_marker(source.sha256)

    def checked(self, source: Source) -> bool:
        if source.sha256 is None:
            return False
        try:
            return self._marker(source).read_text() == self._verdict(source)
        except OSError:
            return False

    def check(self, source: Source, path: Path) -> None:
        """Check every member of a tar or .deb source on the host (unpack.py):
        once per tree for given bytes, since a 140 MB kernel tarball takes
        about 10 s. The verdict is kept in out/, not in the shared cache:
        whoever can write the cache must not be able to vouch for an archive."""
        from ..formats.unpack import check_source, kind_of
        if self.checked(source):
            return
        kind = kind_of(source.file)
        hashes: set[str] | None = set() if kind == "deb" else None
        symbols: set[str] | None = set() if kind == "tar" else None
        check_source(path, source.file, file_hashes=hashes, kconfig_symbols=symbols)
        marker = self._marker(source)
        marker.parent.mkdir(parents=True, exist_ok=True)
        # Memos before the verdict that vouches for them (see `deb_file_hashes`).
        if hashes is not None:
            atomic.write_text(self._files_memo(source), "".join(f"{h}\n" for h in sorted(hashes)))
        if symbols:
            atomic.write_text(self._kconfig_memo(source), "".join(f"{s}\n" for s in sorted(symbols)))
        atomic.write_text(marker, self._verdict(source))

    def _kconfig_memo(self, source: Source) -> Path:
        return self._marker(source).with_name(f"{source.sha256}.kconfig")

    def kconfig_symbols(self, source: Source) -> set[str] | None:
        """The Kconfig symbols the source defines, as this tree's check of it
        found them; None when it is not checked here yet, or defines none."""
        if not self.checked(source):
            return None
        try:
            return set(self._kconfig_memo(source).read_text().split())
        except OSError:
            return None

    def _files_memo(self, source: Source) -> Path:
        return self._marker(source).with_name(f"{source.sha256}.files")

    def deb_file_hashes(self, source: Source) -> set[str]:
        """The sha256 of every regular file the .deb installs: as its check in
        this tree found them (the fetch task's, off the critical path), or
        read now (the source fetched if need be, re-hashed, checked)."""
        if self.checked(source):
            try:
                return set(self._files_memo(source).read_text().split())
            except OSError:
                pass
        path = self.fetcher.fetch(source, progress=False)
        actual = sha256_file(path)
        if actual != source.sha256:
            raise HashMismatch(f"cached {source.file} ({path})", "sha256", source.sha256, actual)
        self._marker(source).unlink(missing_ok=True)
        self.check(source, path)
        return set(self._files_memo(source).read_text().split())
