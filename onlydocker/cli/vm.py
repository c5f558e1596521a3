"""`doit boot`: boot the lane's artifacts in qemu on this machine, the
serial console on this terminal, with Docker reachable from the host over
SSH through a forward on 127.0.0.1 (never another address).

As `vagrant up` does, the first login uses Vagrant's well-known insecure
key (the image trusts it on a disk without keys of its own) and puts a key
pair made for this boot in its place, so that only this machine's user can
log in. The way in is then written to out/<lane>/boot/ssh_config (a host
named `onlydocker`), which `ssh -F` reads, and which Docker's ssh:// reads
through a wrapper `ssh` in out/<lane>/boot/bin/ put first on PATH (Docker's
CLI runs the `ssh` it finds there); nothing of the user's is changed."""
from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

from ..errors import OnlyDockerError
from .boot import OVMF_VARS, qemu_command

# Where Vagrant keeps its insecure private key (Debian's package; the upstream installer).
INSECURE_KEY_GLOBS = ("/usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant",
                      "/opt/vagrant/embedded/gems/gems/vagrant-*/keys/vagrant")
SSH_WAIT = 600          # seconds for the guest's SSH to answer (TCG boots take 30-60 s)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def insecure_key(given: str | None) -> Path:
    if given:
        path = Path(given)
        if not path.is_file():
            raise OnlyDockerError(f"--insecure-key {given}: no such file")
        return path
    for pattern in INSECURE_KEY_GLOBS:
        found = sorted(glob.glob(pattern))
        if found:
            return Path(found[-1])
    raise OnlyDockerError("Vagrant's insecure private key (the image's first login) was not found in "
                          f"{' or '.join(INSECURE_KEY_GLOBS)}: install vagrant, or give --insecure-key PATH")


def images(dist: Path, iso: bool) -> tuple[Path | None, Path | None, Path | None]:
    names = ["onlydocker.iso"] if iso else ["vmlinuz", "initrd"]
    missing = [n for n in names if not (dist / n).is_file()]
    if missing:
        raise OnlyDockerError(f"no {', '.join(str(dist / n) for n in missing)}: build the lane first "
                              f"(`doit lock=…`)")
    return (None, None, dist / "onlydocker.iso") if iso else (dist / "vmlinuz", dist / "initrd", None)


def _ssh_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.settimeout(5)
            return s.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def _ssh_options(state: Path, port: int, key: Path) -> list[str]:
    return ["-p", str(port), "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=accept-new", "-o", f"UserKnownHostsFile={state / 'known_hosts'}",
            "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR"]


def provision(state: Path, port: int, first_key: Path) -> Path:
    """Log in with `first_key`, put a key pair of this boot's in its place;
    write ssh_config; return its path."""
    key = state / "id_ed25519"
    for p in (key, key.with_suffix(".pub")):
        p.unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "onlydocker-boot", "-f", str(key)],
                   check=True, capture_output=True)
    pub = key.with_suffix(".pub").read_bytes()
    r = subprocess.run(["ssh", *_ssh_options(state, port, first_key), "root@127.0.0.1",
                        "umask 077 && cat > /root/.ssh/authorized_keys.new && "
                        "mv /root/.ssh/authorized_keys.new /root/.ssh/authorized_keys && sync"],
                       input=pub, capture_output=True, timeout=120)
    if r.returncode != 0:
        raise OnlyDockerError(f"ssh root@127.0.0.1:{port} with {first_key} refused "
                              f"({r.stderr.decode(errors='replace').strip() or r.returncode}): a disk with keys "
                              f"of its own needs them (ssh -p {port} root@127.0.0.1)")
    config = state / "ssh_config"
    config.write_text(f"Host onlydocker\n  HostName 127.0.0.1\n  Port {port}\n  User root\n"
                      f"  IdentityFile {key}\n  IdentitiesOnly yes\n  UserKnownHostsFile {state / 'known_hosts'}\n"
                      f"  StrictHostKeyChecking accept-new\n")
    # Docker's CLI runs the `ssh` it finds on PATH, with no way to name a
    # config file; this one reads ours, and nothing of the user's is changed.
    bindir = state / "bin"
    bindir.mkdir(exist_ok=True)
    wrapper = bindir / "ssh"
    wrapper.write_text(f"#!/bin/sh\n# Written by `doit boot`: ssh with this boot's config.\n"
                       f"exec {shutil.which('ssh')} -F {config} \"$@\"\n")
    wrapper.chmod(0o755)
    return config


def run(dist: Path, state: Path, *, iso: bool = False, disk: str | None = None, ssh_port: int | None = None,
        memory_mb: int = 2048, insecure: str | None = None, out: TextIO = sys.stdout, firmware: str = "bios") -> int:
    """Boot until qemu ends (a poweroff in the guest, Ctrl-C here). Under
    UEFI (`firmware="uefi"`, OVMF) the ISO boots its unified kernel image;
    the firmware's variables are kept in `state` from boot to boot, as a
    machine's NVRAM."""
    if firmware not in ("bios", "uefi"):
        raise OnlyDockerError(f"--firmware {firmware}: one of bios, uefi")
    if firmware == "uefi":
        iso = True
    kernel, initrd, iso_path = images(dist, iso)
    uefi_vars = None
    if firmware == "uefi":
        if iso_path is None or not (dist / "onlydocker.efi").is_file():
            raise OnlyDockerError(f"--firmware uefi: this lane's ISO has no UEFI boot ({dist / 'onlydocker.efi'} "
                                  f"is missing: its stages/iso lane.toml says uefi = false); use --firmware bios")
        if not OVMF_VARS.is_file():
            raise OnlyDockerError(f"{OVMF_VARS} is missing: UEFI boots need OVMF (apt-get install ovmf)")
    first_key = insecure_key(insecure)
    for tool in ("ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            raise OnlyDockerError(f"{tool} is not installed (apt-get install openssh-client)")
    state.mkdir(parents=True, exist_ok=True)
    (state / "known_hosts").unlink(missing_ok=True)     # each boot's guest makes its own host keys
    # ssh refuses a private key others can read: Vagrant's copy is world-readable.
    copy = state / "vagrant-insecure-key"
    copy.unlink(missing_ok=True)
    fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(first_key.read_bytes())
    first_key = copy
    if disk:
        data = Path(disk)
        if not data.is_file():
            raise OnlyDockerError(f"--disk {disk}: no such file (make one: truncate -s 4G {disk})")
    else:
        data = state / "scratch.img"
        data.unlink(missing_ok=True)
        with open(data, "wb") as f:
            f.truncate(4 << 30)      # sparse and empty: formatted on first boot, as the box's disk
    if firmware == "uefi":
        uefi_vars = state / "OVMF_VARS.fd"
        if not uefi_vars.is_file():
            shutil.copyfile(OVMF_VARS, uefi_vars)
    port = ssh_port or free_port()
    cmd = qemu_command(kernel, initrd, iso=iso_path, memory_mb=memory_mb, disk=data, hostfwd={port: 22},
                       terminal=True, firmware=firmware, uefi_vars=uefi_vars)
    if iso_path is not None:
        cmd += ["-boot", "menu=off"]
    say = lambda text: print(f"boot: {text}", file=out, flush=True)  # noqa: E731
    say(f"{' '.join(['ISO ' + str(iso_path)] if iso_path else [str(kernel), str(initrd)])} ({firmware}), "
        f"data disk {data}{' (scratch, new each boot)' if not disk else ''}; SSH forwarded from 127.0.0.1:{port}; "
        f"Ctrl-C ends it")
    proc = subprocess.Popen(cmd)
    stop = threading.Event()

    def when_up() -> None:
        end = time.monotonic() + SSH_WAIT
        while not stop.is_set() and time.monotonic() < end:
            if _ssh_answers(port):
                break
            stop.wait(2)
        else:
            if not stop.is_set():
                say(f"SSH did not answer on 127.0.0.1:{port} within {SSH_WAIT} s")
            return
        try:
            config = provision(state, port, first_key)
        except (OnlyDockerError, OSError, subprocess.SubprocessError) as e:
            say(f"SSH answers on 127.0.0.1:{port}, but: {e}")
            return
        say(f"Docker is up. In another shell: `ssh -F {config} onlydocker` for a shell; for the docker CLI:\n"
            f"  export PATH={config.parent / 'bin'}:$PATH DOCKER_HOST=ssh://onlydocker\n  docker info")

    watcher = threading.Thread(target=when_up, daemon=True)
    watcher.start()
    try:
        rc = proc.wait()
        interrupted = False
    except KeyboardInterrupt:
        interrupted = True
    finally:
        stop.set()
        # Ctrl-C reached qemu too at a terminal (one process group, signal=on);
        # whatever else sent it, qemu is ended here, and a second Ctrl-C
        # does not cut this short.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
            rc = proc.wait()
        finally:
            signal.signal(signal.SIGINT, previous)
    say(f"qemu ended ({'Ctrl-C' if interrupted else f'exit {rc}'}); the data disk: {data}")
    return 0
