"""Fetching against a real HTTP server on loopback: no unverified byte ever
reaches the cache, and every failure says which URL and why."""
from __future__ import annotations

import hashlib
import socket
import threading
import time
from pathlib import Path

import pytest
from werkzeug import Response

from onlydocker import config
from onlydocker.errors import FetchError, HashMismatch, UnpinnedSource
from onlydocker.fetch import Fetcher, resolve_url
from onlydocker.lock import Source

BODY = bytes(range(256)) * 4096          # 1 MiB
SHA = hashlib.sha256(BODY).hexdigest()


def source(urls, sha=SHA, size=len(BODY), **kw) -> Source:
    return Source(name="blob", group="blob", version="1", file="blob.tar.gz", urls=tuple(urls),
                  sha256=sha, size=size, license="MIT", **kw)


@pytest.fixture
def settings(tmp_path):
    return config.load(env={"ONLYDOCKER_CACHE": str(tmp_path / "cache"),
                            "ONLYDOCKER_DOWNLOADS": str(tmp_path / "downloads"),
                            "ONLYDOCKER_CONFIG": str(tmp_path / "none.toml"),
                            "ONLYDOCKER_DEBIAN_MIRROR": "http://127.0.0.1:9/debian"})


def cached(settings) -> list[Path]:
    d = settings.cache_dir / "sources" / "sha256"
    return sorted(d.iterdir()) if d.exists() else []


def rejected(settings) -> list[Path]:
    d = settings.cache_dir / "sources" / "rejected"
    return sorted(d.iterdir()) if d.exists() else []


def test_a_good_download_lands_in_the_cache_by_hash(httpserver, settings):
    httpserver.expect_request("/blob").respond_with_data(BODY)
    path = Fetcher(settings).fetch(source([httpserver.url_for("/blob")]))
    assert path.name == SHA and path.read_bytes() == BODY


def test_wrong_hash_never_enters_the_cache_and_is_kept_aside(httpserver, settings):
    httpserver.expect_request("/blob").respond_with_data(b"x" * len(BODY))
    url = httpserver.url_for("/blob")
    with pytest.raises(FetchError) as e:
        Fetcher(settings).fetch(source([url]))
    msg = str(e.value)
    assert url in msg and SHA in msg and hashlib.sha256(b"x" * len(BODY)).hexdigest() in msg
    assert cached(settings) == []
    assert [p.read_bytes() for p in rejected(settings)] == [b"x" * len(BODY)]


def test_a_truncated_body_is_refused(httpserver, settings):
    httpserver.expect_request("/blob").respond_with_data(BODY[:1000])
    with pytest.raises(FetchError, match="size"):
        Fetcher(settings).fetch(source([httpserver.url_for("/blob")]))
    assert cached(settings) == []


def test_404_then_a_good_mirror(httpserver, settings):
    httpserver.expect_request("/gone").respond_with_data("no", status=404)
    httpserver.expect_request("/mirror/blob.tar.gz").respond_with_data(BODY)
    s = config.load(env={"ONLYDOCKER_CACHE": str(settings.cache_dir),
                         "ONLYDOCKER_CONFIG": "/nonexistent",
                         "ONLYDOCKER_MIRRORS": httpserver.url_for("/mirror")})
    assert Fetcher(s).fetch(source([httpserver.url_for("/gone")])).read_bytes() == BODY


def test_every_failing_url_is_listed_with_its_reason(httpserver, settings):
    httpserver.expect_request("/a").respond_with_data("no", status=404)
    httpserver.expect_request("/b").respond_with_data(b"y" * len(BODY))
    with pytest.raises(FetchError) as e:
        Fetcher(settings).fetch(source([httpserver.url_for("/a"), httpserver.url_for("/b")]))
    lines = str(e.value).splitlines()
    assert any("/a" in l and "404" in l for l in lines) and any("/b" in l and "mismatch" in l for l in lines)


def test_a_debian_pool_404_says_the_archive_moved_on(httpserver, tmp_path):
    httpserver.expect_request("/debian/pool/main/b/blob/blob.tar.gz").respond_with_data("no", status=404)
    s = config.load(env={"ONLYDOCKER_CACHE": str(tmp_path / "c"), "ONLYDOCKER_CONFIG": "/nonexistent",
                         "ONLYDOCKER_DEBIAN_MIRROR": httpserver.url_for("/debian")})
    assert resolve_url("debian:pool/main/b/blob/blob.tar.gz", s) == httpserver.url_for("/debian/pool/main/b/blob/blob.tar.gz")
    with pytest.raises(FetchError, match="keeps only current versions"):
        Fetcher(s).fetch(source(["debian:pool/main/b/blob/blob.tar.gz"]))


def test_a_body_larger_than_pinned_is_refused(httpserver, settings):
    httpserver.expect_request("/blob").respond_with_data(BODY + b"more")
    with pytest.raises(FetchError, match="more than the pinned size|larger than the pinned size"):
        Fetcher(settings).fetch(source([httpserver.url_for("/blob")]))
    assert cached(settings) == []


class ResettingServer:
    """Sends half the body then resets the connection; honours Range after."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(5)
        self.requests: list[str] = []
        threading.Thread(target=self.serve, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/blob"

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                head = conn.recv(65536).decode()
                self.requests.append(head)
                rng = [l for l in head.split("\r\n") if l.lower().startswith("range:")]
                if not rng:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY))
                    conn.sendall(BODY[: len(BODY) // 2])
                    time.sleep(0.3)     # let the client read it before the reset
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    continue            # closing with linger 0: a reset
                start = int(rng[0].split("=")[1].split("-")[0])
                part = BODY[start:]
                conn.sendall(b"HTTP/1.1 206 Partial Content\r\nContent-Length: %d\r\n"
                             b"Content-Range: bytes %d-%d/%d\r\n\r\n" % (len(part), start, len(BODY) - 1, len(BODY)))
                conn.sendall(part)


def test_a_reset_connection_is_resumed_with_range(settings, monkeypatch):
    monkeypatch.setattr("onlydocker.fetch.BACKOFF", 0.01)
    server = ResettingServer()
    path = Fetcher(settings).fetch(source([server.url]))
    assert path.read_bytes() == BODY
    assert len(server.requests) == 2 and "range: bytes=%d-" % (len(BODY) // 2) in server.requests[1].lower()


def test_offline_without_the_file_says_so(httpserver, tmp_path):
    s = config.load(env={"ONLYDOCKER_CACHE": str(tmp_path / "c"), "ONLYDOCKER_OFFLINE": "1",
                         "ONLYDOCKER_CONFIG": "/nonexistent", "ONLYDOCKER_DOWNLOADS": str(tmp_path / "d")})
    with pytest.raises(FetchError, match="ONLYDOCKER_OFFLINE"):
        Fetcher(s).fetch(source([httpserver.url_for("/blob")]))
    assert len(httpserver.log) == 0


def test_offline_with_the_file_cached_uses_the_cache(httpserver, tmp_path):
    httpserver.expect_request("/blob").respond_with_data(BODY)
    env = {"ONLYDOCKER_CACHE": str(tmp_path / "c"), "ONLYDOCKER_CONFIG": "/nonexistent"}
    Fetcher(config.load(env=env)).fetch(source([httpserver.url_for("/blob")]))
    httpserver.clear()
    offline = config.load(env={**env, "ONLYDOCKER_OFFLINE": "1"})
    assert Fetcher(offline).fetch(source([httpserver.url_for("/blob")])).read_bytes() == BODY
    assert len(httpserver.log) == 0


def test_a_good_hand_placed_file_is_verified_and_used(httpserver, settings):
    settings.downloads_dir.mkdir(parents=True)
    (settings.downloads_dir / "blob.tar.gz").write_bytes(BODY)
    assert Fetcher(settings).fetch(source([httpserver.url_for("/never")])).read_bytes() == BODY
    assert len(httpserver.log) == 0


def test_a_bad_hand_placed_file_is_refused_and_set_aside(httpserver, settings):
    settings.downloads_dir.mkdir(parents=True)
    (settings.downloads_dir / "blob.tar.gz").write_bytes(b"z" * len(BODY))
    with pytest.raises(HashMismatch) as e:
        Fetcher(settings).fetch(source([httpserver.url_for("/never")]))
    assert "placed by hand" in str(e.value) and SHA in str(e.value)
    assert cached(settings) == [] and len(rejected(settings)) == 1


def test_every_pinned_hash_must_match(httpserver, settings):
    httpserver.expect_request("/blob").respond_with_data(BODY)
    with pytest.raises(FetchError, match="sha1 mismatch"):
        Fetcher(settings).fetch(source([httpserver.url_for("/blob")], sha1="0" * 40))
    assert cached(settings) == []


def test_an_unpinned_source_is_refused_until_locked(settings):
    with pytest.raises(UnpinnedSource, match="doit lock"):
        Fetcher(settings).fetch(source(["https://example.invalid/x"], sha=None, size=None))


def test_a_5xx_is_retried(httpserver, settings, monkeypatch):
    monkeypatch.setattr("onlydocker.fetch.BACKOFF", 0.01)
    httpserver.expect_ordered_request("/blob").respond_with_data("busy", status=503)
    httpserver.expect_ordered_request("/blob").respond_with_data(BODY)
    assert Fetcher(settings).fetch(source([httpserver.url_for("/blob")])).read_bytes() == BODY


def test_check_reports_ok_missing_and_corrupt(httpserver, settings):
    httpserver.expect_request("/blob").respond_with_data(BODY)
    f = Fetcher(settings)
    s = source([httpserver.url_for("/blob")])
    assert f.check(s).state == "MISSING"
    path = f.fetch(s)
    assert f.check(s).state == "OK"
    path.write_bytes(b"rot" + BODY[3:])
    status = f.check(s)
    assert status.state == "CORRUPT" and SHA in str(status)
