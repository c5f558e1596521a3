"""`doit lock --update`, run for real against a small signed archive of the
test's own on loopback: a suite whose binary package `pkg` and source
package `tool` get a second version, an empty security suite, and a builder
package that does not change. apt verifies it all (InRelease against the
test's keyring, each index against its hash there); an archive signed by
another key, or an index that is not what InRelease says, is refused in one
line and the lock is left as it was."""
from __future__ import annotations

import email.utils
import gzip
import hashlib
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from werkzeug import Response

from onlydocker.inputs import lock
from tests import workspace as wsmod

SUITE = "bookworm"


def need(tool: str) -> None:
    if not shutil.which(tool):
        pytest.skip(f"no {tool} on this host (./setup.sh installs it)")


@pytest.fixture(scope="module")
def keys():
    """Two signing keys in a GnuPG home of the test's own: (gpg command
    prefix, the archive key's fingerprint, another key's, the archive key's
    public keyring)."""
    need("gpg")
    need("apt-get")
    # A short path: gpg-agent's socket lives there.
    home = Path(tempfile.mkdtemp(prefix="od-gpg-", dir="/tmp"))
    gpg = ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback", "--passphrase", ""]
    fprs = []
    for uid in ("Only Docker test archive <archive@test.invalid>", "Another key <other@test.invalid>"):
        subprocess.run([*gpg, "--quick-gen-key", uid, "ed25519", "sign", "never"], check=True,
                       capture_output=True)
        listing = subprocess.run([*gpg, "--with-colons", "--list-keys", uid], check=True, capture_output=True,
                                 text=True).stdout
        fprs.append(re.search(r"^fpr:+([0-9A-F]+):", listing, re.M).group(1))
    keyring = home / "archive-keyring.gpg"
    keyring.write_bytes(subprocess.run([*gpg, "--export", fprs[0]], check=True, capture_output=True).stdout)
    yield gpg, fprs[0], fprs[1], keyring
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], capture_output=True)
    shutil.rmtree(home, ignore_errors=True)


def _file(root: Path, path: str, data: bytes) -> tuple[str, int, str]:
    p = root / path
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return hashlib.sha256(data).hexdigest(), len(data), hashlib.md5(data).hexdigest()


def publish(root: Path, suite: str, gpg: list[str], signer: str, *, pkg=(), tool=(), base=(),
            pool: str = "pool/main") -> None:
    """dists/<suite> of an archive at `root`: Packages and Sources of the
    versions given (their pool files written too), a Release naming their
    hashes, InRelease clearsigned by `signer`."""
    packages, sources = [], []
    for name, arch, versions in (("pkg", "amd64", pkg), ("base", "all", base)):
        for v in versions:
            filename = f"{pool}/{name[0]}/{name}/{name}_{v}_{arch}.deb"
            sha, size, _ = _file(root, filename, f"{name} {v}\n".encode())
            packages.append(f"Package: {name}\nVersion: {v}\nArchitecture: {arch}\nMaintainer: t <t@test.invalid>\n"
                            f"Filename: {filename}\nSize: {size}\nSHA256: {sha}\nDescription: a test package\n")
    for v in tool:
        upstream = v.rsplit("-", 1)[0]
        directory = f"{pool}/t/tool"
        files = {f"tool_{upstream}.orig.tar.gz": gzip.compress(f"tool {upstream}\n".encode(), mtime=0),
                 f"tool_{v}.debian.tar.xz": f"debian {v}\n".encode(), f"tool_{v}.dsc": f"dsc {v}\n".encode()}
        sums = {name: _file(root, f"{directory}/{name}", data) for name, data in files.items()}
        sources.append(f"Package: tool\nBinary: tool\nVersion: {v}\nMaintainer: t <t@test.invalid>\n"
                       f"Architecture: any\nFormat: 3.0 (quilt)\nDirectory: {directory}\n"
                       "Files:\n" + "".join(f" {m} {n} {f}\n" for f, (_, n, m) in sums.items())
                       + "Checksums-Sha256:\n" + "".join(f" {s} {n} {f}\n" for f, (s, n, _) in sums.items()))
    dist = root / "dists" / suite
    indexes = {"main/binary-amd64/Packages": "\n".join(packages).encode(),
               "main/source/Sources": "\n".join(sources).encode()}
    lines = [f"Origin: test\nLabel: test\nSuite: {suite}\nCodename: {suite}\n"
             f"Date: {email.utils.formatdate(usegmt=True)}\nArchitectures: amd64\nComponents: main\nSHA256:\n"]
    for path, data in indexes.items():
        sha, size, _ = _file(dist, path, data)
        lines.append(f" {sha} {size} {path}\n")
    (dist / "Release").write_text("".join(lines))
    (dist / "InRelease").unlink(missing_ok=True)
    subprocess.run([*signer_cmd(gpg, signer), "--clearsign", "-o", str(dist / "InRelease"), str(dist / "Release")],
                   check=True, capture_output=True)


def signer_cmd(gpg: list[str], fpr: str) -> list[str]:
    return [*gpg, "--yes", "--digest-algo", "SHA256", "--local-user", fpr]


def serve(httpserver, root: Path) -> None:
    def handler(request):
        p = root / request.path.lstrip("/")
        if ".." in request.path or not p.is_file():
            return Response("not found", status=404)
        return Response(p.read_bytes(), content_type="application/octet-stream")
    httpserver.expect_request(re.compile(r"^/.*")).respond_with_handler(handler)


def _entry(name: str, file: str, url: str, data: bytes, version: str, comment: str = "") -> str:
    return (f'\n[[source]]\nname = "{name}"\n{comment}version = "{version}"\nfile = "{file}"\nurls = ["{url}"]\n'
            f'sha256 = "{hashlib.sha256(data).hexdigest()}"\nsize = {len(data)}\nlicense = "MIT"\n')


def lane(tmp_path, httpserver, keys):
    """The archive at version 1 (signed by the archive key), and a lane whose
    lock pins it; returns (workspace, archive root)."""
    gpg, good, _, keyring = keys
    archive = tmp_path / "archive"
    publish(archive / "debian", SUITE, gpg, good, pkg=["1"], tool=["1.0-1"], base=["1"])
    publish(archive / "debian-security", f"{SUITE}-security", gpg, good, pool="pool/updates/main")
    serve(httpserver, archive)
    base = b"base 1\n"
    text = (f'# a lane of the test\n[lane]\nname = "t"\nsource_date_epoch = 1686355200\ninitrd_compression = "zstd"\n\n'
            f'[builder]\nsuite = "{SUITE}"\nmirror = "debian:"\npackages = ["base"]\n'
            f'# pinned by hand for the test\ndebs = [\n    {{name = "base", version = "1", architecture = "all", '
            f'file = "base_1_all.deb", url = "debian:pool/main/b/base/base_1_all.deb", '
            f'sha256 = "{hashlib.sha256(base).hexdigest()}", size = {len(base)}}},\n]\n'
            + _entry("pkg", "pkg_1_amd64.deb", "debian:pool/main/p/pkg/pkg_1_amd64.deb", b"pkg 1\n", "1",
                     "# the binary package\n")
            + _entry("tool", "tool_1.0.orig.tar.gz", "debian:pool/main/t/tool/tool_1.0.orig.tar.gz",
                     gzip.compress(b"tool 1.0\n", mtime=0), "1.0")
            + _entry("other", "other-1.tar.gz", "https://example.invalid/other-1.tar.gz", b"other", "1"))
    ws = wsmod.make(tmp_path / "ws")
    (ws.root / "t.lock").write_text(text)
    ws.env.update({"ONLYDOCKER_CACHE": str(tmp_path / "cache"), "ONLYDOCKER_CONFIG": "/nonexistent",
                   "ONLYDOCKER_DEBIAN_MIRROR": httpserver.url_for("/debian"),
                   "ONLYDOCKER_DEBIAN_SECURITY_MIRROR": httpserver.url_for("/debian-security"),
                   "ONLYDOCKER_DEBIAN_KEYRING": str(keyring)})
    return ws, archive


def test_update_moves_the_pins_to_the_new_versions_then_says_nothing(tmp_path, httpserver, keys):
    gpg, good, _, _ = keys
    ws, archive = lane(tmp_path, httpserver, keys)
    path = ws.root / "t.lock"
    before = path.read_bytes()
    same = ws.doit("lock", "--update", "--lock", "t.lock")
    assert same.stdout == "" and path.read_bytes() == before, same.stdout + same.stderr

    # Version 2 appears (version 1 still listed: apt's candidate is the highest).
    publish(archive / "debian", SUITE, gpg, good, pkg=["1", "2"], tool=["1.0-1", "2.0-1"], base=["1"])
    r = ws.doit("lock", "--update", "--lock", "t.lock")
    assert r.stdout.splitlines() == ["pkg: 1 -> 2", "tool: 1.0 -> 2.0"], r.stdout + r.stderr
    text = path.read_text()
    assert "# the binary package" in text and "# pinned by hand for the test" in text and "# a lane" in text
    lk = lock.load(path)
    pkg, tool = lk.source("pkg"), lk.source("tool")
    assert (pkg.version, pkg.file, pkg.urls) == ("2", "pkg_2_amd64.deb", ("debian:pool/main/p/pkg/pkg_2_amd64.deb",))
    assert (pkg.sha256, pkg.size) == (hashlib.sha256(b"pkg 2\n").hexdigest(), len(b"pkg 2\n"))
    orig = gzip.compress(b"tool 2.0\n", mtime=0)
    assert (tool.version, tool.file, tool.urls, tool.sha256, tool.size) == (
        "2.0", "tool_2.0.orig.tar.gz", ("debian:pool/main/t/tool/tool_2.0.orig.tar.gz",),
        hashlib.sha256(orig).hexdigest(), len(orig))
    assert lk.source("other").urls == ("https://example.invalid/other-1.tar.gz",)
    assert [d.version for d in lk.builder.debs] == ["1"]

    # Nothing changed since: nothing said, not a byte written.
    after = path.read_bytes()
    again = ws.doit("lock", "--update", "--lock", "t.lock")
    assert again.stdout == "" and path.read_bytes() == after


def test_an_archive_signed_by_another_key_is_refused_and_nothing_is_written(tmp_path, httpserver, keys):
    gpg, good, other, _ = keys
    ws, archive = lane(tmp_path, httpserver, keys)
    path = ws.root / "t.lock"
    before = path.read_bytes()
    publish(archive / "debian", SUITE, gpg, other, pkg=["1", "2"], tool=["1.0-1"], base=["1"])
    r = ws.doit("lock", "--update", "--lock", "t.lock", check=False)
    errors = [l for l in r.stderr.splitlines() if l.startswith("error:")]
    assert r.returncode == 1 and r.stdout == "" and len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "could not be verified" in errors[0] and "keyring" in errors[0], errors[0]
    assert path.read_bytes() == before

    # Signed by the right key, but an index that is not what InRelease says.
    publish(archive / "debian", SUITE, gpg, good, pkg=["1", "2"], tool=["1.0-1"], base=["1"])
    packages = archive / "debian" / "dists" / SUITE / "main" / "binary-amd64" / "Packages"
    packages.write_bytes(packages.read_bytes().replace(b"Version: 2", b"Version: 3"))
    r = ws.doit("lock", "--update", "--lock", "t.lock", check=False)
    assert r.returncode == 1 and r.stdout == "" and path.read_bytes() == before, r.stdout + r.stderr
    assert len([l for l in r.stderr.splitlines() if l.startswith("error:")]) == 1, r.stderr


def test_a_builder_package_that_moved_re_resolves_the_builder(tmp_path, httpserver, keys):
    # The resolution itself is builder.resolve's (mmdebstrap; here the
    # stand-in of test_builder.py, which reads the archive's Packages).
    from tests.test_builder import install_stand_in
    gpg, good, _, keyring = keys
    ws, archive = lane(tmp_path, httpserver, keys)
    path = ws.root / "t.lock"
    publish(archive / "debian", SUITE, gpg, good, pkg=["1"], tool=["1.0-1"], base=["1", "2"])
    ws.env.update({"PATH": install_stand_in(tmp_path / "bin"), "STAND_IN_LOG": str(tmp_path / "calls"),
                   "STAND_IN_PACKAGES": "base=2",
                   "STAND_IN_INDEX": str(archive / "debian" / "dists" / SUITE / "main" / "binary-amd64" / "Packages")})
    r = ws.doit("lock", "--update", "--lock", "t.lock")
    assert r.stdout.splitlines() == ["[builder] base: 1 -> 2"], r.stdout + r.stderr
    (call,) = (tmp_path / "calls").read_text().splitlines()
    assert f"--keyring={keyring}" in call.split() and call.split()[-4:-2] == [SUITE, "/dev/null"]
    lk = lock.load(path)
    assert [(d.name, d.version, d.url) for d in lk.builder.debs] == [("base", "2", "debian:pool/main/b/base/base_2_all.deb")]
    assert lk.builder.debs[0].sha256 == hashlib.sha256(b"base 2\n").hexdigest()
    assert lk.source("pkg").version == "1" and "# pinned by hand for the test" in path.read_text()
    # Pinned now: the verified index has every builder package as the candidate, so no resolve at all.
    after = path.read_bytes()
    again = ws.doit("lock", "--update", "--lock", "t.lock")
    assert again.stdout == "" and path.read_bytes() == after
    assert len((tmp_path / "calls").read_text().splitlines()) == 1
    # A newer one in the security suite is not what mmdebstrap resolves the
    # builder against (the builder's mirror and suite alone): no resolve either.
    publish(archive / "debian-security", f"{SUITE}-security", gpg, good, base=["9"], pool="pool/updates/main")
    third = ws.doit("lock", "--update", "--lock", "t.lock")
    assert third.stdout == "" and path.read_bytes() == after
    assert len((tmp_path / "calls").read_text().splitlines()) == 1
