"""The remote cache in real `doit` runs: a tiny tree built in the real
builder image against a real nginx (WebDAV) on loopback. One machine (CI,
holding the trusted key) builds and uploads; fresh trees with empty caches
(developers, read-only) restore from it, and a damaged or stopped server
only costs them the local build."""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import pytest

from tests import workspace as wsmod
from tests.conftest import require_tool
from tests.nginx import Nginx

pytestmark = pytest.mark.docker

LOCK = "test.lock"
BODY = b"a tiny source, pinned\n" * 64


def _tree(root: Path, cache: Path, source_url: str) -> wsmod.Workspace:
    ws = wsmod.make(root, cache=cache)
    ws.env.pop("ONLYDOCKER_STAGE_CACHE", None)
    (ws.root / LOCK).write_text(wsmod.builder_tables() + wsmod.source_entry("tiny-src", "tiny.txt", source_url, BODY))
    wsmod.add_stage(ws.root, "tiny", 'description = "tiny"\nsources = ["tiny-src"]\noutputs = ["data"]\n',
                    "set -eu\ncat /build/sources/tiny.txt > /build/out/data\necho built >> /build/out/data\n")
    return ws


def _results(r) -> dict[str, str]:
    return {t["name"]: t["result"] for t in r.record["tasks"]}


def _manifest(ws) -> dict:
    return json.loads((ws.out(wsmod.lane_name()) / "stages" / "tiny.manifest.json").read_text())


@pytest.fixture(scope="module")
def shared(tmp_path_factory, docker_client):
    """CI's tree: an empty cache, the builder bootstrapped and the stage built
    here, both uploaded, signed with CI's key."""
    require_tool("nginx")
    base = tmp_path_factory.mktemp("remote-builds")
    server = Nginx(base / "nginx").start()
    src = base / "tiny.txt"
    src.write_bytes(BODY)
    ci = _tree(base / "ci", base / "ci-cache", src.as_uri())
    ci.env.update(server.env(write=True))
    ci.doit("keygen")
    first = ci.doit(f"lock={LOCK}", timeout=1800)
    yield server, ci, first, src
    server.stop()


def _developer(tmp_path: Path, shared, name: str, **env) -> wsmod.Workspace:
    server, ci, _, src = shared
    dev = _tree(tmp_path / name, tmp_path / f"{name}-cache", src.as_uri())
    dev.env.update(server.env(write=False))
    dev.env["ONLYDOCKER_TRUSTED_KEYS"] = ci.env["ONLYDOCKER_SIGNING_KEY"] + ".pub"
    dev.env.update(env)
    return dev


def test_ci_uploads_the_builder_the_source_and_the_stage_blobs_before_entries(shared):
    server, ci, first, _ = shared
    assert _results(first)["build:tiny"] == "built"
    puts = [p for m, p, s in server.requests() if m == "PUT" and s in (201, 204)]
    assert f"/cas/{hashlib.sha256(BODY).hexdigest()}" in puts          # the source
    entries = [p for p in puts if p.startswith("/ac/")]
    assert len(entries) == 2                                           # the builder and the stage
    for entry in entries:
        envelope = json.loads((server.data / entry.lstrip("/")).read_bytes())
        import base64
        blob = json.loads(base64.b64decode(envelope["payload"]))["blob"]["sha256"]
        assert puts.index(f"/cas/{blob}") < puts.index(entry), "a blob goes up before the entry naming it"


def test_a_fresh_tree_with_an_empty_cache_restores_everything_and_uploads_nothing(tmp_path, shared):
    server, ci, _, src = shared
    src.unlink()                 # the source's URL is gone: not needed, since the stage is cached
    try:
        dev = _developer(tmp_path, shared, "dev")
        before = len(server.requests())
        r = dev.doit(f"lock={LOCK}", timeout=900)
    finally:
        src.write_bytes(BODY)
    assert _results(r)["build:tiny"] == "restored", r.stdout + r.stderr
    assert "taken from the remote cache" in r.stderr and "mmdebstrap" not in r.stdout + r.stderr
    assert "fetch tiny.txt: not needed: every stage that uses it is in the cache" in r.stdout
    assert _manifest(dev) == _manifest(ci)
    assert (dev.out(wsmod.lane_name()) / "stages" / "tiny" / "data").read_bytes() == \
        (ci.out(wsmod.lane_name()) / "stages" / "tiny" / "data").read_bytes()
    sent = server.requests()[before:]
    assert sent and {m for m, _, _ in sent} <= {"GET", "HEAD"}, sent
    # And then a no-op is a no-op: the fetch it never needed is up to date too.
    again = dev.doit(f"lock={LOCK}", timeout=900)
    assert {t["name"]: t["result"] for t in again.record["tasks"]
            if t["result"] != "up-to-date"} == {}, again.stdout


def test_a_corrupted_stage_blob_is_caught_and_the_stage_built_locally(tmp_path, shared):
    server, ci, _, _ = shared
    stage_key = _manifest(ci)["key"]
    envelope = json.loads((server.data / "ac" / stage_key).read_bytes())
    import base64
    blob = server.data / "cas" / json.loads(base64.b64decode(envelope["payload"]))["blob"]["sha256"]
    good = blob.read_bytes()
    blob.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    try:
        r = _developer(tmp_path, shared, "dev2").doit(f"lock={LOCK}", timeout=900)
    finally:
        blob.write_bytes(good)
    assert _results(r)["build:tiny"] == "built"
    bad = hashlib.sha256(good[:-1] + bytes([good[-1] ^ 1])).hexdigest()
    assert f"/cas/{blob.name} holds bytes of sha256 {bad}, not {blob.name}: discarded" in r.stderr


def test_an_entry_signed_by_an_untrusted_key_is_ignored(tmp_path, shared):
    server, ci, _, _ = shared
    stranger = tmp_path / "stranger-keys"
    dev = _developer(tmp_path, shared, "dev3")
    # Its own copy of the builder (bootstrapped elsewhere): only the stage's entry is at stake here.
    shutil.copytree(ci.root.parent / "ci-cache" / "builders", tmp_path / "dev3-cache" / "builders")
    other = wsmod.make(tmp_path / "other")
    other.env["ONLYDOCKER_SIGNING_KEY"] = str(stranger / "signing.key")
    other.doit("keygen")
    dev.env["ONLYDOCKER_TRUSTED_KEYS"] = str(stranger / "signing.key.pub")     # not CI's
    r = dev.doit(f"lock={LOCK}", timeout=1800)
    assert _results(r)["build:tiny"] == "built"
    assert "no valid signature by a trusted key" in r.stderr


def test_a_stopped_server_costs_a_build_a_few_seconds_at_most(tmp_path, shared):
    """The same build (the stage from scratch: an empty stage cache each
    time) with no remote cache, with a stopped one, and with none again."""
    server, ci, _, src = shared
    dev = _developer(tmp_path, shared, "dev4")
    dev.doit(f"lock={LOCK}", timeout=900)                      # the builder is in its cache now
    alone = wsmod.Workspace(root=dev.root, env={k: v for k, v in dev.env.items()
                                                if not k.startswith("ONLYDOCKER_REMOTE")}, log=dev.log)
    timings = {}
    server.stop()
    try:
        for n, (name, ws) in enumerate((("no remote", alone), ("stopped server", dev), ("no remote again", alone))):
            ws.env["ONLYDOCKER_STAGE_CACHE"] = str(tmp_path / f"stage-cache-{n}")
            for p in (ws.out(wsmod.lane_name()) / "stages").glob("tiny*"):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
            started = time.monotonic()
            r = ws.doit(f"lock={LOCK}", timeout=900)
            timings[name] = time.monotonic() - started
            assert _results(r)["build:tiny"] == "built"
            if name == "stopped server":
                assert r.stderr.count("does not answer") == 1 and server.url in r.stderr, r.stderr
    finally:
        server.start()
    baseline = max(timings["no remote"], timings["no remote again"])
    assert timings["stopped server"] < baseline + 3, timings


def test_a_builder_made_before_the_remote_cache_is_uploaded_to_it(tmp_path, shared):
    """CI's warm local cache (the builder and the stage already there) meets
    a new, empty remote cache: the builder goes up all the same, so a fresh
    clone restoring from it never bootstraps; the stage, only restored here,
    does not (an upload is of what a run built)."""
    _, ci, _, src = shared
    empty = Nginx(tmp_path / "nginx").start()
    try:
        ws = _tree(tmp_path / "ci-again", ci.root.parent / "ci-cache", src.as_uri())
        ws.env.update(empty.env(write=True))
        ws.env["ONLYDOCKER_SIGNING_KEY"] = ci.env["ONLYDOCKER_SIGNING_KEY"]
        r = ws.doit(f"lock={LOCK}", timeout=900)
        assert _results(r)["build:tiny"] == "restored" and "mmdebstrap" not in r.stdout + r.stderr
        puts = [p for m, p, s in empty.requests() if m == "PUT" and s in (201, 204)]
        [entry] = [p for p in puts if p.startswith("/ac/")]
        import base64
        envelope = json.loads((empty.data / entry.lstrip("/")).read_bytes())
        payload = json.loads(base64.b64decode(envelope["payload"]))
        assert payload["record"]["tar_sha256"] and f"/cas/{payload['blob']['sha256']}" in puts
        # A second run finds it there and sends nothing.
        before = len(empty.requests())
        ws.doit(f"lock={LOCK}", timeout=900)
        assert {m for m, _, _ in empty.requests()[before:]} <= {"GET", "HEAD"}
    finally:
        empty.stop()
