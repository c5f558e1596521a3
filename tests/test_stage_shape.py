"""Every stage folder has one shape, checked at load as Buildroot's
check-package checks its package/ folders: stage.toml; build.sh (a container
stage) XOR stage.py (a Python stage); optionally lanes/<lane>/ holding only
`config` (a Kconfig fragment, in a stage with `kconfig = true`) and
`lane.toml`; optionally files/. Anything else is refused at load in one
line that names the folder and what is missing or extra."""
from __future__ import annotations

from pathlib import Path

import pytest

from onlydocker.errors import OnlyDockerError
from onlydocker.stage.decl import load_stage, load_stages

REPO = Path(__file__).resolve().parent.parent


def _stage(root: Path, name: str, toml: str = "", files: dict[str, str] | None = None) -> Path:
    d = root / "stages" / name
    d.mkdir(parents=True)
    (d / "stage.toml").write_text(f'description = "{name}"\noutputs = ["x"]\n' + toml)
    for rel, text in (files or {}).items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_text(text)
    return d


def _refused(d: Path) -> str:
    with pytest.raises(OnlyDockerError) as e:
        load_stage(d)
    message = str(e.value)
    assert message.startswith(f"{d}: ") and "\n" not in message
    return message


def test_both_shapes_load_with_every_allowed_part(tmp_path):
    c = _stage(tmp_path, "c", 'kconfig = true\n', {"build.sh": "true\n", "lanes/a/config": "CONFIG_X=y\n",
                                                   "lanes/a/lane.toml": "", "lanes/b/lane.toml": "",
                                                   "files/deep/er/anything.txt": ""})
    p = _stage(tmp_path, "p", 'kind = "python"\n', {"stage.py": "def build(ctx): pass\n",
                                                     "lanes/a/lane.toml": "", "files/init": ""})
    assert load_stage(c).kind == "container" and load_stage(c).kconfig
    assert load_stage(p).kind == "python" and not load_stage(p).kconfig


def test_a_container_stage_without_build_sh(tmp_path):
    d = _stage(tmp_path, "c")
    assert _refused(d) == f"{d}: missing build.sh (a container stage)"


def test_a_python_stage_without_stage_py(tmp_path):
    d = _stage(tmp_path, "p", 'kind = "python"\n')
    assert _refused(d) == f"{d}: missing stage.py (a python stage)"


def test_a_stage_with_both_build_sh_and_stage_py(tmp_path):
    d = _stage(tmp_path, "c", files={"build.sh": "true\n", "stage.py": ""})
    assert _refused(d) == f"{d}: extra stage.py (a container stage has build.sh, not both)"
    d = _stage(tmp_path, "p", 'kind = "python"\n', files={"build.sh": "true\n", "stage.py": ""})
    assert _refused(d) == f"{d}: extra build.sh (a python stage has stage.py, not both)"


def test_a_stray_file_at_the_top(tmp_path):
    d = _stage(tmp_path, "c", files={"build.sh": "true\n", "isolinux.cfg": ""})
    assert _refused(d) == f"{d}: extra isolinux.cfg (put it in files/)"


def test_a_stray_file_in_a_lane_folder(tmp_path):
    d = _stage(tmp_path, "c", files={"build.sh": "true\n", "lanes/bookworm/binaries": ""})
    assert _refused(d) == f"{d}: extra lanes/bookworm/binaries (a lane folder holds only config and lane.toml)"


def test_a_kconfig_fragment_needs_kconfig_true(tmp_path):
    d = _stage(tmp_path, "c", files={"build.sh": "true\n", "lanes/bookworm/config": "CONFIG_X=y\n"})
    assert _refused(d) == (f"{d}: extra lanes/bookworm/config (a Kconfig fragment needs `kconfig = true` "
                           "in stage.toml)")


def test_a_file_where_lane_folders_go_and_several_problems_in_one_line(tmp_path):
    d = _stage(tmp_path, "p", 'kind = "python"\n', {"lanes/notes.txt": "", "README": ""})
    assert _refused(d) == (f"{d}: missing stage.py (a python stage); extra README (put it in files/); "
                           "extra lanes/notes.txt (lanes/ holds a folder per lane)")


def test_a_folder_without_stage_toml_is_refused_at_load(tmp_path):
    _stage(tmp_path, "c", files={"build.sh": "true\n"})
    (tmp_path / "stages" / "empty").mkdir()
    with pytest.raises(OnlyDockerError, match="stages/empty: missing stage.toml"):
        load_stages(tmp_path / "stages")


def test_a_bad_folder_stops_load_stages(tmp_path):
    _stage(tmp_path, "good", files={"build.sh": "true\n"})
    bad = _stage(tmp_path, "bad", files={"build.sh": "true\n", "extra.sh": ""})
    with pytest.raises(OnlyDockerError) as e:
        load_stages(tmp_path / "stages")
    assert str(e.value) == f"{bad}: extra extra.sh (put it in files/)"


def test_order_unknown_needs_and_cycles(tmp_path):
    for name, needs in (("a", []), ("b", ["a"]), ("c", ["a", "b"]), ("z", [])):
        _stage(tmp_path, name, f"needs = {needs!r}\n".replace("'", '"'), {"build.sh": ""})
    assert list(load_stages(tmp_path / "stages")) == ["a", "z", "b", "c"]
    _stage(tmp_path, "d", 'needs = ["nope"]\n', {"build.sh": ""})
    with pytest.raises(OnlyDockerError, match="d/stage.toml: needs unknown stage 'nope'"):
        load_stages(tmp_path / "stages")
    (tmp_path / "stages" / "d" / "stage.toml").write_text('description = "d"\noutputs = ["x"]\nneeds = ["e"]\n')
    _stage(tmp_path, "e", 'needs = ["f"]\n', {"build.sh": ""})
    _stage(tmp_path, "f", 'needs = ["d"]\n', {"build.sh": ""})
    with pytest.raises(OnlyDockerError) as e:
        load_stages(tmp_path / "stages")
    # The chain of needs, whichever stage it starts from.
    chain = str(e.value).removeprefix("stages: dependency cycle ").split(" -> ")
    assert chain[0] == chain[-1] and len(chain) == 4
    assert " -> ".join(chain[:3] * 2).find(" -> ".join(["d", "e", "f"])) >= 0


def test_the_repositorys_own_stages_have_the_one_shape():
    stages = load_stages(REPO / "stages")
    assert {d.name for d in stages.values() if d.kconfig} == {"kernel", "busybox"}
    assert {d.name for d in stages.values() if d.kind == "python"} == {"box", "images", "initrd", "rootfs",
                                                                     "rootfs-docker", "image-sbom", "source-notices"}


def test_stage_py_is_loaded_by_path_under_its_own_name_and_leaves_no_cache(tmp_path):
    from onlydocker.stage.pystage import load_build
    d = _stage(tmp_path, "p", 'kind = "python"\n', {"stage.py": "import os\ndef build(ctx):\n    return __name__\n"})
    build = load_build(d)
    assert build(None) == "onlydocker-stage:p"
    assert not (d / "__pycache__").exists()
    load_stage(d)       # still the one shape


@pytest.mark.parametrize("code, words", [
    ("def build(ctx)\n", ["does not load", "SyntaxError"]),
    ("import no_such_module_here\n", ["does not load", "no_such_module_here"]),
    ("def other(ctx):\n    pass\n", ["defines no build(ctx)"]),
])
def test_a_broken_stage_py_is_one_line_naming_it(tmp_path, code, words):
    from onlydocker.errors import BuildError
    from onlydocker.stage.pystage import load_build
    d = _stage(tmp_path, "p", 'kind = "python"\n', {"stage.py": code})
    with pytest.raises(BuildError) as e:
        load_build(d)
    assert str(e.value).startswith(str(d / "stage.py")) and "\n" not in str(e.value)
    for w in words:
        assert w in str(e.value)
