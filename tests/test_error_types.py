"""Each failure a user can act on has its own type (errors.py), and its
message names the real command or file: the defects found reading the house
(issue 23), each shown here."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from onlydocker.errors import BuildError, LegalInfoError, StageError
from onlydocker.publish import legal
from onlydocker.stage.decl import load_stage
from onlydocker.stage.paths import LanePaths


def test_a_missing_builder_record_names_the_task_that_makes_it(tmp_path):
    with pytest.raises(BuildError, match=r"run `doit build:builder` first"):
        LanePaths(tmp_path / "out" / "lane").builder()


def test_a_bad_stage_folder_is_a_stage_error(tmp_path):
    (tmp_path / "s").mkdir()
    with pytest.raises(StageError, match="missing stage.toml"):
        load_stage(tmp_path / "s")
    (tmp_path / "s" / "stage.toml").write_text('description = "s"\noutputs = ["x"]\nkeep = "yes"\n')
    (tmp_path / "s" / "build.sh").write_text("true\n")
    with pytest.raises(StageError, match=r"keep = true\|false, for a container stage only"):
        load_stage(tmp_path / "s")


def test_a_series_naming_a_missing_patch_is_a_legal_info_error(tmp_path):
    d = tmp_path / "patches" / "hello" / "1.0"
    d.mkdir(parents=True)
    (d / "series").write_text("0001-there.patch\n0002-gone.patch\n")
    (d / "0001-there.patch").write_text("")
    with pytest.raises(LegalInfoError, match="names '0002-gone.patch'"):
        legal.patch_series(tmp_path, SimpleNamespace(name="hello", version="1.0"))
