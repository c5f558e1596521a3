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


@pytest.mark.parametrize("value, offline", [("1", True), ("yes", True), ("on", True), ("off", False),
                                            ("False", False), ("0", False), ("no", False)])
def test_a_flag_said_off_is_off(tmp_path, value, offline):
    env = {"ONLYDOCKER_CACHE": str(tmp_path / "c"), "HOME": str(tmp_path)}
    assert config.load(env=dict(env, ONLYDOCKER_OFFLINE=value), root=tmp_path).offline is offline
    assert config.load(env=dict(env, ONLYDOCKER_CLEAN=value), root=tmp_path).clean is offline


def test_the_config_file_example_in_the_docstring_is_read_as_it_says(tmp_path):
    """The example of config.py's docstring, as a user would copy it: every
    key it shows is one `load` reads (box_base_url and engines are top-level)."""
    doc = config.__doc__
    example = doc[doc.index("The config file is TOML"):].split("\n", 1)[1]
    # (Its CA bundle and trusted keys are placeholders for the user's own files.)
    example = "\n".join(line[2:] for line in example.splitlines() if line.startswith("  ")
                        and not line.lstrip().startswith(("ca =", "trusted_keys =")))
    (tmp_path / "config.toml").write_text(example)
    s = config.load(env={"ONLYDOCKER_CONFIG": str(tmp_path / "config.toml"), "HOME": str(tmp_path)},
                    root=tmp_path)
    assert s.box_base_url == "https://boxes.example.org/onlydocker"
    assert s.engines == ("default", "ssh://builder@big.local")
    assert s.debian_mirror == "http://mirror.local/debian" and s.source_mirrors == ("http://cache.local/sources",)
    assert s.remote is not None and s.remote.readonly
