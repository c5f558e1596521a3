"""The rootfs stage on real binaries: stage outputs are built here from the
host's own files (a static BusyBox; /usr/bin/ls standing in for each Docker
binary, with its real libraries in a sysroot) laid out as the upstream
stages lay theirs out, then assembled with the lanes' real lane.toml."""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import types
from pathlib import Path

import pytest
import zstandard

from onlydocker.errors import BuildError
from onlydocker.formats import cpio, elfdeps
from onlydocker.stage.pystage import StageContext, load_build
from tests.conftest import require_tool

STAGES = Path(__file__).resolve().parent.parent / "stages"
STAGE_DIR = STAGES / "rootfs"
# The stages' own code, loaded by path as the engine loads it.
build_rootfs, build_layer, build_initrd = (load_build(STAGES / n) for n in ("rootfs", "rootfs-docker", "initrd"))
EPOCH = 1700000000
DYNAMIC = Path("/usr/bin/ls")
DOCKER_BINARIES = ("usr/sbin/dockerd", "usr/bin/docker", "usr/sbin/docker-proxy", "usr/bin/containerd",
                   "usr/bin/containerd-shim-runc-v2", "usr/sbin/runc")
# The data disk's tools, where bookworm's e2fsprogs ships them (lanes/bookworm).
DATA_DISK_TOOLS = {"sbin/mke2fs": "usr/sbin/mkfs.ext4", "sbin/e2fsck": "usr/sbin/e2fsck"}
APPLETS = ("/bin/sh", "/bin/busybox", "/sbin/ifconfig", "/usr/bin/wget", "/sbin/modprobe", "/sbin/lsmod",
           "/sbin/findfs", "/linuxrc")


def _static_busybox() -> Path:
    for p in (Path("/bin/busybox"), Path("/usr/bin/busybox")):
        if p.is_file() and elfdeps.is_static(p):
            return p
    pytest.skip("no static busybox on the host (apt-get install busybox-static)")


def _put(path: Path, data: bytes | Path, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.read_bytes() if isinstance(data, Path) else data)
    path.chmod(mode)


def make_deps(base: Path, *, provider: str = "kmod", docker_static: Path | None = None) -> dict[str, Path]:
    bb = _static_busybox()
    deps = {n: base / n for n in ("busybox", "iptables", "modprobe", "docker", "dropbear", "kernel", "images")}
    _put(deps["busybox"] / "bin/busybox", bb, 0o755)
    _put(deps["busybox"] / "bin/busybox.links", "".join(a + "\n" for a in APPLETS).encode())
    _put(deps["iptables"] / "bin/xtables-multi", bb, 0o755)
    _put(deps["dropbear"] / "bin/dropbearmulti", bb, 0o755)
    _put(deps["dropbear"] / "share/vagrant-insecure.pub", b"# a comment\nssh-rsa AAAA vagrant\n", 0o755)
    _put(deps["modprobe"] / "bin/modprobe-provider", f"{provider}\n".encode())
    if provider == "kmod":
        _put(deps["modprobe"] / "bin/kmod", bb, 0o755)
    sysroot = deps["docker"] / "sysroot"
    for rel in (*DOCKER_BINARIES, *DATA_DISK_TOOLS):
        _put(sysroot / rel, DYNAMIC, 0o755)
    # Each library at the path the loader asks for, in real folders, as
    # bookworm's .debs ship them (the host's own /lib may be a link to usr/lib).
    for lib in elfdeps.closure(DYNAMIC, Path("/")):
        _put(sysroot / str(lib).lstrip("/"), (Path("/") / lib).resolve(), 0o755)
    # As Debian ships it: an absolute link to a static binary in the sysroot.
    _put(sysroot / "usr/bin/tini-static", bb, 0o755)
    (sysroot / "usr/bin/docker-init").symlink_to("/usr/bin/tini-static")
    if docker_static:
        _put(sysroot / "usr/local/bin/docker", docker_static, 0o755)
    _put(deps["docker"] / "etc/ssl/certs/ca-certificates.crt", b"-----BEGIN CERTIFICATE-----\n")
    mods = deps["kernel"] / "lib/modules/6.1.0"
    _put(mods / "kernel/fs/overlayfs/overlay.ko", b"\x7fELF fake module")
    _put(mods / "modules.dep", b"kernel/fs/overlayfs/overlay.ko:\n")
    _put(deps["images"] / "images/busybox.tar", b"an image archive")
    return deps


def make_ctx(tmp: Path, lane: str = "bookworm", lane_dir: Path | None = None, **kw) -> StageContext:
    out = tmp / "out"
    out.mkdir(parents=True)
    return StageContext(name="rootfs", out=out, deps=make_deps(tmp / "deps", **kw), stage_dir=STAGE_DIR,
                        lane_dir=lane_dir or STAGE_DIR / "lanes" / lane, lane=lane, source_date_epoch=EPOCH)


def listing(root: Path) -> list[tuple]:
    rows = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                rows.append((rel, "link", os.readlink(p)))
            elif p.is_dir():
                rows.append((rel, "dir"))
            else:
                rows.append((rel, "file", oct(p.stat().st_mode & 0o7777),
                             hashlib.sha256(p.read_bytes()).hexdigest()))
    return sorted(rows)


LAYER_DIR = STAGE_DIR.parent / "rootfs-docker"


def build_image(tmp: Path, lane: str = "bookworm", **kw) -> Path:
    """The image's tree as the initrd unpacks it: the rootfs stage's tree,
    then the rootfs-docker stage's layer over it (their real lane files)."""
    ctx = make_ctx(tmp, lane, **kw)
    build_rootfs(ctx)
    layer = layer_stage(tmp, ctx.deps["docker"], lane)
    shutil.copytree(layer / "tree", ctx.out, symlinks=True, dirs_exist_ok=True)
    return ctx.out


def layer_stage(tmp: Path, docker: Path, lane: str = "bookworm") -> Path:
    out = tmp / "layer-out"
    out.mkdir()
    lock = types.SimpleNamespace(lane=types.SimpleNamespace(initrd_compression="zstd"))
    build_layer(StageContext(name="rootfs-docker", out=out, deps={"docker": docker}, stage_dir=LAYER_DIR,
                              lane_dir=LAYER_DIR / "lanes" / lane, lane=lane, source_date_epoch=EPOCH,
                              lock=lock))
    return out


@pytest.fixture
def built(tmp_path) -> Path:
    return build_image(tmp_path)


def _cpio_paths(data: bytes) -> list[str]:
    """The names in one or more newc archives, one after another."""
    names, pos = [], 0
    while pos + 110 <= len(data):
        if data[pos:pos + 6] != b"070701":
            pos += 1          # padding between archives
            continue
        size, namesize = int(data[pos + 54:pos + 62], 16), int(data[pos + 94:pos + 102], 16)
        name = data[pos + 110:pos + 110 + namesize - 1].decode()
        pos += (110 + namesize + 3) // 4 * 4
        pos += (size + 3) // 4 * 4
        if name != "TRAILER!!!":
            names.append(name)
    return names


def test_the_initrd_is_its_layers_one_after_another(tmp_path):
    ctx = make_ctx(tmp_path)
    build_rootfs(ctx)
    layer = layer_stage(tmp_path, ctx.deps["docker"])
    out = tmp_path / "initrd-out"
    out.mkdir()
    lock = types.SimpleNamespace(lane=types.SimpleNamespace(initrd_compression="zstd"))
    build_initrd(StageContext(name="initrd", out=out, deps={"rootfs": ctx.out, "rootfs-docker": layer},
                                  stage_dir=STAGE_DIR, lane_dir=STAGE_DIR, lane="bookworm",
                                  source_date_epoch=EPOCH, lock=lock))
    data = (out / "initrd.img").read_bytes()
    piece = (layer / "initrd-piece").read_bytes()
    assert data.endswith(piece), "Docker's piece is taken as it is, last"
    # Two zstd frames; together they unpack to both trees, the rootfs first.
    raw = zstandard.ZstdDecompressor().decompressobj(read_across_frames=True).decompress(data)
    names = _cpio_paths(raw)
    base = {p.relative_to(ctx.out).as_posix() for p in ctx.out.rglob("*")} | {"dev/console"}
    docker = {p.relative_to(layer / "tree").as_posix() for p in (layer / "tree").rglob("*")}
    assert set(names) == base | docker
    assert names.index("init") < names.index("usr/bin/dockerd")
    assert "usr/bin/dockerd" not in base and "init" not in docker


def test_busybox_and_relative_applet_links(built):
    assert (built / "bin/busybox").stat().st_mode & 0o777 == 0o755
    assert os.readlink(built / "bin/sh") == "busybox"
    assert os.readlink(built / "sbin/ifconfig") == "../bin/busybox"
    assert os.readlink(built / "usr/bin/wget") == "../../bin/busybox"
    assert os.readlink(built / "linuxrc") == "bin/busybox"


def test_docker_binaries_bring_exactly_their_libraries(built):
    for name in ("dockerd", "docker", "docker-proxy", "containerd", "containerd-shim-runc-v2", "runc"):
        b = built / "usr/bin" / name
        assert b.is_file() and b.stat().st_mode & 0o777 == 0o755, name
        # The closure is complete inside the tree: the loader finds every library.
        assert elfdeps.closure(b, built) == elfdeps.closure(DYNAMIC, Path("/"))
    # The data disk's mkfs.ext4 and e2fsck come the same way, with their libraries.
    for to in DATA_DISK_TOOLS.values():
        assert (built / to).is_file() and elfdeps.closure(built / to, built) == elfdeps.closure(DYNAMIC, Path("/"))
    # docker-init followed its absolute link inside the sysroot (tini-static), static: no libraries.
    assert elfdeps.is_static(built / "usr/bin/docker-init")
    libs = {p.name for p in (built / "lib").rglob("*")} | {p.name for p in (built / "usr").rglob("*.so*")}
    assert "libc.so.6" in libs
    # Nothing a binary does not need: no library outside the closure.
    wanted = {str(p) for p in elfdeps.closure(DYNAMIC, Path("/"))}
    for p in built.rglob("*.so*"):
        rel = str(p.relative_to(built))
        if not p.is_symlink():
            assert any(elfdeps.resolve_in(built, w) == p for w in wanted), rel


def test_running_the_assembled_binary(built):
    chroot = shutil.which("chroot")
    if not chroot or os.geteuid() != 0:
        pytest.skip("needs chroot as root")
    r = subprocess.run([chroot, str(built), "/usr/bin/dockerd", "/etc"], capture_output=True, text=True)
    assert r.returncode == 0 and "os-release" in r.stdout, r.stderr
    r = subprocess.run([chroot, str(built), "/bin/sh", "-c", "iptables --help; modprobe --help"],
                       capture_output=True, text=True)
    assert "BusyBox" in r.stdout + r.stderr


def test_iptables_modprobe_and_modules(built):
    for name in ("iptables", "iptables-save", "iptables-restore", "ip6tables"):
        assert os.readlink(built / "usr/sbin" / name) == "xtables-multi"
    assert os.readlink(built / "sbin/modprobe") == "kmod"
    assert os.readlink(built / "sbin/lsmod") == "kmod"
    assert (built / "lib/modules/6.1.0/modules.dep").is_file()
    assert (built / "lib/modules/6.1.0/kernel/fs/overlayfs/overlay.ko").is_file()


def test_system_files_and_scripts(built):
    osr = (built / "etc/os-release").read_text()
    assert 'NAME="Only Docker"' in osr and f'BUILD_ID="bookworm-{EPOCH}"' in osr and "VERSION=" in osr
    for p in ("init", "usr/bin/console-container.sh", "usr/bin/onlydocker-selftest",
              "usr/bin/onlydocker-featuretest", "usr/bin/onlydocker-sshd", "usr/bin/onlydocker-docker-tcp"):
        assert (built / p).stat().st_mode & 0o777 == 0o755, p
    assert (built / "init").read_bytes() == (STAGE_DIR / "files" / "init").read_bytes()
    lane = (built / "etc/onlydocker/lane.conf").read_text()
    assert "DOCKER_DAEMON='/usr/bin/dockerd --storage-driver=overlay2" in lane
    assert "IMAGE_ARCHIVE='/usr/share/onlydocker/images/busybox.tar'" in lane
    assert (built / "usr/share/onlydocker/images/busybox.tar").read_bytes() == b"an image archive"
    assert (built / "etc/ssl/certs/ca-certificates.crt").is_file()
    assert os.readlink(built / "var/run") == "../run"
    for d in ("dev", "proc", "sys", "tmp", "run", "var/lib/docker", "mnt"):
        assert (built / d).is_dir(), d


@pytest.mark.parametrize("lane", ["bookworm", "2015"])
def test_dropbear_and_vagrants_public_key(tmp_path, lane):
    ctx = make_ctx(tmp_path, lane=lane, provider="kmod" if lane == "bookworm" else "busybox",
                   docker_static=_static_busybox() if lane == "2015" else None)
    build_rootfs(ctx)
    out = ctx.out
    assert elfdeps.is_static(out / "usr/bin/dropbearmulti")
    for name in ("dropbear", "dropbearkey", "scp", "dbclient"):
        assert os.readlink(out / "usr/bin" / name) == "dropbearmulti", name
    # A data file: its own mode (0644), not a program's, and no ELF checks.
    key = out / "usr/share/onlydocker/vagrant-insecure.pub"
    assert key.stat().st_mode & 0o777 == 0o644 and b"ssh-rsa AAAA vagrant" in key.read_bytes()


def test_vagrants_key_in_the_stage_is_the_one_vagrant_ships():
    ours = (STAGE_DIR.parent / "dropbear" / "files" / "vagrant-insecure.pub").read_text()
    keys = [line for line in ours.splitlines() if line and not line.startswith("#")]
    assert len(keys) == 1 and keys[0].startswith("ssh-rsa AAAAB3NzaC1yc2EAAAABIwAAAQEA6NF8iallvQVp22WDkTkyrtvp9eWW6A8YV")
    shipped = list(Path("/usr/share/rubygems-integration/all/gems").glob("vagrant-*/keys/vagrant.pub"))
    if not shipped:
        pytest.skip("Debian's vagrant package is not installed")
    assert keys[0].split()[:2] == shipped[0].read_text().split()[:2]


def test_every_link_resolves_inside_the_tree(built):
    for p in built.rglob("*"):
        if p.is_symlink():
            rel = str(p.relative_to(built))
            assert elfdeps.resolve_in(built, rel).exists(), f"{rel} -> {os.readlink(p)}"


def test_same_tree_and_same_initrd_bytes_twice(tmp_path):
    trees = []
    for i, umask in enumerate((0o022, 0o002)):
        old = os.umask(umask)
        try:
            trees.append(build_image(tmp_path / str(i)))
        finally:
            os.umask(old)
    assert listing(trees[0]) == listing(trees[1])
    blobs = []
    for t in trees:
        buf = io.BytesIO()
        cpio.write_newc(t, buf, mtime=EPOCH)
        blobs.append(buf.getvalue())
    assert blobs[0] == blobs[1]


def test_2015_lane_static_docker_and_busybox_modprobe(tmp_path):
    out = build_image(tmp_path, lane="2015", provider="busybox", docker_static=_static_busybox())
    assert elfdeps.is_static(out / "usr/bin/docker")
    assert not (out / "lib/x86_64-linux-gnu").exists()
    assert os.readlink(out / "sbin/modprobe") == "../bin/busybox"
    assert "DOCKER_DAEMON='/usr/bin/docker -d -s overlay" in (out / "etc/onlydocker/lane.conf").read_text()


def _lane(tmp: Path, text: str) -> Path:
    d = tmp / "lane"
    d.mkdir(exist_ok=True)
    (d / "lane.toml").write_text(text)
    return d


GOOD_LANE = """version = "1"
[lane]
docker_daemon = "/usr/bin/dockerd"
console_image_default = "x:latest"
dhcp_image = "x:latest"
image_archive = "/usr/share/onlydocker/images/busybox.tar"
"""


def test_a_missing_library_fails_naming_binary_and_library(tmp_path):
    lane = _lane(tmp_path, GOOD_LANE + '[[install]]\nfrom = "docker"\npath = "sysroot/usr/sbin/dockerd"\n'
                 'to = "usr/bin/dockerd"\nsysroot = "sysroot"\n')
    ctx = make_ctx(tmp_path, lane_dir=lane)
    libc = elfdeps.resolve_in(ctx.deps["docker"] / "sysroot", "lib/x86_64-linux-gnu/libc.so.6")
    libc.unlink()
    with pytest.raises(BuildError) as e:
        build_rootfs(ctx)
    assert "dockerd" in str(e.value) and "libc.so.6" in str(e.value)


@pytest.mark.parametrize("extra, words", [
    ('[[install]]\nfrom = "docker"\npath = "sysroot/usr/sbin/dockerd"\nto = "usr/bin/dockerd"\n',
     ["dockerd", "no sysroot"]),
    ('[[install]]\nfrom = "nowhere"\npath = "bin/x"\nto = "bin/x"\n', ["#1", "'from'", "nowhere"]),
    ('[[install]]\nfrom = "iptables"\npath = "bin/missing"\nto = "usr/sbin/x"\n', ["iptables/bin/missing"]),
    ('[[install]]\nfrom = "iptables"\npath = "bin/xtables-multi"\n', ["#1", "'to'", "missing"]),
    ('[[install]]\nfrom = "iptables"\npath = "../x"\nto = "x"\n', ["'path'", "relative"]),
    ('colour = "red"\n', ["'colour'", "unknown"]),
    ('[[install]]\nfrom = "dropbear"\npath = "share/vagrant-insecure.pub"\nto = "k"\nmode = "0777"\n',
     ["#1", "'mode'", "0777"]),
])
def test_bad_lane_toml_is_named(tmp_path, extra, words):
    text = GOOD_LANE + extra if extra.startswith("[[") else extra + GOOD_LANE
    ctx = make_ctx(tmp_path, lane_dir=_lane(tmp_path, text))
    with pytest.raises(BuildError) as e:
        build_rootfs(ctx)
    assert "lane.toml" in str(e.value)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


@pytest.mark.parametrize("text, words", [
    (GOOD_LANE.replace('dhcp_image = "x:latest"\n', ""), ["dhcp_image", "missing"]),
    (GOOD_LANE.replace('"/usr/bin/dockerd"', "\"it's\""), ["docker_daemon", "quotes"]),
    (GOOD_LANE.replace("/usr/share/onlydocker/images/busybox.tar", "/tmp/x.tar"), ["image_archive"]),
    (GOOD_LANE.replace("busybox.tar", "other.tar"), ["image_archive", "other.tar"]),
    (GOOD_LANE.replace('dhcp_image = "x:latest"\n', 'dhcp_image = "x:latest"\ncgroup = "2"\n'),
     ["[lane] field 'cgroup'", "expected 'v1' or 'v2', got '2'"]),
    ("version = \n", ["not valid TOML"]),
])
def test_bad_lane_table_is_named(tmp_path, text, words):
    ctx = make_ctx(tmp_path, lane_dir=_lane(tmp_path, text))
    with pytest.raises(BuildError) as e:
        build_rootfs(ctx)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_dynamic_kmod_is_refused(tmp_path):
    ctx = make_ctx(tmp_path)
    shutil.copy(DYNAMIC, ctx.deps["modprobe"] / "bin/kmod")
    with pytest.raises(BuildError, match="kmod is dynamically linked"):
        build_rootfs(ctx)


@pytest.mark.parametrize("script", ["init", "console-container.sh", "onlydocker-selftest",
                                    "onlydocker-featuretest", "onlydocker-sshd", "onlydocker-docker-tcp"])
@pytest.mark.parametrize("shell", ["busybox", "dash"])
def test_scripts_parse(script, shell):
    tool = require_tool(shell)
    cmd = [tool, "sh", "-n"] if shell == "busybox" else [tool, "-n"]
    r = subprocess.run(cmd + [str(STAGE_DIR / "files" / script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_layers_that_would_put_a_link_over_a_folder_are_refused(tmp_path):
    base, layer = tmp_path / "rootfs", tmp_path / "layer"
    _put(base / "lib/modules/6.1.0/modules.dep", b"")
    _put(layer / "tree/usr/lib/x86_64-linux-gnu/libc.so.6", b"\x7fELF")
    (layer / "tree/lib").symlink_to("usr/lib")
    _put(layer / "initrd-piece", b"")
    out = tmp_path / "initrd-out"
    out.mkdir()
    lock = types.SimpleNamespace(lane=types.SimpleNamespace(initrd_compression="zstd"))
    ctx = StageContext(name="initrd", out=out, deps={"rootfs": base, "rootfs-docker": layer}, stage_dir=STAGE_DIR,
                       lane_dir=STAGE_DIR, lane="bookworm", source_date_epoch=EPOCH, lock=lock)
    with pytest.raises(BuildError) as e:
        build_initrd(ctx)
    assert str(e.value) == ("stage initrd: lib is a dir in stage rootfs's layer and a link in stage "
                            "rootfs-docker's: layers may share directories only")
    assert not (out / "initrd.img").exists()
