"""The builder image: made only from the .debs the lock pins (fetched and
verified like any source, bootstrapped offline from a flat repository),
cached by its tar's sha256, imported into the real engine; a pin that is gone
says how to provide it; tampered cache entries are refused.

The quick tests put a stand-in `mmdebstrap` first on PATH: a script that
reads the repository it is given (checking every file against its index),
runs the customize hooks on a tiny BusyBox rootfs with a dpkg status file,
and writes the tar. The .debs are real (dpkg-deb), served from loopback.
What is under test is the builder module, not Debian's archive; the slow
test runs the real mmdebstrap twice, the second time offline.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import zstandard

from onlydocker import config
from onlydocker.builder import image as builder
from onlydocker.engine import client as dockerclient
from onlydocker.engine import run as engine
from onlydocker.errors import BuildError, FetchError, UnpinnedSource
from onlydocker.inputs import lock
from tests.test_debs import make_deb

ROOT = Path(__file__).resolve().parent.parent

STAND_IN = r"""#!{python}
# Stand-in for mmdebstrap: options, then SUITE TARGET MIRROR.
import hashlib, io, os, re, shutil, subprocess, sys, tarfile, tempfile
args = [a for a in sys.argv[1:] if not a.startswith("--")]
opts = [a for a in sys.argv[1:] if a.startswith("--")]
suite, target, mirror = args
include = next(o for o in opts if o.startswith("--include=")).split("=", 1)[1].split(",")
hooks = [o.split("=", 1)[1] for o in opts if o.startswith("--customize-hook=")]
with open(os.environ["STAND_IN_LOG"], "a") as log:
    log.write(" ".join(a.replace("\n", "|") for a in sys.argv[1:])
              + " SOURCE_DATE_EPOCH=" + os.environ.get("SOURCE_DATE_EPOCH", "-") + "\n")

def stanzas(text):
    return [dict(l.split(": ", 1) for l in p.splitlines() if ": " in l and not l[0].isspace())
            for p in text.split("\n\n") if p.strip()]

root = tempfile.mkdtemp()
os.makedirs(root + "/var/lib/apt/lists")
m = re.match(r"deb \[trusted=yes\] copy://(\S+) \./$", mirror)
if m:   # the offline bootstrap: install what the repository holds, as named
    repo = m.group(1)
    index = stanzas(open(repo + "/Packages").read())
    for p in index:   # a repository whose files are not what it says is a failure
        data = open(os.path.join(repo, p["Filename"]), "rb").read()
        assert hashlib.sha256(data).hexdigest() == p["SHA256"] and len(data) == int(p["Size"]), p
    drop = os.environ.get("STAND_IN_DROP", "")
    installed = [(p["Package"], p["Version"], p["Architecture"]) for p in index
                 if (p["Package"] in include or p.get("Essential") == "yes") and p["Package"] != drop]
else:   # resolving online: the archive's state comes from the test
    installed = [tuple(p.split("=")) + ("all",) for p in os.environ["STAND_IN_PACKAGES"].split()]
    shutil.copy(os.environ["STAND_IN_INDEX"], root + "/var/lib/apt/lists/mirror_dists_x_Packages")
os.makedirs(root + "/var/lib/dpkg/info")
open(root + "/var/lib/dpkg/status", "w").write("".join(
    "Package: %s\nStatus: install ok installed\nVersion: %s\nArchitecture: %s\nMaintainer: t\n"
    "Description: t\n\n" % p for p in sorted(installed)))
os.makedirs(root + "/etc/apt")
open(root + "/etc/apt/sources.list", "w").write("deb " + mirror + "\n")
os.makedirs(root + "/bin")
shutil.copy("/bin/busybox", root + "/bin/busybox")
for applet in ("sh", "cat"):
    os.symlink("busybox", root + "/bin/" + applet)
for hook in hooks:
    subprocess.run(["sh", "-c", hook, "exec", root], check=True)
shutil.rmtree(root + "/var/lib/apt/lists")   # mmdebstrap's cleanup
if target != "/dev/null":
    epoch = int(os.environ["SOURCE_DATE_EPOCH"])
    def norm(info):
        info.mtime, info.uid, info.gid, info.uname, info.gname = epoch, 0, 0, "", ""
        return info
    with tarfile.open(target, "w", format=tarfile.GNU_FORMAT) as tf:
        for dirpath, dirs, files in sorted(os.walk(root)):
            dirs.sort()
            rel = "." + dirpath[len(root):]
            tf.add(dirpath, rel, recursive=False, filter=norm)
            for f in sorted(files):
                tf.add(os.path.join(dirpath, f), rel + "/" + f, recursive=False, filter=norm)
shutil.rmtree(root)
"""


def _settings(tmp_path: Path, **env) -> config.Settings:
    base = {"ONLYDOCKER_CONFIG": str(tmp_path / "no-config.toml"), "HOME": str(tmp_path),
            "ONLYDOCKER_DEBIAN_MIRROR": "http://127.0.0.1:9/debian",
            "ONLYDOCKER_DOWNLOADS": str(tmp_path / "downloads"), **env}
    return dataclasses.replace(config.load(env=base), cache_dir=tmp_path / "cache")


def _deb(name="hello", version="1.0", sha="a" * 64, arch="all") -> lock.Deb:
    file = f"{name}_{version}_{arch}.deb"
    return lock.Deb(name, version, arch, file, f"debian:pool/main/{name[0]}/{name}/{file}", sha, 100)


def _lock_builder(**kw) -> lock.Builder:
    fields = dict(suite="bookworm", mirror="debian:", variant="minbase", packages=("hello", "make"),
                  mmdebstrap_options=(), debs=(_deb(), _deb("make", "4.3", "b" * 64, "amd64")))
    fields.update(kw)
    return lock.Builder(**fields)


def test_changed_packages_names_old_and_new_versions():
    assert builder.changed_packages(["a=1", "b=2", "gone=1"], ["a=1", "b=3", "new=0.1"]) == [
        "b: 2 -> 3", "gone: 1 -> (none)", "new: (none) -> 0.1"]


def test_changed_debs_names_versions_and_same_versions_with_other_bytes():
    old = [_deb("a", "1"), _deb("b", "2"), _deb("c", "1", "c" * 64), _deb("gone", "1")]
    new = [_deb("a", "1"), _deb("b", "3"), _deb("c", "1", "d" * 64), _deb("new", "0.1")]
    assert builder.changed_debs(old, new) == [
        "b: 2 -> 3", "c: 1 (sha256 cccccccccccccccc -> dddddddddddddddd)", "gone: 1 -> (none)",
        "new: (none) -> 0.1"]
    assert builder.changed_debs(old, old) == []


def test_the_input_key_is_the_pin_not_the_mirror(tmp_path):
    s = _settings(tmp_path)
    base = builder.input_key(_lock_builder(), s, 1686355200)
    assert base == builder.input_key(_lock_builder(packages=("make", "hello")), s, 1686355200)
    # The same files from another mirror make the same tar: the mirror is not in the key.
    assert base == builder.input_key(_lock_builder(), _settings(tmp_path, ONLYDOCKER_DEBIAN_MIRROR="http://x:8/d"),
                                     1686355200)
    others = {
        builder.input_key(_lock_builder(suite="trixie"), s, 1686355200),
        builder.input_key(_lock_builder(variant="buildd"), s, 1686355200),
        builder.input_key(_lock_builder(packages=("hello",)), s, 1686355200),
        builder.input_key(_lock_builder(mmdebstrap_options=("--aptopt=X",)), s, 1686355200),
        builder.input_key(_lock_builder(), s, 1686355201),
        builder.input_key(_lock_builder(debs=(_deb(), _deb("make", "4.3", "c" * 64, "amd64"))), s, 1686355200),
        builder.input_key(_lock_builder(debs=(_deb(), _deb("make", "4.4", "b" * 64, "amd64"))), s, 1686355200),
        builder.input_key(_lock_builder(debs=(_deb(),)), s, 1686355200),
    }
    assert base not in others and len(others) == 8


def test_the_unpinned_2015_lane_says_what_is_missing_and_how_to_pin_it(tmp_path):
    lk = lock.load(ROOT / "sources.lock")
    assert lk.builder.mirror == "debian-archive:" and not lk.builder.pinned
    with pytest.raises(UnpinnedSource) as e:
        builder.ensure(None, lk.builder, _settings(tmp_path), lk.lane.source_date_epoch, tmp_path / "log")
    msg = str(e.value)
    for words in ("jessie", "debs = []", "doit lock --builder", "debian-archive:", "ONLYDOCKER_DEBIAN_ARCHIVE_MIRROR"):
        assert words in msg, words
    assert not (tmp_path / "cache" / "builders").exists() or not any((tmp_path / "cache" / "builders").iterdir())
    # With the old-release mirror configured, the same message names it instead.
    s = _settings(tmp_path, ONLYDOCKER_DEBIAN_ARCHIVE_MIRROR="http://127.0.0.1:9/debian-archive")
    with pytest.raises(UnpinnedSource, match=r"debian-archive: mirror \(http://127.0.0.1:9/debian-archive\)"):
        builder.input_key(lk.builder, s, lk.lane.source_date_epoch)


def install_stand_in(bin_dir: Path) -> str:
    """The stand-in mmdebstrap in `bin_dir`; returns a PATH that finds it first."""
    if not Path("/bin/busybox").exists():
        pytest.skip("no static busybox on the host (apt-get install busybox-static)")
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "mmdebstrap"
    script.write_text(STAND_IN.format(python=sys.executable))
    script.chmod(0o755)
    return f"{bin_dir}{os.pathsep}{os.environ['PATH']}"


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", install_stand_in(tmp_path / "bin"))
    monkeypatch.setenv("STAND_IN_LOG", str(tmp_path / "calls"))
    return tmp_path / "calls"


@pytest.fixture
def pinned(tmp_path, httpserver):
    """Two real .debs served from a loopback `debian:` mirror, and the
    [builder] that pins them; returns (builder, settings, {file: bytes})."""
    made = tmp_path / "made"
    made.mkdir()
    files, debs = {}, []
    for name, version, extra in (("base", "1.0", {"Essential": "yes"}), ("hello", "2.10-3", {})):
        path = make_deb(made, name, version, **extra)
        data = path.read_bytes()
        url = f"pool/main/{name[0]}/{name}/{path.name}"
        httpserver.expect_request(f"/debian/{url}").respond_with_data(data)
        files[path.name] = data
        debs.append(lock.Deb(name, version, "all", path.name, f"debian:{url}", hashlib.sha256(data).hexdigest(),
                             len(data)))
    lb = _lock_builder(packages=("hello",), debs=tuple(debs))
    return lb, _settings(tmp_path, ONLYDOCKER_DEBIAN_MIRROR=httpserver.url_for("/debian")), files


def _drop(client, tag):
    try:
        client.images.remove(tag, force=True)
    except Exception:
        pass


def _tar_of(index: Path, key: str) -> bytes:
    """The tar of the builder cache's entry for input key `key`."""
    with open(index / f"{key}.tar.zst", "rb") as f:
        return zstandard.ZstdDecompressor().stream_reader(f).read()


def test_the_builder_is_made_offline_from_the_pinned_files_only(stand_in, pinned, docker_client, tmp_path,
                                                                httpserver):
    lb, s, files = pinned
    img = builder.ensure(docker_client, lb, s, 1686355200, tmp_path / "builder.log")
    try:
        [call] = stand_in.read_text().splitlines()
        # The set is the pin: Essential packages and every pinned one by name, from a flat copy:// repository.
        assert call.startswith("--variant=essential --mode=auto --include=base,hello ")
        assert " bookworm " in call and " deb [trusted=yes] copy://" in call and call.endswith(
            " ./ SOURCE_DATE_EPOCH=1686355200")
        assert len(httpserver.log) == 2
        assert img.packages == ["base=1.0", "hello=2.10-3"]
        index = tmp_path / "cache" / "builders"
        raw = _tar_of(index, img.input_key)
        assert hashlib.sha256(raw).hexdigest() == img.tar_sha256
        # No path of this machine in the image: its apt sources are fixed text.
        assert str(tmp_path).encode() not in raw and b"copy://" not in raw
        assert builder.SOURCES_LIST.encode() in raw
        record = json.loads((index / f"{img.input_key}.json").read_text())
        assert record["key"] == img.input_key and record["packages"] == img.packages
        assert record["tar_sha256"] == img.tar_sha256

        # The image runs, with no network, and holds the tar's files.
        spec = engine.RunSpec(image=img.tag, env={"PATH": "/bin"}, command=["cat", "/etc/apt/sources.list"])
        engine.run(docker_client, spec, output_tar=None, log_path=tmp_path / "run.log")
        assert "no package sources" in (tmp_path / "run.log").read_text()

        # Same pin: the cache answers, mmdebstrap does not run.
        assert builder.ensure(docker_client, lb, s, 1686355200, tmp_path / "builder.log") == img
        assert len(stand_in.read_text().splitlines()) == 1

        # Offline, from the warm source cache, a second bootstrap gives the same tar.
        offline = dataclasses.replace(s, offline=True)
        again = builder.ensure(docker_client, lb, offline, 1686355200, tmp_path / "builder.log", rebuild=True)
        assert again.tar_sha256 == img.tar_sha256 and len(stand_in.read_text().splitlines()) == 2
        assert len(httpserver.log) == 2
    finally:
        _drop(docker_client, img.tag)


def test_a_pinned_package_that_is_gone_names_it_and_the_ways_to_provide_it(stand_in, pinned, tmp_path,
                                                                           httpserver):
    lb, s, files = pinned
    gone = lb.debs[1]
    httpserver.clear()
    httpserver.expect_request(f"/debian/{lb.debs[0].url[len('debian:'):]}").respond_with_data(files[lb.debs[0].file])
    httpserver.expect_request(f"/debian/{gone.url[len('debian:'):]}").respond_with_data("gone", status=404)
    with pytest.raises(FetchError) as e:
        builder.ensure(None, lb, s, 1686355200, tmp_path / "builder.log")
    msg = str(e.value)
    assert "1 of the 2 pinned package(s)" in msg and f"hello 2.10-3 (all) {gone.file} sha256 {gone.sha256}" in msg
    assert "404" in msg and httpserver.url_for("/debian/" + gone.url[len("debian:"):]) in msg
    for way in (str(s.cache_dir / "sources" / "sha256"), "ONLYDOCKER_DEBIAN_MIRROR", "ONLYDOCKER_MIRRORS",
                str(s.downloads_dir), "doit lock --builder"):
        assert way in msg, way
    assert not stand_in.exists(), "mmdebstrap ran with a package missing"
    # One of the ways: the file placed in downloads/ by hand, verified like a download.
    s.downloads_dir.mkdir()
    (s.downloads_dir / gone.file).write_bytes(files[gone.file])
    files_got = builder.fetch_debs(lb, s)
    assert [f[0] for f in files_got] == [d.file for d in lb.debs]


def test_a_pinned_package_with_a_member_that_climbs_out_is_refused_before_mmdebstrap(stand_in, tmp_path,
                                                                                    httpserver):
    # The builder's .debs are untrusted like any source (and dpkg unpacks
    # them as root): every member is checked before mmdebstrap sees them.
    from onlydocker.errors import UnsafeArchive
    from tests.test_untrusted import _deb as evil_deb
    from tests.test_untrusted import _evil_tar
    data = evil_deb(_evil_tar("dot-dot", "w:xz"))
    url = "pool/main/e/evil/evil_1.0_all.deb"
    httpserver.expect_request(f"/debian/{url}").respond_with_data(data)
    deb = lock.Deb("evil", "1.0", "all", "evil_1.0_all.deb", f"debian:{url}", hashlib.sha256(data).hexdigest(),
                   len(data))
    lb = _lock_builder(packages=("evil",), debs=(deb,))
    s = _settings(tmp_path, ONLYDOCKER_DEBIAN_MIRROR=httpserver.url_for("/debian"))
    with pytest.raises(UnsafeArchive) as e:
        builder.ensure(None, lb, s, 1686355200, tmp_path / "builder.log")
    assert "evil_1.0_all.deb" in str(e.value) and "climbs out with '..'" in str(e.value)
    assert not stand_in.exists(), "mmdebstrap ran with an unsafe package"


def test_a_bootstrap_that_installs_another_set_than_the_pin_is_refused(stand_in, pinned, tmp_path, monkeypatch):
    lb, s, _ = pinned
    monkeypatch.setenv("STAND_IN_DROP", "hello")
    with pytest.raises(BuildError, match=r"another set than the lock pins \(hello: 2.10-3 -> \(none\)\)"):
        builder.ensure(None, lb, s, 1686355200, tmp_path / "builder.log")
    assert not list((tmp_path / "cache" / "builders").glob("*.tar.zst"))


def test_a_tampered_cache_entry_is_refused_on_import(stand_in, pinned, docker_client, tmp_path):
    lb, s, _ = pinned
    lb = dataclasses.replace(lb, packages=("tampered",))
    img = builder.ensure(docker_client, lb, s, 1686355200, tmp_path / "builder.log")
    _drop(docker_client, img.tag)
    entry = tmp_path / "cache" / "builders" / f"{img.input_key}.tar.zst"
    raw = _tar_of(entry.parent, img.input_key)
    entry.write_bytes(zstandard.ZstdCompressor().compress(raw.replace(b"Package: hello", b"Package: jello")))
    with pytest.raises(BuildError, match="not " + img.tar_sha256):
        builder.ensure(docker_client, lb, s, 1686355200, tmp_path / "builder.log")
    assert not dockerclient.image_exists(docker_client, img.tag)


def test_resolve_pins_what_was_installed_with_the_index_s_hashes(stand_in, tmp_path, monkeypatch):
    index = tmp_path / "Packages"
    index.write_text("".join(
        f"Package: {n}\nVersion: {v}\nArchitecture: all\nFilename: pool/main/{n[0]}/{n}/{n}_{v}_all.deb\n"
        f"Size: {len(n) * 100}\nSHA256: {c * 64}\n\n" for n, v, c in
        (("hello", "1.0", "a"), ("hello", "1.1", "b"), ("make", "4.3", "c"), ("unused", "9", "d"))))
    monkeypatch.setenv("STAND_IN_INDEX", str(index))
    monkeypatch.setenv("STAND_IN_PACKAGES", "make=4.3 hello=1.1")
    s = _settings(tmp_path, ONLYDOCKER_DEBIAN_MIRROR="http://127.0.0.1:9/debian")
    work = tmp_path / "work"
    work.mkdir()
    debs = builder.resolve(_lock_builder(debs=()), s, tmp_path / "resolve.log", work)
    assert debs == [lock.Deb("hello", "1.1", "all", "hello_1.1_all.deb", "debian:pool/main/h/hello/hello_1.1_all.deb",
                             "b" * 64, 500),
                    lock.Deb("make", "4.3", "all", "make_4.3_all.deb", "debian:pool/main/m/make/make_4.3_all.deb",
                             "c" * 64, 400)]
    [call] = stand_in.read_text().splitlines()
    assert call.startswith("--variant=minbase --mode=auto --include=hello,make ")
    assert " bookworm /dev/null http://127.0.0.1:9/debian SOURCE_DATE_EPOCH=-" in call
@pytest.mark.slow
@pytest.mark.budget("builder: bootstrap and resolve")
def test_two_real_bootstraps_from_the_pin_give_the_same_tar(docker_client, tmp_path):
    """The bookworm lane's builder from its pinned .debs, twice. The first is
    the run's own (made by whichever build needed it first, its .debs fetched
    into the run's cache; made here when no build did). The second is made
    here, offline (ONLYDOCKER_OFFLINE=1), in a cache of its own that holds
    nothing but those .debs: another folder, another time, no network."""
    if not Path("/usr/bin/mmdebstrap").exists():
        pytest.skip("mmdebstrap is not installed")
    lk = lock.load(ROOT / "locks" / "bookworm.lock")
    s = config.load()
    first = builder.ensure(docker_client, lk.builder, s, lk.lane.source_date_epoch, tmp_path / "one.log")
    own = tmp_path / "cache"
    (own / "sources" / "sha256").mkdir(parents=True)
    for deb in lk.builder.debs:
        cached = s.cache_dir / "sources" / "sha256" / deb.sha256
        try:
            os.link(cached, own / "sources" / "sha256" / deb.sha256)
        except OSError:
            shutil.copy2(cached, own / "sources" / "sha256" / deb.sha256)
    offline = dataclasses.replace(s, cache_dir=own, offline=True, stage_cache_dir=None)
    again = builder.ensure(docker_client, lk.builder, offline, lk.lane.source_date_epoch, tmp_path / "two.log")
    assert (own / "builders" / f"{again.input_key}.tar.zst").is_file(), "the second was not bootstrapped here"
    assert again.tar_sha256 == first.tar_sha256, "two bootstraps of the same pin differ"
    assert first.packages == sorted(f"{d.name}={d.version}" for d in lk.builder.debs)
    raw = _tar_of(own / "builders", again.input_key)
    assert str(tmp_path).encode() not in raw and builder.SOURCES_LIST.encode() in raw
    spec = engine.RunSpec(image=first.tag, env={"PATH": "/usr/bin:/bin"}, command=["gcc", "--version"])
    engine.run(docker_client, spec, output_tar=None, log_path=tmp_path / "gcc.log")
    assert "gcc" in (tmp_path / "gcc.log").read_text()


@pytest.mark.slow
@pytest.mark.budget("builder: bootstrap and resolve")
def test_resolving_for_real_gives_the_archive_s_own_hashes(tmp_path):
    """The real mmdebstrap, online against the configured mirror (about 80 s):
    what it pins for a version the lock already pins is the lock's entry (the
    archive never gives one version two files); the archive may have moved on
    since the lock was written, so other versions are only checked for shape."""
    if not Path("/usr/bin/mmdebstrap").exists():
        pytest.skip("mmdebstrap is not installed")
    lk = lock.load(ROOT / "locks" / "bookworm.lock")
    s = dataclasses.replace(config.load(), cache_dir=tmp_path / "cache")
    work = tmp_path / "work"
    work.mkdir()
    debs = builder.resolve(lk.builder, s, tmp_path / "resolve.log", work)
    names = {d.name for d in debs}
    assert {"gcc-12", "dpkg", "apt", "libc6"} <= names and set(lk.builder.packages) <= names
    pinned = {(d.name, d.version, d.architecture): d for d in lk.builder.debs}
    same = [d for d in debs if (d.name, d.version, d.architecture) in pinned]
    assert same, "no version of the lock is still in the archive: refresh the lock"
    for d in same:
        assert d == pinned[(d.name, d.version, d.architecture)]
    for d in debs:
        assert d.url.startswith("debian:pool/") and d.url.endswith("/" + d.file) and len(d.sha256) == 64
