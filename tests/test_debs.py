"""Debian package files for the builder: the verified index read for the
pin, real .debs (made with dpkg-deb) read and written into a flat repository."""
from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from onlydocker.errors import BuildError, UnsafeArchive
from onlydocker.inputs import debs
from tests.conftest import require_tool

INDEX = """\
Package: hello
Version: 2.10-3
Architecture: amd64
Depends: libc6 (>= 2.34)
Description: the classic
 with a continuation line
Filename: pool/main/h/hello/hello_2.10-3_amd64.deb
Size: 52948
SHA256: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa

Package: hello
Version: 2.10-2
Architecture: amd64
Filename: pool/main/h/hello/hello_2.10-2_amd64.deb
Size: 50000
SHA256: bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb

Package: base-files
Version: 12.4
Architecture: all
Filename: pool/main/b/base-files/base-files_12.4_all.deb
Size: 70936
SHA256: cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc
"""


def test_paragraphs_keep_continuation_lines():
    ps = debs.paragraphs(INDEX)
    assert [p["Package"] for p in ps] == ["hello", "hello", "base-files"]
    assert ps[0]["Description"] == "the classic\n with a continuation line"


def test_the_pin_takes_the_archive_s_own_entry_for_the_installed_version():
    pinned = debs.pinned_from_index([("hello", "2.10-2", "amd64"), ("base-files", "12.4", "all")], [INDEX],
                                    "debian:")
    assert pinned == [
        {"name": "base-files", "version": "12.4", "architecture": "all", "file": "base-files_12.4_all.deb",
         "url": "debian:pool/main/b/base-files/base-files_12.4_all.deb", "sha256": "c" * 64, "size": 70936},
        {"name": "hello", "version": "2.10-2", "architecture": "amd64", "file": "hello_2.10-2_amd64.deb",
         "url": "debian:pool/main/h/hello/hello_2.10-2_amd64.deb", "sha256": "b" * 64, "size": 50000},
    ]


def test_an_installed_package_no_index_lists_is_named():
    with pytest.raises(BuildError, match=r"hello=2.9 \(amd64\)"):
        debs.pinned_from_index([("hello", "2.9", "amd64")], [INDEX], "debian:")


def make_deb(tmp_path: Path, name: str, version: str, compression: str = "xz", **fields) -> Path:
    require_tool("dpkg-deb")
    root = tmp_path / f"{name}-root"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "usr" / "share" / name).mkdir(parents=True)
    (root / "usr" / "share" / name / "README").write_text(f"{name} {version}\n")
    control = {"Package": name, "Version": version, "Architecture": "all", "Maintainer": "t <t@localhost>",
               "Description": "a test package\n made here", **fields}
    (root / "DEBIAN" / "control").write_text("".join(f"{k}: {v}\n" for k, v in control.items()))
    out = tmp_path / f"{name}_{version}_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", f"-Z{compression}", "--build", str(root), str(out)],
                   check=True, capture_output=True, env={"SOURCE_DATE_EPOCH": "1686355200", "PATH": "/usr/bin:/bin"})
    return out


@pytest.mark.parametrize("compression", ["xz", "gzip", "zstd", "none"])
def test_control_data_is_read_from_a_real_deb(tmp_path, compression):
    deb = make_deb(tmp_path, "tiny", "1.0-1", compression, Depends="libc6", Essential="yes")
    fields = debs.paragraphs(debs.control_text(deb))[0]
    assert (fields["Package"], fields["Version"], fields["Depends"], fields["Essential"]) == \
        ("tiny", "1.0-1", "libc6", "yes")


def test_not_a_deb_is_named(tmp_path):
    bad = tmp_path / "x.deb"
    bad.write_bytes(b"<html>404</html>")
    with pytest.raises(UnsafeArchive, match=r"x.deb: not a Debian package \(no ar header\)"):
        debs.control_text(bad)


def test_the_flat_repository_is_made_of_exactly_the_files_and_is_reproducible(tmp_path):
    files = []
    for name, version in (("zeta", "2"), ("alpha", "1:1.0-1")):
        deb = make_deb(tmp_path, name, version, Depends="alpha" if name == "zeta" else "libc6")
        data = deb.read_bytes()
        files.append((deb.name, deb, hashlib.sha256(data).hexdigest(), len(data)))
    one, two = tmp_path / "one", tmp_path / "two"
    debs.write_flat_repo(one, files, "bookworm")
    debs.write_flat_repo(two, list(reversed(files)), "bookworm")
    assert sorted(p.name for p in one.iterdir()) == sorted(["Packages", "Release"] + [f[0] for f in files])
    assert (one / "Packages").read_bytes() == (two / "Packages").read_bytes()
    assert (one / "Release").read_bytes() == (two / "Release").read_bytes()
    stanzas = debs.paragraphs((one / "Packages").read_text())
    assert [s["Package"] for s in stanzas] == ["alpha", "zeta"]
    by_name = {s["Package"]: s for s in stanzas}
    for file, _, sha, size in files:
        s = by_name[file.split("_")[0]]
        assert (s["Filename"], s["SHA256"], s["Size"]) == (f"./{file}", sha, str(size))
    assert by_name["zeta"]["Depends"] == "alpha" and "Description" not in by_name["zeta"]
    release = debs.paragraphs((one / "Release").read_text())[0]
    assert release["Suite"] == release["Codename"] == "bookworm" and "Date" not in release
    index = (one / "Packages").read_bytes()
    assert release["SHA256"].split() == [hashlib.sha256(index).hexdigest(), str(len(index)), "Packages"]
