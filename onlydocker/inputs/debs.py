"""Debian package files for the builder image.

Two jobs, both about the `.deb`s a lock's [builder] pins:
- reading a Packages index (deb822 paragraphs), the one apt verified
  against the signed Release file, to learn each installed package's file,
  size and sha256 as the archive states them (`pinned_from_index`);
- writing a flat repository of exactly the pinned, verified files, with a
  Packages index made from each file's own control data, for an offline
  bootstrap (`write_flat_repo`).

Everything written is a function of the files: sorted, no dates.
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
from pathlib import Path

from ..errors import BuildError
from ..formats import unpack


def paragraphs(text: str) -> list[dict[str, str]]:
    """deb822 paragraphs as dicts (continuation lines joined with newlines,
    as the field's value), in order."""
    out: list[dict[str, str]] = []
    cur: dict[str, str] = {}
    last: str | None = None
    for line in text.splitlines():
        if not line.strip():
            if cur:
                out.append(cur)
            cur, last = {}, None
        elif line[0] in " \t" and last is not None:
            cur[last] += "\n" + line
        elif ":" in line:
            key, _, value = line.partition(":")
            cur[key] = value.strip()
            last = key
    if cur:
        out.append(cur)
    return out


def pinned_from_index(installed: list[tuple[str, str, str]], index_texts: list[str], url_prefix: str
                      ) -> list[dict]:
    """For every installed (name, version, architecture), the archive's own
    entry: file, `url_prefix` + Filename, SHA256 and Size from the Packages
    index. A package the index does not have (installed from elsewhere) is
    an error naming it: the pin would be incomplete."""
    known: dict[tuple[str, str, str], dict[str, str]] = {}
    for text in index_texts:
        for p in paragraphs(text):
            if {"Package", "Version", "Architecture", "Filename", "SHA256", "Size"} <= p.keys():
                known.setdefault((p["Package"], p["Version"], p["Architecture"]), p)
    debs: list[dict] = []
    missing: list[str] = []
    for name, version, arch in sorted(installed):
        entry = known.get((name, version, arch))
        if entry is None:
            missing.append(f"{name}={version} ({arch})")
            continue
        filename = entry["Filename"]
        debs.append({"name": name, "version": version, "architecture": arch,
                     "file": filename.rsplit("/", 1)[-1], "url": url_prefix + filename,
                     "sha256": entry["SHA256"], "size": int(entry["Size"])})
    if missing:
        raise BuildError("the bootstrap installed packages that no verified Packages index lists: "
                         + ", ".join(missing))
    return debs


def control_text(path: Path, what: str | None = None) -> str:
    """The control file of a .deb, read with Python alone (ar, then
    control.tar with no, gz, xz or zstd compression)."""
    what = what or str(path)
    with open(path, "rb") as f:
        found = next(((name, m.read()) for name, m in unpack.ar_members(f, what) if name.startswith("control.tar")),
                     None)
    if found is not None:
        name, member = found
        if name.endswith(".zst"):
            import zstandard
            member = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(member)).read()
        with tarfile.open(fileobj=io.BytesIO(member)) as tf:
            for candidate in ("./control", "control"):
                try:
                    return unpack.member_file(tf, candidate).read().decode()
                except KeyError:
                    continue
    raise BuildError(f"{what}: no control file in the .deb")


# The fields apt and mmdebstrap read from a Packages index (the rest of a
# control file, such as Description, changes nothing in a bootstrap).
INDEX_ORDER = ("Package", "Version", "Architecture", "Multi-Arch", "Essential", "Build-Essential", "Priority",
               "Section", "Installed-Size", "Pre-Depends", "Depends", "Recommends", "Suggests", "Breaks",
               "Conflicts", "Replaces", "Provides", "Enhances", "Protected")


def write_flat_repo(repo: Path, files: list[tuple[str, Path, str, int]], suite: str) -> None:
    """A flat repository in `repo`: each (file name, verified path, sha256,
    size) linked (or copied) in, a Packages index from each file's control
    data plus the pinned Filename, Size and SHA256, sorted, and a Release
    file naming `suite` (mmdebstrap picks the essential and required
    packages of that suite by its name)."""
    repo.mkdir(parents=True, exist_ok=True)
    stanzas = []
    for file, path, sha256, size in sorted(files):
        dest = repo / file
        try:
            os.link(path, dest)
        except OSError:
            shutil.copyfile(path, dest)
        control = paragraphs(control_text(dest, what=file))
        if not control:
            raise BuildError(f"{file}: empty control file")
        fields = control[0]
        lines = [f"{k}: {fields[k]}" for k in INDEX_ORDER if k in fields]
        lines += [f"Filename: ./{file}", f"Size: {size}", f"SHA256: {sha256}"]
        stanzas.append((fields["Package"], fields["Version"], fields["Architecture"], "\n".join(lines) + "\n"))
    index = "\n".join(s[3] for s in sorted(stanzas)).encode()
    (repo / "Packages").write_bytes(index)
    archs = sorted({s[2] for s in stanzas})
    (repo / "Release").write_text(
        f"Origin: onlydocker\nLabel: pinned builder packages\nSuite: {suite}\nCodename: {suite}\n"
        f"Architectures: {' '.join(archs)}\nSHA256:\n {hashlib.sha256(index).hexdigest()} {len(index)} Packages\n")
