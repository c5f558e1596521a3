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
from onlydocker.inputs.fetch import Fetcher, resolve_url
from onlydocker.inputs.lock import Source

BODY = bytes(range(256)) * 4096          # 1 MiB
SHA = hashlib.sha256(BODY).hexdigest()


SIZE = len(BODY)


def source(urls, sha=SHA, size=SIZE, **kw) -> Source:
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
    """Sends half the body then breaks the connection; answers a Range
    request after that. mode: "reset" (connection reset), "stall" (stops
    sending: the client's read timeout), "ignore-range" (answers the Range
    request with the whole body and 200, as some servers do)."""

    def __init__(self, mode: str = "reset"):
        self.mode = mode
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
            head = conn.recv(65536).decode()
            self.requests.append(head)
            # one thread per connection: a stalled one must not block the next
            threading.Thread(target=self.answer, args=(conn, head, len(self.requests)), daemon=True).start()

    def answer(self, conn, head, n):
        with conn:
            try:
                self._answer(conn, head, n)
            except OSError:
                pass            # the client gave up on this one

    def _answer(self, conn, head, n):
        rng = [l for l in head.split("\r\n") if l.lower().startswith("range:")]
        if not rng or self.mode == "ignore-range" and n > 1:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY))
            if n > 1:
                conn.sendall(BODY)
                return
            conn.sendall(BODY[: len(BODY) // 2])
            time.sleep(0.3 if self.mode != "stall" else 1.5)  # let the client read it first
            if self.mode != "stall":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            return              # closing with linger 0: a reset
        start = int(rng[0].split("=")[1].split("-")[0])
        part = BODY[start:]
        conn.sendall(b"HTTP/1.1 206 Partial Content\r\nContent-Length: %d\r\n"
                     b"Content-Range: bytes %d-%d/%d\r\n\r\n" % (len(part), start, len(BODY) - 1, len(BODY)))
        conn.sendall(part)


def test_a_reset_connection_is_resumed_with_range(settings, monkeypatch):
    monkeypatch.setattr("onlydocker.inputs.fetch.BACKOFF", 0.01)
    server = ResettingServer()
    path = Fetcher(settings).fetch(source([server.url]))
    assert path.read_bytes() == BODY
    assert len(server.requests) == 2 and f"range: bytes={len(BODY) // 2}-" in server.requests[1].lower()


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
    monkeypatch.setattr("onlydocker.inputs.fetch.BACKOFF", 0.01)
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


def test_a_stalled_connection_times_out_and_is_resumed(settings, monkeypatch):
    monkeypatch.setattr("onlydocker.inputs.fetch.BACKOFF", 0.01)
    monkeypatch.setattr("onlydocker.inputs.fetch.READ_TIMEOUT", 0.5)
    server = ResettingServer("stall")
    assert Fetcher(settings).fetch(source([server.url])).read_bytes() == BODY
    assert f"range: bytes={len(BODY) // 2}-" in server.requests[1].lower()


def test_a_server_that_ignores_range_is_read_from_the_start(settings, monkeypatch):
    monkeypatch.setattr("onlydocker.inputs.fetch.BACKOFF", 0.01)
    server = ResettingServer("ignore-range")
    path = Fetcher(settings).fetch(source([server.url]))
    assert path.read_bytes() == BODY and len(server.requests) == 2   # 200, not 206: no splice
    assert not list((settings.cache_dir / "sources" / "partial").glob("*.part"))


def test_a_wrong_content_range_is_not_spliced(settings, monkeypatch, httpserver):
    """A 206 for another range than asked: start over rather than splice."""
    monkeypatch.setattr("onlydocker.inputs.fetch.BACKOFF", 0.01)
    url = httpserver.url_for("/blob")
    f = Fetcher(settings)
    part = f._partial(source([url]))
    part.parent.mkdir(parents=True)
    part.write_bytes(BODY[:1000])
    part.with_name(part.name + ".url").write_text(url)
    httpserver.expect_ordered_request("/blob", headers={"Range": "bytes=1000-"}).respond_with_data(
        BODY[:5000], status=206, headers={"Content-Range": f"bytes 0-4999/{len(BODY)}"})
    httpserver.expect_ordered_request("/blob").respond_with_data(BODY)
    assert f.fetch(source([url])).read_bytes() == BODY


def test_every_attempt_failing_gives_up_naming_the_url(httpserver, settings, monkeypatch):
    monkeypatch.setattr("onlydocker.inputs.fetch.BACKOFF", 0.01)
    httpserver.expect_request("/busy").respond_with_data("busy", status=503)
    with pytest.raises(FetchError, match=r"/busy: gave up after 4 attempts: HTTP 503"):
        Fetcher(settings).fetch(source([httpserver.url_for("/busy")]))
    assert len(httpserver.log) == 4


def test_asks_for_the_bytes_as_stored(httpserver, settings):
    """Accept-Encoding: identity, and no decoding: a .tar.gz is hashed as the
    server stores it, never as a transfer-decoded variant."""
    httpserver.expect_request("/blob", headers={"Accept-Encoding": "identity"}).respond_with_data(BODY)
    assert Fetcher(settings).fetch(source([httpserver.url_for("/blob")])).read_bytes() == BODY


def test_a_sha256_without_size_is_not_pinned(settings):
    with pytest.raises(UnpinnedSource, match="no size"):
        Fetcher(settings).fetch(source(["https://example.invalid/x"], size=None))


def test_file_urls_are_verified_too(tmp_path, settings):
    (tmp_path / "local").write_bytes(BODY)
    assert Fetcher(settings).fetch(source([(tmp_path / "local").as_uri()])).read_bytes() == BODY
    (tmp_path / "bad").write_bytes(BODY[:-1] + b"!")
    other = Source(name="b2", group="b2", version="1", file="b2", urls=((tmp_path / "bad").as_uri(),),
                   sha256=hashlib.sha256(b"nope").hexdigest(), size=len(BODY), license="MIT")
    with pytest.raises(FetchError, match="sha256 mismatch"):
        Fetcher(settings).fetch(other)


def test_a_bad_hand_placed_file_leaves_the_downloads_folder(httpserver, settings):
    settings.downloads_dir.mkdir(parents=True)
    (settings.downloads_dir / "blob.tar.gz").write_bytes(b"short")
    with pytest.raises(HashMismatch, match=f"size mismatch: expected {len(BODY)}, got 5"):
        Fetcher(settings).fetch(source([httpserver.url_for("/never")]))
    assert not (settings.downloads_dir / "blob.tar.gz").exists()      # cannot fail the next run again
    assert [p.read_bytes() for p in rejected(settings)] == [b"short"]
    httpserver.expect_request("/blob").respond_with_data(BODY)      # the next run downloads
    assert Fetcher(settings).fetch(source([httpserver.url_for("/blob")])).read_bytes() == BODY
    assert len(httpserver.log) == 1


def test_offline_uses_a_hand_placed_file(tmp_path):
    s = config.load(env={"ONLYDOCKER_CACHE": str(tmp_path / "c"), "ONLYDOCKER_OFFLINE": "1",
                         "ONLYDOCKER_CONFIG": "/nonexistent", "ONLYDOCKER_DOWNLOADS": str(tmp_path / "d")})
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "blob.tar.gz").write_bytes(BODY)
    assert Fetcher(s).fetch(source(["https://example.invalid/blob"])).read_bytes() == BODY
    assert (tmp_path / "d" / "blob.tar.gz").exists()                  # a good one stays where it was put


def test_pinning_checks_the_legacy_sha1_and_reports_sha256_and_size(httpserver, settings):
    httpserver.expect_request("/blob").respond_with_data(BODY)
    legacy = source([httpserver.url_for("/blob")], sha=None, size=None, sha1=hashlib.sha1(BODY).hexdigest())
    path, sha, size = Fetcher(settings).fetch_for_pinning(legacy)
    assert (sha, size) == (SHA, len(BODY)) and path.read_bytes() == BODY and path.name == SHA
    wrong = source([httpserver.url_for("/blob")], sha=None, size=None, sha1="0" * 40)
    for p in cached(settings):
        p.unlink()
    with pytest.raises(FetchError, match="sha1 mismatch"):
        Fetcher(settings).fetch_for_pinning(wrong)
    assert cached(settings) == []


def _fetch_in_child(settings, url, q):
    try:
        q.put(str(Fetcher(settings).fetch(source([url]))))
    except Exception as e:  # pragma: no cover - reported to the parent
        q.put(f"error: {e}")


def test_two_processes_fetching_at_once_download_once(httpserver, settings):
    import multiprocessing

    def slow(request):
        time.sleep(0.5)
        return Response(BODY)

    httpserver.expect_request("/blob").respond_with_handler(slow)
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_fetch_in_child, args=(settings, httpserver.url_for("/blob"), q)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [q.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert results == [str(settings.cache_dir / "sources" / "sha256" / SHA)] * 2
    assert len(httpserver.log) == 1
    assert Path(results[0]).read_bytes() == BODY


def test_a_long_download_in_a_log_says_every_so_often_how_far_it_got(settings, monkeypatch, httpserver, capsys):
    import functools
    import re

    from onlydocker.progress import Heartbeat
    monkeypatch.setattr("onlydocker.inputs.fetch.PROGRESS_MIN", 1)
    monkeypatch.setattr("onlydocker.inputs.fetch.Heartbeat", functools.partial(Heartbeat, every=0.1))
    quarter = len(BODY) // 4

    def trickle(request):
        def body():
            for i in range(0, len(BODY), quarter):
                yield BODY[i:i + quarter]
                time.sleep(0.3)
        return Response(body(), headers={"Content-Length": str(len(BODY))})
    httpserver.expect_request("/blob").respond_with_handler(trickle)
    assert Fetcher(settings).fetch(source([httpserver.url_for("/blob")])).read_bytes() == BODY
    err = capsys.readouterr().err      # not a terminal here: lines, not a bar
    progress = re.findall(r"^fetch blob\S* \[\s*[\d.]+ s\] ([\d.]+) of 1\.0 MB$", err, re.M)
    assert len(progress) >= 2, err
    assert [float(p) for p in progress] == sorted(float(p) for p in progress) and float(progress[0]) < 1.0
    assert re.search(rf"^fetch blob\S*: {len(BODY)} bytes in [\d.]+ s$", err, re.M), err
