"""The root filesystem without Docker (Docker is its own layer,
stages/rootfs-docker): BusyBox and its links, iptables and modprobe where
Docker and the kernel look for them, the kernel's modules, the bundled image,
the CA bundle, and the original's init and console-container.sh (files/),
with the lane's facts (lanes/<lane>/lane.toml). Cross-staging, like a
multi-stage Dockerfile's `COPY --from`."""
from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

from onlydocker.errors import BuildError
from onlydocker.stage.layout import check_installs, copy_file, fail, install, link_to, read_toml, symlink, write

if TYPE_CHECKING:      # only a type: the stage engine is not part of this stage's code key
    from pathlib import Path

    from onlydocker.stage.pystage import StageContext

DIRS = ("bin", "sbin", "usr/bin", "usr/sbin", "etc/onlydocker", "etc/ssl/certs", "dev", "proc", "sys",
        "tmp", "run", "var/lib/docker", "var/log", "mnt", "root", "usr/share/onlydocker/images")
IMAGES_DIR = "usr/share/onlydocker/images"
# What init and console-container.sh read from /etc/onlydocker/lane.conf.
LANE_KEYS = {"docker_daemon": True, "docker_ramdisk": False, "console_image_default": True,
             "dhcp_image": True, "image_archive": True, "image_load": False, "cgroup": False}
KMOD_NAMES = ("modprobe", "insmod", "rmmod", "lsmod", "depmod", "modinfo")
SCRIPTS = ("console-container.sh", "onlydocker-selftest", "onlydocker-featuretest", "onlydocker-sshd",
           "onlydocker-docker-tcp")


def check_lane(conf_path: Path, needs: set[str]) -> dict:
    """lane.toml, checked: every message names the file, the entry and the field."""
    conf = read_toml(conf_path)
    for key in conf:
        if key not in ("version", "lane", "install"):
            fail(conf_path, f"key {key!r}", "unknown (expected version, lane, install)")
    if not isinstance(conf.get("version"), str) or not conf["version"]:
        fail(conf_path, "field 'version'", "expected a non-empty string")
    lane = conf.get("lane")
    if not isinstance(lane, dict):
        fail(conf_path, "table [lane]", "missing")
    for key, required in LANE_KEYS.items():
        if required and key not in lane:
            fail(conf_path, f"[lane] field {key!r}", "missing")
    for key, value in lane.items():
        if key not in LANE_KEYS:
            fail(conf_path, f"[lane] field {key!r}", f"unknown (expected one of {', '.join(LANE_KEYS)})")
        # Written into a shell file inside single quotes.
        if not isinstance(value, str) or "'" in value or "\n" in value:
            fail(conf_path, f"[lane] field {key!r}", f"expected a one-line string without quotes, got {value!r}")
    if lane.get("image_load", "load") not in ("load", "import"):
        fail(conf_path, "[lane] field 'image_load'", f"expected 'load' or 'import', got {lane['image_load']!r}")
    if lane.get("cgroup", "v1") not in ("v1", "v2"):
        fail(conf_path, "[lane] field 'cgroup'", f"expected 'v1' or 'v2', got {lane['cgroup']!r}")
    if not lane["image_archive"].startswith(f"/{IMAGES_DIR}/"):
        fail(conf_path, "[lane] field 'image_archive'", f"expected a file under /{IMAGES_DIR}/")
    check_installs(conf_path, conf.get("install", []), needs)
    return conf


def build(ctx: StageContext) -> None:
    # Here, not at the top: the lane's check before every run loads this file
    # for check_lane, and pyelftools alone takes 40 ms to import.
    from onlydocker.formats import elfdeps
    conf_path = ctx.lane_dir / "lane.toml"
    conf = check_lane(conf_path, set(ctx.deps))
    root = ctx.out
    for d in DIRS:
        (root / d).mkdir(parents=True, exist_ok=True)
    # /var/run is /run (a tmpfs at boot): docker.sock and pid files live there.
    symlink(root, "var/run", "../run")

    # BusyBox, and a relative link for each applet.
    bb = ctx.deps["busybox"] / "bin"
    copy_file(bb / "busybox", root / "bin" / "busybox", 0o755)
    for link in (bb / "busybox.links").read_text().split():
        if link.strip("/") != "bin/busybox":
            link_to(root, link, "bin/busybox")

    # Binaries from other stages (Docker, iptables), with their library closure.
    for item in conf.get("install", []):
        install(ctx, conf_path, item, root)

    # modprobe, where the kernel (/sbin/modprobe) and Docker (PATH) look:
    # kmod's, or BusyBox's applets (already linked above).
    provider_file = ctx.deps["modprobe"] / "bin" / "modprobe-provider"
    provider = provider_file.read_text().strip()
    if provider == "kmod":
        kmod = ctx.deps["modprobe"] / "bin" / "kmod"
        if not elfdeps.is_static(kmod):
            raise BuildError(f"stage modprobe: {kmod} is dynamically linked; rootfs expects a static kmod")
        copy_file(kmod, root / "sbin" / "kmod", 0o755)
        for name in KMOD_NAMES:
            link_to(root, f"sbin/{name}", "sbin/kmod")
    elif provider != "busybox":
        raise BuildError(f"{provider_file}: expected 'kmod' or 'busybox', got {provider!r}")
    elif not (root / "sbin" / "modprobe").is_symlink():
        raise BuildError(f"{provider_file}: says busybox, but BusyBox has no modprobe applet")

    # The kernel's modules, modules.dep included.
    modules = ctx.deps["kernel"] / "lib" / "modules"
    if not list(modules.glob("*/modules.dep")):
        raise BuildError(f"stage kernel: no lib/modules/<version>/modules.dep in {ctx.deps['kernel']}")
    shutil.copytree(modules, root / "lib" / "modules", symlinks=True, dirs_exist_ok=True)

    copy_file(ctx.deps["docker"] / "etc" / "ssl" / "certs" / "ca-certificates.crt",
              root / "etc" / "ssl" / "certs" / "ca-certificates.crt", 0o644)
    for image in sorted((ctx.deps["images"] / "images").iterdir()):
        copy_file(image, root / IMAGES_DIR / image.name, 0o644)
    lane = conf["lane"]
    if not (root / lane["image_archive"].lstrip("/")).is_file():
        raise BuildError(f"{conf_path}: [lane] image_archive {lane['image_archive']} is not among "
                         f"the images stage's outputs")

    # The original's two scripts, and the self-check.
    copy_file(ctx.files / "init", root / "init", 0o755)
    for script in SCRIPTS:
        copy_file(ctx.files / script, root / "usr" / "bin" / script, 0o755)

    # The lane's facts for init and console-container.sh (sourced by sh).
    write(root / "etc" / "onlydocker" / "lane.conf",
          "".join(f"{k.upper()}='{v}'\n" for k, v in sorted({"image_load": "load", **lane}.items())))
    version = conf["version"]
    write(root / "etc" / "os-release",
          'NAME="Only Docker"\nID=onlydocker\n'
          f'VERSION="{version} ({ctx.lane})"\nVERSION_ID="{version}"\n'
          f'PRETTY_NAME="Only Docker {version} ({ctx.lane})"\n'
          # From the lane's epoch, never the clock: two builds agree.
          f'BUILD_ID="{ctx.lane}-{ctx.source_date_epoch}"\n'
          'HOME_URL="https://github.com/ibuildthecloud/only-docker"\n')
    write(root / "etc" / "passwd", "root:x:0:0:root:/root:/bin/sh\n")
    write(root / "etc" / "group", "root:x:0:\ndocker:x:999:\n")
    write(root / "etc" / "hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost\n")
    # init rewrites it at boot; present so that a read-only look finds one.
    write(root / "etc" / "resolv.conf", "nameserver 10.0.2.3\n")
