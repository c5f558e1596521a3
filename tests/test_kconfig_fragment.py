"""The one Kconfig merge (onlydocker/stage/kconfig-fragment.sh, /build/engine/
kconfig-fragment in the container), which the kernel and BusyBox stages both
run: merge, resolve with defaults, check. Run here with the host's sh, on
configs made here and on BusyBox's real Kconfig (its lane source, built with
the host's cc and make), with the fragment the lane really uses."""
from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from onlydocker import config
from onlydocker.inputs import lock
from onlydocker.inputs.fetch import Fetcher
from tests.conftest import MODERN_LANE, MODERN_LOCK, require_tool

ROOT = Path(__file__).resolve().parent.parent
HELPER = ROOT / "onlydocker" / "stage" / "kconfig-fragment.sh"

BASE = """#
# Automatically generated file; DO NOT EDIT.
#
CONFIG_A=y
CONFIG_B=y
# CONFIG_C is not set
CONFIG_STR="old"
CONFIG_AB=y
CONFIG_N=16
"""


def run(tmp_path: Path, fragment: str, *resolve: str) -> subprocess.CompletedProcess:
    (tmp_path / "fragment").write_text(fragment)
    return subprocess.run(["sh", str(HELPER), str(tmp_path / "fragment"), *(resolve or ("true",))],
                          cwd=tmp_path, capture_output=True, text=True)


@pytest.fixture
def tree(tmp_path):
    (tmp_path / ".config").write_text(BASE)
    return tmp_path


def test_a_fragment_line_replaces_the_base_line_or_is_added(tree):
    r = run(tree, "# a comment\n\n# CONFIG_A is not set\nCONFIG_C=m\nCONFIG_STR=\"new value, 'quoted'\"\n"
                  "CONFIG_D=y\nCONFIG_N=32\n")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "every option of" in r.stdout
    lines = (tree / ".config").read_text().splitlines()
    assert "CONFIG_A=y" not in lines and "# CONFIG_A is not set" in lines
    assert "CONFIG_C=m" in lines and "# CONFIG_C is not set" not in lines
    assert lines.count("CONFIG_STR=\"new value, 'quoted'\"") == 1 and 'CONFIG_STR="old"' not in lines
    assert "CONFIG_D=y" in lines and "CONFIG_N=32" in lines and "CONFIG_N=16" not in lines
    # Only the fragment's own options: CONFIG_AB (CONFIG_A's prefix) and CONFIG_B stay.
    assert "CONFIG_AB=y" in lines and "CONFIG_B=y" in lines
    assert "# a comment" not in lines


def test_the_resolver_sees_the_merged_config_and_defaults_for_every_question(tree):
    # An oldconfig-like resolver: it reads answers from its input (`yes ''`
    # gives empty ones: the defaults) and sees the merged file.
    resolver = ("for q in 1 2 3; do read -r answer; [ -z \"$answer\" ] || exit 9; done; "
                "grep -qx CONFIG_D=y .config && echo CONFIG_E=y >> .config")
    r = run(tree, "CONFIG_D=y\n", "sh", "-c", resolver)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "CONFIG_E=y" in (tree / ".config").read_text().splitlines()


def test_an_option_the_resolver_drops_fails_naming_it_and_both_values(tree):
    drop = ("sh", "-c", "sed -i '/^CONFIG_D=/d' .config")
    r = run(tree, "CONFIG_D=y\n", *drop)
    assert r.returncode == 1
    assert "CONFIG_D:" in r.stdout and "wants y, the resolved .config has not set" in r.stdout
    demote = ("sh", "-c", "sed -i 's/^CONFIG_D=y$/CONFIG_D=m/' .config")
    r = run(tree, "CONFIG_D=y\n", *demote)
    assert r.returncode == 1 and "CONFIG_D: " in r.stdout and "wants y, the resolved .config has m" in r.stdout
    select = ("sh", "-c", "sed -i 's/^# CONFIG_A is not set$/CONFIG_A=y/' .config")
    r = run(tree, "# CONFIG_A is not set\n", *select)
    assert r.returncode == 1 and "CONFIG_A: " in r.stdout and "wants not set, the resolved .config has y" in r.stdout
    string = ("sh", "-c", "sed -i 's/^CONFIG_STR=.*/CONFIG_STR=\"other\"/' .config")
    r = run(tree, 'CONFIG_STR="mine"\n', *string)
    assert r.returncode == 1 and 'wants "mine", the resolved .config has "other"' in r.stdout


def test_a_failing_resolver_fails_the_merge(tree):
    r = run(tree, "CONFIG_D=y\n", "false")
    assert r.returncode != 0 and "every option" not in r.stdout


def test_a_line_that_is_not_an_option_a_comment_or_blank_is_refused(tree):
    before = (tree / ".config").read_text()
    r = run(tree, "CONFIG_A=y\nCONFIG_B = y\n")
    assert r.returncode == 1 and "not an option, a comment or blank: 2:CONFIG_B = y" in r.stdout
    assert (tree / ".config").read_text() == before


def test_without_a_base_config_it_says_so(tmp_path):
    r = run(tmp_path, "CONFIG_A=y\n")
    assert r.returncode == 1 and "make the base config first" in r.stdout


@pytest.fixture(scope="module")
def busybox_tree(tmp_path_factory) -> Path:
    """The modern lane's BusyBox source (verified, from the cache or fetched),
    unpacked, with the host's cc building its Kconfig."""
    require_tool("make")
    require_tool("cc")
    lk = lock.load(ROOT / MODERN_LOCK)
    tarball = Fetcher(config.load(ROOT / MODERN_LOCK)).fetch(lk.source("busybox"), progress=False)
    dest = tmp_path_factory.mktemp("busybox")
    with tarfile.open(tarball) as tf:
        tf.extractall(dest, filter="data")
    [src] = [p for p in dest.iterdir() if p.is_dir()]
    return src


def busybox(src: Path, fragment: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "KCONFIG_NOTIMESTAMP": "1"}
    subprocess.run(["make", "-s", "defconfig"], cwd=src, env=env, check=True, capture_output=True)
    return subprocess.run(["sh", str(HELPER), str(fragment), "make", "-s", "oldconfig"],
                          cwd=src, env=env, capture_output=True, text=True)


def test_busybox_real_kconfig_takes_the_lane_fragment(busybox_tree):
    fragment = ROOT / "stages" / "busybox" / "lanes" / MODERN_LANE / "config"
    r = busybox(busybox_tree, fragment)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = (busybox_tree / ".config").read_text().splitlines()
    assert "CONFIG_STATIC=y" in lines and "# CONFIG_TC is not set" in lines
    assert "# CONFIG_MODPROBE is not set" in lines


def test_busybox_real_kconfig_drops_an_option_whose_dependency_is_off_and_the_stage_fails(busybox_tree, tmp_path):
    # Blacklist support depends on MODPROBE, which the fragment turns off:
    # oldconfig drops it silently; the check names it.
    fragment = tmp_path / "config"
    shutil.copy(ROOT / "stages" / "busybox" / "lanes" / MODERN_LANE / "config", fragment)
    with open(fragment, "a") as f:
        f.write("CONFIG_FEATURE_MODPROBE_BLACKLIST=y\n")
    r = busybox(busybox_tree, fragment)
    assert r.returncode == 1
    assert "CONFIG_FEATURE_MODPROBE_BLACKLIST: " in r.stdout and "wants y, the resolved .config has not set" in r.stdout
