"""The lock is validated before anything runs; errors name file, entry, field."""
from __future__ import annotations

from pathlib import Path

import pytest

from onlydocker.errors import LockError
from onlydocker.inputs import lock

REPO = Path(__file__).resolve().parent.parent
HEAD = """
[lane]
name = "t"
source_date_epoch = 1700000000
initrd_compression = "zstd"

[builder]
suite = "bookworm"
mirror = "debian:"
packages = ["gcc"]
"""
URL = "https://example.invalid/hello-1.0.tar.gz"
GOOD = """
[[source]]
name = "hello"
version = "1.0"
file = "hello-1.0.tar.gz"
urls = ["https://example.invalid/hello-1.0.tar.gz", "debian:pool/main/h/hello/hello_1.0.orig.tar.gz"]
sha256 = "{sha}"
size = 10
license = "MIT"
""".replace("{sha}", "a" * 64)


def write(tmp_path, text) -> Path:
    p = tmp_path / "x.lock"
    p.write_text(HEAD + text)
    return p


def test_both_real_locks_load():
    old = lock.load(REPO / "sources.lock")
    assert old.lane.name == "2015" and old.lane.initrd_compression == "lzma"
    assert {s.name: s.version for s in old.sources} == {
        "linux": "3.18.6", "busybox": "1.23.1", "iptables": "1.4.21", "dropbear": "2015.67", "docker": "1.5.0"}
    # No sha256 known for the 2015 Vagrant edition's Dropbear: unpinned, so refused until `doit lock`.
    assert not old.source("dropbear").pinned
    assert old.source("linux").sha1 == "8f8dc74ef727ab3e7dbc161de2ce643452d30f78"
    assert old.source("busybox").sha256 == "300f1db0a7ca4ecee8f8d8027aba250b903372e8339b7d9123d37c1e900473bf"
    assert old.source("iptables").sha256 == "52004c68021da9a599feed27f65defcfb22128f7da2c0531c0f75de0f479d3e0"
    assert old.source("linux").urls == ("https://www.kernel.org/pub/linux/kernel/v3.x/linux-3.18.6.tar.xz",)
    modern = lock.load(REPO / "locks" / "bookworm.lock")
    assert all(s.pinned and s.size for s in modern.sources)
    assert all(u.startswith(("debian:", "debian-security:")) for s in modern.sources for u in s.urls)
    assert {"linux", "busybox", "iptables", "kmod", "docker.io", "containerd", "runc"} <= {s.name for s in modern.sources}


def test_a_good_lock_loads(tmp_path):
    lk = lock.load(write(tmp_path, GOOD))
    s = lk.source("hello")
    assert s.group == "hello" and s.pinned and s.hashes() == {"sha256": "a" * 64}


@pytest.mark.parametrize("text, entry, field, words", [
    # a [[source]] entry, below a good [lane] and [builder]
    (HEAD + '[[source]]\nname = "x"\n', "x", "file", "missing"),
    (HEAD + GOOD.replace('sha256 = "' + "a" * 64, 'sha256 = "' + "a" * 63), "hello", "sha256", "64 lowercase hex"),
    (HEAD + GOOD.replace('sha256 = "' + "a" * 64, 'sha256 = "' + "g" * 64), "hello", "sha256", "hex"),
    (HEAD + GOOD.replace("license", 'sha1 = "abc"\nlicense'), "hello", "sha1", "40"),
    (HEAD + GOOD + GOOD, "hello", "name", "duplicate"),
    (HEAD + GOOD.replace("https://example.invalid", "ftp://example.invalid"), "hello", "urls", "scheme"),
    (HEAD + GOOD.replace("debian:pool", "debian:/pool"), "hello", "urls", "below the mirror"),
    (HEAD + GOOD.replace("size = 10", 'size = "10"'), "hello", "size", "int"),
    (HEAD + GOOD.replace('file = "hello-1.0.tar.gz"', 'file = "../x"'), "hello", "file", "plain file name"),
    (HEAD + GOOD.replace("license", 'colour = "red"\nlicense'), "hello", "colour", "unknown field"),
    (HEAD + GOOD.replace('urls = [', 'urls = "x" #['), "hello", "urls", "list"),
    (HEAD + GOOD.replace('urls = [', 'urls = [] #['), "hello", "urls", "at least one"),
    (HEAD + GOOD.replace(f'"{URL}"', '"ubuntu:pool/h/hello.tar.gz"'), "hello", "urls", "scheme"),
    (HEAD + GOOD.replace(f'"{URL}"', '"https:///nohost"'), "hello", "urls", "no host"),
    (HEAD + GOOD.replace("a" * 64, "A" * 64), "hello", "sha256", "lowercase hex"),
    (HEAD + GOOD.replace("size = 10", "size = 0"), "hello", "size", "positive"),
    (HEAD + GOOD.replace("size = 10", "size = true"), "hello", "size", "int"),
    (HEAD + GOOD.replace('license = "MIT"', ""), "hello", "license", "missing"),
    (HEAD + GOOD.replace('version = "1.0"', "version = 1.0"), "hello", "version", "str"),
    (HEAD + GOOD.replace('name = "hello"', 'name = "hello"\ngroup = 3'), "hello", "group", "str"),
    # the [lane] and [builder] tables
    (HEAD.replace("[lane]", "[lanes]") + GOOD, None, "[lane]", "missing"),
    (HEAD.replace('name = "t"\n', "") + GOOD, "[lane]", "name", "missing"),
    (HEAD.replace("1700000000", '"yesterday"') + GOOD, "[lane]", "source_date_epoch", "int"),
    (HEAD.replace('"zstd"', '"brotli"') + GOOD, "[lane]", "initrd_compression", "brotli"),
    (HEAD.replace('mirror = "debian:"', 'mirror = "ubuntu:"') + GOOD, "[builder]", "mirror", "neither"),
    (HEAD.replace('packages = ["gcc"]', 'packages = "gcc"') + GOOD, "[builder]", "packages", "list"),
])
def test_a_malformed_lock_is_refused_naming_file_entry_and_field(tmp_path, text, entry, field, words):
    p = tmp_path / "x.lock"
    p.write_text(text)
    with pytest.raises(LockError) as e:
        lock.load(p)
    assert (e.value.entry, e.value.field) == (entry, field), str(e.value)
    assert str(p) in str(e.value) and words in str(e.value), str(e.value)


def test_bad_toml_is_refused_with_the_file_and_line(tmp_path):
    p = tmp_path / "x.lock"
    p.write_text(HEAD + "[[source]\nname = 1\n")
    with pytest.raises(LockError) as e:
        lock.load(p)
    assert "not valid TOML" in str(e.value) and "line" in str(e.value) and str(p) in str(e.value)


def test_lane_fields_are_checked(tmp_path):
    p = tmp_path / "x.lock"
    p.write_text(HEAD.replace('"zstd"', '"brotli"'))
    with pytest.raises(LockError, match="initrd_compression"):
        lock.load(p)


def test_pin_keeps_comments_and_other_entries(tmp_path):
    text = GOOD.replace('sha256 = "' + "a" * 64 + '"\nsize = 10\n', "# pinned later\n")
    p = write(tmp_path, "# the lock's own comment\n" + text + GOOD.replace('"hello"', '"other"'))
    lock.pin(p, "hello", "b" * 64, 1234)
    after = p.read_text()
    assert "# the lock's own comment" in after and "# pinned later" in after
    lk = lock.load(p)
    assert lk.source("hello").sha256 == "b" * 64 and lk.source("hello").size == 1234
    assert lk.source("other").sha256 == "a" * 64


def test_mirror_schemes_and_file_urls_are_accepted(tmp_path):
    text = GOOD.replace('"https://example.invalid/hello-1.0.tar.gz"',
                        '"debian-security:pool/updates/main/h/hello/h.tar.gz", '
                        '"debian-archive:debian/pool/main/h/hello/h.tar.gz", "file:///srv/h.tar.gz"')
    assert len(lock.load(write(tmp_path, text)).source("hello").urls) == 4


def test_pinned_needs_both_sha256_and_size_and_groups_collect_sources(tmp_path):
    only_sha = GOOD.replace("size = 10\n", "")
    legacy = GOOD.replace('"hello"', '"h2"').replace('sha256 = "' + "a" * 64 + '"',
                                                     'group = "hello"\nsha1 = "' + "b" * 40 + '"')
    lk = lock.load(write(tmp_path, only_sha + legacy))
    assert not lk.source("hello").pinned and not lk.source("h2").pinned
    assert lk.source("h2").hashes() == {"sha1": "b" * 40}
    assert [s.name for s in lk.group("hello")] == ["hello", "h2"] and lk.group("nothing") == []
    with pytest.raises(KeyError):
        lk.source("nothing")


def test_pin_refuses_to_change_a_pin_or_to_pin_nonsense(tmp_path):
    p = write(tmp_path, GOOD)
    before = p.read_text()
    with pytest.raises(LockError, match="already pinned"):
        lock.pin(p, "hello", "b" * 64, 10)
    with pytest.raises(LockError, match="no such source"):
        lock.pin(p, "nobody", "b" * 64, 10)
    with pytest.raises(LockError, match="64 lowercase hex"):
        lock.pin(p, "hello", "xyz", 10)
    lock.pin(p, "hello", "a" * 64, 10)            # the same pin again is fine
    assert p.read_text() == before
    assert [f.name for f in tmp_path.iterdir()] == ["x.lock"]   # no temp file left behind


def test_pin_fills_a_missing_size_beside_a_known_sha256(tmp_path):
    p = write(tmp_path, GOOD.replace("size = 10\n", "# size: `doit lock` fills it\n"))
    lock.pin(p, "hello", "a" * 64, 99)
    assert lock.load(p).source("hello").size == 99 and "# size: `doit lock` fills it" in p.read_text()


DEB = ('{name = "hello", version = "2.10-3", architecture = "amd64", file = "hello_2.10-3_amd64.deb", '
       'url = "debian:pool/main/h/hello/hello_2.10-3_amd64.deb", sha256 = "' + "d" * 64 + '", size = 52948}')


def test_the_builder_pins_of_both_lanes():
    modern = lock.load(REPO / "locks" / "bookworm.lock").builder
    assert modern.pinned and len(modern.debs) > 150
    assert len({(d.name, d.architecture) for d in modern.debs}) == len(modern.debs)
    assert all(d.url.startswith("debian:pool/") and d.url.endswith("/" + d.file) for d in modern.debs)
    names = {d.name for d in modern.debs}
    assert set(modern.packages) - {"build-essential"} <= names and {"gcc-12", "dpkg", "libc6"} <= names
    old = lock.load(REPO / "sources.lock").builder
    assert old.suite == "jessie" and old.mirror == "debian-archive:" and old.debs == () and not old.pinned


def test_builder_debs_are_parsed_and_checked(tmp_path):
    p = write(tmp_path, f"debs = [\n    {DEB},\n]\n")
    (d,) = lock.load(p).builder.debs
    assert (d.name, d.version, d.architecture, d.size) == ("hello", "2.10-3", "amd64", 52948)
    src = d.source()
    assert src.pinned and src.urls == (d.url,) and src.file == d.file and src.sha256 == "d" * 64
    for bad, field, words in (
        (DEB.replace("d" * 64, "D" * 64), "sha256", "64 lowercase hex"),
        (DEB.replace('file = "hello_2.10-3_amd64.deb"', 'file = "other.deb"'), "file", "url ends with"),
        (DEB.replace("size = 52948", "size = 0"), "size", "positive"),
        (DEB.replace("size = 52948", 'size = 52948, priority = "optional"'), "priority", "unknown field"),
        (DEB.replace('url = "debian:pool', 'url = "ftp://x/pool'), "urls", "scheme"),
        (DEB.replace('architecture = "amd64", ', ""), "architecture", "missing"),
        (DEB + ",\n" + DEB, "name", "pinned twice"),
    ):
        p = write(tmp_path, f"debs = [\n    {bad},\n]\n")
        with pytest.raises(LockError) as e:
            lock.load(p)
        assert e.value.field == field and words in str(e.value) and "hello" in str(e.value) and str(p) in str(e.value)


def test_pin_builder_rewrites_only_the_debs_and_keeps_comments(tmp_path):
    text = HEAD + "# why the list is what it is\ndebs = []\n\n# a source comment\n" + GOOD
    p = tmp_path / "x.lock"
    p.write_text(text)
    new = [lock.Deb("zlib1g", "1:1.2.13", "amd64", "zlib1g_1.2.13_amd64.deb",
                    "debian:pool/main/z/zlib/zlib1g_1.2.13_amd64.deb", "e" * 64, 10),
           lock.Deb("adduser", "3.134", "all", "adduser_3.134_all.deb",
                    "debian:pool/main/a/adduser/adduser_3.134_all.deb", "f" * 64, 20)]
    lock.pin_builder(p, new)
    after = p.read_text()
    assert [d.name for d in lock.load(p).builder.debs] == ["adduser", "zlib1g"]
    lines = after.splitlines()
    # One package a line, sorted; every other line as it was.
    deb_lines = [line for line in lines if line.startswith("    {name = ")]
    assert len(deb_lines) == 2 and '"adduser"' in deb_lines[0] and '"zlib1g"' in deb_lines[1]
    assert [line for line in lines if not line.startswith(("    {name = ", "debs = ", "]"))] == \
        [line for line in text.splitlines() if not line.startswith("debs = ")]
    # A second pin replaces the list; no temp files are left behind.
    lock.pin_builder(p, new[:1])
    assert [d.name for d in lock.load(p).builder.debs] == ["zlib1g"]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["x.lock"]


@pytest.mark.parametrize("license, words", [
    ("GPL 2", "'GPL 2' is not an SPDX license expression"),
    ("GPLv2+", "'GPLv2+' is not an SPDX license id"),
    ("MIT AND", "is not an SPDX license expression"),
    ("(MIT OR Apache-2.0", "is not an SPDX license expression"),
    ("GPL-2.0-only WITH MIT", "is not an SPDX license expression"),
    ("LicenseRef-", "is not an SPDX license id"),
    ("", "empty"),
])
def test_a_license_that_is_not_an_spdx_expression_is_refused_naming_the_entry(tmp_path, license, words):
    with pytest.raises(LockError) as e:
        lock.load(write(tmp_path, GOOD.replace('license = "MIT"', f'license = "{license}"')))
    assert e.value.entry == "hello" and e.value.field == "license"
    assert words in str(e.value) and "x.lock" in str(e.value) and "'hello'" in str(e.value)


def test_spdx_expressions_are_accepted_and_spelled_canonically(tmp_path):
    for written, canonical in [("mit", "MIT"), ("gpl-2.0-only WITH linux-syscall-note", "GPL-2.0-only WITH Linux-syscall-note"),
                               ("LGPL-2.1-or-later AND (BSD-3-Clause OR MIT)", "LGPL-2.1-or-later AND (BSD-3-Clause OR MIT)"),
                               ("LicenseRef-public-domain", "LicenseRef-public-domain")]:
        lk = lock.load(write(tmp_path, GOOD.replace('license = "MIT"', f'license = "{written}"')))
        assert lk.source("hello").license == canonical
