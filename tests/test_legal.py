"""`doit legal-info`, run for real as a doit command on a tiny lane whose
sources (a tarball and a .deb made here) are served over loopback HTTP;
then offline from the cache, with a source missing, and with an unsafe
archive."""
from __future__ import annotations

import csv
import hashlib
import io

from onlydocker.inputs import lock
from onlydocker.publish import legal
from tests import workspace as wsmod
from tests.test_unpack import make_deb, make_tar

COPYING = b"GNU GENERAL PUBLIC LICENSE\nVersion 2, June 1991\n"
ZLIB = b"zlib license text\n"
DEB_COPYRIGHT = b"Format: machine-readable copyright 1.0\nLicense: MIT\n"
PATCH_A = b"--- a/hello.c\n+++ b/hello.c\n@@ -1 +1 @@\n-a\n+b\n"
PATCH_B = b"--- a/hello.c\n+++ b/hello.c\n@@ -1 +1 @@\n-b\n+c\n"


def entry(name, file, body, url, license, group=None) -> str:
    return wsmod.source_entry(name, file, url, body, version="1.0", license=license, group=group)


def setup_lane(tmp_path, httpserver, extra: str = ""):
    made = tmp_path / "made"
    made.mkdir()
    tarball = make_tar(made / "hello-1.0.tar.gz", [
        ("hello-1.0", "dir", None), ("hello-1.0/COPYING", "file", COPYING), ("hello-1.0/hello.c", "file", b"a\n"),
        ("hello-1.0/lib/zlib/LICENSE", "file", ZLIB), ("hello-1.0/include/license.h", "file", b"#define GPL\n"),
        ("hello-1.0/doc/License.txt", "file", ZLIB),
        ("hello-1.0/LICENSES/preferred/GPL-2.0", "file", COPYING),
        ("hello-1.0/a/b/c/d/COPYING", "file", b"too deep: a test fixture's, not the package's\n")])
    deb = make_deb(made / "libfoo_1.0_amd64.deb", [
        ("./usr/lib/libfoo.so.1", "file", b"\x7fELF"), ("./usr/share/doc/libfoo/copyright", "file", DEB_COPYRIGHT),
        ("./usr/share/doc/libfoo/changelog.gz", "file", b"x")])
    bodies = {"hello-1.0.tar.gz": tarball.read_bytes(), "libfoo_1.0_amd64.deb": deb.read_bytes()}
    for file, body in bodies.items():
        httpserver.expect_request(f"/{file}").respond_with_data(body)
    ws = wsmod.make(tmp_path / "ws")
    ws.env.update({"ONLYDOCKER_CACHE": str(tmp_path / "cache"), "ONLYDOCKER_CONFIG": "/nonexistent",
                   "ONLYDOCKER_DOWNLOADS": str(tmp_path / "dl")})
    (ws.root / "t.lock").write_text(
        wsmod.builder_tables().replace('name = "bookworm"', 'name = "tiny"')
        + entry("hello", "hello-1.0.tar.gz", bodies["hello-1.0.tar.gz"], httpserver.url_for("/hello-1.0.tar.gz"),
                "GPL-2.0-only")
        + entry("libfoo", "libfoo_1.0_amd64.deb", bodies["libfoo_1.0_amd64.deb"],
                httpserver.url_for("/libfoo_1.0_amd64.deb"), "MIT", group="docker") + extra)
    stage = ws.root / "stages" / "hello"
    stage.mkdir(parents=True)
    (stage / "stage.toml").write_text('description = "t"\nsources = ["hello", "docker"]\noutputs = ["x"]\nartifacts = { "x" = "x" }\n')
    (stage / "build.sh").write_text("touch /build/out/x\n")
    patches = ws.root / "patches" / "hello" / "1.0"
    patches.mkdir(parents=True)
    (patches / "0001-a.patch").write_bytes(PATCH_A)
    (patches / "0002-b.patch").write_bytes(PATCH_B)
    (patches / "unused.patch").write_bytes(b"not in the series\n")
    # The series, not the names, is the order applied: b before a.
    (patches / "series").write_text("# order\n0002-b.patch\n\n0001-a.patch\n")
    return ws, bodies


def test_legal_info_writes_sources_patches_licenses_and_a_manifest(tmp_path, httpserver):
    ws, bodies = setup_lane(tmp_path, httpserver)
    r = ws.doit("legal-info", "--lock", "t.lock")
    out = ws.out("tiny") / "legal-info"
    assert f"legal-info of lane tiny in {out}: 2 source(s)" in r.stdout
    for file, body in bodies.items():
        assert (out / "sources" / file).read_bytes() == body
    assert (out / "patches" / "hello" / "series").read_text() == "0002-b.patch\n0001-a.patch\n"
    assert (out / "patches" / "hello" / "0002-b.patch").read_bytes() == PATCH_B
    assert not (out / "patches" / "hello" / "unused.patch").exists()
    lic = out / "licenses"
    assert (lic / "hello" / "hello-1.0" / "COPYING").read_bytes() == COPYING
    assert (lic / "hello" / "hello-1.0" / "lib" / "zlib" / "LICENSE").read_bytes() == ZLIB
    assert (lic / "hello" / "hello-1.0" / "LICENSES" / "preferred" / "GPL-2.0").read_bytes() == COPYING
    assert not (lic / "hello" / "hello-1.0" / "a").exists()       # deeper than MAX_DEPTH
    assert (lic / "hello" / "hello-1.0" / "doc" / "License.txt").read_bytes() == ZLIB
    assert not (lic / "hello" / "hello-1.0" / "include").exists()   # code, not a license text
    assert (lic / "libfoo" / "usr" / "share" / "doc" / "libfoo" / "copyright").read_bytes() == DEB_COPYRIGHT
    assert sorted(p.name for p in (lic / "libfoo").rglob("*") if p.is_file()) == ["copyright"]
    rows = list(csv.DictReader(io.StringIO((out / "manifest.csv").read_text())))
    assert [(r["package"], r["version"], r["license"], r["source file"], r["sha256"], r["patches"], r["in image"])
            for r in rows] == [
        ("hello", "1.0", "GPL-2.0-only", "hello-1.0.tar.gz", hashlib.sha256(bodies["hello-1.0.tar.gz"]).hexdigest(),
         "0002-b.patch 0001-a.patch", "yes"),
        ("libfoo", "1.0", "MIT", "libfoo_1.0_amd64.deb", hashlib.sha256(bodies["libfoo_1.0_amd64.deb"]).hexdigest(),
         "", "yes")]
    assert "licenses/libfoo/usr/share/doc/libfoo/copyright" in rows[1]["license files"]
    assert not list(out.parent.glob(".legal-info*")), "no temporary folder left behind"

    # Offline, from the cache alone: the same folder again.
    httpserver.clear()
    ws.env["ONLYDOCKER_OFFLINE"] = "1"
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    ws.doit("legal-info", "--lock", "t.lock")
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before

    # A source missing from the cache, offline: it is named, and the folder already there is kept.
    cached = tmp_path / "cache" / "sources" / "sha256" / hashlib.sha256(bodies["libfoo_1.0_amd64.deb"]).hexdigest()
    cached.unlink()
    bad = ws.doit("legal-info", "--lock", "t.lock", check=False)
    assert bad.returncode != 0 and "'libfoo'" in bad.stderr and "libfoo_1.0_amd64.deb" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert not list(out.parent.glob(".legal-info*"))


def test_a_cached_source_with_other_bytes_is_refused(tmp_path, httpserver):
    ws, bodies = setup_lane(tmp_path, httpserver)
    ws.doit("lock=t.lock", "build:fetch:hello", "build:fetch:libfoo")
    sha = hashlib.sha256(bodies["hello-1.0.tar.gz"]).hexdigest()
    (tmp_path / "cache" / "sources" / "sha256" / sha).write_bytes(b"rot")
    bad = ws.doit("legal-info", "--lock", "t.lock", check=False)
    assert bad.returncode != 0 and "hello-1.0.tar.gz" in bad.stderr and sha in bad.stderr
    assert not (ws.out("tiny") / "legal-info").exists()


def test_an_unsafe_archive_is_refused_naming_it(tmp_path, httpserver):
    evil = make_tar(tmp_path / "evil-1.0.tar.gz", [("evil-1.0", "dir", None), ("evil-1.0/../../COPYING", "file", b"x")])
    body = evil.read_bytes()
    httpserver.expect_request("/evil-1.0.tar.gz").respond_with_data(body)
    ws, _ = setup_lane(tmp_path, httpserver, extra=entry("evil", "evil-1.0.tar.gz", body,
                                                         httpserver.url_for("/evil-1.0.tar.gz"), "MIT"))
    bad = ws.doit("legal-info", "--lock", "t.lock", check=False)
    assert bad.returncode != 0 and "evil-1.0.tar.gz" in bad.stderr and "refused" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert not (ws.out("tiny") / "legal-info").exists()


def test_patch_series_follows_the_prelude(tmp_path):
    lk_path = tmp_path / "x.lock"
    lk_path.write_text(wsmod.builder_tables() + entry("p", "p.tar.gz", b"x", "https://example.invalid/p", "MIT"))
    s = lock.load(lk_path).source("p")
    d = tmp_path / "patches" / "p" / "1.0"
    d.mkdir(parents=True)
    for n in ("0002-b.patch", "0001-a.patch", "notes.txt"):
        (d / n).write_text(n)
    # No series file: every *.patch, sorted (the prelude's `ls | grep '\.patch$' | sort`).
    assert [p.name for p in legal.patch_series(tmp_path, s)] == ["0001-a.patch", "0002-b.patch"]
    (d / "series").write_text("0002-b.patch\n# comment\n  \n0001-a.patch\n")
    assert [p.name for p in legal.patch_series(tmp_path, s)] == ["0002-b.patch", "0001-a.patch"]
    assert legal.patch_series(tmp_path / "elsewhere", s) == []


def test_the_builders_copyrights_are_read_once_and_a_damaged_record_is_read_again(tmp_path):
    """dist's SBOMs name each builder package's copyright notices, read from
    the builder's tar (2 s for 200 MB) once, then from the record beside it."""
    import json
    import tarfile
    import types

    import zstandard

    from onlydocker.publish import dist
    text = b"Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n" \
           b"Files: *\nCopyright: 2024 Somebody <s@example.org>\nLicense: MIT\n"
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tf:
        info = tarfile.TarInfo("./usr/share/doc/pkg/copyright")
        info.size = len(text)
        tf.addfile(info, io.BytesIO(text))
    builders = tmp_path / "builders"
    builders.mkdir()
    sha, key = "ab" * 32, "cd" * 32
    builder = {"tar_sha256": sha, "input_key": key}       # out/<lane>/builder.json's fields
    tar = builders / f"{key}.tar.zst"
    tar.write_bytes(zstandard.ZstdCompressor().compress(raw.getvalue()))
    settings = types.SimpleNamespace(cache_dir=tmp_path)
    first = dist.tool_copyrights(settings, builder)
    assert set(first) == {"pkg"} and "2024 Somebody <s@example.org>" in first["pkg"]
    memo = builders / f"{sha}.copyrights.json"
    assert json.loads(memo.read_text()) == first
    tar.unlink()                                   # read from the record now
    assert dist.tool_copyrights(settings, builder) == first
    memo.write_text('{"pkg": 3}')                   # another shape: not trusted, the tar is gone: none
    assert dist.tool_copyrights(settings, builder) == {}
