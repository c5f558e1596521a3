#!/usr/bin/env bash
# Sets up a fresh Debian (bookworm) machine for Only Docker's pipeline:
# the Debian tools it drives, a Docker engine, and a virtualenv with the
# pinned Python dependencies. Safe to run again. Run it as yourself: the
# steps that need root (apt-get, dockerd) go through sudo when you are not root;
# the virtualenv belongs to whoever runs it.
set -euo pipefail
cd "$(dirname "$0")"

as_root=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "setup.sh: not root and no sudo: run it as root" >&2; exit 1; }
    as_root=(sudo)
fi

DEBIAN_PACKAGES=(
    docker.io            # the engine every build runs in
    mmdebstrap           # makes the builder image's rootfs, reproducibly
    qemu-system-x86      # boots the image in the tests
    qemu-utils           # qemu-img, for the tests of the box's disk
    xorriso isolinux syslinux-common   # ISO tests on the host
    ovmf                 # UEFI firmware (with Secure Boot variants) for the UEFI boots
    mtools               # reads the ISO's EFI system partition in the tests
    dosfstools fdisk syslinux   # the disk image stage run on the host by the tests (FAT32, GPT, SYSLINUX)
    cpio zstd xz-utils   # to inspect initrds by hand and in tests
    minisign             # verifies our signatures independently
    diffoscope-minimal   # explains a reproducibility difference
    busybox-static       # a tiny real rootfs for the fast tests
    vagrant vagrant-libvirt libvirt-daemon-system   # the boxes tested with real Vagrant
    kmod                 # modinfo: Vagrant's NFS check on a host without systemd (modinfo nfsd)
    dnsmasq-base         # DHCP of vagrant-libvirt's network (inside the test's netns)
    openssh-client       # vagrant ssh, docker -H ssh://
    ruby                 # ruby -c on the boxes' Vagrantfiles and guest plugin
    nginx-light          # a real WebDAV remote cache for the tests (started by them, on loopback)
    nfs-ganesha nfs-ganesha-vfs rpcbind   # a user-space NFS server for the NFS synced-folder test (in its own netns)
    gnupg                # signs the tests' own small Debian archive (doit lock --update)
    python3-venv
)

if ! dpkg -s "${DEBIAN_PACKAGES[@]}" >/dev/null 2>&1; then
    "${as_root[@]}" apt-get update -q
    # No package's daemon starts on its own here (nginx would listen on every
    # address on port 80): policy-rc.d's 101 says "not now" to invoke-rc.d.
    policy=/usr/sbin/policy-rc.d
    made_policy=
    if [ ! -e "$policy" ]; then
        "${as_root[@]}" sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
        made_policy=1
    fi
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${DEBIAN_PACKAGES[@]}"
    if [ -n "$made_policy" ]; then "${as_root[@]}" rm -f "$policy"; fi
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip
# Every Python package of the pipeline and its tests, by version and sha256
# (requirements.lock, made from pyproject.toml by pip-compile: see the README),
# then the project itself with nothing more.
.venv/bin/pip install -q --require-hashes -r requirements.lock
.venv/bin/pip install -q --no-deps -e .

# A Docker engine: start one if none answers (no systemd in containers/CI).
if ! docker info >/dev/null 2>&1; then
    if command -v systemctl >/dev/null 2>&1 && systemctl is-system-running >/dev/null 2>&1; then
        "${as_root[@]}" systemctl start docker
    else
        "${as_root[@]}" sh -c 'nohup dockerd >/var/log/dockerd.log 2>&1 &'
    fi
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || { echo "dockerd did not start: see /var/log/dockerd.log" \
        "(not root? add yourself to the docker group, or set DOCKER_HOST)" >&2; exit 1; }
fi
echo "setup done: run the tests with .venv/bin/pytest, build with .venv/bin/doit"
