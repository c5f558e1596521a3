"""A container stage's lane data (onlydocker/stage/lanedata.py): lane.toml rendered
as the bash file build.sh sources, read back by a real bash; everything that
is not lane data refused naming the file and the key; the tree's own lanes
(both of them) in the one format; and, in the real builder image, a stage
that reads its lane.env and is rebuilt when its lane.toml changes."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from onlydocker.errors import BuildError
from onlydocker.stage import decl, lanedata
from tests import workspace as wsmod
from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent
NASTY = "it's $HOME `id` \\n \"quoted\" *.c\nsecond line\t; rm -rf / #"


def sourced(text: str, script: str) -> str:
    """What bash prints running `script` after sourcing `text` under set -eu."""
    require_tool("bash")
    r = subprocess.run(["bash", "-c", f"set -eu\n. /dev/stdin <<'LANE_ENV_EOF'\n{text}LANE_ENV_EOF\n{script}"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_every_kind_of_value_survives_bash_as_it_was_written():
    data = {"name": NASTY, "empty": "", "count": 42, "negative": -7, "static": True, "shared": False,
            "options": ["--disable-x", NASTY, "", "two words"], "none": [],
            "waivers": {"MEMCG_SWAP": "gone in 6.1: it's part of MEMCG", "docker.io": NASTY}, "nothing": {}}
    text = lanedata.render(data, "lanes/test/lane.toml")
    out = sourced(text, r'''
printf '<%s>\n' "$NAME" "$EMPTY" "$COUNT" "$NEGATIVE" "$STATIC" "$SHARED"
printf '[%s]\n' "${OPTIONS[@]}"
echo "none ${#NONE[@]} nothing ${#NOTHING[@]}"
for k in $(printf '%s\n' "${!WAIVERS[@]}" | LC_ALL=C sort); do printf '{%s=%s}\n' "$k" "${WAIVERS[$k]}"; done
''')
    assert out == (f"<{NASTY}>\n<>\n<42>\n<-7>\n<true>\n<false>\n"
                   f"[--disable-x]\n[{NASTY}]\n[]\n[two words]\n"
                   "none 0 nothing 0\n"
                   "{MEMCG_SWAP=gone in 6.1: it's part of MEMCG}\n{docker.io=" + NASTY + "}\n")
    # One line a key, sorted, UPPER_SNAKE: the documented mapping.
    assert text.startswith("# lanes/test/lane.toml")
    assert re.findall(r"^(?:declare -gA )?([A-Z_]+)=", text, re.M) == [
        "COUNT", "EMPTY", "NAME", "NEGATIVE", "NONE", "NOTHING", "OPTIONS", "SHARED", "STATIC", "WAIVERS"]
    assert "COUNT=42\n" in text and "STATIC=true\n" in text and "NONE=()\n" in text


def test_the_same_data_renders_the_same_bytes():
    a = lanedata.render({"b": ["x"], "a": {"z": "1", "y": "2"}}, "f")
    b = lanedata.render({"a": {"y": "2", "z": "1"}, "b": ["x"]}, "f")
    assert a == b == "# f, rendered by onlydocker/stage/lanedata.py: bash, sourced by build.sh\n" \
                     "declare -gA A=( [y]=2 [z]=1 )\nB=( x )\n"


@pytest.mark.parametrize("toml, key, problem", [
    ("ratio = 1.5", "'ratio'", "float is not lane data"),
    ("when = 2024-01-01", "'when'", "date is not lane data"),
    ("nums = [1, 2]", "'nums' item 1", "expected a string, got int"),
    ('mixed = ["a", true]', "'mixed' item 2", "expected a string, got bool"),
    ("[t]\nn = 3", "'t' table key 'n'", "expected a string, got int"),
    ('[t.inner]\nx = "y"', "'t' table key 'inner'", "expected a string, got dict"),
    ('[[items]]\nx = "y"', "'items' item 1", "expected a string, got dict"),
    ('[t]\n"a b" = "y"', "'t': table key 'a b'", "expected letters"),
    ('CamelCase = "x"', "'CamelCase'", "expected lower_snake"),
    ('"with-dash" = "x"', "'with-dash'", "expected lower_snake"),
    ('path = "/bin"', "'path'", "PATH is a name the container or the shell already uses"),
    ('jobs = 4', "'jobs'", "JOBS is a name"),
    ('kbuild_build_user = "me"', "'kbuild_build_user'", "KBUILD_BUILD_USER is a name"),
    ('bash_env = "x"', "'bash_env'", "BASH_ENV is a name"),
    ('nul = "a\\u0000b"', "'nul'", "a NUL character"),
])
def test_what_is_not_lane_data_is_refused_naming_the_file_and_the_key(tmp_path, toml, key, problem):
    lane = tmp_path / "stages" / "x" / "lanes" / "test"
    lane.mkdir(parents=True)
    (lane / "lane.toml").write_text(toml + "\n")
    with pytest.raises(BuildError) as e:
        lanedata.render_file(lane / "lane.toml")
    assert str(e.value).startswith("lanes/test/lane.toml: key ") and key in str(e.value)
    assert problem in str(e.value)


def test_a_file_that_is_not_toml_is_named(tmp_path):
    (tmp_path / "lane.toml").write_text("programs = [\n")
    with pytest.raises(BuildError, match=r"lane\.toml: not valid TOML"):
        lanedata.render_file(tmp_path / "lane.toml")


def test_the_container_gets_lane_env_only_from_a_lane_toml(tmp_path):
    lane, tmp = tmp_path / "lane", tmp_path / "tmp"
    lane.mkdir()
    tmp.mkdir()
    assert lanedata.container_inputs(lane, tmp) == []
    (lane / "lane.toml").write_text('provider = "kmod"\n')
    [(host, target)] = lanedata.container_inputs(lane, tmp)
    assert target == "/build/stage/lane/lane.env" and host.parent == tmp
    assert host.read_text().endswith("PROVIDER=kmod\n") and host.stat().st_mode & 0o777 == 0o644
    # A lane.env of one's own would be shadowed: refused rather than ignored.
    (lane / "lane.env").write_text("PROVIDER=busybox\n")
    with pytest.raises(BuildError, match="rendered from lane.toml; remove the file"):
        lanedata.container_inputs(lane, tmp)


def container_stages() -> list:
    decls = [decl.load_stage(d) for d in sorted((ROOT / "stages").iterdir()) if (d / "stage.toml").is_file()]
    return [d for d in decls if d.kind == "container"]


def test_every_container_stage_keeps_its_lane_data_in_one_format():
    """lanes/<lane>/ holds a Kconfig fragment `config` and/or one `lane.toml`,
    nothing else; every lane.toml of every lane renders and bash reads it."""
    lanes = {p.name for p in (ROOT / "stages").glob("*/lanes/*") if p.is_dir()}
    assert lanes == {"2015", "bookworm", "trixie"}
    seen = 0
    for stage in container_stages():
        for lane_dir in sorted((stage.dir / "lanes").glob("*")) if (stage.dir / "lanes").is_dir() else []:
            names = {p.name for p in lane_dir.iterdir()}
            assert names and names <= {"config", "lane.toml"}, f"{lane_dir}: {sorted(names)}"
            if "lane.toml" in names:
                text = lanedata.render_file(lane_dir / "lane.toml")
                sourced(text, "true")
                seen += 1
    assert seen >= 10      # docker, dropbear, iptables, kernel, modprobe: both lanes each


@pytest.mark.docker
def test_a_stage_reads_its_lane_env_and_its_key_covers_lane_toml_and_the_renderer(tmp_path, docker_client):
    """In the real builder image: build.sh sources lane.env and sees the
    lists and tables as written; a new value in lane.toml, or a change to the
    renderer's code, is a new key."""
    ws = wsmod.make(tmp_path / "ws", copy_project=True)     # its own onlydocker/, to edit
    ws.env["ONLYDOCKER_STAGE_CACHE"] = str(tmp_path / "stage-cache")
    shutil.rmtree(ws.root / "stages")
    lane = wsmod.lane_name()
    (ws.root / "test.lock").write_text(wsmod.builder_tables())
    d = ws.root / "stages" / "laned"
    (d / "lanes" / lane).mkdir(parents=True)
    (d / "stage.toml").write_text('description = "lane data"\noutputs = ["seen"]\n[lane_settings]\n'
                                  'options = "strings"\nmulti_binary = "string"\nstatic = "boolean"\nlayout = "table"\n')
    (d / "build.sh").write_text(
        "set -eu\n. /build/stage/lane/lane.env\n"
        "{ printf '[%s]' \"${OPTIONS[@]}\"; echo; echo \"$MULTI_BINARY $STATIC\";\n"
        "  for k in $(printf '%s\\n' \"${!LAYOUT[@]}\" | LC_ALL=C sort); do echo \"$k=${LAYOUT[$k]}\"; done;\n"
        "} > /build/out/seen\n")
    toml = d / "lanes" / lane / "lane.toml"
    toml.write_text('options = ["--a", "two words", "it\'s"]\nmulti_binary = "xtables-multi"\nstatic = true\n'
                    '[layout]\ndocker = "usr"\n"docker.io" = "usr/local"\n')
    seen = ws.out(lane) / "stages" / "laned" / "seen"
    manifest = ws.out(lane) / "stages" / "laned.manifest.json"

    def build() -> str:
        ws.doit("lock=test.lock", "build:laned")
        return json.loads(manifest.read_text())["key"]

    first = build()
    assert seen.read_text() == "[--a][two words][it's]\nxtables-multi true\ndocker=usr\ndocker.io=usr/local\n"
    toml.write_text(toml.read_text().replace('"--a"', '"--b"'))
    second = build()
    assert second != first and seen.read_text().startswith("[--b][two words]")
    renderer = ws.root / "onlydocker" / "stage" / "lanedata.py"
    renderer.write_text(renderer.read_text() + "# a change to the renderer\n")
    assert build() not in (first, second)
