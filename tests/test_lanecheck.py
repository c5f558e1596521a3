"""A lane's data is checked before anything builds (onlydocker/stage/lanecheck.py):
on the project's own stages and lanes, copied and broken one way at a time;
and the Kconfig symbols a source defines, read by the archive check."""
from __future__ import annotations

import io
import re
import shutil
import tarfile
from pathlib import Path

import pytest

from onlydocker.errors import StageError
from onlydocker.formats import kconfig
from onlydocker.formats.unpack import check_source
from onlydocker.stage.decl import load_stages
from onlydocker.stage.lanecheck import check_lane

ROOT = Path(__file__).resolve().parent.parent
LANES = sorted(p.name for p in (ROOT / "stages" / "kernel" / "lanes").iterdir())


@pytest.fixture
def stages(tmp_path):
    shutil.copytree(ROOT / "stages", tmp_path / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path / "stages"


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1))


def _error(stages: Path, lane: str = "trixie") -> str:
    with pytest.raises(StageError) as e:
        check_lane(load_stages(stages), lane)
    return str(e.value)


def test_every_lane_of_the_project_passes():
    assert {"2015", "bookworm", "trixie"} <= set(LANES)
    for lane in LANES:
        check_lane(load_stages(ROOT / "stages"), lane)


def test_a_setting_the_build_needs_and_the_lane_lacks_is_named(stages):
    _edit(stages / "iptables" / "lanes" / "trixie" / "lane.toml", 'multi_binary = "xtables-legacy-multi"\n', "")
    assert _error(stages) == ("stage iptables: stages/iptables/lanes/trixie/lane.toml: missing key 'multi_binary' "
                              "(a string; stages/iptables/stage.toml's [lane_settings] requires it)")


def test_a_misspelt_setting_is_named_with_the_ones_the_stage_has(stages):
    _edit(stages / "modprobe" / "lanes" / "bookworm" / "lane.toml", "provider =", "provder =")
    assert _error(stages, "bookworm") == (
        "stage modprobe: stages/modprobe/lanes/bookworm/lane.toml: key 'provder' is no setting of this stage "
        "(stages/modprobe/stage.toml's [lane_settings]: provider)")


def test_a_setting_of_the_wrong_type_is_named(stages):
    _edit(stages / "dropbear" / "lanes" / "trixie" / "lane.toml", 'programs = ["dropbear", "dropbearkey", "scp", "dbclient"]',
          'programs = "dropbear"')
    assert _error(stages) == ("stage dropbear: stages/dropbear/lanes/trixie/lane.toml: key 'programs': "
                              "expected a list of strings, got 'dropbear'")


def test_a_value_the_shell_file_cannot_hold_is_named(stages):
    # A table of strings only: lane.env (lanedata.py) is rendered here too.
    (stages / "docker" / "lanes" / "trixie" / "lane.toml").write_text("[layout]\ndocker = 1\n")
    assert _error(stages) == ("stage docker: stages/docker/lanes/trixie/lane.toml: key 'layout' table key 'docker': "
                              "expected a string, got int 1")


def test_a_python_stage_checks_deeper_with_its_own_check_lane(stages):
    # rootfs's stage.py knows the fields of [lane]: init needs the daemon's command.
    path = stages / "rootfs" / "lanes" / "trixie" / "lane.toml"
    text = path.read_text()
    path.write_text(re.sub(r"^docker_daemon = .*\n", "", text, flags=re.M))
    assert _error(stages) == f"stage rootfs: {path}: [lane] field 'docker_daemon': missing"


def test_a_missing_lane_toml_is_named_with_what_the_stage_requires(stages):
    (stages / "images" / "lanes" / "trixie" / "lane.toml").unlink()
    assert _error(stages) == ("stage images: stages/images/lanes/trixie/lane.toml: is missing: "
                              "stages/images/stage.toml's [lane_settings] requires cmd, file, tags")


def test_a_missing_lane_folder_is_named(stages):
    shutil.rmtree(stages / "box" / "lanes" / "trixie")
    assert _error(stages) == ("stage box: stages/box/lanes/trixie: is missing: lane 'trixie' has no data for this "
                              "stage (lanes there: 2015, bookworm)")


def test_a_bad_lane_settings_declaration_is_refused_at_load(stages):
    with (stages / "modprobe" / "stage.toml").open("a") as f:
        f.write('extra = "list"\n')
    with pytest.raises(StageError, match=r"stages/modprobe/stage.toml: \[lane_settings\]: each key = one of"):
        load_stages(stages)


def test_every_declared_setting_is_read_by_the_stage_and_every_lane_toml_is_declared():
    """[lane_settings] follows the code: a container stage's build.sh uses
    each as its UPPER_SNAKE variable, a Python stage's stage.py names it."""
    for decl in load_stages(ROOT / "stages").values():
        code = (decl.dir / ("build.sh" if decl.kind == "container" else "stage.py")).read_text()
        for key, _ in decl.lane_settings:
            word = key.upper() if decl.kind == "container" else f'"{key}"'
            assert word in code, f"{decl.name}: [lane_settings] {key} is not read by its code"
        if any(decl.dir.glob("lanes/*/lane.toml")):
            assert decl.lane_settings, f"{decl.name} has lane.toml files and declares no [lane_settings]"


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_the_archive_check_collects_the_symbols_kconfig_and_busybox_define(tmp_path):
    path = tmp_path / "src.tar.gz"
    path.write_bytes(_tar({
        "linux/Kconfig": b'config MODULES\n\tbool "modules"\nmenuconfig NET\n\tbool\n',
        "linux/net/Kconfig.debug": b"config NET_DEBUG\n  bool\n\thelp\n\t  config NOT_A_DEFINITION is prose\n",
        "linux/drivers/x.c": b"/* config NOT_IN_KCONFIG */\nint x;\n",
        "busybox/Config.in": b"config DESKTOP\n",
        "busybox/coreutils/cal.c": b"//config:config CAL\n//config:\tbool \"cal\"\n//applet:IF_CAL(...)\n",
        "busybox/README": b"config README_IS_NOT_KCONFIG\n",
    }))
    symbols: set[str] = set()
    check_source(path, "src.tar.gz", kconfig_symbols=symbols)
    assert symbols == {"MODULES", "NET", "NET_DEBUG", "DESKTOP", "CAL"}


def test_a_fragment_s_unknown_options_are_found_with_their_lines(tmp_path):
    fragment = tmp_path / "config"
    fragment.write_text("# comment\nCONFIG_NET=y\n# CONFIG_CAL is not set\nCONFIG_NETT=y\nCONFIG_X=\"s\"\n")
    assert kconfig.unknown_options(fragment, {"NET", "CAL"}) == [(4, "NETT"), (5, "X")]
