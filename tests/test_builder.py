"""The builder image: cached by its tar's sha256, imported into the real engine,
moved-on archives reported, tampered cache entries refused.

The quick tests put a stand-in `mmdebstrap` first on PATH (a script that
writes a tiny BusyBox rootfs with a dpkg status file): what is under test is
the builder module's caching, recording and importing, not Debian's archive.
The slow test runs the real mmdebstrap twice and compares the tars.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import pytest
import zstandard

from onlydocker import builder, config, engine, lock
from onlydocker.errors import BuildError, ConfigError

ROOT = Path(__file__).resolve().parent.parent

STAND_IN = """#!{python}
# Stand-in for mmdebstrap: the rootfs tar is the second-to-last argument.
import io, os, sys, tarfile
out = sys.argv[-2]
status = "".join(
    "Package: %s\\nStatus: install ok installed\\nVersion: %s\\n\\n" % (name, version)
    for name, version in sorted(p.split("=") for p in os.environ["STAND_IN_PACKAGES"].split()))
with open(os.environ["STAND_IN_LOG"], "a") as log:
    log.write(" ".join(sys.argv[1:]) + " SOURCE_DATE_EPOCH=" + os.environ["SOURCE_DATE_EPOCH"] + "\\n")
epoch = int(os.environ["SOURCE_DATE_EPOCH"])
with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as tf:
    def add(name, data=None, link=None, mode=0o644):
        info = tarfile.TarInfo(name)
        info.mtime, info.mode = epoch, mode
        if data is None and link is None:
            info.type, info.mode = tarfile.DIRTYPE, 0o755
        elif link is not None:
            info.type, info.linkname = tarfile.SYMTYPE, link
        else:
            info.size = len(data)
        tf.addfile(info, io.BytesIO(data) if data is not None else None)
    for d in ("./", "./bin", "./var", "./var/lib", "./var/lib/dpkg"):
        add(d)
    add("./bin/busybox", open("/bin/busybox", "rb").read(), mode=0o755)
    for applet in ("sh", "cat"):
        add("./bin/" + applet, link="busybox")
    add("./var/lib/dpkg/status", status.encode())
"""


def _settings(tmp_path: Path, **env) -> config.Settings:
    base = {"ONLYDOCKER_CONFIG": str(tmp_path / "no-config.toml"), "HOME": str(tmp_path),
            "ONLYDOCKER_DEBIAN_MIRROR": "http://127.0.0.1:9/debian", **env}
    return dataclasses.replace(config.load(env=base), cache_dir=tmp_path / "cache")


def _lock_builder(**kw) -> lock.Builder:
    fields = dict(suite="bookworm", mirror="debian:", variant="minbase", packages=("hello", "make"),
                  mmdebstrap_options=())
    fields.update(kw)
    return lock.Builder(**fields)


def test_changed_packages_names_old_and_new_versions():
    assert builder.changed_packages(["a=1", "b=2", "gone=1"], ["a=1", "b=3", "new=0.1"]) == [
        "b: 2 -> 3", "gone: 1 -> (none)", "new: (none) -> 0.1"]


def test_the_input_key_changes_with_every_input(tmp_path):
    s = _settings(tmp_path)
    base = builder.input_key(_lock_builder(), s, 1686355200)
    assert base == builder.input_key(_lock_builder(packages=("make", "hello")), s, 1686355200)
    others = {
        builder.input_key(_lock_builder(suite="trixie"), s, 1686355200),
        builder.input_key(_lock_builder(variant="buildd"), s, 1686355200),
        builder.input_key(_lock_builder(packages=("hello",)), s, 1686355200),
        builder.input_key(_lock_builder(mmdebstrap_options=("--aptopt=X",)), s, 1686355200),
        builder.input_key(_lock_builder(), s, 1686355201),
        builder.input_key(_lock_builder(), _settings(tmp_path, ONLYDOCKER_DEBIAN_MIRROR="http://127.0.0.1:8/d"),
                          1686355200),
    }
    assert base not in others and len(others) == 6


def test_the_2015_lane_without_an_archive_mirror_names_the_setting(tmp_path):
    lk = lock.load(ROOT / "sources.lock")
    assert lk.builder.mirror == "debian-archive:"
    with pytest.raises(ConfigError) as e:
        builder.ensure(None, lk.builder, _settings(tmp_path), lk.lane.source_date_epoch, tmp_path / "log")
    msg = str(e.value)
    assert "ONLYDOCKER_DEBIAN_ARCHIVE_MIRROR" in msg and "jessie" in msg and "debian-archive:" in msg
    assert not (tmp_path / "cache" / "builders").exists() or not any((tmp_path / "cache" / "builders").iterdir())


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    if not Path("/bin/busybox").exists():
        pytest.skip("no static busybox on the host (apt-get install busybox-static)")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "mmdebstrap"
    script.write_text(STAND_IN.format(python=sys.executable))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("STAND_IN_LOG", str(tmp_path / "calls"))
    monkeypatch.setenv("STAND_IN_PACKAGES", "hello=1.0 make=4.3")
    return tmp_path / "calls"


def _drop(client, tag):
    try:
        client.images.remove(tag, force=True)
    except Exception:
        pass


def test_bootstrap_cache_import_and_a_moved_archive(stand_in, docker_client, tmp_path, monkeypatch, capsys):
    s = _settings(tmp_path)
    lb = _lock_builder()
    img = builder.ensure(docker_client, lb, s, 1686355200, tmp_path / "builder.log")
    try:
        calls = stand_in.read_text().splitlines()
        assert len(calls) == 1
        assert calls[0].startswith("--variant=minbase --mode=auto --include=hello,make bookworm ")
        assert calls[0].endswith(" http://127.0.0.1:9/debian SOURCE_DATE_EPOCH=1686355200")
        assert img.tag == f"onlydocker-builder:{img.tar_sha256[:16]}"
        assert img.packages == ["hello=1.0", "make=4.3"]
        index = tmp_path / "cache" / "builders"
        record = json.loads((index / f"{img.tar_sha256}.json").read_text())
        assert record["input_key"] == img.input_key and record["packages"] == img.packages
        assert record["created"].endswith("Z") and record["changed_since_previous"] == []
        # The cache holds the tar itself, zstd-compressed: its sha256 is the identity.
        import hashlib
        raw = zstandard.ZstdDecompressor().stream_reader(open(index / f"{img.tar_sha256}.tar.zst", "rb")).read()
        assert hashlib.sha256(raw).hexdigest() == img.tar_sha256
        assert sorted(p.name for p in index.iterdir() if p.name != "locks") == sorted(
            [f"{img.tar_sha256}.json", f"{img.tar_sha256}.tar.zst", f"input-{img.input_key}.json"])

        # The image runs, with no network, and holds the tar's files.
        spec = engine.RunSpec(image=img.tag, env={"PATH": "/bin"}, command=["cat", "/var/lib/dpkg/status"])
        engine.run(docker_client, spec, output_tar=None, log_path=tmp_path / "run.log")
        assert "Package: hello" in (tmp_path / "run.log").read_text()

        # Same inputs: the cache answers, mmdebstrap does not run.
        assert builder.ensure(docker_client, lb, s, 1686355200, tmp_path / "builder.log") == img
        assert len(stand_in.read_text().splitlines()) == 1

        # The archive moves on; a rebuild says which packages changed.
        monkeypatch.setenv("STAND_IN_PACKAGES", "hello=1.1 make=4.3 libnew=2")
        capsys.readouterr()
        newer = builder.ensure(docker_client, lb, s, 1686355200, tmp_path / "builder.log", rebuild=True)
        try:
            err = capsys.readouterr().err
            assert "hello: 1.0 -> 1.1" in err and "libnew: (none) -> 2" in err and "make" not in err.split("changed")[1]
            assert newer.tar_sha256 != img.tar_sha256 and newer.input_key == img.input_key
            rec = json.loads((index / f"{newer.tar_sha256}.json").read_text())
            assert rec["changed_since_previous"] == ["hello: 1.0 -> 1.1", "libnew: (none) -> 2"]
            assert rec["previous_tar_sha256"] == img.tar_sha256
        finally:
            _drop(docker_client, newer.tag)
    finally:
        _drop(docker_client, img.tag)


def test_a_tampered_cache_entry_is_refused_on_import(stand_in, docker_client, tmp_path, monkeypatch):
    monkeypatch.setenv("STAND_IN_PACKAGES", "hello=9.9")
    s = _settings(tmp_path)
    lb = _lock_builder(packages=("tampered",))
    img = builder.ensure(docker_client, lb, s, 1686355200, tmp_path / "builder.log")
    _drop(docker_client, img.tag)
    entry = tmp_path / "cache" / "builders" / f"{img.tar_sha256}.tar.zst"
    raw = zstandard.ZstdDecompressor().stream_reader(open(entry, "rb")).read()
    entry.write_bytes(zstandard.ZstdCompressor().compress(raw.replace(b"Package: hello", b"Package: jello")))
    with pytest.raises(BuildError, match="not " + img.tar_sha256):
        builder.ensure(docker_client, lb, s, 1686355200, tmp_path / "builder.log")
    assert not engine.image_exists(docker_client, img.tag)


@pytest.mark.slow
def test_two_real_bootstraps_give_the_same_tar(docker_client, tmp_path):
    """The bookworm lane's builder from scratch, twice (about 1.5-2 min each)."""
    if not Path("/usr/bin/mmdebstrap").exists():
        pytest.skip("mmdebstrap is not installed")
    lk = lock.load(ROOT / "locks" / "bookworm.lock")
    s = dataclasses.replace(config.load(), cache_dir=tmp_path / "cache")
    first = builder.ensure(docker_client, lk.builder, s, lk.lane.source_date_epoch, tmp_path / "one.log")
    again = builder.ensure(docker_client, lk.builder, s, lk.lane.source_date_epoch, tmp_path / "two.log",
                           rebuild=True)
    assert again.tar_sha256 == first.tar_sha256, "two bootstraps of the same archive state differ"
    assert any(p.startswith("gcc-12=") for p in first.packages)
    spec = engine.RunSpec(image=first.tag, env={"PATH": "/usr/bin:/bin"}, command=["gcc", "--version"])
    engine.run(docker_client, spec, output_tar=None, log_path=tmp_path / "gcc.log")
    assert "gcc" in (tmp_path / "gcc.log").read_text()
