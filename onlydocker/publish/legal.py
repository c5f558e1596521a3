"""`doit legal-info`: what a distributor of the image must be able to hand
over, in one folder (Buildroot's `make legal-info`):

  out/<lane>/legal-info/
    sources/<file>                every source of the lock, as fetched, verified
    patches/<source>/<patch>      every patch, with `series`: the order applied
    licenses/<source>/<path>      license texts: COPYING*, LICENSE*, LICENCE*,
                                  NOTICE* and LICENSES/ of a source tarball;
                                  usr/share/doc/*/copyright of a .deb
    manifest.csv                  package, version, license, source file,
                                  sha256, patches, in image, license files
    host-manifest.csv             the builder image's packages (name, version)
    README                        what this folder is

Archives are untrusted: they are read as streams by unpack's reader, every
member checked, only small regular files kept. The folder is written beside
its place and renamed into it when complete.
"""
from __future__ import annotations

import csv
import io
import os
import re
import shutil
import tempfile
from collections.abc import Container
from contextlib import ExitStack
from pathlib import Path
from typing import BinaryIO

from .. import atomic
from ..errors import HashMismatch, LegalInfoError
from ..formats import unpack
from ..hashing import sha256_file

LICENSE_PREFIXES = ("COPYING", "LICENSE", "LICENCE", "NOTICE")
MAX_LICENSE_BYTES = 1 << 20     # a license text is small; a bigger "COPYING" is not read into memory
MAX_DEPTH = 3                   # below the top folder: COPYING of a bundled library, not of every test
MANIFEST_FIELDS = ("package", "version", "license", "source file", "sha256", "patches", "in image",
                   "license files")


def patch_series(root: Path, source) -> list[Path]:
    """The patches of a source in the order the prelude applies them: the
    `series` file's lines (not comments), else every *.patch sorted."""
    d = Path(root) / "patches" / source.name / source.version
    if not d.is_dir():
        return []
    series = d / "series"
    if series.is_file():
        names = [line.strip() for line in series.read_text().splitlines()
                 if line.strip() and not line.strip().startswith("#")]
    else:
        names = sorted(p.name for p in d.iterdir() if p.is_file() and p.name.endswith(".patch"))
    missing = [n for n in names if not (d / n).is_file()]
    if missing:
        raise LegalInfoError(f"{series}: names {missing[0]!r}, which is not in {d}")
    return [d / n for n in names]


def _is_license(parts: list[str], deb: bool) -> bool:
    """Is this member (path parts; a tarball's top folder already dropped) a license text?"""
    if deb:
        return len(parts) == 5 and parts[:3] == ["usr", "share", "doc"] and parts[4] == "copyright"
    if not parts:
        return False
    if parts[0] == "LICENSES":
        return True
    if len(parts) > MAX_DEPTH:
        return False
    # COPYING, LICENSE.FlashPoint, COPYING-logo, License.txt; not license.h or license-rules.rst.
    name = parts[-1]
    stem, dot, ext = name.partition(".")
    return name.startswith(LICENSE_PREFIXES) or (stem.upper() in LICENSE_PREFIXES and ext.lower() in ("", "txt", "md"))


def _archive_files(path: Path, name: str, want):
    """(member path parts, bytes) of the regular files of a tarball or a
    .deb's data for which want(parts, member) is true, streamed. `name` is
    the file's real name (`path` may be a cache entry, named by its hash):
    it says what kind of file it is. Every member is checked as an
    extraction would check it; an unsafe archive is refused."""
    deb = name.endswith((".deb", ".udeb"))
    label = f"{name} ({path})" if name != path.name else str(path)
    with ExitStack() as stack:
        f: BinaryIO = stack.enter_context(open(path, "rb"))
        if deb:
            member, f = unpack._deb_data(f, label)
            label = f"{label} ({member})"
            stack.enter_context(f)
        tf = unpack._tar_stream(f, stack, label)
        for m in unpack._members(tf, label):
            unpack.check_member(m, label, absolute_symlinks=deb)
            parts = [p for p in m.name.split("/") if p not in ("", ".")]
            if not m.isfile() or not want(parts, m):
                continue
            try:
                data = unpack.member_file(tf, m).read()
            except unpack._CORRUPT as e:
                raise unpack.UnsafeArchive(f"{label}: corrupt or truncated archive in {m.name!r} "
                                           f"({type(e).__name__}: {e})") from None
            yield parts, data


def is_archive(name: str) -> bool:
    return name.endswith(unpack.TAR_SUFFIXES + (".deb", ".udeb"))


def license_texts(path: Path, name: str | None = None) -> list[tuple[str, bytes]]:
    """(path inside the archive, bytes) of its license files, in archive
    order: for a .deb usr/share/doc/<package>/copyright, for a tarball the
    files named COPYING*/LICENSE*/LICENCE*/NOTICE* (up to MAX_DEPTH folders
    below the top one) and everything under a top-level LICENSES/. A plain
    file (not an archive) has none."""
    name = name or path.name
    if not is_archive(name):
        return []
    deb = name.endswith((".deb", ".udeb"))

    def want(full, m):
        # Matched below the top folder (linux-6.1.176/), kept under its whole path.
        parts = full[1:] if not deb and len(full) > 1 else full
        return _is_license(parts, deb) and m.size <= MAX_LICENSE_BYTES
    return [("/".join(parts), data) for parts, data in _archive_files(path, name, want)]


def shipped_sources(stages: dict) -> set[str]:
    """Source groups of every stage whose outputs reach a published artifact
    (the stages that publish one, and what they need, transitively)."""
    todo = [d.name for d in stages.values() if d.artifacts]
    seen: set[str] = set()
    while todo:
        n = todo.pop()
        if n in seen or n not in stages:
            continue
        seen.add(n)
        todo.extend(stages[n].needs)
    return {g for n in seen for g in stages[n].sources}


def _verified(fetcher, s) -> Path:
    path = fetcher.fetch(s, progress=False)      # offline: the cache or downloads/ only, else it names the source
    status = fetcher.check(s)
    if not status.ok:
        algo, _, expected = (status.expected or "").partition(":")
        raise HashMismatch(f"cached {s.file} ({path}) of source {s.name!r}", algo, expected,
                           (status.actual or "").partition(":")[2])
    return path


def _copy(src: Path, dst: Path) -> None:
    # A copy, not a link into the cache: this folder is handed to others and may be edited.
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def _csv(rows: list[dict], fields) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def write(lock, fetcher, root: Path, dest: Path, in_image: Container[str] = frozenset(),
          builder: dict | None = None, log=print) -> list[dict]:
    """Write the legal-info folder at `dest` (replacing one there only once
    the new one is complete). Returns the manifest rows."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        rows = []
        unpinned = [s.name for s in lock.sources if not s.pinned]
        if unpinned:
            raise LegalInfoError(f"{lock.path}: source(s) {', '.join(unpinned)} not pinned: run `doit lock` first")
        for s in lock.sources:
            path = _verified(fetcher, s)
            _copy(path, tmp / "sources" / s.file)
            patches = patch_series(root, s)
            for p in patches:
                _copy(p, tmp / "patches" / s.name / p.name)
            if patches:
                (tmp / "patches" / s.name / "series").write_text("".join(f"{p.name}\n" for p in patches))
            texts = license_texts(path, s.file)
            for rel, data in texts:
                out = tmp / "licenses" / s.name / rel
                try:
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_bytes(data)
                except OSError as e:      # e.g. a file and a folder of the same name in the archive
                    raise LegalInfoError(f"{path} (source {s.name!r}): license file {rel!r} "
                                          f"cannot be written: {e}") from None
            if not texts:
                log(f"legal-info: warning: no license file found in {s.file} (source {s.name}); "
                    f"its declared license is {s.license}")
            rows.append({"package": s.name, "version": s.version, "license": s.license, "source file": s.file,
                         "sha256": s.sha256, "patches": " ".join(p.name for p in patches),
                         "in image": "yes" if s.name in in_image else "no",
                         "license files": " ".join(f"licenses/{s.name}/{rel}" for rel, _ in texts)})
            log(f"legal-info: {s.name} {s.version}: {s.file}, {len(patches)} patch(es), "
                f"{len(texts)} license file(s)")
        (tmp / "manifest.csv").write_text(_csv(rows, MANIFEST_FIELDS))
        host = []
        if builder:
            for entry in sorted(builder.get("packages", [])):
                name, _, version = entry.partition("=")
                host.append({"package": name, "version": version})
            (tmp / "host-manifest.csv").write_text(_csv(host, ("package", "version")))
        (tmp / "README").write_text(
            f"Legal information for lane {lock.lane.name} (lock {lock.path.name}, "
            f"sha256 {sha256_file(lock.path)}).\n"
            "sources/   every source as fetched, verified against the lock's sha256\n"
            "patches/   the patches of each source, applied in the order of its series file\n"
            "licenses/  license texts from the source archives and the .debs' copyright files\n"
            "manifest.csv       package, version, license (SPDX), source file, sha256, patches, in image\n"
            + ("host-manifest.csv  the builder image's Debian packages (build tools, not in the image)\n"
               if builder else "host-manifest.csv  not written: no builder record (run `doit` once)\n"))
        os.chmod(tmp, 0o755)
        atomic.replace_dir(tmp, dest)
        return rows
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# A copyright notice as written in a license file: "Copyright (c) 2002-2020
# Matt Johnston", "Portions copyright (C) 2004 ...", "Copyright 1995 by ...".
_NOTICE = re.compile(r"^\s*(?:portions\s+)?copyright\s*:?\s*(?:\(c\)|©)?\s*(?:\d{4}|by\b)", re.I)
# The notice at the top of a license text is the license text's own (the
# FSF's GPL), not the package's.
_LICENSE_TEXT = re.compile(r"GNU (?:LESSER |LIBRARY )?GENERAL PUBLIC LICENSE|Apache License|Mozilla Public License")


def _notice(value: str) -> str:
    """A DEP-5 Copyright value ("2012 Docker, Inc.") as a notice."""
    v = value.strip()
    return v if not v or v.lower().startswith("copyright") else f"Copyright {v}"


def copyright_notices(texts: list[tuple[str, bytes]], deb: bool) -> list[str]:
    """The copyright notices of a package, in order, each once: of a .deb,
    its copyright file's `Copyright:` fields (machine-readable format, with
    continuation lines) or else its notice lines; of a source tarball, the
    notice lines of its license files (not those of a license text itself)."""
    out: list[str] = []
    for _, data in texts:
        text = data.decode("utf-8", errors="replace")
        lines = text.splitlines()
        if deb and text.startswith("Format:"):
            field = False
            for line in lines:
                if line.startswith("Copyright:"):
                    field = True
                    out.append(_notice(line.removeprefix("Copyright:")))
                elif field and line[:1] in (" ", "\t") and line.strip() != ".":
                    out.append(_notice(line))
                else:
                    field = False
            continue
        license_text = not deb and _LICENSE_TEXT.search(text)
        for line in lines:
            if _NOTICE.match(line) and not (license_text and "Free Software Foundation" in line):
                out.append(line.strip())
    return list(dict.fromkeys(n for n in out if n))


HEADER_LINES = 40              # where a source file states its copyright
MAX_TREE_NOTICES = 1000


def tree_notices(path: Path, name: str) -> list[str]:
    """The copyright notices in the headers (first HEADER_LINES lines) of a
    source tarball's files, each once, in archive order (at most
    MAX_TREE_NOTICES)."""
    out: dict[str, None] = {}

    def want(parts, m):
        return m.size <= MAX_LICENSE_BYTES and len(out) < MAX_TREE_NOTICES
    for _, data in _archive_files(path, name, want):
        if b"\0" in data[:1024]:
            continue                # not text
        for line in data.decode("utf-8", errors="replace").splitlines()[:HEADER_LINES]:
            text = re.sub(r"^[\s/*#;!%-]*", "", line).strip().rstrip("*/ ").strip()
            if _NOTICE.match(text) and len(text) < 200:
                out.setdefault(text)
    return list(out)[:MAX_TREE_NOTICES]


def copyright_text(path: Path, name: str) -> str | None:
    """The package's copyright notices as one text, else None (nothing the
    archive says: SPDX's NOASSERTION): its copyright or license files', and
    for a source tarball whose license files state none, its files' headers'."""
    deb = name.endswith((".deb", ".udeb"))
    notices = copyright_notices(license_texts(path, name), deb)
    if not notices and not deb and is_archive(name):
        notices = tree_notices(path, name)
    return "\n".join(notices) or None


def builder_copyrights(tar_zst: Path) -> dict[str, str]:
    """Package name -> the copyright notices of its copyright file, for the
    builder image's packages (usr/share/doc/<package>/copyright in the
    image's tar, as the builder cache keeps it: zstd; a doc folder that is a
    link to another package's counts as that one's). A package without one
    has none here."""
    import tarfile

    import zstandard
    texts: dict[str, bytes] = {}
    links: dict[str, str] = {}
    with open(tar_zst, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as f, \
            tarfile.open(fileobj=f, mode="r|") as tf:
        for m in tf:
            parts = [p for p in m.name.split("/") if p not in ("", ".")]
            if len(parts) == 4 and parts[:3] == ["usr", "share", "doc"] and m.issym():
                links[parts[3]] = m.linkname.rstrip("/").rsplit("/", 1)[-1]
            elif len(parts) == 5 and parts[:3] == ["usr", "share", "doc"] and parts[4] == "copyright" \
                    and m.isfile() and m.size <= MAX_LICENSE_BYTES:
                texts[parts[3]] = unpack.member_file(tf, m).read()
    for name, target in links.items():
        if name not in texts and target in texts:
            texts[name] = texts[target]
    out = {}
    for name, data in texts.items():
        notices = copyright_notices([("copyright", data)], deb=True)
        if notices:
            out[name] = "\n".join(notices)
    return out
