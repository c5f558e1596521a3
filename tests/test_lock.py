"""The lock is validated before anything runs; errors name file, entry, field."""
from __future__ import annotations

from pathlib import Path

import pytest

from onlydocker import lock
from onlydocker.errors import LockError

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
        "linux": "3.18.6", "busybox": "1.23.1", "iptables": "1.4.21", "docker": "1.5.0"}
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
    ('[[source]]\nname = "x"\n', "x", "file", "missing"),
    (GOOD.replace('sha256 = "' + "a" * 64, 'sha256 = "' + "a" * 63), "hello", "sha256", "64 lowercase hex"),
    (GOOD.replace('sha256 = "' + "a" * 64, 'sha256 = "' + "g" * 64), "hello", "sha256", "hex"),
    (GOOD.replace("license", 'sha1 = "abc"\nlicense'), "hello", "sha1", "40"),
    (GOOD + GOOD, "hello", "name", "duplicate"),
    (GOOD.replace("https://example.invalid", "ftp://example.invalid"), "hello", "urls", "scheme"),
    (GOOD.replace("debian:pool", "debian:/pool"), "hello", "urls", "below the mirror"),
    (GOOD.replace("size = 10", 'size = "10"'), "hello", "size", "int"),
    (GOOD.replace('file = "hello-1.0.tar.gz"', 'file = "../x"'), "hello", "file", "plain file name"),
    (GOOD.replace("license", 'colour = "red"\nlicense'), "hello", "colour", "unknown field"),
])
def test_malformed_entries_are_refused_naming_entry_and_field(tmp_path, text, entry, field, words):
    with pytest.raises(LockError) as e:
        lock.load(write(tmp_path, text))
    assert e.value.entry == entry and e.value.field == field
    assert str(tmp_path / "x.lock") in str(e.value) and words in str(e.value)


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
