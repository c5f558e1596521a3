"""The root filesystem, as layers: cross-staging, like a multi-stage
Dockerfile's `COPY --from`. `build` (the rootfs stage) lays out BusyBox and
its links, iptables and modprobe where Docker and the kernel look for them,
the kernel's modules, the bundled image, the CA bundle, and the original's
init and console-container.sh (lanes/<lane>/rootfs.toml). `layer` (the
rootfs-docker stage) lays out the Docker binaries with exactly the libraries
their ELF headers ask for (lanes/<lane>/layer.toml) and compresses them once
as a piece of the initrd. The image is the union of the layers."""
from __future__ import annotations

import os
import posixpath
import shutil
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

from . import compress, cpio, elfdeps
from .errors import BuildError
if TYPE_CHECKING:      # only a type: the stage engine is not part of this stage's code key
    from .stage import StageContext

DIRS = ("bin", "sbin", "usr/bin", "usr/sbin", "etc/onlydocker", "etc/ssl/certs", "dev", "proc", "sys",
        "tmp", "run", "var/lib/docker", "var/log", "mnt", "root", "usr/share/onlydocker/images")
IMAGES_DIR = "usr/share/onlydocker/images"
# What init and console-container.sh read from /etc/onlydocker/lane.conf.
LANE_KEYS = {"docker_daemon": True, "docker_ramdisk": False, "console_image_default": True,
             "dhcp_image": True, "image_archive": True, "image_load": False}
INSTALL_KEYS = {"from": True, "path": True, "to": True, "sysroot": False, "links": False, "mode": False}
# An install entry with a mode is a data file (a key, a config), not a program.
DATA_MODES = {"0644": 0o644, "0600": 0o600}
KMOD_NAMES = ("modprobe", "insmod", "rmmod", "lsmod", "depmod", "modinfo")


def _fail(conf_path: Path, where: str, problem: str):
    raise BuildError(f"{conf_path}: {where}: {problem}")


def _read_toml(conf_path: Path) -> dict:
    try:
        return tomllib.loads(conf_path.read_text())
    except FileNotFoundError:
        raise BuildError(f"{conf_path}: missing (every lane needs one)") from None
    except tomllib.TOMLDecodeError as e:
        raise BuildError(f"{conf_path}: not valid TOML: {e}") from None


def load_conf(conf_path: Path, needs: set[str]) -> dict:
    """rootfs.toml, checked: every message names the file, the entry and the field."""
    conf = _read_toml(conf_path)
    for key in conf:
        if key not in ("version", "lane", "install"):
            _fail(conf_path, f"key {key!r}", "unknown (expected version, lane, install)")
    if not isinstance(conf.get("version"), str) or not conf["version"]:
        _fail(conf_path, "field 'version'", "expected a non-empty string")
    lane = conf.get("lane")
    if not isinstance(lane, dict):
        _fail(conf_path, "table [lane]", "missing")
    for key, required in LANE_KEYS.items():
        if required and key not in lane:
            _fail(conf_path, f"[lane] field {key!r}", "missing")
    for key, value in lane.items():
        if key not in LANE_KEYS:
            _fail(conf_path, f"[lane] field {key!r}", f"unknown (expected one of {', '.join(LANE_KEYS)})")
        # Written into a shell file inside single quotes.
        if not isinstance(value, str) or "'" in value or "\n" in value:
            _fail(conf_path, f"[lane] field {key!r}", f"expected a one-line string without quotes, got {value!r}")
    if lane.get("image_load", "load") not in ("load", "import"):
        _fail(conf_path, "[lane] field 'image_load'", f"expected 'load' or 'import', got {lane['image_load']!r}")
    if not lane["image_archive"].startswith(f"/{IMAGES_DIR}/"):
        _fail(conf_path, "[lane] field 'image_archive'", f"expected a file under /{IMAGES_DIR}/")
    _check_installs(conf_path, conf.get("install", []), needs)
    return conf


def load_layer_conf(conf_path: Path, needs: set[str]) -> dict:
    """layer.toml: only [[install]] entries, checked like rootfs.toml's."""
    conf = _read_toml(conf_path)
    for key in conf:
        if key != "install":
            _fail(conf_path, f"key {key!r}", "unknown (expected install)")
    if not conf.get("install"):
        _fail(conf_path, "[[install]]", "missing: a layer installs something")
    _check_installs(conf_path, conf["install"], needs)
    return conf


def _check_installs(conf_path: Path, items: list, needs: set[str]) -> None:
    for i, item in enumerate(items):
        where = f"[[install]] #{i + 1}"
        for key, required in INSTALL_KEYS.items():
            if required and not isinstance(item.get(key), str):
                _fail(conf_path, f"{where} field {key!r}", "missing (expected a string)")
        for key in item:
            if key not in INSTALL_KEYS:
                _fail(conf_path, f"{where} field {key!r}", "unknown")
        if item["from"] not in needs:
            _fail(conf_path, f"{where} field 'from'", f"stage {item['from']!r} is not in stage.toml's needs")
        for key in ("path", "to"):
            if item[key].startswith("/") or ".." in item[key].split("/"):
                _fail(conf_path, f"{where} field {key!r}", f"expected a relative path, got {item[key]!r}")
        if "mode" in item and item["mode"] not in DATA_MODES:
            _fail(conf_path, f"{where} field 'mode'", f"expected one of {', '.join(DATA_MODES)}, got {item['mode']!r}")
        if item.get("sysroot") and not item["path"].startswith(item["sysroot"] + "/"):
            _fail(conf_path, f"{where} field 'path'", f"{item['path']!r} is not inside sysroot {item['sysroot']!r}")


def _clear(dst: Path) -> None:
    if dst.is_symlink() or dst.is_file():
        dst.unlink()


def _symlink(root: Path, path: str, target: str) -> None:
    dst = root / path.lstrip("/")
    dst.parent.mkdir(parents=True, exist_ok=True)
    _clear(dst)
    dst.symlink_to(target)


def _link_to(root: Path, path: str, binary: str) -> None:
    """A relative symlink at `path` to `binary` (both relative to the root)."""
    rel = posixpath.relpath("/" + binary.lstrip("/"), posixpath.dirname("/" + path.lstrip("/")))
    _symlink(root, path, rel)


def _copy_file(src: Path, dst: Path, mode: int) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    _clear(dst)
    shutil.copyfile(src, dst)
    dst.chmod(mode)


def _write(dst: Path, text: str, mode: int = 0o644) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(text)
    dst.chmod(mode)


def copy_chain(sysroot: Path, rel: str, root: Path) -> None:
    """Copy a sysroot path into the root at the same place, recreating every
    symlink met on the way (of the file or of a parent folder), as it is, so
    the loader finds the library under the name it asks for."""
    rel = posixpath.normpath(rel.lstrip("/"))
    for _ in range(40):
        parts = rel.split("/")
        for i in range(1, len(parts) + 1):
            cand = "/".join(parts[:i])
            src = sysroot / cand
            if src.is_symlink():
                target = os.readlink(src)
                dst = root / cand
                if not (dst.is_symlink() or dst.exists()):
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    dst.symlink_to(target)
                base = "" if target.startswith("/") else posixpath.dirname(cand)
                rel = posixpath.normpath(posixpath.join(base, target.lstrip("/"), *parts[i:])).lstrip("/")
                while rel.startswith("../"):
                    rel = rel[3:]
                break
        else:
            src = sysroot / rel
            if not src.is_file():
                raise BuildError(f"{src}: not in the sysroot {sysroot}")
            dst = root / rel
            if not (dst.is_symlink() or dst.exists()):
                _copy_file(src, dst, 0o755)
            return
    raise BuildError(f"{sysroot}/{rel}: too many levels of symlinks")


def _install(ctx: StageContext, conf_path: Path, item: dict, root: Path) -> None:
    stage, path, to = item["from"], item["path"], item["to"]
    sysroot = item.get("sysroot")
    if sysroot:
        # Links in a sysroot (docker-init -> /usr/bin/tini-static) mean
        # places in that sysroot, never on the host.
        src = elfdeps.resolve_in(ctx.deps[stage] / sysroot, path[len(sysroot) + 1:])
    else:
        src = ctx.deps[stage] / path
    if not src.is_file():
        raise BuildError(f"{conf_path}: install {path!r} to {to!r}: {stage}/{path} does not exist "
                         f"in stage {stage}'s outputs")
    if "mode" in item:
        _copy_file(src, root / to, DATA_MODES[item["mode"]])
        return
    _copy_file(src, root / to, 0o755)
    if not elfdeps.is_static(src):
        if not sysroot:
            raise BuildError(f"{conf_path}: install {path!r}: the binary is dynamically linked "
                             f"but the entry names no sysroot to take its libraries from")
        try:
            libs = elfdeps.closure(src, ctx.deps[stage] / sysroot)
        except BuildError as e:
            raise BuildError(f"stage rootfs, {conf_path.name} install {path!r}: {e}") from None
        for lib in libs:
            copy_chain(ctx.deps[stage] / sysroot, str(lib), root)
    for link in item.get("links", []):
        _link_to(root, link, to)


def build(ctx: StageContext) -> None:
    conf_path = ctx.lane_dir / "rootfs.toml"
    conf = load_conf(conf_path, set(ctx.deps))
    root = ctx.out
    for d in DIRS:
        (root / d).mkdir(parents=True, exist_ok=True)
    # /var/run is /run (a tmpfs at boot): docker.sock and pid files live there.
    _symlink(root, "var/run", "../run")

    # BusyBox, and a relative link for each applet.
    bb = ctx.deps["busybox"] / "bin"
    _copy_file(bb / "busybox", root / "bin" / "busybox", 0o755)
    for link in (bb / "busybox.links").read_text().split():
        if link.strip("/") != "bin/busybox":
            _link_to(root, link, "bin/busybox")

    # Binaries from other stages (Docker, iptables), with their library closure.
    for item in conf.get("install", []):
        _install(ctx, conf_path, item, root)

    # modprobe, where the kernel (/sbin/modprobe) and Docker (PATH) look:
    # kmod's, or BusyBox's applets (already linked above).
    provider_file = ctx.deps["modprobe"] / "bin" / "modprobe-provider"
    provider = provider_file.read_text().strip()
    if provider == "kmod":
        kmod = ctx.deps["modprobe"] / "bin" / "kmod"
        if not elfdeps.is_static(kmod):
            raise BuildError(f"stage modprobe: {kmod} is dynamically linked; rootfs expects a static kmod")
        _copy_file(kmod, root / "sbin" / "kmod", 0o755)
        for name in KMOD_NAMES:
            _link_to(root, f"sbin/{name}", "sbin/kmod")
    elif provider != "busybox":
        raise BuildError(f"{provider_file}: expected 'kmod' or 'busybox', got {provider!r}")
    elif not (root / "sbin" / "modprobe").is_symlink():
        raise BuildError(f"{provider_file}: says busybox, but BusyBox has no modprobe applet")

    # The kernel's modules, modules.dep included.
    modules = ctx.deps["kernel"] / "lib" / "modules"
    if not list(modules.glob("*/modules.dep")):
        raise BuildError(f"stage kernel: no lib/modules/<version>/modules.dep in {ctx.deps['kernel']}")
    shutil.copytree(modules, root / "lib" / "modules", symlinks=True, dirs_exist_ok=True)

    _copy_file(ctx.deps["docker"] / "etc" / "ssl" / "certs" / "ca-certificates.crt",
               root / "etc" / "ssl" / "certs" / "ca-certificates.crt", 0o644)
    for image in sorted((ctx.deps["images"] / "images").iterdir()):
        _copy_file(image, root / IMAGES_DIR / image.name, 0o644)
    lane = conf["lane"]
    if not (root / lane["image_archive"].lstrip("/")).is_file():
        raise BuildError(f"{conf_path}: [lane] image_archive {lane['image_archive']} is not among "
                         f"the images stage's outputs")

    # The original's two scripts, and the self-check.
    _copy_file(ctx.stage_dir / "init", root / "init", 0o755)
    for script in ("console-container.sh", "onlydocker-selftest", "onlydocker-featuretest", "onlydocker-sshd",
                   "onlydocker-docker-tcp"):
        _copy_file(ctx.stage_dir / script, root / "usr" / "bin" / script, 0o755)

    # The lane's facts for init and console-container.sh (sourced by sh).
    _write(root / "etc" / "onlydocker" / "lane.conf",
           "".join(f"{k.upper()}='{v}'\n" for k, v in sorted({"image_load": "load", **lane}.items())))
    version = conf["version"]
    _write(root / "etc" / "os-release",
           'NAME="Only Docker"\nID=onlydocker\n'
           f'VERSION="{version} ({ctx.lane})"\nVERSION_ID="{version}"\n'
           f'PRETTY_NAME="Only Docker {version} ({ctx.lane})"\n'
           # From the lane's epoch, never the clock: two builds agree.
           f'BUILD_ID="{ctx.lane}-{ctx.source_date_epoch}"\n'
           'HOME_URL="https://github.com/ibuildthecloud/only-docker"\n')
    _write(root / "etc" / "passwd", "root:x:0:0:root:/root:/bin/sh\n")
    _write(root / "etc" / "group", "root:x:0:\ndocker:x:999:\n")
    _write(root / "etc" / "hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost\n")
    # init rewrites it at boot; present so that a read-only look finds one.
    _write(root / "etc" / "resolv.conf", "nameserver 10.0.2.3\n")


def layer(ctx: StageContext) -> None:
    """A layer of the image that seldom changes (Docker's binaries and the
    libraries they load, lanes/<lane>/layer.toml): laid out as `tree/`, and
    written once as the initrd's piece `initrd-piece` (cpio newc, compressed as
    the lane's kernel unpacks), so that a BusyBox or init change never
    compresses it again. The initrd stage puts the pieces one after another."""
    conf_path = ctx.lane_dir / "layer.toml"
    conf = load_layer_conf(conf_path, set(ctx.deps))
    tree = ctx.out / "tree"
    tree.mkdir()
    for item in conf["install"]:
        _install(ctx, conf_path, item, tree)
    raw = ctx.out.parent / "layer.cpio"
    with open(raw, "wb") as f:
        cpio.write_newc(tree, f, mtime=ctx.source_date_epoch, extra_devices=())
    with open(raw, "rb") as src, open(ctx.out / "initrd-piece", "wb") as dst:
        compress.compress(src, ctx.lock.lane.initrd_compression, dst)
    raw.unlink()
