"""NFS synced folders as the 2015 original's users wrote them
(`type: "nfs", mount_options: ["nolock", "vers=3", "udp"]`), the guest side
for real: the box's guest plugin (its `nfs_client_installed` and
`mount_nfs_folder`, loaded with Vagrant's own library) mounts a folder
served by a user-space NFS server (nfs-ganesha: this host's kernel has no
NFS server) into the booted image, over UDP and over TCP, and files cross
both ways.

Everything runs in a network and mount namespace this test makes: rpcbind
and ganesha listen there (only its loopback exists), qemu runs there, and the
guest reaches them at 10.0.2.2 through qemu's user network; SSH into the
guest is a forward on that namespace's 127.0.0.1."""
from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from onlydocker.cli import boot, vm
from tests.conftest import require_tool
from tests.test_boot import BOOTS, kernel_initrd  # noqa: F401  (the fixture)

GUEST_PLUGIN = Path(__file__).resolve().parent.parent / "stages/box/files/onlydocker_guest.rb"
DONE = "ONLYDOCKER-NFS-TEST-DONE"

GANESHA_CONF = """\
NFS_CORE_PARAM {{
    Protocols = 3;
    NFS_Port = 2049;
    MNT_Port = 20048;
    Enable_NLM = false;
    Enable_RQUOTA = false;
    Enable_UDP = true;
}}
NFSV4 {{ Graceless = true; }}
EXPORT {{
    Export_Id = 1;
    Path = "{share}";
    Pseudo = "{share}";
    Protocols = 3;
    Transports = UDP, TCP;
    Access_Type = RW;
    Squash = No_Root_Squash;
    SecType = sys;
    FSAL {{ Name = VFS; }}
}}
"""

# Run by `unshare --net --mount`: a private /run (rpcbind's socket and lock),
# rpcbind first (ganesha registers its programs there and stops without it),
# then ganesha in the foreground: the namespace lives as long as it does.
NAMESPACE = """\
set -e
ip link set lo up
mount -t tmpfs tmpfs /run
rpcbind -f &
i=0
until rpcinfo -p 127.0.0.1 >/dev/null 2>&1; do i=$((i + 1)); [ $i -lt 100 ] || exit 1; sleep 0.1; done
exec ganesha.nfsd -F -f "$1" -L "$2" -p /run/ganesha.pid
"""

# The guest plugin's own capabilities, called as Vagrant calls them, with a
# machine whose communicator is ssh into the booted image.
HARNESS = """\
require "json"
require "vagrant"
load ARGV.shift
ssh = JSON.parse(ARGV.shift)
folders = JSON.parse(ARGV.shift, symbolize_names: true)
ip = ARGV.shift

class Comm
  def initialize(ssh) = @ssh = ssh
  def test(cmd, **) = system(*@ssh, cmd, out: File::NULL, err: File::NULL)
  def execute(cmd, error_class: Vagrant::Errors::VagrantError, **)
    out = IO.popen([*@ssh, cmd], err: [:child, :out], &:read)
    return 0 if $?.success?
    warn "#{cmd}: #{out}"
    raise error_class
  end
  alias sudo execute
end

machine = Struct.new(:communicate).new(Comm.new(ssh))
cap = VagrantPlugins::GuestOnlyDocker::Cap
abort "nfs_client_installed: false" unless cap.nfs_client_installed(machine)
cap.mount_nfs_folder(machine, ip, folders)
puts "mounted"
"""


def _vagrant_lib() -> str:
    found = sorted(glob.glob("/usr/share/rubygems-integration/all/gems/vagrant-[0-9]*/lib")
                   + glob.glob("/opt/vagrant/embedded/gems/gems/vagrant-[0-9]*/lib"))
    if not found:
        pytest.fail("Vagrant's library was not found (apt-get install vagrant)")
    return found[-1]


@pytest.mark.slow
@BOOTS
def test_nfs_synced_folders_mount_as_the_original_wrote_them(kernel_initrd, tmp_path):  # noqa: F811
    for tool in ("unshare", "nsenter", "rpcbind", "rpcinfo", "ganesha.nfsd", "ruby", "ssh"):
        require_tool(tool)
    kernel, initrd = kernel_initrd
    key = tmp_path / "insecure_key"
    shutil.copyfile(vm.insecure_key(None), key)
    key.chmod(0o600)
    share = tmp_path / "share"
    share.mkdir()
    (share / "from-host.txt").write_text("written on the host\n")
    conf = tmp_path / "ganesha.conf"
    conf.write_text(GANESHA_CONF.format(share=share))
    log = tmp_path / "ganesha.log"
    holder = subprocess.Popen(["unshare", "--net", "--mount", "--propagation", "private", "--",
                               "sh", "-c", NAMESPACE, "namespace", str(conf), str(log)],
                              stdout=open(tmp_path / "namespace.out", "wb"), stderr=subprocess.STDOUT,
                              start_new_session=True)
    ns = ["nsenter", f"--net=/proc/{holder.pid}/ns/net", "--"]
    result: dict[str, boot.BootResult] = {}
    qemu = threading.Thread(daemon=True, target=lambda: result.update(boot=boot.boot(
        kernel, initrd, marker=DONE, timeout=900, log_path=tmp_path / "boot.log",
        hostfwd={2222: 22}, wrap=ns)))
    try:
        deadline = time.monotonic() + 30
        served = ""
        while time.monotonic() < deadline and holder.poll() is None:
            served = subprocess.run([*ns, "rpcinfo", "-p", "127.0.0.1"], capture_output=True, text=True).stdout
            if served.count(" nfs") >= 2 and served.count(" mountd") >= 4:
                break
            time.sleep(0.5)
        assert holder.poll() is None and " nfs" in served, (
            (tmp_path / "namespace.out").read_text(errors="replace")
            + (log.read_text(errors="replace")[-3000:] if log.exists() else "") + served)

        qemu.start()
        ssh = [*ns, "ssh", "-p", "2222", "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
               "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10",
               "-o", "LogLevel=ERROR", "root@127.0.0.1"]

        def guest(cmd: str, check: bool = True) -> str:
            r = subprocess.run([*ssh, cmd], capture_output=True, text=True, timeout=120)
            if check:
                assert r.returncode == 0, f"{cmd}: {r.stdout}{r.stderr}"
            return r.stdout

        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and qemu.is_alive():
            if subprocess.run([*ssh, "true"], capture_output=True, timeout=60).returncode == 0:
                break
            time.sleep(3)
        else:
            pytest.fail(f"no SSH into the guest: see {tmp_path / 'boot.log'}")

        for proto, path in (("udp", "/vagrant"), ("tcp", "/vagrant-tcp")):
            # What Vagrant's NFS synced folder hands the capability: its own
            # vers= and udp, then the Vagrantfile's mount_options.
            folders = {path: {"guestpath": path, "hostpath": str(share), "nfs_version": 3,
                              "nfs_udp": proto == "udp", "mount_options": ["nolock", "vers=3", proto]}}
            r = subprocess.run(["ruby", "-I", _vagrant_lib(), "-e", HARNESS, str(GUEST_PLUGIN), json.dumps(ssh),
                                json.dumps(folders), "10.0.2.2"], capture_output=True, text=True, timeout=300)
            assert r.returncode == 0 and "mounted" in r.stdout, r.stdout + r.stderr
            mount = guest(f"grep ' {path} ' /proc/mounts")
            assert mount.startswith(f"10.0.2.2:{share} {path} nfs "), mount
            opts = mount.split()[3].split(",")
            assert {"vers=3", f"proto={proto}", "nolock"} <= set(opts), mount
            assert guest(f"cat {path}/from-host.txt") == "written on the host\n"
            guest(f"echo 'written in the guest over {proto}' > {path}/from-guest-{proto}.txt")
            assert (share / f"from-guest-{proto}.txt").read_text() == f"written in the guest over {proto}\n"
            guest(f"umount {path}")
        # boot() ends qemu as soon as it reads this: the ssh may not see its own end.
        guest(f"echo {DONE} > /dev/console", check=False)
        qemu.join(timeout=120)
        assert result["boot"].marker_seen, result["boot"].text[-4000:]
        print(f"NFS v3 over UDP and TCP from ganesha: the guest's run took {result['boot'].seconds:.1f} s")
    finally:
        # qemu runs in the namespace (nsenter execs it): found by that, ended,
        # so that boot() returns; then rpcbind and ganesha, the namespace's life.
        netns = _netns(holder.pid)
        for pid in (p for p in os.listdir("/proc") if p.isdigit()):
            if netns and int(pid) != holder.pid and _netns(int(pid)) == netns:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        try:
            os.killpg(holder.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        holder.wait()
        if qemu.is_alive():
            qemu.join(timeout=60)


def _netns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None
