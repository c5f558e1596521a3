"""Unpacking untrusted archives: source tarballs, .deb files, cache entries.

Refused, with the archive and the member named: absolute paths, `..`,
links that point outside the tree, device nodes and fifos, setuid/setgid
bits. Checking streams through the archive (a 140 MB tarball or a .deb's
data member is never held in memory). Compression is recognised by its
magic bytes, not the file name: gzip, bzip2, xz, zstd or none.

Extraction is deterministic and writes only below its destination, into a
temporary folder beside it that is renamed into place when complete:
  - directories 0755; regular files 0755 when the archive gives them any
    execute bit, else 0644 (no setuid/setgid/sticky, no group or other
    write, whatever the archive or the umask says);
  - no ownership (everything belongs to the extracting user);
  - mtimes from the archive (files, links, listed directories); directories
    the archive only implies get the newest mtime in the archive;
  - hardlinks become copies of the file they name (which must be a regular
    file extracted earlier);
  - nothing is ever written through a symlink.
Python's tarfile.data_filter runs as a second line of defence after our own
checks (which come first because their messages are clearer).
"""
from __future__ import annotations

import hashlib
import io
import os
import posixpath
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import IO, BinaryIO

import zstandard

from .. import atomic
from ..errors import UnsafeArchive, machine_cause, machine_error
from . import kconfig

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar.zst", ".tzst")
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _inside(target: str) -> bool:
    """A relative path that, read lexically, stays within the tree."""
    norm = posixpath.normpath(target)
    return norm != ".." and not norm.startswith("../") and not posixpath.isabs(norm)


def check_member(m: tarfile.TarInfo, archive: str, *, absolute_symlinks: bool = False,
                 setuid_ok: bool = False) -> None:
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
    if m.mode & 0o6000 and not setuid_ok:
        bad(f"has a setuid/setgid bit (mode {m.mode:o})")
    if m.issym():
        target = m.linkname
        if posixpath.isabs(target):
            if not absolute_symlinks:
                bad(f"is a symlink to the absolute path {target!r}")
            return
        if not _inside(posixpath.join(posixpath.dirname("/".join(parts)), target)):
            bad(f"is a symlink pointing outside the tree ({target!r})")
    if m.islnk():
        if posixpath.isabs(m.linkname) or not _inside(m.linkname):
            bad(f"is a hardlink pointing outside the tree ({m.linkname!r})")
    if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
        bad("is of an unsupported type")


class _Slice(io.RawIOBase):
    """At most `size` bytes of a file from where it stands: one ar member."""

    def __init__(self, f: BinaryIO, size: int):
        self._f, self._left = f, size

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = min(len(b), self._left)
        if n <= 0:
            return 0
        data = self._f.read(n)
        b[:len(data)] = data
        self._left -= len(data)
        return len(data)


def ar_members(f: BinaryIO, label: str) -> Iterator[tuple[str, BinaryIO]]:
    """The members of an ar archive (a .deb) read from `f`, in order, each
    as (name, a stream of at most its bytes); what a member's reader leaves
    unread is skipped. The one ar reader (debs.py reads control files with it)."""
    if f.read(8) != b"!<arch>\n":
        raise UnsafeArchive(f"{label}: not a Debian package (no ar header)")
    while True:
        header = f.read(60)
        if len(header) < 60:
            return
        member = header[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError:
            raise UnsafeArchive(f"{label}: ar member {member!r} has a malformed size field") from None
        start = f.tell()
        yield member, io.BufferedReader(_Slice(f, size), 1 << 20)
        f.seek(start + size + size % 2)      # members are 2-byte aligned


def member_file(tf: tarfile.TarFile, m: tarfile.TarInfo | str) -> IO[bytes]:
    """The bytes of a regular file's member (tarfile's extractfile gives None
    for members that are no file: an archive's word, so refused in one line)."""
    f = tf.extractfile(m)
    if f is None:
        name = m if isinstance(m, str) else m.name
        where = os.fsdecode(tf.name) if tf.name else "archive"
        raise UnsafeArchive(f"{where}: member {name!r} is not a regular file: refused")
    return f


def _deb_data(f: BinaryIO, label: str) -> tuple[str, BinaryIO]:
    """The data.tar.* member of a .deb, as a bounded stream."""
    for member, stream in ar_members(f, label):
        if member.startswith("data.tar"):
            return member, stream
    raise UnsafeArchive(f"{label}: Debian package without a data.tar member")


def _tar_stream(f: BinaryIO, stack: ExitStack, label: str) -> tarfile.TarFile:
    """A streaming TarFile over `f`, whatever its compression."""
    # (typeshed wants a RawIOBase; BufferedReader only calls readinto, which a BinaryIO has)
    f = stack.enter_context(io.BufferedReader(f, 1 << 20)) if not hasattr(f, "peek") else f  # type: ignore[arg-type]
    if f.peek(4)[:4] == ZSTD_MAGIC:
        f = stack.enter_context(zstandard.ZstdDecompressor().stream_reader(f))
    try:
        return stack.enter_context(tarfile.open(fileobj=f, mode="r|*"))
    except (tarfile.TarError, EOFError, OSError) as e:
        raise UnsafeArchive(f"{label}: not a readable tar archive ({e})") from None


def _open(source, stack: ExitStack) -> tuple[tarfile.TarFile, str]:
    """(streaming TarFile, label) for a path (.tar*, .deb) or a binary stream."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        label = str(path)
        f: BinaryIO = stack.enter_context(open(path, "rb"))
        if path.name.endswith(DEB_SUFFIXES):
            member, f = _deb_data(f, label)
            label = f"{path} ({member})"
            stack.enter_context(f)
        return _tar_stream(f, stack, label), label
    return _tar_stream(source, stack, "archive stream"), "archive stream"


# What reading a damaged archive raises: tarfile's own errors, a short read,
# and the decompressors' (zstandard's is not an OSError).
_CORRUPT = (tarfile.TarError, EOFError, OSError, zstandard.ZstdError)


def _members(tf: tarfile.TarFile, label: str):
    """The members, with a truncated or corrupt archive reported as such."""
    it = iter(tf)
    while True:
        try:
            m = next(it)
        except StopIteration:
            return
        except _CORRUPT as e:
            raise UnsafeArchive(f"{label}: corrupt or truncated archive ({type(e).__name__}: {e})") from None
        yield m


# What a lock's file name promises, and the magic bytes that must back it.
_COMPRESSIONS = {
    "gzip": ((".tar.gz", ".tgz"), b"\x1f\x8b"),
    "bzip2": ((".tar.bz2", ".tbz2"), b"BZh"),
    "xz": ((".tar.xz", ".txz"), b"\xfd7zXZ\x00"),
    "zstd": ((".tar.zst", ".tzst"), ZSTD_MAGIC),
}
DEB_SUFFIXES = (".deb", ".udeb")


def kind_of(file_name: str) -> str:
    """"tar", "deb" or "plain", by the lock's file name (the prelude decides
    what to unpack by the same name)."""
    if file_name.endswith(TAR_SUFFIXES):
        return "tar"
    if file_name.endswith(DEB_SUFFIXES):
        return "deb"
    return "plain"


def _magic(head: bytes) -> str:
    for name, (_, magic) in _COMPRESSIONS.items():
        if head.startswith(magic):
            return f"{name}-compressed"
    if head.startswith(b"!<arch>\n"):
        return "an ar archive (.deb)"
    if head[257:262] == b"ustar":
        return "an uncompressed tar"
    return "not an archive"


def check_source(path: str | os.PathLike, file_name: str, *, setuid_ok: bool = False,
                 file_hashes: set[str] | None = None, kconfig_symbols: set[str] | None = None) -> str:
    """Check a source the way it will be used: a tar (any compression) or a
    .deb, as its lock file name says and as its magic bytes must agree, has
    every member checked; a plain file is copied as it is. `path` is where the
    bytes are (the cache names them by hash, which says nothing of their
    kind). `setuid_ok` is for the builder's own packages (su, mount: setuid
    by design; the builder runs with no-new-privileges). `file_hashes`, when
    given, gets the sha256 of every regular file, hashed in the same pass (the
    decompression is most of the cost: the SBOM's tracing of the image's files
    to the .debs they come from reads them). `kconfig_symbols`, when given,
    gets every Kconfig symbol the members define, in the same pass
    (kconfig.py: a lane's fragment is checked against them before a build).
    Returns the kind; raises UnsafeArchive naming the file."""
    kind = kind_of(file_name)
    if kind == "plain":
        return kind
    label = f"{file_name} ({path})"
    f: BinaryIO
    with open(path, "rb") as f:
        head = f.read(512)
    found = _magic(head)
    if kind == "deb":
        expected = "an ar archive (.deb)"
    else:
        expected = next((f"{n}-compressed" for n, (suffixes, _) in _COMPRESSIONS.items()
                         if file_name.endswith(suffixes)), "an uncompressed tar")
    if found != expected:
        raise UnsafeArchive(f"{label}: its name says {expected}, but its bytes are {found}: refused")
    with ExitStack() as stack:
        f = stack.enter_context(open(path, "rb"))
        if kind == "deb":
            member, f = _deb_data(f, label)
            label = f"{label} ({member})"
            stack.enter_context(f)
        tf = _tar_stream(f, stack, label)
        for m in _members(tf, label):
            # A package's files form a root filesystem: an absolute link
            # (lib64/ld-linux-x86-64.so.2 -> /lib/...) names a place in it.
            check_member(m, label, absolute_symlinks=kind == "deb", setuid_ok=setuid_ok)
            if not m.isfile():
                continue
            want_symbols = kconfig_symbols is not None and kconfig.is_kconfig_file(m.name)
            if file_hashes is None and not want_symbols:
                continue
            try:
                # A streaming tar reads each member once: hashed and scanned from one read.
                data = member_file(tf, m).read()
            except _CORRUPT as e:
                raise UnsafeArchive(f"{label}: corrupt or truncated archive in {m.name!r} "
                                    f"({type(e).__name__}: {e})") from None
            if file_hashes is not None:
                file_hashes.add(hashlib.sha256(data).hexdigest())
            if want_symbols and kconfig_symbols is not None:
                kconfig_symbols |= kconfig.symbols_in(m.name, data)
    return kind


def check_archive(path: str | os.PathLike) -> None:
    """`check_source` for a file whose own name tells its kind."""
    check_source(path, Path(path).name)


def _second_opinion(m: tarfile.TarInfo, root: str, label: str, absolute_symlinks: bool) -> None:
    """tarfile's own data filter, against the tree as extracted so far (it
    resolves links already on disk, which a lexical check cannot)."""
    if absolute_symlinks and m.issym() and posixpath.isabs(m.linkname):
        return
    try:
        tarfile.data_filter(m, root)
    except tarfile.FilterError as e:
        raise UnsafeArchive(f"{label}: member {m.name!r} refused by tarfile's data filter: "
                            f"{type(e).__name__}: {e}") from None


def extract(source: str | os.PathLike | BinaryIO, dest: Path, *, strip_single_top: bool = False,
            absolute_symlinks: bool = False) -> None:
    """Check and extract a tar (a path, a .deb's data, or a binary stream)
    into `dest`, atomically and deterministically (rules in the module
    docstring). With `strip_single_top`, an archive whose only top-level
    entry is a directory has that directory's content land in `dest`.
    An existing `dest` is replaced only once extraction has succeeded."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    real_tmp = os.path.realpath(tmp)
    label = str(source) if isinstance(source, (str, os.PathLike)) else "archive stream"
    try:
        with ExitStack() as stack:
            tf, label = _open(source, stack)
            links: list[tuple[tarfile.TarInfo, Path]] = []
            dir_mtimes: dict[Path, int] = {}
            newest = 0
            for m in _members(tf, label):
                check_member(m, label, absolute_symlinks=absolute_symlinks)
                rel = "/".join(p for p in m.name.split("/") if p not in ("", "."))
                if not rel:
                    continue
                newest = max(newest, int(m.mtime))
                target = tmp / rel
                # Never write through a link an earlier member made.
                existing = target.parent
                while not existing.exists() and not existing.is_symlink():
                    existing = existing.parent
                parent = os.path.realpath(existing)
                if parent != real_tmp and not parent.startswith(real_tmp + os.sep):
                    raise UnsafeArchive(f"{label}: member {m.name!r} would be written through a symlink "
                                        f"to {parent}: refused")
                _second_opinion(m, real_tmp, label, absolute_symlinks)
                if m.isdir():
                    if target.is_symlink() or (target.exists() and not target.is_dir()):
                        raise UnsafeArchive(f"{label}: directory {m.name!r} replaces another member: refused")
                    target.mkdir(parents=True, exist_ok=True)
                    dir_mtimes[target] = int(m.mtime)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.is_symlink() or target.exists():
                    raise UnsafeArchive(f"{label}: member {m.name!r} appears twice: refused")
                if m.issym():
                    os.symlink(m.linkname, target)
                    os.utime(target, (m.mtime, m.mtime), follow_symlinks=False)
                elif m.islnk():
                    links.append((m, target))
                else:
                    src = member_file(tf, m)
                    with open(target, "xb") as f:
                        try:
                            shutil.copyfileobj(src, f, 1 << 20)
                        except _CORRUPT as e:
                            if machine_cause(e):
                                raise     # this machine's disk, not the archive: said below
                            raise UnsafeArchive(f"{label}: corrupt or truncated archive in {m.name!r} "
                                                f"({type(e).__name__}: {e})") from None
                    os.chmod(target, 0o755 if m.mode & 0o111 else 0o644)
                    os.utime(target, (m.mtime, m.mtime))
        for m, target in links:
            linked = tmp / "/".join(p for p in m.linkname.split("/") if p not in ("", "."))
            if linked.is_symlink() or not linked.is_file():
                raise UnsafeArchive(f"{label}: hardlink {m.name!r} to {m.linkname!r}, not a regular file "
                                    f"extracted before it: refused")
            shutil.copy2(linked, target)
        if not absolute_symlinks:
            # A chain of links, each harmless alone (x -> ., y -> x/..), can still lead out.
            for p in tmp.rglob("*"):
                if p.is_symlink():
                    real = os.path.realpath(p)
                    if real != real_tmp and not real.startswith(real_tmp + os.sep):
                        raise UnsafeArchive(f"{label}: symlink {p.relative_to(tmp)} -> {os.readlink(p)!r} "
                                            f"resolves outside the tree: refused")
        # Deepest first: setting a directory's mtime must come after its children.
        for d in sorted((p for p in tmp.rglob("*") if p.is_dir() and not p.is_symlink()),
                        key=lambda p: len(p.parts), reverse=True):
            os.chmod(d, 0o755)
            t = dir_mtimes.get(d, newest)
            os.utime(d, (t, t))
        root = tmp
        if strip_single_top:
            entries = list(tmp.iterdir())
            if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
                root = entries[0]
        os.chmod(root, 0o755)
        atomic.replace_dir(root, dest)
    except OSError as e:
        # Writing the tree failed for a reason of this machine (a full disk, a
        # folder made read-only or removed meanwhile): said as that, naming
        # the destination; the archive is not blamed.
        cause = machine_cause(e)
        if cause is None:
            raise
        raise machine_error(cause, cause.filename or dest, f"unpacking {label}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
