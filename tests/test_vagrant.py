"""The boxes with real Vagrant (Debian's vagrant 2.3.4 and vagrant-libvirt):
`vagrant box add` of the published catalog (both providers, over HTTP on
127.0.0.1), then one libvirt machine: up, ssh, Docker from the host over SSH,
an image kept across `vagrant halt` / `vagrant up` on the data disk, a
graceful halt through the guest plugin, destroy.

Network rule: libvirtd (and with it vagrant-libvirt's management network,
its bridge and dnsmasq) runs inside a network namespace this test creates;
every vagrant command that talks to the machine runs in it too. Nothing is
bridged to the machine's own network. qemu runs without KVM (TCG)."""
from __future__ import annotations

import functools
import http.server
import io
import json
import os
import re
import shutil
import signal
import subprocess
import tarfile
import tempfile
import threading
import time
import tomllib
from pathlib import Path

import pytest

from onlydocker.formats import box
from onlydocker.inputs import lock
from tests.conftest import MODERN_LANE as LANE
from tests.conftest import MODERN_LOCK as LOCK
from tests.conftest import require_tool

pytestmark = [pytest.mark.slow, pytest.mark.docker, pytest.mark.budget("vagrant")]

BOX = f"onlydocker/onlydocker-{LANE}"
ROOT = Path(__file__).resolve().parent.parent
NETNS = f"od-vagrant-{os.getpid()}"
TCP_PORT = 12375          # the user's opt-in Docker TCP forward, on the namespace's 127.0.0.1
PRIVATE_IP = "192.168.33.10"   # the original's private network, inside the test's namespace


def _run(cmd, *, env=None, timeout=600, check=True, netns=None):
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}")
    return r


def _pid(path: str) -> int | None:
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def libvirt_netns():
    """libvirtd and virtlogd inside a network namespace of our own; stopped
    (by their pids) and the namespace deleted afterwards. A libvirtd that
    already runs is used only if it runs in a namespace other than the
    machine's own (else its networks would be on the machine's network)."""
    for tool in ("vagrant", "libvirtd", "virtlogd", "virsh", "ip", "qemu-system-x86_64", "ssh", "docker"):
        require_tool(tool)
    if os.geteuid() != 0:
        pytest.skip("ip netns and libvirtd need root")
    plugins = _run(["vagrant", "plugin", "list"], env={**os.environ, "VAGRANT_CHECKPOINT_DISABLE": "1"}).stdout
    if "vagrant-libvirt" not in plugins:
        pytest.skip(f"vagrant-libvirt is not installed (vagrant plugin list: {plugins.strip()})")
    running = _pid("/run/libvirtd.pid")
    if _alive(running):
        ns = _run(["ip", "netns", "identify", str(running)], check=False).stdout.strip()
        if not ns:
            pytest.skip("a libvirtd already runs in the machine's own network namespace: its "
                        "networks would be bridged there; stop it or start it with `ip netns exec`")
        yield ns
        return
    _run(["ip", "netns", "add", NETNS])
    started = []
    try:
        _run(["ip", "link", "set", "lo", "up"], netns=NETNS)
        for daemon, pidfile in (("virtlogd", "/run/virtlogd.pid"), ("libvirtd", "/run/libvirtd.pid")):
            _run([daemon, "-d"], netns=NETNS)
            for _ in range(50):
                if _alive(_pid(pidfile)):
                    break
                time.sleep(0.2)
            started.append(_pid(pidfile))
        for _ in range(50):
            if _run(["virsh", "-c", "qemu:///system", "version"], check=False).returncode == 0:
                break
            time.sleep(0.2)
        yield NETNS
    finally:
        for pid in reversed(started):
            if _alive(pid):
                os.kill(pid, signal.SIGTERM)
        _run(["ip", "netns", "delete", NETNS], check=False)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def catalog(modern_lane, tmp_path_factory):
    """The lane's dist/ republished with its boxes' base URL on a real HTTP
    server on 127.0.0.1 (only the catalog changes: no stage runs again),
    then republished with the default base URL afterwards."""
    root = tmp_path_factory.mktemp("boxes")
    (root / LANE).symlink_to(modern_lane.dist)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    modern_lane.env["ONLYDOCKER_BOX_BASE_URL"] = base
    try:
        ran = modern_lane.doit(f"lock={LOCK}")
        assert " built" not in ran.stdout + ran.stderr
        yield modern_lane.dist / box.CATALOG, base
    finally:
        server.shutdown()
        del modern_lane.env["ONLYDOCKER_BOX_BASE_URL"]
        modern_lane.doit(f"lock={LOCK}")


@pytest.fixture(scope="module")
def vagrant_env(tmp_path_factory):
    home = tmp_path_factory.mktemp("vagrant.d")
    return {**os.environ, "VAGRANT_HOME": str(home), "VAGRANT_CHECKPOINT_DISABLE": "1",
            "VAGRANT_DEFAULT_PROVIDER": "libvirt", "LIBVIRT_DEFAULT_URI": "qemu:///system"}


def test_the_catalog_lists_both_boxes_with_their_sha256(catalog):
    path, base = catalog
    cat = json.loads(path.read_text())
    assert cat["name"] == BOX
    providers = {p["name"]: p for p in cat["versions"][0]["providers"]}
    assert set(providers) == {"virtualbox", "libvirt"}
    sums = dict(reversed(line.split()) for line in (path.parent / "SHA256SUMS").read_text().splitlines())
    for name, p in providers.items():
        assert p["url"] == f"{base}/{LANE}/onlydocker-{name}.box"
        assert p["checksum_type"] == "sha256" and p["checksum"] == sums[f"onlydocker-{name}.box"]
    assert box.CATALOG in sums        # signed with the rest
    with tarfile.open(path.parent / "onlydocker-libvirt.box") as tf:
        assert sorted(tf.getnames()) == ["Vagrantfile", "box.img", "metadata.json", "onlydocker_guest.rb"]
        assert json.loads(tf.extractfile("metadata.json").read()) == {
            "provider": "libvirt", "format": "qcow2", "virtual_size": 40}


def test_vagrant_box_add_takes_both_providers_from_the_catalog(catalog, vagrant_env):
    path, _ = catalog
    for provider in ("virtualbox", "libvirt"):
        r = _run(["vagrant", "box", "add", "--provider", provider, str(path)], env=vagrant_env)
        assert f"Successfully added box '{BOX}' (v1.0.0) for '{provider}'!" in r.stdout, r.stdout
    listing = _run(["vagrant", "box", "list"], env=vagrant_env).stdout
    assert f"{BOX} (libvirt, 1.0.0)" in listing and f"{BOX} (virtualbox, 1.0.0)" in listing


# The 2015 box's README's Vagrantfile, its first lines as written but the box;
# its NFS folder as 9p (this host's kernel has no NFS server: tests/test_nfs.py
# tests NFS against a user-space one), then what this test adds.
VAGRANTFILE = """\
Vagrant.configure("2") do |config|
  config.vm.define "only-docker"
  config.vm.box = "{box}"
  config.vm.hostname = "only-docker"
  config.vm.network "private_network", ip: "{private_ip}"
  config.vm.boot_timeout = 900
  # The Docker API on TCP only because this Vagrantfile asks, on loopback only.
  config.vm.network "forwarded_port", guest: 2375, host: {tcp_port}, host_ip: "127.0.0.1"
  config.vm.provision "docker-tcp", type: "shell", run: "always", inline: "onlydocker-docker-tcp"
  # A synced folder with no daemon on the host: qemu's virtio-9p. "mapped":
  # libvirt's qemu runs as its own user, and keeps the guest's owners in xattrs.
  config.vm.synced_folder "{shared}", "/vagrant", type: "9p", accessmode: "mapped"
  config.vm.provider "libvirt" do |lv|
    lv.driver = "qemu"                     # no KVM here: TCG
    lv.cpus = 2
    lv.graphics_type = "none"
    lv.management_network_mode = "none"    # isolated, inside the test's namespace anyway
    lv.serial :type => "file", :source => {{:path => "{console}"}}
  end
end
"""


def _ssh_wrapper(bindir: Path, config: Path) -> None:
    """`ssh` as the docker CLI calls it, reading the config `vagrant ssh-config`
    printed (the user's one-liner appends it to ~/.ssh/config instead)."""
    bindir.mkdir(exist_ok=True)
    real = shutil.which("ssh")
    (bindir / "ssh").write_text(f'#!/bin/sh\nexec {real} -F {config} "$@"\n')
    (bindir / "ssh").chmod(0o755)


def _tiny_image_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        data = b"kept on the data disk\n"
        info = tarfile.TarInfo("kept.txt")
        info.size, info.mtime = len(data), 1686355200
        tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_vagrant_up_ssh_docker_halt_up_destroy(catalog, vagrant_env, libvirt_netns, tmp_path):
    ns = libvirt_netns
    # The box must be in this VAGRANT_HOME (the test above adds it; alone, add it here).
    if f"{BOX} (libvirt" not in _run(["vagrant", "box", "list"], env=vagrant_env).stdout:
        _run(["vagrant", "box", "add", "--provider", "libvirt", str(catalog[0])], env=vagrant_env)
    project = tmp_path / "project"
    project.mkdir()
    # qemu runs as libvirt's user: the console file's folder must let it in.
    console_dir = Path(tempfile.mkdtemp(prefix="od-vagrant-console-"))
    console_dir.chmod(0o755)
    console = console_dir / "console.log"
    # The 9p folder: qemu (libvirt's user) must reach it and write in it.
    shared = Path(tempfile.mkdtemp(prefix="od-vagrant-9p-"))
    shared.chmod(0o777)
    (shared / "from-host.txt").write_text("written on the host\n")
    (shared / "from-host.txt").chmod(0o644)
    (project / "Vagrantfile").write_text(VAGRANTFILE.format(box=BOX, tcp_port=TCP_PORT, console=console,
                                                               private_ip=PRIVATE_IP, shared=shared))
    env = {**vagrant_env, "VAGRANT_CWD": str(project)}

    def vagrant(*args, timeout=900, check=True):
        return _run(["vagrant", *args], env=env, timeout=timeout, check=check, netns=ns)

    # vagrant-libvirt keeps the box's disk in libvirt's pool under a name made
    # of box name and version, and reuses it: one left from an earlier build
    # of version 1.0.0 would be booted instead of this build's.
    _delete_base_volume()
    try:
        up = vagrant("up", "--provider", "libvirt", timeout=1500)
        out = up.stdout
        # Vagrant logged in with its insecure key, then put a fresh one in its place.
        assert "Inserting generated public key within guest" in out and "Key inserted!" in out, out
        assert "onlydocker-docker-tcp: Docker's API on tcp port 2375" in out, out

        info = vagrant("ssh", "-c", "docker info; echo PID1=$(cat /proc/1/comm); hostname; "
                                    "cat /root/.ssh/authorized_keys; ip -4 addr show eth1").stdout
        docker_version = ".".join(lock.load(ROOT / LOCK).source("docker.io").version.split(".")[:2])
        assert f"Server Version: {docker_version}" in info and "Docker Root Dir: /var/lib/docker" in info, info
        assert "PID1=dockerd" in info and "\nonly-docker\n" in info, info
        assert "vagrant insecure public key" not in info
        assert f"inet {PRIVATE_IP}/24" in info, info
        # The private network's address answers from the host side (libvirt's
        # bridge for it, inside the test's namespace).
        ping = _run(["busybox", "ping", "-c", "2", "-W", "5", PRIVATE_IP], netns=ns, check=False)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        host_key = vagrant("ssh", "-c", "cat /etc/dropbear/dropbear_ed25519_host_key | md5sum").stdout.split()[0]
        mounts = vagrant("ssh", "-c", "grep ' /var/lib/docker ' /proc/mounts").stdout
        # The disk image's data partition (stages/libvirt): 2 on either layout.
        assert mounts.startswith("/dev/vda2 /var/lib/docker ext"), mounts
        # The 9p synced folder, mounted by vagrant-libvirt's capability: both ways.
        assert "Mounting 9p shared folders..." in out, out
        nine = vagrant("ssh", "-c", "grep ' /vagrant ' /proc/mounts; cat /vagrant/from-host.txt; "
                                    "echo 'written in the guest' > /vagrant/from-guest.txt").stdout
        assert " /vagrant 9p " in nine and "trans=virtio" in nine, nine
        assert "written on the host" in nine, nine
        assert (shared / "from-guest.txt").read_text() == "written in the guest\n"

        # Docker from the host, over SSH only (the daemon's unix socket, via dial-stdio).
        ssh_config = tmp_path / "ssh_config"
        ssh_config.write_text(vagrant("ssh-config", "--host", "onlydocker").stdout)
        _ssh_wrapper(tmp_path / "bin", ssh_config)
        denv = {**env, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
        denv.pop("DOCKER_HOST", None)
        imported = subprocess.run(["ip", "netns", "exec", ns, "docker", "-H", "ssh://onlydocker", "import", "-",
                                   "od-vagrant/kept:1"], input=_tiny_image_tar(), env=denv, capture_output=True,
                                  timeout=300)
        assert imported.returncode == 0, imported.stderr.decode()
        os_name = _run(["docker", "-H", "ssh://onlydocker", "info", "--format", "{{.OperatingSystem}}"],
                       env=denv, netns=ns).stdout
        assert "Only Docker" in os_name, os_name
        # And over the TCP forward this Vagrantfile asked for, on 127.0.0.1.
        tcp = _run(["docker", "-H", f"tcp://127.0.0.1:{TCP_PORT}", "image", "inspect", "od-vagrant/kept:1",
                    "--format", "{{.Id}}"], env=denv, netns=ns).stdout
        assert tcp.startswith("sha256:"), tcp

        halt = vagrant("halt", timeout=600)
        # The guest plugin's halt (poweroff -f), not libvirt's ACPI request or a forced stop.
        assert "Attempting graceful shutdown of VM..." in halt.stdout, halt.stdout
        assert "Halting domain" not in halt.stdout and "direct shutdown" not in halt.stdout, halt.stdout
        assert "reboot: Power down" in console.read_text(errors="replace")
        assert "shutoff" in vagrant("status").stdout

        vagrant("up", "--provider", "libvirt", timeout=1500)
        again = vagrant("ssh", "-c", "docker image inspect od-vagrant/kept:1 --format '{{.Id}}'; "
                                     "echo PID1=$(cat /proc/1/comm); "
                                     "cat /etc/dropbear/dropbear_ed25519_host_key | md5sum").stdout
        assert "sha256:" in again and "PID1=dockerd" in again, again
        assert host_key in again           # the host keys are on the data disk too
    finally:
        destroy = vagrant("destroy", "-f", timeout=600, check=False)
    assert destroy.returncode == 0, destroy.stdout + destroy.stderr
    domains = _run(["virsh", "-c", "qemu:///system", "list", "--all", "--name"]).stdout
    assert "project" not in domains, domains
    volumes = _run(["virsh", "-c", "qemu:///system", "vol-list", "default"], check=False).stdout
    assert not re.search(r"project_default\.img", volumes), volumes
    shutil.rmtree(console_dir, ignore_errors=True)
    shutil.rmtree(shared, ignore_errors=True)
    _delete_base_volume()


def _project(catalog, vagrant_env, tmp_path: Path, vagrantfile: str) -> dict:
    """A project folder holding `vagrantfile`, the box added to this
    VAGRANT_HOME if an earlier test has not; the environment to run vagrant in."""
    if f"{BOX} (libvirt" not in _run(["vagrant", "box", "list"], env=vagrant_env).stdout:
        _run(["vagrant", "box", "add", "--provider", "libvirt", str(catalog[0])], env=vagrant_env)
    project = tmp_path / "project"
    project.mkdir()
    (project / "Vagrantfile").write_text(vagrantfile)
    return {**vagrant_env, "VAGRANT_CWD": str(project)}


# The 2015 box's README's Vagrantfile exactly as written but its box, and the
# provider block this machine needs (no KVM).
ORIGINAL_VAGRANTFILE = """\
Vagrant.configure("2") do |config|
  config.vm.define "only-docker"
  config.vm.box = "{box}"
  config.vm.hostname = "only-docker"
  config.vm.network "private_network", ip: "{private_ip}"
  config.vm.synced_folder ".", "/vagrant", type: "nfs", mount_options: ["nolock", "vers=3", "udp"]
  config.vm.provider "libvirt" do |lv|
    lv.driver = "qemu"
  end
end
"""
NFS_NOT_SUPPORTED = "It appears your machine doesn't support NFS"


def test_the_original_vagrantfile_on_a_host_without_an_nfs_server_gets_vagrants_own_message(
        catalog, vagrant_env, libvirt_netns, tmp_path):
    """This host's kernel has no NFS server: `vagrant up` of the original
    Vagrantfile stops with Vagrant's own NFS message before the machine
    boots (no hang, no guest-side error), and leaves nothing behind."""
    ns = libvirt_netns
    env = _project(catalog, vagrant_env, tmp_path, ORIGINAL_VAGRANTFILE.format(box=BOX, private_ip=PRIVATE_IP))
    started = time.monotonic()
    try:
        up = _run(["vagrant", "up", "--provider", "libvirt"], env=env, timeout=900, check=False, netns=ns)
        took = time.monotonic() - started
        said = up.stdout + up.stderr
        assert up.returncode != 0, said
        assert NFS_NOT_SUPPORTED in " ".join(said.split()), said
        # It stopped before making anything: no domain, no disk of its own.
        assert "Creating image" not in said and "Starting domain" not in said, said
        domains = _run(["virsh", "-c", "qemu:///system", "list", "--all", "--name"], netns=ns).stdout
        assert "project_only-docker" not in domains, domains
        volumes = _run(["virsh", "-c", "qemu:///system", "vol-list", "default"], check=False, netns=ns).stdout
        assert "project_only-docker" not in volumes, volumes
        print(f"vagrant up of the original Vagrantfile: Vagrant's NFS message after {took:.0f} s")
    finally:
        # Vagrant checks the synced folders on destroy too (and says the same):
        # there is nothing to destroy, so its verdict is not asked for.
        _run(["vagrant", "destroy", "-f"], env=env, timeout=600, check=False, netns=ns)
        _delete_base_volume()


# The README's UEFI lines, added to a Vagrantfile of the original's shape:
# OVMF's code, and a variable store libvirt makes from its template (Debian's
# ovmf describes both in /usr/share/qemu/firmware/).
UEFI_VAGRANTFILE = """\
Vagrant.configure("2") do |config|
  config.vm.define "only-docker"
  config.vm.box = "{box}"
  config.vm.hostname = "only-docker"
  config.vm.boot_timeout = 900
  config.vm.synced_folder ".", "/vagrant", disabled: true
  config.vm.provider "libvirt" do |lv|
    lv.loader = "/usr/share/OVMF/OVMF_CODE_4M.fd"
    lv.nvram = "/var/lib/libvirt/qemu/nvram/only-docker-test_VARS.fd"
    lv.driver = "qemu"                     # no KVM here: TCG
    lv.cpus = 2
    lv.graphics_type = "none"
    lv.management_network_mode = "none"
  end
end
"""


def test_vagrant_up_boots_the_libvirt_box_under_uefi_when_the_vagrantfile_asks(catalog, vagrant_env, libvirt_netns,
                                                                                 tmp_path):
    """`lv.loader` and `lv.nvram`: the same box boots its unified kernel
    image under OVMF, comes up for Vagrant, and keeps Docker on its data
    partition (the GPT disk's 2: 1 is the EFI system partition)."""
    ns = libvirt_netns
    if not tomllib.loads((ROOT / "stages" / "iso" / "lanes" / LANE / "lane.toml").read_text())["uefi"]:
        pytest.fail(f"the default lane ({LANE}) boots under UEFI")
    env = _project(catalog, vagrant_env, tmp_path, UEFI_VAGRANTFILE.format(box=BOX))

    def vagrant(*args, timeout=900, check=True):
        return _run(["vagrant", *args], env=env, timeout=timeout, check=check, netns=ns)

    _delete_base_volume()
    try:
        vagrant("up", "--provider", "libvirt", timeout=1500)
        domain = _run(["virsh", "-c", "qemu:///system", "dumpxml", "project_only-docker"], netns=ns).stdout
        assert "OVMF_CODE_4M.fd" in domain and "only-docker-test_VARS.fd" in domain, domain
        info = vagrant("ssh", "-c", "ls -d /sys/firmware/efi && echo PID1=$(cat /proc/1/comm) && "
                                    "grep ' /var/lib/docker ' /proc/mounts && docker info --format '{{.Driver}}'").stdout
        assert "/sys/firmware/efi" in info and "PID1=dockerd" in info and "overlay2" in info, info
        assert "/dev/vda2 /var/lib/docker ext4" in info, info
    finally:
        destroy = vagrant("destroy", "-f", timeout=600, check=False)
        _run(["rm", "-f", "/var/lib/libvirt/qemu/nvram/only-docker-test_VARS.fd"], check=False)
    assert destroy.returncode == 0, destroy.stdout + destroy.stderr
    _delete_base_volume()


def _delete_base_volume() -> None:
    volumes = _run(["virsh", "-c", "qemu:///system", "vol-list", "default", "--details"], check=False).stdout
    for name in re.findall(rf"^\s*({re.escape(BOX.replace('/', '-VAGRANTSLASH-'))}_vagrant_box_image_\S+)", volumes, re.M):
        _run(["virsh", "-c", "qemu:///system", "vol-delete", "--pool", "default", name])
