"""The lock: one TOML file per lane naming every source by URL and hash.

Everything is validated before anything runs; an error names the file, the
entry and the field. `pin` rewrites a lock with tomlkit, so comments and
the order of everything else survive.
"""
from __future__ import annotations

import functools
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ..config import MIRROR_SCHEMES
from ..errors import LockError
from ..hashing import HASH_LENGTHS

INITRD_COMPRESSIONS = {"zstd", "lzma", "xz", "gzip"}
URL_SCHEMES = {"http", "https", "file"}
SOURCE_FIELDS = {"name", "group", "version", "file", "urls", "sha256", "sha512", "sha1", "size", "license"}
HEX = re.compile(r"^[0-9a-f]+$")
LICENSE_REF = re.compile(r"^LicenseRef-[A-Za-z0-9.\-]+$")


@functools.cache
def _spdx_licensing():
    # The SPDX license list and expression grammar, parsed by a real parser
    # (license-expression, the library spdx-tools itself validates with).
    from license_expression import get_spdx_licensing
    return get_spdx_licensing()


def spdx_license(path, entry: str, text: str, known: dict[str, str] | None = None) -> str:
    """A source's license as a valid SPDX license expression, in its canonical
    spelling ("gpl-2.0-only" -> "GPL-2.0-only"); anything else is refused,
    naming the entry: the SBOM and legal-info copy it as a declared license.
    `known`: expressions already found valid (text -> canonical), and where
    this one goes once it is (see `load`)."""
    if known is not None and text in known:
        return known[text]
    from license_expression import ExpressionError
    licensing = _spdx_licensing()
    try:
        parsed = licensing.parse(text, strict=True)
    except ExpressionError as e:
        raise LockError(path, entry, "license", f"{text!r} is not an SPDX license expression ({e})") from None
    if parsed is None:
        raise LockError(path, entry, "license", "empty: give an SPDX license expression such as \"MIT\"")
    for sym in licensing.license_symbols(parsed, unique=True, decompose=True):
        if sym.key not in licensing.known_symbols and not LICENSE_REF.match(sym.key):
            raise LockError(path, entry, "license", f"{text!r}: {sym.key!r} is not an SPDX license id "
                                                    f"(see the SPDX license list, or write LicenseRef-<name>)")
    if known is not None:
        known[text] = str(parsed)
    return str(parsed)


@dataclass(frozen=True)
class Source:
    name: str
    group: str
    version: str
    file: str
    urls: tuple[str, ...]
    sha256: str | None
    size: int | None
    license: str
    sha512: str | None = None
    sha1: str | None = None

    @property
    def pinned(self) -> bool:
        """Usable: both sha256 and size are known. Anything less (a legacy
        sha1, a sha256 without its size) waits for `doit lock`."""
        return self.sha256 is not None and self.size is not None

    def hashes(self) -> dict[str, str]:
        """Every hash the lock gives for this source: all of them must match."""
        return {a: getattr(self, a) for a in ("sha256", "sha512", "sha1") if getattr(self, a)}


@dataclass(frozen=True)
class Lane:
    name: str
    source_date_epoch: int
    initrd_compression: str


DEB_FIELDS = ("name", "version", "architecture", "file", "url", "sha256", "size")


@dataclass(frozen=True)
class Deb:
    """One .deb the builder is made of, as the archive's verified index states it."""
    name: str
    version: str
    architecture: str
    file: str
    url: str
    sha256: str
    size: int

    def source(self) -> Source:
        """The same file as a Source: fetched, verified and cached like any other."""
        return Source(name=f"{self.name}:{self.architecture}", group="builder", version=self.version,
                      file=self.file, urls=(self.url,), sha256=self.sha256, size=self.size,
                      license="Debian package (see its copyright file)")


@dataclass(frozen=True)
class Builder:
    suite: str
    mirror: str
    variant: str
    packages: tuple[str, ...]
    mmdebstrap_options: tuple[str, ...]
    # Every package the bootstrap installs, pinned by `doit lock --builder`;
    # empty: not pinned yet (the builder cannot be made until it is).
    debs: tuple[Deb, ...] = ()

    @property
    def pinned(self) -> bool:
        return bool(self.debs)


@dataclass(frozen=True)
class Lock:
    path: Path
    lane: Lane
    builder: Builder
    sources: tuple[Source, ...]

    def source(self, name: str) -> Source:
        for s in self.sources:
            if s.name == name:
                return s
        raise KeyError(f"{self.path}: no source named {name!r}")

    def group(self, name: str) -> list[Source]:
        return [s for s in self.sources if s.group == name]


def _req(path, table: dict, key: str, typ, entry=None, what=None):
    if key not in table:
        raise LockError(path, entry, what or key, "missing")
    value = table[key]
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise LockError(path, entry, what or key, f"must be {typ.__name__}, not {type(value).__name__}")
    return value


def check_url(path, entry: str, url) -> None:
    if not isinstance(url, str) or not url:
        raise LockError(path, entry, "urls", f"{url!r} is not a URL")
    scheme = url.split(":", 1)[0] if ":" in url else ""
    if scheme in MIRROR_SCHEMES:
        rest = url[len(scheme) + 1:]
        if not rest or rest.startswith("/") or ".." in rest.split("/"):
            raise LockError(path, entry, "urls", f"{url!r}: a {scheme}: URL names a path below the mirror")
        return
    parts = urlsplit(url)
    if parts.scheme not in URL_SCHEMES:
        raise LockError(path, entry, "urls", f"{url!r}: scheme must be http, https, file "
                                             f"or a mirror ({', '.join(sorted(MIRROR_SCHEMES))})")
    if parts.scheme in ("http", "https") and not parts.netloc:
        raise LockError(path, entry, "urls", f"{url!r} has no host")


def _source(path, i: int, t, known: dict[str, str] | None = None) -> Source:
    if not isinstance(t, dict):
        raise LockError(path, f"#{i + 1}", None, "a [[source]] must be a table")
    name = t.get("name")
    entry = name if isinstance(name, str) and name else f"#{i + 1}"
    name = _req(path, t, "name", str, entry)
    unknown = set(t) - SOURCE_FIELDS
    if unknown:
        raise LockError(path, entry, sorted(unknown)[0], f"unknown field; known are {', '.join(sorted(SOURCE_FIELDS))}")
    file = _req(path, t, "file", str, entry)
    if "/" in file or file in ("", ".", ".."):
        raise LockError(path, entry, "file", f"{file!r} must be a plain file name")
    urls = _req(path, t, "urls", list, entry)
    if not urls:
        raise LockError(path, entry, "urls", "needs at least one URL")
    for u in urls:
        check_url(path, entry, u)
    hashes = {}
    for algo, length in HASH_LENGTHS.items():
        if algo in t:
            value = _req(path, t, algo, str, entry)
            if len(value) != length or not HEX.match(value):
                raise LockError(path, entry, algo, f"must be {length} lowercase hex digits, got {value!r} "
                                                   f"({len(value)} characters)")
            hashes[algo] = value
    size = None
    if "size" in t:
        size = _req(path, t, "size", int, entry)
        if size <= 0:
            raise LockError(path, entry, "size", f"must be positive, got {size}")
    group = _req(path, t, "group", str, entry) if "group" in t else name
    return Source(name=name, group=group,
                  version=_req(path, t, "version", str, entry), file=file, urls=tuple(urls),
                  sha256=hashes.get("sha256"), size=size,
                  license=spdx_license(path, entry, _req(path, t, "license", str, entry), known),
                  sha512=hashes.get("sha512"), sha1=hashes.get("sha1"))


def _deb(path, i: int, t) -> Deb:
    if not isinstance(t, dict):
        raise LockError(path, f"[builder] debs #{i + 1}", None, "must be a table")
    entry = f"[builder] debs: {t['name']}" if isinstance(t.get("name"), str) else f"[builder] debs #{i + 1}"
    unknown = set(t) - set(DEB_FIELDS)
    if unknown:
        raise LockError(path, entry, sorted(unknown)[0], f"unknown field; known are {', '.join(DEB_FIELDS)}")
    v = {k: _req(path, t, k, int if k == "size" else str, entry) for k in DEB_FIELDS}
    check_url(path, entry, v["url"])
    if v["url"].rsplit("/", 1)[-1] != v["file"] or "/" in v["file"] or not v["file"].endswith(".deb"):
        raise LockError(path, entry, "file", f"{v['file']!r} must be the .deb file name its url ends with "
                                             f"({v['url']!r})")
    if len(v["sha256"]) != 64 or not HEX.match(v["sha256"]):
        raise LockError(path, entry, "sha256", f"must be 64 lowercase hex digits, got {v['sha256']!r}")
    if v["size"] <= 0:
        raise LockError(path, entry, "size", f"must be positive, got {v['size']}")
    return Deb(**v)


def _read_licenses_memo(memo: Path | None) -> dict[str, str] | None:
    """Expressions an earlier load in this tree found valid, for this version
    of the SPDX list and parser. Loading that list takes about 90 ms, the most
    of any step of a no-op `doit`."""
    if memo is None:
        return None
    from importlib.metadata import version
    try:
        data = json.loads(memo.read_text())
        if data.get("license-expression") == version("license-expression") and isinstance(data["valid"], dict):
            return {str(k): str(v) for k, v in data["valid"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return {}


def load(path: str | Path, licenses_memo: Path | None = None) -> Lock:
    """The lock at `path`, every field checked. `licenses_memo`: a file of the
    tree's own (out/), where valid license expressions are remembered."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise LockError(path, None, None, "no such lock file") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise LockError(path, None, None, f"not valid TOML: {e}") from None

    lane_t = _req(path, data, "lane", dict, None, "[lane]")
    epoch = _req(path, lane_t, "source_date_epoch", int, "[lane]")
    if epoch <= 0:
        raise LockError(path, "[lane]", "source_date_epoch", "must be a positive Unix time")
    comp = _req(path, lane_t, "initrd_compression", str, "[lane]")
    if comp not in INITRD_COMPRESSIONS:
        raise LockError(path, "[lane]", "initrd_compression",
                        f"{comp!r} is not one of {', '.join(sorted(INITRD_COMPRESSIONS))}")
    lane = Lane(name=_req(path, lane_t, "name", str, "[lane]"), source_date_epoch=epoch, initrd_compression=comp)
    if not re.match(r"^[A-Za-z0-9._-]+$", lane.name):
        raise LockError(path, "[lane]", "name", f"{lane.name!r}: letters, digits, '.', '_' and '-' only")

    b = _req(path, data, "builder", dict, None, "[builder]")
    mirror = _req(path, b, "mirror", str, "[builder]")
    if mirror.rstrip(":") not in MIRROR_SCHEMES and urlsplit(mirror).scheme not in ("http", "https", "file"):
        raise LockError(path, "[builder]", "mirror", f"{mirror!r} is neither a mirror scheme nor a URL")
    packages = _req(path, b, "packages", list, "[builder]")
    options = b.get("mmdebstrap_options", [])
    for field, values in (("packages", packages), ("mmdebstrap_options", options)):
        if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
            raise LockError(path, "[builder]", field, "must be a list of strings")
    raw_debs = b.get("debs", [])
    if not isinstance(raw_debs, list):
        raise LockError(path, "[builder]", "debs", "must be a list of tables (one per .deb)")
    debs = tuple(_deb(path, i, t) for i, t in enumerate(raw_debs))
    seen_debs: set[tuple[str, str]] = set()
    for d in debs:
        if (d.name, d.architecture) in seen_debs:
            raise LockError(path, f"[builder] debs: {d.name}", "name", "pinned twice")
        seen_debs.add((d.name, d.architecture))
    builder = Builder(suite=_req(path, b, "suite", str, "[builder]"), mirror=mirror,
                      variant=b.get("variant", "minbase"), packages=tuple(packages),
                      mmdebstrap_options=tuple(options), debs=debs)

    raw = data.get("source", [])
    if not isinstance(raw, list):
        raise LockError(path, None, "source", "sources are [[source]] tables")
    known = _read_licenses_memo(licenses_memo)
    before = dict(known) if known is not None else None
    sources = [_source(path, i, t, known) for i, t in enumerate(raw)]
    if known is not None and licenses_memo is not None and known != before:
        from importlib.metadata import version

        from .. import atomic
        licenses_memo.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_json(licenses_memo, {"license-expression": version("license-expression"), "valid": known})
    seen: set[str] = set()
    for s in sources:
        if s.name in seen:
            raise LockError(path, s.name, "name", "duplicate name: each source is named once")
        seen.add(s.name)
    return Lock(path=path, lane=lane, builder=builder, sources=tuple(sources))


def pin(path: str | Path, name: str, sha256: str, size: int) -> None:
    """Write sha256 and size into one entry, keeping every comment and every
    other entry as it was. A pin that contradicts one already there is refused:
    changing a pin is a human decision, made by editing the lock."""
    import tomlkit
    path = Path(path)
    if len(sha256) != 64 or not HEX.match(sha256):
        raise LockError(path, name, "sha256", f"refusing to pin {sha256!r}: not 64 lowercase hex digits")
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise LockError(path, name, "size", f"refusing to pin {size!r}: not a positive integer")
    doc = _parse_for_rewrite(path)
    for t in doc.get("source", []):
        if t.get("name") == name:
            for key, value in (("sha256", sha256), ("size", size)):
                if key in t and t[key] != value:
                    raise LockError(path, name, key, f"already pinned to {t[key]!r}; refusing to change it to "
                                                     f"{value!r} (edit the lock by hand if that is meant)")
                t[key] = value
            break
    else:
        raise LockError(path, name, None, "no such source to pin")
    _replace(path, tomlkit.dumps(doc))


def _parse_for_rewrite(path: Path):
    import tomlkit
    try:
        return tomlkit.parse(path.read_text())
    except FileNotFoundError:
        raise LockError(path, None, None, "no such lock file") from None
    except tomlkit.exceptions.ParseError as e:
        raise LockError(path, None, None, f"not valid TOML: {e}") from None


def _replace(path: Path, text: str) -> None:
    """Write a lock atomically (temp file + rename), after checking that we
    would load what we write."""
    import os
    import tempfile
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, path.stat().st_mode & 0o777)
        load(tmp)   # never write a lock we would refuse
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def pin_builder(path: str | Path, debs: list[Deb]) -> None:
    """Replace [builder] debs with `debs` (sorted; one inline table a line),
    keeping every comment and every other table and key as it was."""
    import tomlkit
    path = Path(path)
    doc = _parse_for_rewrite(path)
    _set_debs(path, doc, debs)
    _replace(path, tomlkit.dumps(doc))


def _set_debs(path: Path, doc, debs: list[Deb]) -> None:
    import tomlkit
    if "builder" not in doc:
        raise LockError(path, "[builder]", None, "no [builder] table to pin")
    array = tomlkit.array()
    for d in sorted(debs, key=lambda d: (d.name, d.architecture)):
        t = tomlkit.inline_table()
        t.update({k: getattr(d, k) for k in DEB_FIELDS})
        array.append(t)
    array.multiline(True)
    doc["builder"]["debs"] = array


@dataclass(frozen=True)
class Repin:
    """A source's new pin, as the archive's verified index states it: the
    Debian URL `old_url` of its urls becomes `url`."""
    name: str
    version: str
    file: str
    old_url: str
    url: str
    sha256: str
    size: int


def repin(path: str | Path, sources: list[Repin], debs: list[Deb] | None = None) -> None:
    """`doit lock --update`: move sources to new versions (version, file, the
    Debian URL, sha256 and size; a sha512 or sha1 of the old file is
    dropped) and, when `debs` is given, replace [builder] debs; one atomic
    rewrite, every comment and every other key kept."""
    import tomlkit
    path = Path(path)
    doc = _parse_for_rewrite(path)
    tables = {t.get("name"): t for t in doc.get("source", [])}
    for r in sources:
        t = tables.get(r.name)
        if t is None:
            raise LockError(path, r.name, None, "no such source to re-pin")
        urls = t["urls"]
        if r.old_url not in urls:
            raise LockError(path, r.name, "urls", f"no {r.old_url!r} to replace")
        urls[list(urls).index(r.old_url)] = r.url
        t["version"], t["file"], t["sha256"], t["size"] = r.version, r.file, r.sha256, r.size
        for stale in ("sha512", "sha1"):
            if stale in t:
                del t[stale]
    if debs is not None:
        _set_debs(path, doc, debs)
    _replace(path, tomlkit.dumps(doc))
