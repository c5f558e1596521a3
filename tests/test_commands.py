"""`doit verify` and `doit lock`, run for real as doit commands on a tmp
lock and a tmp cache. (The content checker's doit runs: test_hashing.py.)"""
from __future__ import annotations

import gzip
import hashlib
import io
import tarfile

from onlydocker import lock
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
    pin = f'sha256 = "{hashlib.sha256(BODY).hexdigest()}"\nsize = {len(BODY)}\n' if pinned else \
        "# no hash known yet: `doit lock` pins it\n"
    (ws.root / "t.lock").write_text(wsmod.builder_tables() + f"""
[[source]]
name = "src"
version = "1"
file = "src.tar.gz"
urls = ["{httpserver.url_for('/src.tar.gz')}"]
{pin}license = "MIT"
""")
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


def test_a_malformed_lock_stops_everything_before_it_runs(tmp_path, httpserver):
    ws = setup_lane(tmp_path, httpserver, pinned=True)
    (ws.root / "t.lock").write_text((ws.root / "t.lock").read_text().replace('size = ', 'size = -'))
    r = ws.doit("lock=t.lock", check=False)
    assert r.returncode != 0 and "t.lock" in r.stderr and "'size'" in r.stderr
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
    from onlydocker.commands import verify_sources
    from onlydocker.fetch import Fetcher
    ws = setup_lane(tmp_path, httpserver, pinned=True)
    settings = config.load(lock=ws.root / "t.lock", env=ws.env)
    lk = lock.load(settings.lock_path)
    assert [s.state for s in verify_sources(lk, settings)] == ["MISSING"]
    Fetcher(settings).fetch(lk.source("src"))
    [status] = verify_sources(lk, settings)
    assert status.state == "OK" and str(status) == "OK src src.tar.gz"
