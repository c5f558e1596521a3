"""`doit verify` and `doit lock`, run for real as doit commands on a tmp
lock and a tmp cache. (The content checker's doit runs: test_hashing.py.)"""
from __future__ import annotations

import gzip
import hashlib
import io
import tarfile

from onlydocker.inputs import lock
from tests import workspace as wsmod


def _tarball() -> bytes:
    """A real .tar.gz (sources are checked as archives once fetched)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        data = b"source bytes\n" * 1000
        info = tarfile.TarInfo("src-1/README")
        info.size, info.mtime = len(data), 1600000000
        tf.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue(), mtime=0)


BODY = _tarball()


def setup_lane(tmp_path, httpserver, pinned: bool):
    httpserver.expect_request("/src.tar.gz").respond_with_data(BODY)
    ws = wsmod.make(tmp_path / "ws")
    ws.env.update({"ONLYDOCKER_CACHE": str(tmp_path / "cache"), "ONLYDOCKER_CONFIG": "/nonexistent",
                   "ONLYDOCKER_DOWNLOADS": str(tmp_path / "dl")})
    (ws.root / "t.lock").write_text(wsmod.builder_tables() + wsmod.source_entry(
        "src", "src.tar.gz", httpserver.url_for("/src.tar.gz"), BODY if pinned else None))
    return ws


def test_lock_pins_an_unpinned_source_and_keeps_the_comments(tmp_path, httpserver):
    ws = setup_lane(tmp_path, httpserver, pinned=False)
    r = ws.doit("lock", "--lock", "t.lock")
    assert "pinned src" in r.stdout
    text = (ws.root / "t.lock").read_text()
    assert "# no hash known yet" in text
    s = lock.load(ws.root / "t.lock").source("src")
    assert s.sha256 == hashlib.sha256(BODY).hexdigest() and s.size == len(BODY)


def test_verify_says_missing_ok_and_corrupt_and_exits_nonzero_on_a_problem(tmp_path, httpserver):
    ws = setup_lane(tmp_path, httpserver, pinned=True)
    missing = ws.doit("verify", "--lock", "t.lock", check=False)
    assert missing.returncode != 0 and any(l.split()[:2] == ["MISSING", "src"] for l in missing.stdout.splitlines())
    ws.doit("lock=t.lock", "build:fetch:src")
    ok = ws.doit("verify", "--lock", "t.lock", check=False)
    assert any(l.split()[:2] == ["OK", "src"] for l in ok.stdout.splitlines())
    cached = tmp_path / "cache" / "sources" / "sha256" / hashlib.sha256(BODY).hexdigest()
    cached.write_bytes(b"bit rot" + BODY[7:])
    bad = ws.doit("verify", "--lock", "t.lock", check=False)
    line = next(l for l in bad.stdout.splitlines() if "src" in l)
    assert bad.returncode != 0 and line.split()[0] == "CORRUPT"
    assert hashlib.sha256(BODY).hexdigest() in line and hashlib.sha256(b"bit rot" + BODY[7:]).hexdigest() in line


def test_commands_name_the_lane_as_builds_do(tmp_path, httpserver):
    # `lock=PATH`, as users type it for a build, works for the commands too.
    ws = setup_lane(tmp_path, httpserver, pinned=True)
    ws.doit("lock=t.lock", "build:fetch:src")
    by_option = ws.doit("verify", "--lock", "t.lock", check=False)
    by_word = ws.doit("verify", "lock=t.lock", check=False)
    assert by_word.stdout == by_option.stdout and "t.lock" in by_word.stdout
    assert any(l.split()[:2] == ["OK", "src"] for l in by_word.stdout.splitlines())


def test_a_command_on_a_project_that_is_not_there_says_so(tmp_path, httpserver):
    # -f/-d name the project; a name that is wrong is an error, never another project.
    ws = setup_lane(tmp_path, httpserver, pinned=True)
    for args in (("-f", str(tmp_path / "nowhere" / "dodo.py")), ("-d", str(tmp_path / "nowhere"))):
        r = ws.doit("verify", *args, "--lock", "t.lock", check=False)
        assert r.returncode != 0 and "Traceback" not in r.stderr
        assert f"error: no {tmp_path / 'nowhere' / 'dodo.py'}: -f names the project's dodo.py" in r.stderr, r.stderr


def test_a_malformed_lock_stops_everything_before_it_runs(tmp_path, httpserver):
    ws = setup_lane(tmp_path, httpserver, pinned=True)
    (ws.root / "t.lock").write_text((ws.root / "t.lock").read_text().replace('size = ', 'size = -'))
    r = ws.doit("lock=t.lock", check=False)
    assert r.returncode != 0 and "t.lock" in r.stderr and "'size'" in r.stderr
    assert "Traceback" not in r.stdout + r.stderr and r.stderr.count("t.lock") == 1, r.stderr
    assert len(httpserver.log) == 0


def test_lock_checks_a_legacy_sha1_and_leaves_the_lock_alone_when_it_fails(tmp_path, httpserver):
    ws = setup_lane(tmp_path, httpserver, pinned=False)
    path = ws.root / "t.lock"
    path.write_text(path.read_text().replace("# no hash known yet", 'sha1 = "' + "0" * 40 + '"\n#'))
    before = path.read_text()
    r = ws.doit("lock", "--lock", "t.lock", check=False)
    assert r.returncode != 0 and "not pinned: src" in r.stderr and "sha1 mismatch" in r.stderr
    assert path.read_text() == before
    path.write_text(before.replace("0" * 40, hashlib.sha1(BODY).hexdigest()))
    r = ws.doit("lock", "--lock", "t.lock")
    assert "pinned src" in r.stdout and "checked against sha1" in r.stdout
    assert lock.load(path).source("src").pinned


def test_lock_offline_with_nothing_cached_says_so(tmp_path, httpserver):
    ws = setup_lane(tmp_path, httpserver, pinned=False)
    ws.env["ONLYDOCKER_OFFLINE"] = "1"
    r = ws.doit("lock", "--lock", "t.lock", check=False)
    assert r.returncode != 0 and "ONLYDOCKER_OFFLINE" in r.stderr and "src.tar.gz" in r.stderr
    assert len(httpserver.log) == 0


def test_verify_takes_the_lane_from_the_environment_and_flags_unpinned_sources(tmp_path, httpserver):
    ws = setup_lane(tmp_path, httpserver, pinned=False)
    ws.env["ONLYDOCKER_LOCK"] = "t.lock"
    r = ws.doit("verify", check=False)
    assert r.returncode != 0 and "t.lock" in r.stdout
    assert any(l.split()[:2] == ["UNPINNED", "src"] for l in r.stdout.splitlines())


def test_verify_sources_returns_one_status_per_source(tmp_path, httpserver):
    from onlydocker import config
    from onlydocker.cli.commands import verify_sources
    from onlydocker.inputs.fetch import Fetcher
    ws = setup_lane(tmp_path, httpserver, pinned=True)
    settings = config.load(lock=ws.root / "t.lock", env=ws.env)
    lk = lock.load(settings.lock_path)
    assert [s.state for s in verify_sources(lk, settings)] == ["MISSING"]
    Fetcher(settings).fetch(lk.source("src"))
    [status] = verify_sources(lk, settings)
    assert status.state == "OK" and str(status) == "OK src src.tar.gz"


def builder_lane(tmp_path, debs: str) -> wsmod.Workspace:
    """A lane whose [builder] has its own pin (`debs`), and no sources."""
    ws = wsmod.make(tmp_path / "ws")
    ws.env.update({"ONLYDOCKER_CACHE": str(tmp_path / "cache"), "ONLYDOCKER_CONFIG": "/nonexistent",
                   "ONLYDOCKER_DOWNLOADS": str(tmp_path / "dl")})
    (ws.root / "t.lock").write_text(f"""# the lane's own comment
[lane]
name = "t"
source_date_epoch = 1686355200
initrd_compression = "zstd"

[builder]
suite = "bookworm"
mirror = "debian:"
variant = "minbase"
packages = ["hello"]   # what the builder needs
# pinned by `doit lock --builder`
debs = {debs}
""" + wsmod.source_entry("src", "src.tar.gz", "debian:pool/main/s/src/src.tar.gz", BODY))
    return ws


def test_lock_builder_pins_the_installed_set_and_then_names_what_changed(tmp_path):
    from tests.test_builder import install_stand_in
    index = tmp_path / "Packages"
    index.write_text("".join(
        f"Package: {n}\nVersion: {v}\nArchitecture: all\nFilename: pool/main/{n[0]}/{n}/{n}_{v}_all.deb\n"
        f"Size: 100\nSHA256: {c * 64}\n\n" for n, v, c in
        (("hello", "1.0", "a"), ("hello", "1.1", "b"), ("libc6", "2.36", "c"), ("gone", "1", "d"))))
    ws = builder_lane(tmp_path, "[]")
    ws.env.update({"PATH": install_stand_in(tmp_path / "bin"), "STAND_IN_LOG": str(tmp_path / "calls"),
                   "STAND_IN_INDEX": str(index), "STAND_IN_PACKAGES": "hello=1.0 libc6=2.36 gone=1",
                   "ONLYDOCKER_DEBIAN_MIRROR": "http://127.0.0.1:9/debian"})
    path = ws.root / "t.lock"
    before = path.read_text()
    r = ws.doit("lock", "--builder", "--lock", "t.lock")
    assert "pinned 3 packages" in r.stdout and "none pinned before" in r.stdout
    pinned = lock.load(path).builder.debs
    assert [(d.name, d.version, d.sha256) for d in pinned] == [
        ("gone", "1", "d" * 64), ("hello", "1.0", "a" * 64), ("libc6", "2.36", "c" * 64)]
    # Only the debs changed: every other line (comments too) is as it was.
    keep = [line for line in before.splitlines() if not line.startswith("debs = ")]
    assert [line for line in path.read_text().splitlines()
            if not line.startswith(("debs = ", "    {name = ", "]"))] == keep

    # The archive moves on: the command says what changed, package by package.
    ws.env["STAND_IN_PACKAGES"] = "hello=1.1 libc6=2.36"
    r = ws.doit("lock", "--builder", "--lock", "t.lock")
    assert "2 change(s) against the lock" in r.stdout
    assert "  gone: 1 -> (none)" in r.stdout and "  hello: 1.0 -> 1.1" in r.stdout and "libc6" not in r.stdout
    assert [(d.name, d.version) for d in lock.load(path).builder.debs] == [("hello", "1.1"), ("libc6", "2.36")]
    unchanged = path.read_text()
    r = ws.doit("lock", "--builder", "--lock", "t.lock")
    assert "2 packages, unchanged" in r.stdout and path.read_text() == unchanged

    # Offline it refuses at once; a failing resolution leaves the lock alone.
    ws.env["ONLYDOCKER_OFFLINE"] = "1"
    r = ws.doit("lock", "--builder", "--lock", "t.lock", check=False)
    assert r.returncode != 0 and "ONLYDOCKER_OFFLINE" in r.stderr
    del ws.env["ONLYDOCKER_OFFLINE"]
    ws.env["STAND_IN_PACKAGES"] = "hello=9.9"
    r = ws.doit("lock", "--builder", "--lock", "t.lock", check=False)
    assert r.returncode != 0 and "hello=9.9 (all)" in r.stderr and "Traceback" not in r.stderr
    assert path.read_text() == unchanged


def test_verify_audits_the_builder_packages(tmp_path, httpserver):
    from onlydocker import config
    from onlydocker.inputs.fetch import Fetcher
    debs_data = {"hello_1.0_all.deb": b"hello deb bytes\n" * 100, "libc6_2.36_all.deb": b"libc deb bytes\n" * 100}
    entries = []
    for file, data in debs_data.items():
        name, version = file.split("_")[:2]
        url = f"pool/main/{name[0]}/{name}/{file}"
        httpserver.expect_request(f"/debian/{url}").respond_with_data(data)
        entries.append(f'{{name = "{name}", version = "{version}", architecture = "all", file = "{file}", '
                       f'url = "debian:{url}", sha256 = "{hashlib.sha256(data).hexdigest()}", size = {len(data)}}}')
    ws = builder_lane(tmp_path, "[\n    " + ",\n    ".join(entries) + ",\n]")
    ws.env["ONLYDOCKER_DEBIAN_MIRROR"] = httpserver.url_for("/debian")

    def states():
        r = ws.doit("verify", "--lock", "t.lock", check=False)
        section = r.stdout.split("builder packages ([builder] debs, 2):\n", 1)[1].split("artifacts in")[0]
        return r.returncode, [line.split()[:3] for line in section.splitlines()], section

    code, lines, _ = states()
    assert code != 0 and lines == [["MISSING", "hello:all", "hello_1.0_all.deb"],
                                   ["MISSING", "libc6:all", "libc6_2.36_all.deb"]]
    settings = config.load(lock=ws.root / "t.lock", env=ws.env)
    for d in lock.load(ws.root / "t.lock").builder.debs:
        Fetcher(settings).fetch(d.source())
    _, lines, _ = states()
    assert [line[0] for line in lines] == ["OK", "OK"]
    bad = tmp_path / "cache" / "sources" / "sha256" / hashlib.sha256(debs_data["libc6_2.36_all.deb"]).hexdigest()
    bad.write_bytes(b"bit rot" + debs_data["libc6_2.36_all.deb"][7:])
    code, lines, section = states()
    assert code != 0 and [line[0] for line in lines] == ["OK", "CORRUPT"]
    assert hashlib.sha256(bad.read_bytes()).hexdigest() in section

    unpinned = builder_lane(tmp_path / "u", "[]")
    r = unpinned.doit("verify", "--lock", "t.lock", check=False)
    assert r.returncode != 0 and "UNPINNED      builder (bookworm)  [builder] debs = []" in r.stdout
    assert "doit lock --builder" in r.stdout


def test_an_unpinned_builder_loads_and_its_build_says_what_is_missing(tmp_path):
    ws = builder_lane(tmp_path, "[]")
    ws.env["ONLYDOCKER_DEBIAN_MIRROR"] = "http://127.0.0.1:9/debian"
    assert "build:builder" in ws.doit("list", "--all", "lock=t.lock").stdout
    r = ws.doit("lock=t.lock", "build:builder", check=False)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "Traceback" not in out
    assert "builder image (bookworm): the lock's [builder] pins no packages yet (debs = [])" in out
    assert "doit lock --builder" in out and "http://127.0.0.1:9/debian" in out
    assert not (tmp_path / "cache" / "builders").exists()
