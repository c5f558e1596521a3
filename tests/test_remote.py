"""The remote cache against a real server: nginx with WebDAV on loopback
(tests/nginx.py), speaking Bazel's HTTP cache layout (/cas/, /ac/)."""
from __future__ import annotations

import hashlib
import json
import time
import types
from pathlib import Path

import pytest

from onlydocker import config
from onlydocker.cache.remote import RemoteCache
from onlydocker.cache.store import StageStore
from onlydocker.errors import ConfigError, FetchError
from onlydocker.inputs.fetch import Fetcher
from onlydocker.inputs.lock import Source
from onlydocker.sign import generate_key, minisign_public_key
from tests.conftest import require_tool
from tests.nginx import Nginx


@pytest.fixture
def server(tmp_path):
    require_tool("nginx")
    n = Nginx(tmp_path / "nginx").start()
    yield n
    n.stop()


@pytest.fixture
def keys(tmp_path):
    """CI's key (trusted) and a stranger's (not)."""
    return generate_key(tmp_path / "keys" / "ci.key"), generate_key(tmp_path / "keys" / "stranger.key")


def _pub(key) -> str:
    return minisign_public_key(key).splitlines()[-1]


def _client(server, *, key=None, trusted=(), write=True, said=None, url=None) -> RemoteCache:
    env = server.env(write=write)
    if url:
        env["ONLYDOCKER_REMOTE_CACHE"] = url
    env["ONLYDOCKER_TRUSTED_KEYS"] = " ".join(trusted)
    settings = config._remote(env, {}, Path("/nonexistent"))
    return RemoteCache(settings, key, say=(said.append if said is not None else lambda text: None))


def _stored(tmp_path: Path, name: str, key: str, body: bytes) -> tuple[StageStore, Path, dict]:
    """A local store with one entry `key` holding `body`."""
    tar = tmp_path / f"{name}.tar"
    tar.write_bytes(body)
    return StageStore(tmp_path / name), tar, {"data": {"type": "file", "sha256": hashlib.sha256(body).hexdigest()}}


KEY = "ab" * 32


def test_a_stage_entry_shared_by_one_client_is_restored_by_another_with_the_same_bytes(tmp_path, server, keys):
    ci, _ = keys
    a, tar, files = _stored(tmp_path, "a", KEY, b"stage output " * 1000)
    a.remote = _client(server, key=ci)
    a.put(KEY, tar, files)
    # Blob first, entry last: the entry never names a blob the server lacks.
    puts = [p for m, p, s in server.requests() if m == "PUT" and s in (201, 204)]
    assert puts[0].startswith("/cas/") and puts[-1] == f"/ac/{KEY}"

    b = StageStore(tmp_path / "b", _client(server, trusted=[_pub(ci)]))
    assert b.has(KEY)
    assert b.entry(KEY).read_bytes() == a.entry(KEY).read_bytes()
    assert b.recorded_files(KEY) == files
    assert b.remote.counts["hits"] == 1


def test_the_builder_s_cache_is_the_same_store_with_its_own_kind_and_record_check(tmp_path, server, keys):
    """One store, two kinds: a builder entry shared by one client is restored
    by another under its input key; a stage store never takes it for a stage
    entry of the same key, nor a builder store a record without a tar sha256."""
    from onlydocker.builder import image as builder_image
    ci, _ = keys
    settings = types.SimpleNamespace(cache_dir=tmp_path / "a")
    a = builder_image.store(settings, _client(server, key=ci))
    tar = tmp_path / "builder.tar"
    tar.write_bytes(b"builder rootfs " * 1000)
    sha = hashlib.sha256(tar.read_bytes()).hexdigest()
    a.put(KEY, tar, tar_sha256=sha, packages=["base=1"])
    assert a.root == tmp_path / "a" / "builders" and a.record(KEY)["tar_sha256"] == sha
    assert [p for m, p, s in server.requests() if m == "PUT" and s in (201, 204)][-1] == f"/ac/{KEY}"

    said: list[str] = []
    as_stage = StageStore(tmp_path / "s", _client(server, trusted=[_pub(ci)], said=said))
    assert not as_stage.has(KEY) and not as_stage.entry(KEY).exists()
    assert any("signed for another entry ('builder'" in line for line in said), said

    b = builder_image.store(types.SimpleNamespace(cache_dir=tmp_path / "b"), _client(server, trusted=[_pub(ci)]))
    assert b.remote_record(KEY)["tar_sha256"] == sha and b.record(KEY) is None     # known, not fetched yet
    assert b.has(KEY) and b.record(KEY)["packages"] == ["base=1"]
    assert b.entry(KEY).read_bytes() == a.entry(KEY).read_bytes()

    # A record read back without what a builder entry needs is no record.
    b._record(KEY).write_text(json.dumps({"key": KEY, "packages": []}))
    assert b.record(KEY) is None


def test_an_entry_signed_by_an_untrusted_key_is_ignored_and_said(tmp_path, server, keys):
    ci, stranger = keys
    a, tar, files = _stored(tmp_path, "a", KEY, b"the stranger's bytes")
    a.remote = _client(server, key=stranger)
    a.put(KEY, tar, files)
    said = []
    b = StageStore(tmp_path / "b", _client(server, trusted=[_pub(ci)], said=said))
    assert not b.has(KEY)
    assert not b.entry(KEY).exists()
    assert any(f"/ac/{KEY}" in s and "no valid signature by a trusted key" in s and stranger.keyid in s
               for s in said), said


def test_a_tampered_entry_or_one_moved_to_another_key_is_ignored(tmp_path, server, keys):
    ci, _ = keys
    a, tar, files = _stored(tmp_path, "a", KEY, b"good bytes")
    a.remote = _client(server, key=ci)
    a.put(KEY, tar, files)
    envelope = json.loads((server.data / "ac" / KEY).read_bytes())
    other = "cd" * 32
    # Moved: a valid signature, but for another key.
    (server.data / "ac" / other).write_bytes(json.dumps(envelope).encode())
    # Tampered: the payload names other bytes; the signature no longer verifies.
    import base64
    payload = json.loads(base64.b64decode(envelope["payload"]))
    payload["blob"]["sha256"] = "ee" * 32
    envelope["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    (server.data / "ac" / KEY).write_bytes(json.dumps(envelope).encode())
    said = []
    b = StageStore(tmp_path / "b", _client(server, trusted=[_pub(ci)], said=said))
    assert not b.has(KEY) and not b.has(other)
    assert any("no valid signature" in s for s in said), said
    assert any("signed for another entry" in s for s in said), said


def test_a_corrupted_blob_is_discarded_with_both_hashes(tmp_path, server, keys):
    ci, _ = keys
    a, tar, files = _stored(tmp_path, "a", KEY, b"good bytes " * 100)
    a.remote = _client(server, key=ci)
    a.put(KEY, tar, files)
    blob = next((server.data / "cas").iterdir())
    blob.write_bytes(b"evil" + blob.read_bytes()[4:])     # same size, other bytes
    said = []
    b = StageStore(tmp_path / "b", _client(server, trusted=[_pub(ci)], said=said))
    assert not b.has(KEY)
    assert not b.entry(KEY).exists(), "a bad blob must never land where an entry is looked for"
    bad = hashlib.sha256(blob.read_bytes()).hexdigest()
    assert any(blob.name in s and bad in s and "discarded" in s for s in said), said
    assert not list((tmp_path / "b").glob("**/*.tmp"))


def test_a_read_only_client_uploads_nothing(tmp_path, server, keys):
    ci, _ = keys
    a, tar, files = _stored(tmp_path, "a", KEY, b"bytes")
    a.remote = _client(server, key=ci, write=False)
    a.put(KEY, tar, files)
    assert a.has(KEY)                                        # the local store has it
    assert [m for m, _, _ in server.requests() if m not in ("GET", "HEAD")] == []
    assert list(server.data.rglob("*")) == []


def test_a_client_without_credentials_is_refused_once_and_stops_uploading(tmp_path, server, keys):
    ci, _ = keys
    said = []
    client = _client(server, key=ci, said=said)
    client.session.auth = None
    for n in range(3):
        a, tar, files = _stored(tmp_path, f"s{n}", f"{n:02d}" * 32, b"x%d" % n)
        a.remote = client
        a.put(f"{n:02d}" * 32, tar, files)
    assert [s for s in said if "may not write" in s] and len(said) == 1, said
    assert len([m for m, _, st in server.requests() if m == "PUT"]) == 1


def test_a_stopped_server_costs_one_short_timeout_and_one_message(tmp_path, server, keys):
    ci, _ = keys
    server.stop()
    said = []
    client = _client(server, key=ci, trusted=[_pub(ci)], said=said)
    started = time.monotonic()
    for n in range(20):
        store = StageStore(tmp_path / f"s{n}", client)
        assert not store.has(f"{n:02d}" * 32)
        a, tar, files = _stored(tmp_path, f"p{n}", f"{n:02d}" * 32, b"y")
        a.remote = client
        a.put(f"{n:02d}" * 32, tar, files)
    assert time.monotonic() - started < 3
    assert len(said) == 1 and "does not answer" in said[0] and server.url in said[0], said


def test_a_hung_server_costs_one_timeout(tmp_path):
    """A server that takes the connection and never answers (a socket on
    loopback that listens and reads nothing) costs the configured timeout once."""
    import socket
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(16)
    said = []
    settings = config._remote({"ONLYDOCKER_REMOTE_CACHE": f"http://127.0.0.1:{hung.getsockname()[1]}",
                               "ONLYDOCKER_REMOTE_CACHE_TIMEOUT": "1", "ONLYDOCKER_REMOTE_CACHE_READONLY": "1"},
                              {}, Path("/x"))
    client = RemoteCache(settings, None, say=said.append)
    started = time.monotonic()
    try:
        for n in range(10):
            assert not StageStore(tmp_path / f"s{n}", client).has(f"{n:02d}" * 32)
    finally:
        hung.close()
    assert 1 <= time.monotonic() - started < 2.5
    assert len(said) == 1 and "does not answer" in said[0] and "timed out" in said[0], said


def _source(tmp_path: Path, body: bytes, url: str) -> Source:
    return Source(name="blob", group="blob", version="1", file="blob.tar.gz", urls=(url,),
                  sha256=hashlib.sha256(body).hexdigest(), size=len(body), license="MIT")


def _settings(tmp_path: Path, name: str, server, **extra) -> config.Settings:
    env = {"ONLYDOCKER_CACHE": str(tmp_path / name), "ONLYDOCKER_DOWNLOADS": str(tmp_path / "none"),
           "ONLYDOCKER_CONFIG": str(tmp_path / "none.toml"), **extra}
    env.update(server.env())
    return config.load(env=env, root=tmp_path)


def test_a_source_whose_url_answers_404_comes_from_the_cas(tmp_path, server, httpserver, keys):
    body = b"a source tarball that Debian's pool has since dropped" * 50
    httpserver.expect_request("/pool/blob.tar.gz").respond_with_data(body)
    src = _source(tmp_path, body, httpserver.url_for("/pool/blob.tar.gz"))
    first = _settings(tmp_path, "first", server)
    Fetcher(first, remote=_client(server)).fetch(src)        # fetched from its URL, shared in /cas/
    assert (server.data / "cas" / src.sha256).read_bytes() == body

    httpserver.expect_request("/pool/gone.tar.gz").respond_with_data("gone", status=404)
    gone = _source(tmp_path, body, httpserver.url_for("/pool/gone.tar.gz"))
    later = _settings(tmp_path, "later", server)
    path = Fetcher(later, remote=_client(server, write=False)).fetch(gone)
    assert path.read_bytes() == body and path.parent == tmp_path / "later" / "sources" / "sha256"


def test_a_cas_source_with_other_bytes_is_refused_naming_both_hashes(tmp_path, server, httpserver):
    body = b"the pinned bytes"
    httpserver.expect_request("/gone.tar.gz").respond_with_data("gone", status=404)
    (server.data / "cas").mkdir(parents=True)
    src = _source(tmp_path, body, httpserver.url_for("/gone.tar.gz"))
    (server.data / "cas" / src.sha256).write_bytes(b"other bytes!!!!!")
    said = []
    with pytest.raises(FetchError) as e:
        Fetcher(_settings(tmp_path, "c", server), remote=_client(server, write=False, said=said)).fetch(src)
    assert "no URL gave the pinned bytes" in str(e.value) and f"/cas/{src.sha256}" in str(e.value)
    assert any(hashlib.sha256(b"other bytes!!!!!").hexdigest() in s for s in said), said
    assert not (tmp_path / "c" / "sources" / "sha256" / src.sha256).exists()


def test_settings_refuse_a_bad_url_timeout_or_trusted_key(tmp_path):
    with pytest.raises(ConfigError, match="ONLYDOCKER_REMOTE_CACHE: expected an http"):
        config._remote({"ONLYDOCKER_REMOTE_CACHE": "ftp://x"}, {}, Path("/x"))
    with pytest.raises(ConfigError, match="ONLYDOCKER_REMOTE_CACHE_TIMEOUT"):
        config._remote({"ONLYDOCKER_REMOTE_CACHE": "http://x", "ONLYDOCKER_REMOTE_CACHE_TIMEOUT": "soon"}, {}, Path("/x"))
    with pytest.raises(ConfigError, match="ONLYDOCKER_TRUSTED_KEYS: 'RWQnotakey'"):
        config._remote({"ONLYDOCKER_REMOTE_CACHE": "http://x", "ONLYDOCKER_TRUSTED_KEYS": "RWQnotakey"}, {}, Path("/x"))
    key = generate_key(tmp_path / "k.key")
    s = config._remote({"ONLYDOCKER_REMOTE_CACHE": "http://x/", "ONLYDOCKER_TRUSTED_KEYS": str(tmp_path / "k.key.pub")},
                       {}, Path("/x"))
    assert s.trusted_keys == (_pub(key),) and s.url == "http://x"
