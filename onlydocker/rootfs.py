"""The root filesystem stage: cross-staging, like a multi-stage Dockerfile's
`COPY --from`. BusyBox and its links, the Docker binaries with exactly the
libraries their ELF headers ask for, iptables and modprobe where Docker and
the kernel look for them, the kernel's modules, the bundled image, the CA
bundle, and the original's init and console-container.sh. What to take from
which stage is the lane's data (lanes/<lane>/rootfs.toml)."""
from __future__ import annotations

import os
import posixpath
import shutil
import tomllib
from pathlib import Path

from . import elfdeps
from .errors import BuildError
from .stage import StageContext

DIRS = ("bin", "sbin", "usr/bin", "usr/sbin", "etc/onlydocker", "etc/ssl/certs", "dev", "proc", "sys",
        "tmp", "run", "var/lib/docker", "var/log", "var/run", "mnt", "root", "usr/share/onlydocker/images")


def _symlink(root: Path, path: str, target: str) -> None:
    dst = root / path.lstrip("/")
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    dst.symlink_to(target)


def _link_to(root: Path, path: str, binary: str) -> None:
    """A relative symlink at `path` to `binary` (both relative to the root)."""
    rel = posixpath.relpath("/" + binary.lstrip("/"), posixpath.dirname("/" + path.lstrip("/")))
    _symlink(root, path, rel)


def _copy_file(src: Path, dst: Path, mode: int) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    shutil.copyfile(src, dst)
    dst.chmod(mode)


def copy_chain(sysroot: Path, rel: str, root: Path) -> None:
    """Copy a sysroot path into the root, recreating each symlink on the way."""
    for _ in range(40):
        src = sysroot / rel
        dst = root / rel
        if src.is_symlink():
            target = os.readlink(src)
            if not (dst.is_symlink() or dst.exists()):
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.symlink_to(target)
            rel = posixpath.normpath(target.lstrip("/") if target.startswith("/")
                                     else posixpath.join(posixpath.dirname(rel), target))
            continue
        if not src.is_file():
            raise BuildError(f"{src}: not in the sysroot")
        if not dst.exists():
            _copy_file(src, dst, 0o755)
        return
    raise BuildError(f"{sysroot}/{rel}: too many symlinks")


def build(ctx: StageContext) -> None:
    conf_path = ctx.lane_dir / "rootfs.toml"
    try:
        conf = tomllib.loads(conf_path.read_text())
    except FileNotFoundError:
        raise BuildError(f"lane {ctx.lane} has no {conf_path}") from None
    root = ctx.out
    for d in DIRS:
        (root / d).mkdir(parents=True, exist_ok=True)

    # BusyBox, and a link for each applet.
    bb = ctx.deps["busybox"] / "bin"
    _copy_file(bb / "busybox", root / "bin" / "busybox", 0o755)
    for link in (bb / "busybox.links").read_text().split():
        if link.strip("/") != "bin/busybox":
            _link_to(root, link, "bin/busybox")

    # Binaries from other stages, with their library closure.
    for item in conf.get("install", []):
        stage, path, to = item["from"], item["path"], item["to"]
        sysroot = item.get("sysroot")
        src = ctx.deps[stage] / path
        if sysroot and path.startswith(sysroot + "/"):
            # Links in a sysroot (docker-init -> /usr/bin/tini-static) mean
            # places in that sysroot, never on the host.
            src = elfdeps.resolve_in(ctx.deps[stage] / sysroot, path[len(sysroot) + 1:])
        if not src.is_file():
            raise BuildError(f"{conf_path}: {stage}/{path} does not exist")
        _copy_file(src, root / to, 0o755)
        if not elfdeps.is_static(src):
            if not sysroot:
                raise BuildError(f"{conf_path}: {path} is dynamic but names no sysroot for its libraries")
            for lib in elfdeps.closure(src, ctx.deps[stage] / sysroot):
                copy_chain(ctx.deps[stage] / sysroot, lib, root)
        for link in item.get("links", []):
            _link_to(root, link, to)

    # modprobe: kmod's, or BusyBox's applets (already linked above).
    provider = (ctx.deps["modprobe"] / "bin" / "modprobe-provider").read_text().strip()
    if provider == "kmod":
        _copy_file(ctx.deps["modprobe"] / "bin" / "kmod", root / "sbin" / "kmod", 0o755)
        for name in ("modprobe", "insmod", "rmmod", "lsmod", "depmod", "modinfo"):
            _link_to(root, f"sbin/{name}", "sbin/kmod")

    # The kernel's modules, modules.dep included.
    modules = ctx.deps["kernel"] / "lib" / "modules"
    shutil.copytree(modules, root / "lib" / "modules", symlinks=True, dirs_exist_ok=True)
    if not list((root / "lib" / "modules").glob("*/modules.dep")):
        raise BuildError("kernel stage gave no modules.dep")

    _copy_file(ctx.deps["docker"] / "etc" / "ssl" / "certs" / "ca-certificates.crt",
               root / "etc" / "ssl" / "certs" / "ca-certificates.crt", 0o644)
    for image in sorted((ctx.deps["images"] / "images").iterdir()):
        _copy_file(image, root / "usr" / "share" / "onlydocker" / "images" / image.name, 0o644)

    # The original's two scripts, and the self-check.
    _copy_file(ctx.stage_dir / "init", root / "init", 0o755)
    for script in ("console-container.sh", "onlydocker-selftest"):
        _copy_file(ctx.stage_dir / script, root / "usr" / "bin" / script, 0o755)

    lane = conf["lane"]
    (root / "etc" / "onlydocker" / "lane.conf").write_text(
        "".join(f"{k.upper()}='{v}'\n" for k, v in sorted(lane.items())))
    (root / "etc" / "os-release").write_text(
        'NAME="Only Docker"\nID=onlydocker\n'
        f'VERSION_ID="{conf["version"]}"\nPRETTY_NAME="Only Docker {conf["version"]} ({ctx.lane})"\n'
        f'BUILD_ID="{ctx.lane}-{ctx.source_date_epoch}"\n'
        'HOME_URL="https://github.com/ibuildthecloud/only-docker"\n')
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\ndocker:x:999:\n")
    (root / "etc" / "hosts").write_text("127.0.0.1\tlocalhost\n::1\tlocalhost\n")
