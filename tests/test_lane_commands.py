"""`doit list` and `doit clean`, run for real as doit commands on a tiny lane
of a test's own (nothing is built: clean works on the files it finds)."""
from __future__ import annotations

import json
import shutil

from tests import workspace as wsmod


def _lane(tmp_path):
    ws = wsmod.make(tmp_path / "ws")
    ws.env["ONLYDOCKER_STAGE_CACHE"] = str(tmp_path / "stage-cache")
    ws.env["ONLYDOCKER_CACHE"] = str(tmp_path / "cache")
    (ws.root / "t.lock").write_text(wsmod.builder_tables())
    wsmod.add_stage(ws.root, "hello", 'description = "Hello, a greeting"\noutputs = ["said"]\n',
                    "set -eu\necho hi > /build/out/said\n")
    wsmod.add_stage(ws.root, "pkg", 'description = "pkg: what hello says"\nneeds = ["hello"]\noutputs = ["x"]\n',
                    "set -eu\ncp /build/deps/hello/said /build/out/x\n")
    ws.lane = wsmod.lane_name()
    return ws


def test_list_shows_each_stage_with_its_doc_and_the_commands(tmp_path):
    ws = _lane(tmp_path)
    out = ws.doit("list", "lock=t.lock").stdout
    rows = {line.split()[0]: " ".join(line.split()[1:]) for line in out.splitlines() if line and line[0] != " "
            and not line.startswith("commands")}
    assert rows["hello"] == "Hello, a greeting" and rows["pkg"] == "pkg: what hello says"
    assert "build" in rows and "dist" in rows
    assert not any(":" in name for name in rows)       # fetches and stages of build: only with --all
    commands = out.split("commands (", 1)[1]
    for name in ("clean", "verify", "lock", "repro"):
        assert any(line.split()[0] == name for line in commands.splitlines()[1:]), name
    assert "commands" not in ws.doit("list", "-q", "lock=t.lock").stdout
    # `doit pkg` is `doit build:pkg`: the shortcut's only work is its task_dep.
    assert ws.doit("list", "--all", "-q", "lock=t.lock").stdout.count("build:pkg") == 1


def _fake_build(ws, cache) -> dict:
    """out/<lane> as a build leaves it, and cache entries: the lane's and another."""
    out = ws.out(ws.lane)
    keys = {"hello": "a" * 64, "pkg": "b" * 64}
    for name, key in keys.items():
        (out / "stages" / name).mkdir(parents=True, exist_ok=True)
        (out / "stages" / name / "f").write_text(name)
        (out / "stages" / f"{name}.manifest.json").write_text(json.dumps({"stage": name, "key": key}))
    (out / "dist").mkdir(exist_ok=True)
    (out / "dist" / "SHA256SUMS").write_text("x")
    for f in ("last-run.json", "builder.json", "code-imports.json", ".doit.db"):
        (out / f).write_text("{}")
    (out / "checked").mkdir(exist_ok=True)
    cache.mkdir(parents=True)
    for key in (*keys.values(), "c" * 64):
        (cache / f"{key}.tar.zst").write_bytes(b"z" * 100)
        (cache / f"{key}.json").write_text("{}")
    return keys


def test_clean_removes_outputs_and_says_so_and_keeps_caches_unless_asked(tmp_path):
    ws = _lane(tmp_path)
    cache = tmp_path / "stage-cache"
    _fake_build(ws, cache)
    out = ws.out(ws.lane)
    dry = ws.doit("clean", "-n", "lock=t.lock")
    assert "would remove output" in dry.stdout and (out / "stages").exists()
    r = ws.doit("clean", "lock=t.lock")
    said = [line.split()[-1] for line in r.stdout.splitlines() if line.startswith("removing")]
    assert sorted(said) == sorted(str(out / n) for n in ("stages", "dist", "last-run.json"))
    assert not (out / "stages").exists() and not (out / "dist").exists()
    assert (out / "builder.json").exists() and (out / ".doit.db").exists() and (out / "checked").exists()
    assert len(list(cache.iterdir())) == 6 and "every cache kept" in r.stdout
    assert "nothing to remove" in ws.doit("clean", "lock=t.lock").stdout

    _fake_build(ws, tmp_path / "stage-cache-2")
    ws.env["ONLYDOCKER_STAGE_CACHE"] = str(tmp_path / "stage-cache-2")
    r = ws.doit("clean", "--state", "--cache", "lock=t.lock")
    assert sorted(p.name for p in (tmp_path / "stage-cache-2").iterdir()) == ["c" * 64 + ".json", "c" * 64 + ".tar.zst"]
    assert sorted(p.name for p in out.iterdir()) == [".run.lock"]
    assert r.stdout.count("removing cache entry") == 4 and r.stdout.count("removing state") == 4


def test_clean_and_list_take_the_project_from_d_and_say_bad_input_in_one_line(tmp_path):
    ws = _lane(tmp_path)
    # From another folder (doit reads its commands from the pyproject.toml there).
    elsewhere = wsmod.Workspace(root=tmp_path / "elsewhere", env=ws.env)
    elsewhere.root.mkdir()
    shutil.copy2(ws.root / "pyproject.toml", elsewhere.root)
    r = elsewhere.doit("clean", "-d", str(ws.root), "--lock", str(ws.root / "t.lock"), "-n")
    assert r.returncode == 0 and "nothing to remove" in r.stdout
    bad = ws.doit("clean", "extra", "lock=t.lock", check=False)
    assert bad.returncode != 0 and bad.stderr.strip().count("\n") == 0 and bad.stderr.startswith("error:")
    bad = ws.doit("clean", "--lock", "missing.lock", check=False)
    assert bad.returncode != 0 and bad.stderr.startswith("error:") and bad.stderr.strip().count("\n") == 0
