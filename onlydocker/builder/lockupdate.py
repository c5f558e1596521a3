"""`doit lock --update`: move a lock's Debian-sourced pins to what the
archive holds now.

Every [[source]] with a `debian:` or `debian-security:` URL (a binary .deb,
or a source package's orig tarball) and the builder's .debs are re-resolved
against apt's verified metadata: apt itself, with a private configuration
in a temporary folder, fetches the suite's InRelease, checks its signature
against one keyring (Debian's, or ONLYDOCKER_DEBIAN_KEYRING) and each
Packages/Sources index against the hashes in it; a failure of any of that
is an error, and nothing is written. The candidate apt picks (the highest
version of the suite, or of its security suite when one is configured)
gives the new file, URL, sha256 and size.

The builder is re-resolved as `doit lock --builder` does it (mmdebstrap,
builder.resolve), when the verified index no longer has one of its pinned
.debs as the candidate: the same package list against an archive whose
every pinned package is unchanged resolves to the same set.

`debian-archive:` entries (retired releases, which no longer change) and
other URLs are left as they are. Prints `name: old -> new` for each change
and nothing for the rest; the lock is rewritten once, only when something
changed.
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from ..errors import ConfigError, OnlyDockerError
from ..inputs import lock

DEFAULT_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
SCHEMES = ("debian", "debian-security")
ORIG = re.compile(r"^(?P<pkg>[^_]+)_(?P<version>[^_]+?)\.orig(?P<component>-[A-Za-z0-9-]+)?\.tar\.[a-z0-9]+$")
NATIVE = re.compile(r"^(?P<pkg>[^_]+)_(?P<version>[^_]+?)\.tar\.[a-z0-9]+$")
DEB = re.compile(r"^(?P<pkg>[^_]+)_(?P<version>[^_]+)_(?P<arch>[^_]+)\.deb$")


class UpdateError(OnlyDockerError):
    pass


def debian_url(urls) -> tuple[str, str] | None:
    """(scheme, URL) of the first `debian:`/`debian-security:` URL, or None."""
    for u in urls:
        scheme = u.split(":", 1)[0]
        if scheme in SCHEMES:
            return scheme, u
    return None


def _component(url: str) -> str:
    """pool/<component>/... (pool/updates/<component>/... on the security archive)."""
    parts = url.split(":", 1)[1].split("/")
    if parts[:2] == ["pool", "updates"] and len(parts) > 2:
        return parts[2]
    return parts[1] if parts[0] == "pool" and len(parts) > 1 else "main"


def host_architecture() -> str:
    try:
        return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "amd64"


@dataclass(frozen=True)
class Found:
    """A candidate as apt states it: its full URL as a lock URL (scheme:path)."""
    package: str
    version: str
    architecture: str
    file: str
    url: str
    sha256: str
    size: int


class Apt:
    """apt with a configuration of its own in `work`: only the repositories
    given, one keyring, no preferences, no installed packages."""

    def __init__(self, work: Path, repos: list[tuple[str, str, str]], components: list[str],
                 keyring: Path, architectures: list[str], with_sources: bool):
        self.work = work
        self.repos = repos          # (scheme, base URL, suite)
        work.chmod(0o755)           # apt downloads and verifies as its sandbox user (_apt) when root
        for d in ("lists/partial", "cache/archives/partial", "empty"):
            (work / d).mkdir(parents=True, exist_ok=True)
        (work / "status").write_text("")
        # apt's sandbox user must read the keyring: a copy of its own here.
        key = work / ("keyring" + (".asc" if keyring.suffix == ".asc" else ".gpg"))
        shutil.copyfile(keyring, key)
        key.chmod(0o644)
        lines = []
        for scheme, base, suite in repos:
            opts = f"[signed-by={key} arch={','.join(architectures)}]"
            line = f"deb {opts} {base} {suite} {' '.join(components)}"
            # One repository alone (the builder's), from the same verified lists.
            (work / f"only-{scheme}.list").write_text(line + "\n")
            lines.append(line)
            if with_sources:
                lines.append(f"deb-src [signed-by={key}] {base} {suite} {' '.join(components)}")
        (work / "sources.list").write_text("\n".join(lines) + "\n")
        e = work / "empty"
        conf = {
            "Dir::State": work, "Dir::State::lists": work / "lists", "Dir::State::status": work / "status",
            "Dir::Cache": work / "cache", "Dir::Etc::sourcelist": work / "sources.list",
            "Dir::Etc::sourceparts": e, "Dir::Etc::trusted": e / "none.gpg", "Dir::Etc::trustedparts": e,
            "Dir::Etc::preferences": e / "none", "Dir::Etc::preferencesparts": e,
            "APT::Architecture": architectures[0], "Acquire::Languages": "none",
            # Whatever the host's apt.conf.d says: only signed, verified indexes.
            "Acquire::AllowInsecureRepositories": "false",
            "Acquire::AllowDowngradeToInsecureRepositories": "false",
            "Acquire::AllowWeakRepositories": "false", "APT::Get::AllowUnauthenticated": "false",
            "Acquire::Check-Valid-Until": "true",
        }
        text = "".join(f'{k} "{v}";\n' for k, v in conf.items())
        text += "#clear APT::Default-Release;\n#clear APT::Architectures;\n"
        text += "APT::Architectures {" + " ".join(f'"{a}";' for a in architectures) + "};\n"
        (work / "apt.conf").write_text(text)
        self.env = dict(os.environ, APT_CONFIG=str(work / "apt.conf"), LC_ALL="C.UTF-8")

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(["apt-get", "-q", *args], cwd=self.work, env=self.env,
                                  capture_output=True, text=True)
        except FileNotFoundError:
            raise ConfigError("apt-get is not installed: `doit lock --update` reads the archive with apt") from None

    def update(self, keyring: Path) -> None:
        """apt-get update: InRelease verified against the keyring, each index
        against its hash there. Any error or warning is the error."""
        r = self._run("update")
        problems = [l.strip() for l in (r.stdout + r.stderr).splitlines()
                    if l.startswith(("E:", "W:")) and "unsandboxed" not in l]
        if r.returncode != 0 or problems:
            where = ", ".join(f"{scheme}: {suite} ({base})" for scheme, base, suite in self.repos)
            first = problems[0] if problems else f"apt-get update exit {r.returncode}"
            raise UpdateError(f"the archive's signed indexes could not be verified ({where}; keyring "
                              f"{keyring}): {first}")

    def _lock_url(self, uri: str) -> str:
        url = unquote(uri)
        for scheme, base, _ in self.repos:
            if url.startswith(base.rstrip("/") + "/"):
                return f"{scheme}:{url[len(base.rstrip('/')) + 1:]}"
        raise UpdateError(f"apt named {url}, which is on none of the configured mirrors")

    def _print_uris(self, args: list[str], what: str) -> list[tuple[str, str, int, str]]:
        r = self._run(*args)
        errors = [l.strip() for l in (r.stdout + r.stderr).splitlines() if l.startswith("E:")]
        if r.returncode != 0 or errors:
            raise UpdateError(f"{what}: " + ("; ".join(errors) or f"apt-get exit {r.returncode}"))
        out = []
        for line in r.stdout.splitlines():
            m = re.match(r"^'([^']+)' (\S+) (\d+) (\S+)$", line.strip())
            if m:
                out.append((m.group(1), unquote(m.group(2)), int(m.group(3)), m.group(4)))
        return out

    @staticmethod
    def _sha256(hashstr: str, what: str) -> str:
        algo, _, value = hashstr.partition(":")
        if algo.upper() != "SHA256":
            raise UpdateError(f"{what}: the verified index gives no SHA256 (apt's best hash: {algo})")
        return value.lower()

    def binaries(self, specs: list[str], only: str | None = None) -> dict[str, Found]:
        """The candidate .deb of each `name` or `name:arch`, by spec; `only`:
        of that scheme's repository alone (after `update`, with no download)."""
        if not specs:
            return {}
        found = {}
        alone = ["-o", f"Dir::Etc::sourcelist={self.work / f'only-{only}.list'}", "-o", "Dir::Cache::pkgcache=",
                 "-o", "Dir::Cache::srcpkgcache="] if only else []
        for uri, dest, size, hashstr in self._print_uris([*alone, "download", "--print-uris", *specs],
                                                         "binary packages"):
            m = DEB.match(dest)     # apt names a download name_version_arch.deb, epoch and all
            if not m:
                raise UpdateError(f"apt-get download named {dest!r}: not name_version_arch.deb")
            url = self._lock_url(uri)
            f = Found(m["pkg"], m["version"], m["arch"], url.rsplit("/", 1)[1], url,
                      self._sha256(hashstr, dest), size)
            found[f.package] = found[f"{f.package}:{f.architecture}"] = f
        return {s: found[s] for s in specs if s in found}

    def sources(self, names: list[str]) -> dict[str, list[Found]]:
        """Every file of each source package's candidate version, by name."""
        if not names:
            return {}
        out: dict[str, list[Found]] = {n: [] for n in names}
        for uri, dest, size, hashstr in self._print_uris(["source", "--only-source", "--print-uris", *names],
                                                         "source packages"):
            pkg = dest.split("_", 1)[0]
            if pkg in out:
                url = self._lock_url(uri)
                out[pkg].append(Found(pkg, "", "source", url.rsplit("/", 1)[1], url,
                                      self._sha256(hashstr, dest), size))
        return out


def _new_source_pin(s: lock.Source, old_url: str, files: list[Found]) -> lock.Repin | None:
    """The file of the candidate source that takes the place of `s.file`:
    the orig tarball of the same component, or a native package's tarball."""
    m = ORIG.match(s.file)
    for f in files:
        n = ORIG.match(f.file) if m else NATIVE.match(f.file)
        if n and (not m or n["component"] == m["component"]) and ".debian." not in f.file:
            return lock.Repin(s.name, n["version"], f.file, old_url, f.url, f.sha256, f.size)
    return None


def _change(name: str, old_version: str, old_sha: str | None, new_version: str, new_sha: str) -> str:
    if old_version != new_version:
        return f"{name}: {old_version} -> {new_version}"
    return f"{name}: {old_version} (sha256 {(old_sha or '(none)')[:16]} -> {new_sha[:16]})"


def update(lk: lock.Lock, settings, log_path: Path, out=None, err=None) -> list[str]:
    """Re-resolve and re-pin; returns the change lines it printed."""
    from . import image as builder
    out, err = out or sys.stdout, err or sys.stderr
    keyring = settings.debian_keyring or DEFAULT_KEYRING
    if not keyring.is_file():
        raise ConfigError(f"no keyring {keyring} to verify the archive's InRelease with: "
                          f"apt-get install debian-archive-keyring, or set ONLYDOCKER_DEBIAN_KEYRING")
    suite = lk.builder.suite
    entries = [(s, *d) for s in lk.sources if (d := debian_url(s.urls))]
    builder_scheme = lk.builder.mirror[:-1] if lk.builder.mirror.endswith(":") else None
    debs = lk.builder.debs if builder_scheme in SCHEMES else ()
    if lk.builder.debs and not debs:
        print(f"{lk.path}: [builder] mirror = {lk.builder.mirror!r}: not a Debian archive that moves; "
              f"its pin is left as it is", file=err)
    if not lk.builder.pinned:
        print(f"{lk.path}: [builder] pins no packages yet: `doit lock --builder` pins them", file=err)
    if not entries and not debs:
        return []
    used = {scheme for _, scheme, _ in entries} | ({builder_scheme} if debs else set())
    repos = [("debian", settings.mirror_for("debian"), suite)]
    if "debian-security" in used or settings.debian_security_mirror:
        repos.append(("debian-security", settings.mirror_for("debian-security"), f"{suite}-security"))
    components = sorted({"main"} | {_component(u) for _, _, u in entries} | {_component(d.url) for d in debs})
    arch_of = lambda f: m["arch"] if (m := DEB.match(f)) else "all"  # noqa: E731
    archs = sorted(({arch_of(s.file) for s, _, _ in entries if s.file.endswith(".deb")}
                    | {d.architecture for d in debs}) - {"all"}) or [host_architecture()]
    binaries = [(s, url) for s, _, url in entries if s.file.endswith(".deb")]
    tarballs = [(s, url) for s, _, url in entries if not s.file.endswith(".deb")]
    source_pkg: dict[str, str] = {}      # a tarball's file name -> its source package
    for s, _ in tarballs:
        if not (m := ORIG.match(s.file) or NATIVE.match(s.file)):
            raise UpdateError(f"{lk.path}: {s.name}: {s.file!r} is neither a .deb nor a source package's "
                              f"tarball (name_version[.orig].tar.*): nothing to re-resolve it by")
        source_pkg[s.file] = m["pkg"]
    spec = lambda name, arch: name if arch == "all" else f"{name}:{arch}"  # noqa: E731

    with tempfile.TemporaryDirectory(prefix="onlydocker-lock-update-") as tmp:
        apt = Apt(Path(tmp), repos, components, keyring, archs, with_sources=bool(tarballs))
        print(f"lock --update: verifying {', '.join(f'{r[0]}: {r[2]}' for r in repos)} against {keyring}",
              file=err)
        apt.update(keyring)
        specs = {s.name: spec(m["pkg"], arch_of(s.file)) for s, _ in binaries if (m := DEB.match(s.file))}
        missing = [s.name for s, _ in binaries if s.name not in specs]
        if missing:
            raise UpdateError(f"{lk.path}: {', '.join(missing)}: not a name_version_arch.deb file name")
        found = apt.binaries(sorted(set(specs.values())))
        srcs = apt.sources(sorted({source_pkg[s.file] for s, _ in tarballs}))
        builder_found = None
        if debs:
            try:
                # What mmdebstrap resolves against: the builder's mirror and suite alone.
                builder_found = apt.binaries(sorted({spec(d.name, d.architecture) for d in debs}),
                                             only=builder_scheme)
            except UpdateError:
                builder_found = {}      # a pinned package left the suite: resolve again

    repins, changes, gone = [], [], []
    for s, url in binaries:
        f = found.get(specs[s.name])
        if f is None:
            gone.append(f"{s.name} ({specs[s.name]})")
        elif (f.version, f.sha256, f.size) != (s.version, s.sha256, s.size):
            repins.append(lock.Repin(s.name, f.version, f.file, url, f.url, f.sha256, f.size))
            changes.append(_change(s.name, s.version, s.sha256, f.version, f.sha256))
    for s, url in tarballs:
        pkg = source_pkg[s.file]
        r = _new_source_pin(s, url, srcs.get(pkg, []))
        if r is None:
            gone.append(f"{s.name} (source {pkg}: no {'orig ' if ORIG.match(s.file) else ''}tarball)")
        elif (r.version, r.sha256, r.size) != (s.version, s.sha256, s.size):
            repins.append(r)
            changes.append(_change(s.name, s.version, s.sha256, r.version, r.sha256))
    if gone:
        raise UpdateError(f"{lk.path}: not in the archive's {suite} any more: {', '.join(gone)}; nothing written")

    new_debs = None
    if debs:
        same = builder_found and all(
            (f := builder_found.get(spec(d.name, d.architecture))) is not None
            and (f.version, f.sha256, f.size) == (d.version, d.sha256, d.size) for d in debs)
        if not same:
            lb = lk.builder
            if settings.debian_keyring:
                lb = dataclasses.replace(lb, mmdebstrap_options=(*lb.mmdebstrap_options,
                                                                 f"--keyring={settings.debian_keyring}"))
            cache = settings.cache_dir
            cache.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix=".resolve-", dir=cache) as tmp:
                resolved = builder.resolve(lb, settings, log_path, Path(tmp))
            builder_changes = builder.changed_debs(lk.builder.debs, resolved)
            if builder_changes:
                new_debs = resolved
                changes += [f"[builder] {c}" for c in builder_changes]

    for c in changes:
        print(c, file=out)
    if repins or new_debs is not None:
        lock.repin(lk.path, repins, new_debs)
        print(f"{lk.path}: {len(changes)} pin(s) moved", file=err)
    return changes
