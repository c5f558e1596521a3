"""A Python stage run for real by the engine (no container, no mocks): its
stage.py loaded by path builds into out/, the output is stored and restored
by key, an edit to stage.py or to a files/ file rebuilds it, and an edit to a
module it does not import (the fetcher) does not."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from onlydocker import config
from onlydocker.cache.store import StageStore
from onlydocker.inputs import lock
from onlydocker.inputs.fetch import Fetcher
from onlydocker.stage import key as stagekey
from onlydocker.stage.build import Workspace
from onlydocker.stage.decl import load_stages

STAGE_PY = '''from onlydocker.formats import cpio
def build(ctx):
    text = (ctx.files / "greeting").read_text() + (ctx.lane_dir / "lane.toml").read_text()
    (ctx.out / "said").write_text(text + str(ctx.source_date_epoch) + "\\n")
'''


def _workspace(tmp_path: Path) -> tuple[Workspace, dict]:
    lk_path = tmp_path / "t.lock"
    lk_path.write_text('[lane]\nname = "tiny"\nsource_date_epoch = 1686355200\ninitrd_compression = "zstd"\n'
                       '[builder]\nsuite = "bookworm"\nmirror = "debian:"\npackages = []\n')
    d = tmp_path / "stages" / "hello"
    (d / "files").mkdir(parents=True)
    (d / "lanes" / "tiny").mkdir(parents=True)
    (d / "stage.toml").write_text('description = "hello"\nkind = "python"\noutputs = ["said"]\n')
    (d / "stage.py").write_text(STAGE_PY)
    (d / "files" / "greeting").write_text("hello\n")
    (d / "lanes" / "tiny" / "lane.toml").write_text('x = 1\n')
    settings = config.Settings(root=tmp_path, lock_path=lk_path, cache_dir=tmp_path / "cache",
                               downloads_dir=tmp_path / "dl", signing_key=tmp_path / "no.key")
    ws = Workspace(root=tmp_path, out=tmp_path / "out" / "tiny", store=StageStore(tmp_path / "cache" / "stages"),
                   lock=lock.load(lk_path), fetcher=Fetcher(settings))
    return ws, load_stages(tmp_path / "stages")


def test_a_python_stage_builds_restores_and_rebuilds_on_its_own_code(tmp_path):
    ws, stages = _workspace(tmp_path)
    hello = stages["hello"]
    said = ws.paths.stage_dir("hello") / "said"
    assert ws.run(hello, log=lambda _: None) == "built"
    assert said.read_text() == "hello\nx = 1\n1686355200\n"
    assert ws.run(hello, log=lambda _: None) == "up-to-date"
    first = ws.key(hello)
    # Its outputs gone from out/: restored from the store by key, not built.
    said.unlink()
    assert ws.run(hello, log=lambda _: None) == "restored" and said.read_text().startswith("hello\n")
    # stage.py is among its files: an edit is a new key and a new build.
    (hello.dir / "stage.py").write_text(STAGE_PY.replace('"\\n")', '"!\\n")'))
    assert ws.key(hello) != first
    assert ws.run(hello, log=lambda _: None) == "built" and said.read_text().endswith("!\n")
    (hello.dir / "files" / "greeting").write_text("hi\n")
    assert ws.run(hello, log=lambda _: None) == "built" and said.read_text().startswith("hi\n")
    inputs = ws.key_inputs(hello)
    assert {"formats/cpio.py", "formats/tarball.py"} <= set(inputs["code"]) and "compression" not in inputs
    assert not set(inputs["code"]) & {"inputs/fetch.py", "stage/build.py", "stage/key.py", "stage/pystage.py",
                                      "engine/run.py", "engine/client.py", "engine/pool.py"}
    assert {"stage.py", "stage.toml", "files/greeting", "lane/lane.toml"} == set(inputs["files"])
    assert json.loads(ws.paths.manifest_path("hello").read_text())["key"] == stagekey.key(inputs)
    # No bytecode cache in the stage folder (it would break its shape).
    assert not (hello.dir / "__pycache__").exists()


def test_an_optional_output_is_made_where_the_lane_asks_and_a_required_one_always(tmp_path):
    """`name?` in outputs: the stage may leave it out (a lane without UEFI
    makes no onlydocker.efi), and its artifact is then not published; a
    required output left out fails the build, naming it."""
    from onlydocker.errors import BuildError
    from onlydocker.publish import dist
    ws, _ = _workspace(tmp_path)
    d = tmp_path / "stages" / "hello"
    (d / "stage.toml").write_text('description = "hello"\nkind = "python"\noutputs = ["said", "extra?"]\n'
                                  'artifacts = { "said" = "said", "extra" = "extra" }\n')
    hello = load_stages(tmp_path / "stages")["hello"]
    assert hello.required_outputs == ("said",) and hello.optional("extra") and not hello.optional("said")
    assert ws.run(hello, log=lambda _: None) == "built"
    assert set(dist.artifacts(ws, {"hello": hello})) == {"said"}
    # The lane asks for it: made, and published.
    (d / "stage.py").write_text(STAGE_PY + '    (ctx.out / "extra").write_text("more\\n")\n')
    hello = load_stages(tmp_path / "stages")["hello"]
    assert ws.run(hello, log=lambda _: None) == "built"
    assert set(dist.artifacts(ws, {"hello": hello})) == {"said", "extra"}
    # A required output it does not make: the build fails and says which.
    (d / "stage.toml").write_text('description = "hello"\nkind = "python"\noutputs = ["said", "gone"]\n')
    hello = load_stages(tmp_path / "stages")["hello"]
    with pytest.raises(BuildError, match="declared outputs missing: gone"):
        ws.run(hello, log=lambda _: None)
