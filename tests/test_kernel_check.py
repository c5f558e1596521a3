"""The kernel stage's Docker check (stages/kernel/files/docker-check-config): each
modern lane's own contrib/check-config.sh (Docker 20.10's colours its verdicts,
Docker 26.1's prints none into a file), taken from its docker.io package as
the stage takes it, run on configs made here. The built kernel's verdict is
checked in test_modern_lane.py."""
from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from onlydocker import config
from onlydocker.inputs import lock
from onlydocker.inputs.fetch import Fetcher
from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent
CHECKER = ROOT / "stages/kernel/files/docker-check-config"
LANES = ["bookworm", "trixie"]


@pytest.fixture(scope="module", params=LANES)
def lane(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def release(lane) -> str:
    return lock.load(ROOT / "locks" / f"{lane}.lock").source("linux").version


@pytest.fixture(scope="module")
def check_script(tmp_path_factory, lane) -> Path:
    """contrib/check-config.sh out of the lane's docker.io .deb (the verified
    source from the cache, fetched when it is not there yet)."""
    require_tool("bash")
    require_tool("dpkg-deb")
    path = ROOT / "locks" / f"{lane}.lock"
    lk = lock.load(path)
    deb = Fetcher(config.load(path)).fetch(lk.source("docker.io"), progress=False)
    out = tmp_path_factory.mktemp("check") / "check-config.sh"
    tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], check=True, capture_output=True).stdout
    script = subprocess.run(["tar", "-xO", "./usr/share/docker.io/contrib/check-config.sh"], input=tar,
                            check=True, capture_output=True).stdout
    out.write_bytes(script)
    return out


@pytest.fixture
def waivers(tmp_path, lane) -> Path:
    """The lane's waivers as the kernel's build.sh hands them to the checker:
    one "OPTION why" a line, sorted, from lane.toml's docker_check_config_waivers."""
    toml = ROOT / "stages/kernel/lanes" / lane / "lane.toml"
    table = tomllib.loads(toml.read_text())["docker_check_config_waivers"]
    path = tmp_path / "waivers"
    path.write_text("".join(f"{opt} {why}\n" for opt, why in sorted(table.items())))
    return path


@pytest.fixture
def run(release):
    def run(script: Path, cfg: Path, tmp_path: Path, waivers: Path | None = None, srcdir: Path | None = None,
            declined: Path | None = None):
        args = ["sh", str(CHECKER), str(script), str(cfg), release, str(tmp_path / "report.txt")]
        if waivers is not None:
            args += [str(waivers), str(srcdir or tmp_path)]
        if declined is not None:
            args += [str(declined)]
        return subprocess.run(args, capture_output=True, text=True)
    return run


def named(stdout: str) -> list[str]:
    line = [ln for ln in stdout.splitlines() if "finds these missing or wrong:" in ln]
    return line[0].split("missing or wrong:", 1)[1].split() if line else []


def judged_options(run, script: Path, tmp_path: Path) -> list[str]:
    """Every option the script wants under the three judged sections: what it
    finds missing in a config that has nothing."""
    empty = tmp_path / "empty.config"
    empty.write_text("# nothing\n")
    r = run(script, empty, tmp_path)
    assert r.returncode == 1
    return named(r.stdout)


def test_a_bare_config_fails_naming_the_options(run, check_script, tmp_path):
    opts = judged_options(run, check_script, tmp_path)
    for o in ("CONFIG_NAMESPACES", "CONFIG_CGROUPS", "CONFIG_CFS_BANDWIDTH", "CONFIG_IP_VS_RR",
              "CONFIG_VXLAN", "CONFIG_XFRM_USER", "CONFIG_IPVLAN", "CONFIG_MACVLAN", "CONFIG_NF_NAT_TFTP"):
        assert o in opts, (o, opts)
    # Storage drivers are not judged (the lane uses overlay2 only).
    assert "CONFIG_BTRFS_FS" not in opts and "CONFIG_OVERLAY_FS" not in opts
    report = (tmp_path / "report.txt").read_text()
    assert "Generally Necessary:" in report and "- Network Drivers:" in report
    assert "\033" not in report        # colours stripped


def test_everything_set_passes_and_one_missing_is_named(run, check_script, tmp_path):
    opts = judged_options(run, check_script, tmp_path)
    full = tmp_path / "full.config"
    full.write_text("".join(f"{o}=m\n" for o in opts))
    r = run(check_script, full, tmp_path)
    assert r.returncode == 0, r.stdout[-3000:]
    assert "every option under Generally Necessary, Optional Features and Network Drivers is enabled" in r.stdout
    assert "every option" in (tmp_path / "report.txt").read_text().splitlines()[-1]
    one_short = tmp_path / "short.config"
    one_short.write_text("".join(f"{o}=y\n" for o in opts if o != "CONFIG_IPVLAN"))
    r = run(check_script, one_short, tmp_path)
    assert r.returncode == 1 and named(r.stdout) == ["CONFIG_IPVLAN"], r.stdout[-2000:]


def test_a_waiver_holds_only_for_a_symbol_the_kernel_does_not_define(run, check_script, tmp_path, waivers):
    opts = judged_options(run, check_script, tmp_path)
    cfg = tmp_path / "no-memcg-swap.config"
    cfg.write_text("".join(f"{o}=y\n" for o in opts if o != "CONFIG_MEMCG_SWAP"))
    src = tmp_path / "src"
    (src / "mm").mkdir(parents=True)
    (src / "mm" / "Kconfig").write_text("config SWAP\n\tbool \"swap\"\n")
    r = run(check_script, cfg, tmp_path, waivers, src)
    assert r.returncode == 0, r.stdout[-2000:]
    assert re.search(r"CONFIG_MEMCG_SWAP waived: Linux 6\.1 removed it", r.stdout)
    assert "waived: CONFIG_MEMCG_SWAP" in (tmp_path / "report.txt").read_text()
    # A kernel that still has the option: the waiver does not hold.
    (src / "init").mkdir()
    (src / "init" / "Kconfig").write_text("config MEMCG_SWAP\n\tbool\n")
    r = run(check_script, cfg, tmp_path, waivers, src)
    assert r.returncode == 1 and named(r.stdout) == ["CONFIG_MEMCG_SWAP"]
    assert "but this kernel's Kconfig defines it" in r.stdout


def test_an_option_is_declined_only_if_optional_and_defined_by_the_kernel(run, check_script, tmp_path):
    opts = judged_options(run, check_script, tmp_path)
    src = tmp_path / "src"
    (src / "net").mkdir(parents=True)
    (src / "net" / "Kconfig").write_text("config IP_VS_RR\n\ttristate\nconfig CGROUPS\n\tbool\n")
    declined = tmp_path / "declined"
    none = tmp_path / "no-waivers"
    none.write_text("")

    def without(opt):
        cfg = tmp_path / f"no-{opt}.config"
        cfg.write_text("".join(f"{o}=y\n" for o in opts if o != opt))
        return cfg

    # An optional feature the kernel has, left off on purpose: it passes, said and reported.
    declined.write_text("IP_VS_RR swarm services are not used here\n")
    r = run(check_script, without("CONFIG_IP_VS_RR"), tmp_path, none, src, declined)
    assert r.returncode == 0, r.stdout[-2000:]
    assert "kernel config: CONFIG_IP_VS_RR declined: swarm services are not used here" in r.stdout
    assert "declined: CONFIG_IP_VS_RR: swarm services are not used here" in (tmp_path / "report.txt").read_text()
    # A necessary one cannot be declined.
    declined.write_text("CGROUPS not wanted\n")
    r = run(check_script, without("CONFIG_CGROUPS"), tmp_path, none, src, declined)
    assert r.returncode == 1 and named(r.stdout) == ["CONFIG_CGROUPS"], r.stdout[-2000:]
    assert "declines CONFIG_CGROUPS, but Docker's script lists it as necessary, not optional" in r.stdout
    # Nor one this kernel does not have: that is a waiver's case.
    declined.write_text("IP_VS_RR swarm services are not used here\n")
    (src / "net" / "Kconfig").write_text("config CGROUPS\n\tbool\n")
    r = run(check_script, without("CONFIG_IP_VS_RR"), tmp_path, none, src, declined)
    assert r.returncode == 1 and named(r.stdout) == ["CONFIG_IP_VS_RR"], r.stdout[-2000:]
    assert "this kernel's Kconfig has no such option: waive it instead" in r.stdout


def test_something_else_than_check_config_is_refused(run, tmp_path):
    require_tool("bash")
    fake = tmp_path / "fake.sh"
    fake.write_text("echo hello\n")
    cfg = tmp_path / "c"
    cfg.write_text("CONFIG_X=y\n")
    r = run(fake, cfg, tmp_path)
    assert r.returncode == 1 and 'printed no "Generally Necessary:" section' in r.stdout
