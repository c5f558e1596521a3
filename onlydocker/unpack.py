"""Unpacking untrusted archives: source tarballs, .deb files, cache entries.

Refused, with the archive and the member named: absolute paths, `..`,
links that point outside the tree, device nodes and fifos, setuid/setgid
bits. Extraction writes only below its destination, into a temporary
folder that is renamed into place when complete.
"""
from __future__ import annotations

import io
import os
import posixpath
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import BinaryIO

from .errors import UnsafeArchive

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar.zst", ".tzst")


def _inside(base: str, target: str) -> bool:
    norm = posixpath.normpath(target)
    return norm != ".." and not norm.startswith("../") and not posixpath.isabs(norm)


def check_member(m: tarfile.TarInfo, archive: str, *, absolute_symlinks: bool = False) -> None:
    """Refuse an unsafe member. `absolute_symlinks` admits links such as
    lib64/ld-linux.so -> /lib/...: inside a root filesystem (a stage's
    sysroot) they name a place in that root, and extraction never writes
    through a link, so they cannot make it write outside."""
    name = m.name
    def bad(why):
        raise UnsafeArchive(f"{archive}: member {name!r} {why}: refused")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        bad("has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        bad("climbs out with '..'")
    if m.isdev() or m.isfifo():
        bad("is a device node or fifo")
    if m.mode & 0o6000:
        bad(f"has a setuid/setgid bit (mode {m.mode:o})")
    if m.issym():
        target = m.linkname
        if posixpath.isabs(target):
            if not absolute_symlinks:
                bad(f"is a symlink to the absolute path {target!r}")
            return
        if not _inside("", posixpath.join(posixpath.dirname("/".join(parts)), target)):
            bad(f"is a symlink pointing outside the tree ({target!r})")
    if m.islnk():
        if posixpath.isabs(m.linkname) or not _inside("", m.linkname):
            bad(f"is a hardlink pointing outside the tree ({m.linkname!r})")
    if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
        bad("is of an unsupported type")


def _open_tar(path: Path) -> tarfile.TarFile:
    name = path.name
    if name.endswith((".tar.zst", ".tzst")):
        import zstandard
        return tarfile.open(fileobj=zstandard.ZstdDecompressor().stream_reader(open(path, "rb")), mode="r|")
    return tarfile.open(path, mode="r|*")


def _deb_data(path: Path) -> tuple[str, bytes]:
    """The data.tar.* member of a .deb (an ar archive)."""
    with open(path, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise UnsafeArchive(f"{path}: not a Debian package (no ar header)")
        while True:
            header = f.read(60)
            if len(header) < 60:
                break
            member = header[:16].decode().strip().rstrip("/")
            size = int(header[48:58].decode().strip())
            data = f.read(size)
            if size % 2:
                f.read(1)
            if member.startswith("data.tar"):
                return member, data
    raise UnsafeArchive(f"{path}: Debian package without a data.tar member")


def check_archive(path: str | os.PathLike) -> None:
    """Stream through an archive and refuse it if any member is unsafe."""
    path = Path(path)
    if path.name.endswith(".deb"):
        member, data = _deb_data(path)
        if member.endswith(".zst"):
            import zstandard
            data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
        tf = tarfile.open(fileobj=io.BytesIO(data), mode="r|*")
        label = f"{path} ({member})"
    elif path.name.endswith(TAR_SUFFIXES):
        tf = _open_tar(path)
        label = str(path)
    else:
        return      # not an archive: a plain file is copied as it is
    with tf:
        for m in tf:
            check_member(m, label)


def extract(source: str | os.PathLike | BinaryIO, dest: Path, *, strip_single_top: bool = False,
            absolute_symlinks: bool = False) -> None:
    """Check and extract a tar (path or stream) into `dest`, atomically.

    Modes: directories 0755, files 0755 when the archive gives any execute
    bit, else 0644; no ownership; mtimes as in the archive."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    label = str(source) if isinstance(source, (str, os.PathLike)) else "archive stream"
    try:
        tf = _open_tar(Path(source)) if isinstance(source, (str, os.PathLike)) else \
            tarfile.open(fileobj=source, mode="r|*")
        links: list[tuple[tarfile.TarInfo, Path]] = []
        with tf:
            real_tmp = os.path.realpath(tmp)
            for m in tf:
                check_member(m, label, absolute_symlinks=absolute_symlinks)
                rel = "/".join(p for p in m.name.split("/") if p not in ("", "."))
                if not rel:
                    continue
                target = tmp / rel
                # Never write through a link an earlier member made.
                existing = target.parent
                while not existing.exists() and not existing.is_symlink():
                    existing = existing.parent
                parent = os.path.realpath(existing)
                if parent != real_tmp and not parent.startswith(real_tmp + os.sep):
                    raise UnsafeArchive(f"{label}: member {m.name!r} would be written through a symlink "
                                        f"to {parent}: refused")
                if m.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.is_symlink() or target.exists():
                    raise UnsafeArchive(f"{label}: member {m.name!r} appears twice: refused")
                if m.issym():
                    os.symlink(m.linkname, target)
                elif m.islnk():
                    links.append((m, target))
                else:
                    src = tf.extractfile(m)
                    with open(target, "wb") as f:
                        shutil.copyfileobj(src, f, 1 << 20)
                    os.chmod(target, 0o755 if m.mode & 0o111 else 0o644)
                    os.utime(target, (m.mtime, m.mtime))
        for m, target in links:
            linked = tmp / "/".join(p for p in m.linkname.split("/") if p not in ("", "."))
            if linked.is_symlink() or not linked.is_file():
                raise UnsafeArchive(f"{label}: hardlink {m.name!r} to {m.linkname!r}, not a regular file: refused")
            shutil.copy2(linked, target)
        for d in sorted((p for p in tmp.rglob("*") if p.is_dir() and not p.is_symlink()), reverse=True):
            os.chmod(d, 0o755)
        root = tmp
        if strip_single_top:
            entries = list(tmp.iterdir())
            if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
                root = entries[0]
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(root, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
