"""`doit boot`, for real: the lane's kernel + initrd in qemu, the console on
the command's output, and then Docker driven from this host over SSH
through the forward on 127.0.0.1, as a user would; Ctrl-C (SIGINT to its
process group) ends it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from tests.conftest import MODERN_LANE, MODERN_LOCK, require_tool


def test_boot_refuses_an_unknown_firmware_and_an_unbuilt_lane_in_one_line(tmp_path):
    from tests import workspace as wsmod
    ws = wsmod.make(tmp_path / "ws")
    (ws.root / "t.lock").write_text(wsmod.builder_tables())
    r = ws.doit("boot", "--lock", "t.lock", "--firmware", "efi", check=False)
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        "error: --firmware efi: one of bios, uefi"], r.stderr
    for firmware in ("bios", "uefi"):
        r = ws.doit("boot", "--lock", "t.lock", "--firmware", firmware, check=False)
        assert r.returncode == 1 and "build the lane first" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    # A built lane whose ISO has no UEFI boot (uefi = false) says so.
    lane = tomllib.loads((ws.root / "t.lock").read_text())["lane"]["name"]
    dist = ws.root / "out" / lane / "dist"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "onlydocker.iso").write_bytes(b"an ISO")
    r = ws.doit("boot", "--lock", "t.lock", "--firmware", "uefi", check=False)
    assert r.returncode == 1 and "this lane's ISO has no UEFI boot" in r.stderr, r.stderr


@pytest.mark.slow
@pytest.mark.docker
@pytest.mark.budget("boots")
def test_doit_boot_gives_a_console_and_docker_over_ssh_and_ends_on_ctrl_c(modern_lane, tmp_path):
    for tool in ("qemu-system-x86_64", "ssh", "docker", "vagrant"):
        require_tool(tool)
    log = open(tmp_path / "boot.out", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "doit", "boot", "--lock", MODERN_LOCK], cwd=modern_lane.root,
                            env=modern_lane.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        text = ""
        while "Docker is up" not in text and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(2)
            text = (tmp_path / "boot.out").read_text(errors="replace")
        assert "Docker is up" in text, text[-5000:]
        assert "Linux version" in text and "init: exec" in text      # the serial console, on its output
        config = modern_lane.out(MODERN_LANE) / "boot" / "ssh_config"
        # As the command says: its ssh first on PATH, DOCKER_HOST=ssh://onlydocker.
        env = {**os.environ, "PATH": f"{config.parent / 'bin'}:{os.environ['PATH']}", "DOCKER_HOST": "ssh://onlydocker"}
        info = subprocess.run(["docker", "info", "--format", "{{.OperatingSystem}} {{.Driver}}"], env=env,
                              capture_output=True, text=True, timeout=180)
        assert info.returncode == 0 and "overlay2" in info.stdout, info.stdout + info.stderr
        _console_image_takes_over_at_the_next_console(env, tmp_path / "boot.out")
        # This boot's own key lets its user in; Vagrant's insecure key no longer does.
        shell = subprocess.run(["ssh", "-F", str(config), "onlydocker", "cat /proc/1/comm"],
                               capture_output=True, text=True, timeout=60)
        assert shell.stdout.strip() == "dockerd", shell.stdout + shell.stderr
        from onlydocker.cli.vm import insecure_key
        port = next(line.split()[1] for line in config.read_text().splitlines() if line.strip().startswith("Port"))
        insecure = tmp_path / "insecure-key"
        insecure.write_bytes(insecure_key(None).read_bytes())
        insecure.chmod(0o600)
        old = subprocess.run(["ssh", "-F", "/dev/null", "-p", port, "-i", str(insecure),
                              "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                              "-o", "UserKnownHostsFile=/dev/null", "root@127.0.0.1", "true"],
                             capture_output=True, text=True, timeout=60)
        assert old.returncode != 0 and "Permission denied" in old.stderr, old.stderr
        os.killpg(proc.pid, signal.SIGINT)           # Ctrl-C at the terminal
        assert proc.wait(timeout=30) == 0
        assert "qemu ended" in (tmp_path / "boot.out").read_text(errors="replace")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _console_image_takes_over_at_the_next_console(env: dict, serial_log) -> None:
    """The original's customisation: an image tagged console-image:latest
    is what the next console container runs, once the current one exits."""
    def docker(*args: str, timeout: float = 120) -> str:
        r = subprocess.run(["docker", *args], env=env, capture_output=True, text=True, timeout=timeout)
        assert r.returncode == 0, f"docker {' '.join(args)}: {r.stdout}{r.stderr}"
        return r.stdout.strip()

    def console_image() -> str:
        return docker("inspect", "--format", "{{.Config.Image}}", "console")

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:        # the first console starts once DHCP is done
        r = subprocess.run(["docker", "inspect", "--format", "{{.State.Running}}", "console"], env=env,
                           capture_output=True, text=True, timeout=60)
        if r.stdout.strip() == "true":
            break
        time.sleep(2)
    assert console_image() == "onlydocker/busybox:latest"
    docker("run", "--name", "mine", "onlydocker/busybox:latest", "sh", "-c", "echo my console > /etc/motd")
    docker("commit", "mine", "console-image:latest")
    docker("rm", "mine")
    first = docker("inspect", "--format", "{{.Id}}", "console")
    docker("kill", "console")                 # the console ends, as `exit` in it would end it
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        r = subprocess.run(["docker", "inspect", "--format", "{{.Id}} {{.State.Running}}", "console"], env=env,
                           capture_output=True, text=True, timeout=60)
        if r.returncode == 0 and r.stdout.split() and r.stdout.split()[0] != first and "true" in r.stdout:
            break
        time.sleep(2)
    assert console_image() == "console-image:latest"
    assert docker("exec", "console", "cat", "/etc/motd") == "my console"
    said = Path(serial_log).read_text(errors="replace")
    assert "console-container: starting the console container from console-image:latest" in said, said[-3000:]
