"""`doit cache push` on the tiny lane of test_stages.py: built with local
caches only, then pushed to a real nginx (WebDAV) on loopback of the test's
own; a fresh tree with empty caches restores every stage and the builder
from it without building."""
from __future__ import annotations

import base64
import json

import pytest

from tests import workspace as wsmod
from tests.conftest import require_tool
from tests.nginx import Nginx
from tests.test_stages import tiny  # noqa: F401  (the fixture)

pytestmark = pytest.mark.docker


def test_push_uploads_what_the_remote_lacks_then_a_fresh_tree_restores_from_it(tiny, tmp_path):  # noqa: F811
    require_tool("nginx")
    tiny.doit("lock=test.lock")                        # local caches only: nothing uploaded
    server = Nginx(tmp_path / "nginx").start()
    try:
        pusher = wsmod.Workspace(root=tiny.root, env=dict(tiny.env, **server.env(write=True)), log=tiny.log)
        unsigned = pusher.doit("cache", "push", "lock=test.lock", check=False)
        assert unsigned.returncode == 1 and unsigned.stderr.startswith("error: no signing key")
        pusher.doit("keygen")
        r = pusher.doit("cache", "push", "lock=test.lock")
        pushed = [line for line in r.stdout.splitlines() if line.startswith("pushed ")]
        assert sorted(line.split()[1] + " " + line.split()[2] for line in pushed if "stage" in line) == [
            "stage hello", "stage other", "stage pkg"]
        assert any(line.startswith("pushed builder") for line in pushed), r.stdout
        assert "pushed 4 entries" in r.stdout.splitlines()[-1] and "0 already there" in r.stdout
        puts = [p for m, p, s in server.requests() if m == "PUT" and s in (201, 204)]
        for entry in (p for p in puts if p.startswith("/ac/")):
            envelope = json.loads((server.data / entry.lstrip("/")).read_bytes())
            blob = json.loads(base64.b64decode(envelope["payload"]))["blob"]["sha256"]
            assert puts.index(f"/cas/{blob}") < puts.index(entry), "a blob goes up before the entry naming it"
        again = pusher.doit("cache", "push", "lock=test.lock")
        assert "pushed 0 entries, 0.0 MB; 4 already there" in again.stdout

        # A fresh tree, empty caches, read-only, trusting the pusher's key.
        fresh = wsmod.make(tmp_path / "fresh", cache=tmp_path / "fresh-cache")
        fresh.env.pop("ONLYDOCKER_STAGE_CACHE", None)
        for p in ("test.lock", "stages", "patches"):
            src = tiny.root / p
            if src.is_dir():
                import shutil
                shutil.copytree(src, fresh.root / p, dirs_exist_ok=True)
            else:
                (fresh.root / p).write_text(src.read_text())
        fresh.env.update(server.env(write=False))
        fresh.env["ONLYDOCKER_TRUSTED_KEYS"] = pusher.env["ONLYDOCKER_SIGNING_KEY"] + ".pub"
        restored = fresh.doit("lock=test.lock")
        assert wsmod.events(restored) == {"hello": "restored", "pkg": "restored", "other": "restored"}
        assert "taken from the remote cache" in restored.stderr and "mmdebstrap" not in restored.stdout
    finally:
        server.stop()


def test_cache_without_push_or_remote_is_one_error_line(tiny):  # noqa: F811
    for args, said in ((("cache",), "error: doit cache: unknown action (none)"),
                       (("cache", "pull"), "error: doit cache: unknown action pull"),
                       (("cache", "push"), "error: no remote cache is set")):
        env = {k: v for k, v in tiny.env.items() if not k.startswith("ONLYDOCKER_REMOTE")}
        r = wsmod.Workspace(root=tiny.root, env=env).doit(*args, "lock=test.lock", check=False)
        assert r.returncode == 1 and r.stderr.startswith(said) and r.stderr.count("\n") == 1, r.stderr
