"""Settings, read in one place (onlydocker/config.py)."""
from __future__ import annotations

import pytest

from onlydocker import config
from onlydocker.errors import ConfigError


def test_every_setting_comes_from_the_environment(tmp_path):
    (tmp_path / "v.toml").write_text(config.Variation(user="2000:2000", jobs=3, faketime="+397d").to_toml())
    s = config.load(env={"ONLYDOCKER_CACHE": str(tmp_path / "c"), "ONLYDOCKER_OUT": str(tmp_path / "o"),
                         "ONLYDOCKER_STAGE_CACHE": str(tmp_path / "sc"), "ONLYDOCKER_REBUILD": "busybox,initrd",
                         "ONLYDOCKER_VARIATION_FILE": str(tmp_path / "v.toml"), "HOME": str(tmp_path)},
                    root=tmp_path)
    assert s.out_root == tmp_path / "o" and s.stage_cache == tmp_path / "sc"
    assert s.rebuild == {"busybox", "initrd"}
    assert s.variation == config.Variation(user="2000:2000", jobs=3, faketime="+397d")
    assert not s.variation.canonical


def test_defaults_follow_the_project_and_the_cache(tmp_path):
    s = config.load(env={"ONLYDOCKER_CACHE": str(tmp_path / "c")}, root=tmp_path)
    assert s.out_root == tmp_path / "out" and s.stage_cache == (tmp_path / "c").resolve() / "stages"
    assert s.rebuild == frozenset() and s.variation.canonical


@pytest.mark.parametrize("text, words", [
    ('users = "2000:2000"\n', "unknown key 'users'"),
    ('jobs = "3"\n', "jobs must be a int"),
    ('jobs = true\n', "jobs must be a int"),
    ('user = 2000\n', "user must be a str"),
    ('user = "nobody"\n', "user must be uid or uid:gid"),
    ('user = \n', "v.toml"),
])
def test_a_bad_variation_file_is_named(tmp_path, text, words):
    (tmp_path / "v.toml").write_text(text)
    with pytest.raises(ConfigError) as e:
        config.load(env={"ONLYDOCKER_VARIATION_FILE": str(tmp_path / "v.toml")}, root=tmp_path)
    assert words in str(e.value) and "ONLYDOCKER_VARIATION_FILE" in str(e.value)
