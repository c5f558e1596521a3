"""Kept build trees (kept.py), on a tiny real source in the real builder
image and a real Docker volume: a stage with `keep = true` builds on its last
tree when only its lane's Kconfig fragment changed, gives the bytes of a
clean build of the same key, and starts from a fresh extraction whenever
anything else changed, its last build did not finish, or the build is
`doit repro`'s, forced or under ONLYDOCKER_CLEAN=1. `doit kept` lists the
trees with their sizes and `doit clean --kept` removes them."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from onlydocker.stage import kept
from tests import workspace as wsmod

pytestmark = [pytest.mark.docker, pytest.mark.budget("quick: kept trees")]

LANE = "keeptest"       # a lane of its own: its volumes are this test's, never a real lane's
VOLUME = kept.volume_name(LANE, "kb")

HELLO_C = b'#include <stdio.h>\n#include "greeting.h"\nint main(void) { puts(GREETING); return 0; }\n'
GREETING_H = b'#define GREETING "hello"\n'
PATCH = """--- a/greeting.h
+++ b/greeting.h
@@ -1 +1 @@
-#define GREETING "hello"
+#define GREETING "%s"
"""
# make-like: an object is compiled only when it is missing or older than its
# source; the log says which, and how many builds this tree has seen. None
# of that reaches /build/out: the outputs are the program and the fragment.
BUILD_SH = """set -eu
cd /build/src/hello
n=$(cat .builds 2>/dev/null || echo 0); n=$((n + 1)); echo "$n" > .builds
echo "tree builds: $n"
if grep -q FAIL /build/stage/lane/config; then echo "failing as the fragment asks"; exit 1; fi
if [ -e hello.o ] && [ ! hello.c -nt hello.o ]; then echo "hello.o: kept"; else
    echo "hello.o: compiled"; cc -O2 -c hello.c -o hello.o; fi
mkdir -p /build/out/bin
cc -static -o /build/out/bin/hello hello.o
cp /build/stage/lane/config /build/out/config
"""


def _tarball(path: Path) -> bytes:
    return wsmod.source_tarball(path, (("hello-1.0/", None), ("hello-1.0/hello.c", HELLO_C), ("hello-1.0/greeting.h", GREETING_H)))


def _remove_volume(client) -> None:
    import docker.errors
    try:
        client.volumes.get(VOLUME).remove(force=True)
    except docker.errors.NotFound:
        pass


@pytest.fixture
def ws(tmp_path, docker_client):
    _remove_volume(docker_client)
    w = wsmod.make(tmp_path / "ws")
    w.env["ONLYDOCKER_STAGE_CACHE"] = str(tmp_path / "stage-cache")
    tarball = tmp_path / "hello-1.0.tar.gz"
    tables = wsmod.builder_tables()
    tables = re.sub(r'(?m)^name = "[^"]*"', f'name = "{LANE}"', tables, count=1)
    (w.root / "test.lock").write_text(tables + wsmod.source_entry(
        "hello", "hello-1.0.tar.gz", f"file://{tarball}", _tarball(tarball), version="1.0"))
    patches = w.root / "patches" / "hello" / "1.0"
    patches.mkdir(parents=True)
    (patches / "0001-greeting.patch").write_text(PATCH % "hello, patched")
    d = wsmod.add_stage(w.root, "kb", 'description = "kb"\nsources = ["hello"]\noutputs = ["bin/hello", "config"]\n'
                        'kconfig = true\nkeep = true\n', BUILD_SH)
    (d / "lanes" / LANE).mkdir(parents=True)
    w.fragment = d / "lanes" / LANE / "config"
    w.fragment.write_text("CONFIG_A=y\n")
    w.log_file = w.out(LANE) / "logs" / "kb.log"
    yield w
    _remove_volume(docker_client)


def build(w, **env):
    saved = dict(w.env)
    w.env.update(env)
    try:
        r = w.doit("build:kb", "lock=test.lock")
    finally:
        w.env = saved
    log = w.log_file if "ONLYDOCKER_OUT" not in env else Path(env["ONLYDOCKER_OUT"]) / LANE / "logs" / "kb.log"
    return r, log.read_text()


def outputs(out_dir) -> dict[str, bytes]:
    tree = out_dir / "stages" / "kb"
    return {p.relative_to(tree).as_posix(): p.read_bytes() for p in sorted(tree.rglob("*")) if p.is_file()}


def test_only_a_changed_fragment_builds_on_the_kept_tree_and_gives_a_clean_builds_bytes(ws, tmp_path):
    r, log = build(ws)
    assert "prelude: kept tree: not used (none, or its last build did not finish)" in log
    assert "tree builds: 1" in log and "hello.o: compiled" in log
    assert "incrementally" not in r.stdout

    ws.fragment.write_text("CONFIG_A=y\nCONFIG_B=y\n")
    r, log = build(ws)
    assert "prelude: kept tree: reused" in log, log
    assert "tree builds: 2" in log and "hello.o: kept" in log
    assert "prelude: unpacked" not in log          # the tree holds the sources, patched
    assert re.search(r"kb: built \(\w+\) in [\d.]+ s, incrementally from its kept tree", r.stdout), r.stdout
    incremental = outputs(ws.out(LANE))
    assert incremental["config"] == b"CONFIG_A=y\nCONFIG_B=y\n"

    # The same key, clean: another out/ and an empty cache, ONLYDOCKER_CLEAN=1.
    r, log = build(ws, ONLYDOCKER_OUT=str(tmp_path / "clean-out"),
                   ONLYDOCKER_STAGE_CACHE=str(tmp_path / "clean-cache"), ONLYDOCKER_CLEAN="1")
    assert "kept tree" not in log and "tree builds: 1" in log and "prelude: unpacked" in log
    assert outputs(tmp_path / "clean-out" / LANE) == incremental
    import subprocess
    said = subprocess.run([str(tmp_path / "clean-out" / LANE / "stages" / "kb" / "bin" / "hello")],
                          capture_output=True, text=True).stdout
    assert said == "hello, patched\n"

    # The clean build neither read nor wrote the kept tree: the next build goes on from it.
    ws.fragment.write_text("CONFIG_A=y\n")
    r, log = build(ws, ONLYDOCKER_STAGE_CACHE=str(tmp_path / "third-cache"))
    assert "prelude: kept tree: reused" in log and "tree builds: 3" in log


def test_a_changed_patch_starts_from_a_fresh_extraction(ws):
    build(ws)
    patch = ws.root / "patches" / "hello" / "1.0" / "0001-greeting.patch"
    patch.write_text(PATCH % "hello, again")
    r, log = build(ws)
    assert "prelude: kept tree: not used (it was made for another identity)" in log
    assert "tree builds: 1" in log and "hello.o: compiled" in log and "prelude: applied hello/0001-greeting.patch" in log


def test_a_build_that_failed_leaves_no_stamp_and_the_next_starts_clean(ws):
    build(ws)
    ws.fragment.write_text("CONFIG_A=y\n# FAIL\n")
    r = ws.doit("build:kb", "lock=test.lock", check=False)
    assert r.returncode != 0
    assert "tree builds: 2" in ws.log_file.read_text()
    ws.fragment.write_text("CONFIG_A=y\nCONFIG_C=y\n")
    r, log = build(ws)
    assert "prelude: kept tree: not used (none, or its last build did not finish)" in log
    assert "tree builds: 1" in log


def test_a_forced_build_does_not_use_the_kept_tree_nor_change_it(ws):
    build(ws)
    ws.fragment.write_text("CONFIG_A=y\nCONFIG_D=y\n")
    # `doit repro`'s second build forces its stages (ONLYDOCKER_REBUILD).
    r, log = build(ws, ONLYDOCKER_REBUILD="kb")
    assert "kept tree" not in log and "tree builds: 1" in log
    ws.fragment.write_text("CONFIG_A=y\nCONFIG_E=y\n")
    r, log = build(ws)
    assert "prelude: kept tree: reused" in log and "tree builds: 2" in log


def test_doit_kept_lists_the_tree_with_its_size_and_clean_kept_removes_it(ws, docker_client):
    r = ws.doit("kept", "lock=test.lock")
    assert f"lane {LANE}: 0 kept tree(s)" in r.stdout
    build(ws)
    r = ws.doit("kept", "lock=test.lock")
    line = next(x for x in r.stdout.splitlines() if x.startswith("kb "))
    assert VOLUME in line and re.search(r"\d+(\.\d+)? (B|kB|MB)", line), r.stdout
    assert f"lane {LANE}: 1 kept tree(s)" in r.stdout
    r = ws.doit("clean", "--kept", "-n", "lock=test.lock")
    assert "would remove kept tree" in r.stdout and VOLUME in r.stdout
    docker_client.volumes.get(VOLUME)             # still there
    r = ws.doit("clean", "--kept", "lock=test.lock")
    assert "removing kept tree" in r.stdout and "and 1 kept tree(s)" in r.stdout
    assert VOLUME not in [v.name for v in docker_client.volumes.list()]
    r, log = build(ws, ONLYDOCKER_STAGE_CACHE=str(ws.root / "other-cache"))
    assert "prelude: kept tree: not used (none, or its last build did not finish)" in log


def test_the_identity_leaves_out_the_fragment_only():
    inputs = {"stage": "kernel", "files": {"build.sh": "a", "lane/config": "b", "lane/lane.toml": "c"},
              "builder": "x", "sources": {"linux": "s"}}
    same = kept.identity(inputs)
    assert kept.identity({**inputs, "files": {**inputs["files"], "lane/config": "other"}}) == same
    for change in ({"builder": "y"}, {"sources": {"linux": "t"}},
                   {"files": {**inputs["files"], "lane/lane.toml": "d"}},
                   {"files": {**inputs["files"], "build.sh": "e"}}):
        assert kept.identity({**inputs, **change}) != same, change
