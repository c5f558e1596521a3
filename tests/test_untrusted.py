"""Untrusted input refused where it enters, through the real path: a lock
that pins a malicious archive, a file dropped into downloads/, a damaged
stage cache entry; and build containers that could do no harm if they tried
(an unprivileged user, no capabilities, limits, tar that refuses on its own)."""
from __future__ import annotations

import io
import json
import secrets
import tarfile
import time
from pathlib import Path

import pytest
import zstandard

from onlydocker.engine import run as engine
from tests import workspace as wsmod

pytestmark = pytest.mark.docker

# A path no build may write: the absolute member points here, the `..` member
# climbs to the workspace's parent.
OUTSIDE = Path("/tmp") / f"onlydocker-escape-{secrets.token_hex(4)}"

# (kind, member writer, words the refusal must contain)
EVIL = {
    "absolute path": ("has an absolute path", lambda tf: _file(tf, str(OUTSIDE))),
    "dot-dot": ("climbs out with '..'", lambda tf: _file(tf, "evil-1.0/../../escaped")),
    "device node": ("is a device node or fifo", lambda tf: _special(tf, "evil-1.0/null", tarfile.CHRTYPE)),
    "fifo": ("is a device node or fifo", lambda tf: _special(tf, "evil-1.0/pipe", tarfile.FIFOTYPE)),
    "setuid": ("setuid/setgid bit", lambda tf: _file(tf, "evil-1.0/su", mode=0o4755)),
    "setgid": ("setuid/setgid bit", lambda tf: _file(tf, "evil-1.0/sg", mode=0o2755)),
    "symlink out": ("symlink", lambda tf: _link(tf, "evil-1.0/out", "../../..", tarfile.SYMTYPE)),
    "hardlink out": ("hardlink pointing outside", lambda tf: _link(tf, "evil-1.0/passwd", "../etc/passwd",
                                                                    tarfile.LNKTYPE)),
}
COMPRESSIONS = {"tar.gz": "w:gz", "tar.xz": "w:xz", "tar.bz2": "w:bz2"}


def _file(tf: tarfile.TarFile, name: str, mode: int = 0o644, data: bytes = b"evil\n") -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 1600000000
    tf.addfile(info, io.BytesIO(data))


def _special(tf: tarfile.TarFile, name: str, kind: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.devmajor, info.devminor = kind, 0o666, 1, 3
    tf.addfile(info)


def _link(tf: tarfile.TarFile, name: str, target: str, kind: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    tf.addfile(info)


def _evil_tar(kind: str, mode: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode, format=tarfile.GNU_FORMAT) as tf:
        _file(tf, "evil-1.0/README")
        EVIL[kind][1](tf)
    return buf.getvalue()


def _deb(data_tar_xz: bytes) -> bytes:
    """A Debian package (ar) with the given data.tar.xz."""
    out = io.BytesIO()
    out.write(b"!<arch>\n")
    for name, body in ((b"debian-binary", b"2.0\n"), (b"control.tar.xz", _evil_free_control()),
                       (b"data.tar.xz", data_tar_xz)):
        out.write(name.ljust(16) + b"0".ljust(12) + b"0".ljust(6) + b"0".ljust(6) + b"100644".ljust(8)
                  + str(len(body)).encode().ljust(10) + b"`\n")
        out.write(body + (b"\n" if len(body) % 2 else b""))
    return out.getvalue()


def _evil_free_control() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tf:
        _file(tf, "./control", data=b"Package: evil\nVersion: 1.0\n")
    return buf.getvalue()


def _lane(tmp_path: Path, file_name: str, payload: bytes, *, in_downloads: bool = False):
    """A workspace whose lock pins `payload` as the source of stage `evil`."""
    ws = wsmod.make(tmp_path / "ws")
    ws.env["ONLYDOCKER_STAGE_CACHE"] = str(tmp_path / "stage-cache")
    if in_downloads:
        downloads = ws.root / "downloads"
        downloads.mkdir()
        (downloads / file_name).write_bytes(payload)
        url = "http://127.0.0.1:9/nowhere/" + file_name      # nothing answers: the dropped file is used
        ws.env["ONLYDOCKER_OFFLINE"] = "1"
    else:
        (tmp_path / file_name).write_bytes(payload)
        url = f"file://{tmp_path / file_name}"
    (ws.root / "test.lock").write_text(wsmod.builder_tables() + wsmod.source_entry(
        "evil", file_name, url, payload, version="1.0"))
    wsmod.add_stage(ws.root, "evil", 'description = "evil"\nsources = ["evil"]\noutputs = ["x"]\n',
                    "set -eu\nls -R /build/src > /build/out/x\n")
    ws.lane = wsmod.lane_name()
    return ws


def _containers_created(docker_client, since: float, stage: str = "evil") -> list:
    label = f"org.onlydocker.build=onlydocker-{wsmod.lane_name()}-{stage}"
    events = docker_client.events(since=int(since) - 1, until=int(time.time()) + 1, decode=True,
                                  filters={"type": "container", "event": "create", "label": label})
    return list(events)


def _assert_refused(ws, docker_client, file_name: str, why: str) -> None:
    started = time.time()
    r = ws.doit("lock=test.lock", "build:evil", check=False)
    text = r.stdout + r.stderr
    assert r.returncode != 0, text
    assert file_name in text and why in text and "refused" in text, text
    assert "Traceback" not in text, text
    assert _containers_created(docker_client, started) == [], "a container was created"
    assert not OUTSIDE.exists() and not (ws.root.parent / "escaped").exists()
    assert not (ws.out(ws.lane) / "stages" / "evil.manifest.json").exists()


@pytest.fixture(scope="module")
def builder_ready(tmp_path_factory, docker_client):
    """The builder image made once (from the shared cache), so that each
    refusal below is timed by the check, not by a bootstrap."""
    ws = wsmod.make(tmp_path_factory.mktemp("builder") / "ws")
    (ws.root / "test.lock").write_text(wsmod.builder_tables())
    ws.doit("lock=test.lock", "build:builder")
    return ws


@pytest.mark.parametrize("suffix", sorted(COMPRESSIONS))
@pytest.mark.parametrize("kind", sorted(EVIL))
def test_a_pinned_malicious_tarball_is_refused_before_any_container(kind, suffix, tmp_path, docker_client,
                                                                    builder_ready):
    name = f"evil-1.0.{suffix}"
    ws = _lane(tmp_path, name, _evil_tar(kind, COMPRESSIONS[suffix]))
    _assert_refused(ws, docker_client, name, EVIL[kind][0])


@pytest.mark.parametrize("kind", ["absolute path", "dot-dot", "device node", "setuid", "symlink out"])
def test_a_deb_whose_data_tar_holds_a_malicious_member_is_refused(kind, tmp_path, docker_client, builder_ready):
    name = "evil_1.0_amd64.deb"
    ws = _lane(tmp_path, name, _deb(_evil_tar(kind, "w:xz")))
    _assert_refused(ws, docker_client, name, EVIL[kind][0])


def test_a_malicious_file_dropped_into_downloads_is_refused(tmp_path, docker_client, builder_ready):
    name = "evil-1.0.tar.gz"
    ws = _lane(tmp_path, name, _evil_tar("dot-dot", "w:gz"), in_downloads=True)
    _assert_refused(ws, docker_client, name, "climbs out with '..'")


def test_a_source_whose_bytes_are_not_what_its_name_says_is_refused(tmp_path, docker_client, builder_ready):
    name = "evil-1.0.tar.xz"
    ws = _lane(tmp_path, name, _evil_tar("setuid", "w:gz").replace(b"su", b"ok"))
    _assert_refused(ws, docker_client, name, "its name says xz-compressed, but its bytes are gzip-compressed")


def test_a_good_tarball_is_checked_once_per_tree(tmp_path, docker_client, builder_ready):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        _file(tf, "evil-1.0/README")
    ws = _lane(tmp_path, "evil-1.0.tar.gz", buf.getvalue())
    ws.doit("lock=test.lock", "build:evil")
    assert (ws.out(ws.lane) / "stages" / "evil" / "x").read_text().count("README") == 1
    marker = next((ws.out(ws.lane) / "checked").iterdir())
    assert marker.read_text().startswith("evil-1.0.tar.gz ")


# --- cache entries -------------------------------------------------------------

def test_a_stage_cache_entry_with_a_member_that_climbs_out_is_rejected_and_rebuilt(tmp_path, docker_client,
                                                                                 builder_ready):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        _file(tf, "evil-1.0/README")
    ws = _lane(tmp_path, "evil-1.0.tar.gz", buf.getvalue())
    ws.doit("lock=test.lock", "build:evil")
    key = json.loads((ws.out(ws.lane) / "stages" / "evil.manifest.json").read_text())["key"]
    cache = Path(ws.env["ONLYDOCKER_STAGE_CACHE"])
    # Someone with write access to the cache swaps in an entry (and a record
    # that vouches for it) whose member climbs out of the stage's folder.
    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w", format=tarfile.GNU_FORMAT) as tf:
        _file(tf, "../../../escaped-from-cache")
    (cache / f"{key}.tar.zst").write_bytes(zstandard.ZstdCompressor().compress(evil.getvalue()))
    (cache / f"{key}.json").write_text(json.dumps(
        {"key": key, "files": {"../../../escaped-from-cache": {"type": "file", "sha256": "0" * 64}}}))
    import shutil
    shutil.rmtree(ws.out(ws.lane) / "stages")
    r = ws.doit("lock=test.lock", "build:evil")
    assert "climbs out with '..'" in r.stdout and "unusable" in r.stdout, r.stdout
    assert wsmod.events(r) == {"evil": "built"}
    assert not list(tmp_path.rglob("escaped-from-cache"))
    assert any((cache / "rejected").iterdir())


# --- inside the container ----------------------------------------------------------

def _probe_stage(ws, name: str, toml_extra: str = "") -> None:
    wsmod.add_stage(ws.root, name, f'description = "{name}"\noutputs = ["facts"]\n{toml_extra}', """set -eu
{
  echo "uid $(id -u) gid $(id -g)"
  grep -E '^(CapEff|NoNewPrivs):' /proc/self/status
  echo "memory $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max)"
  echo "pids $(cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max)"
  if touch /etc/owned 2>/dev/null; then echo "wrote /etc"; else echo "cannot write /etc"; fi
} > /build/out/facts
""")


def test_builds_run_unprivileged_with_no_capabilities_and_limits(tmp_path, docker_client, builder_ready):
    ws = wsmod.make(tmp_path / "ws")
    ws.env["ONLYDOCKER_STAGE_CACHE"] = str(tmp_path / "stage-cache")
    (ws.root / "test.lock").write_text(wsmod.builder_tables())
    _probe_stage(ws, "probe")
    _probe_stage(ws, "rooted", "root = true\n")
    ws.doit("lock=test.lock")
    lane = wsmod.lane_name()
    facts = (ws.out(lane) / "stages" / "probe" / "facts").read_text().splitlines()
    assert facts[0] == "uid 1000 gid 1000"
    assert facts[1].split() == ["CapEff:", "0000000000000000"]
    assert facts[2].split() == ["NoNewPrivs:", "1"]
    assert facts[3] == f"memory {8 << 30}" and facts[4] == f"pids {engine.PIDS_LIMIT}"
    assert facts[5] == "cannot write /etc"
    rooted = (ws.out(lane) / "stages" / "rooted" / "facts").read_text().splitlines()
    assert rooted[0] == "uid 0 gid 0" and rooted[2].split() == ["NoNewPrivs:", "1"]


@pytest.mark.parametrize("kind,said", [("absolute path", "Removing leading"), ("dot-dot", ".."),
                                       ("device node", "mknod")])
def test_tar_in_the_container_refuses_on_its_own(kind, said, tmp_path, docker_client, builder_ready):
    """The second line of defence: the prelude's tar, handed an archive the
    host check would have refused, fails the build by itself."""
    archive = tmp_path / "evil-1.0.tar.gz"
    archive.write_bytes(_evil_tar(kind, "w:gz"))
    (tmp_path / "sources.txt").write_text("evil evil-1.0.tar.gz 1.0 tar\n")
    (tmp_path / "build.sh").write_text("echo built > /build/out/x\n")
    from onlydocker.stage.container import PRELUDE as prelude
    tag = json.loads((builder_ready.out(wsmod.lane_name()) / "builder.json").read_text())["tag"]
    spec = engine.RunSpec(image=tag, command=["sh", "/build/engine/prelude.sh"],
                          env={"PATH": "/usr/bin:/bin", "STAGE": "evil", "LANE": "t", "JOBS": "1"},
                          inputs=[(prelude, "/build/engine/prelude.sh"), (tmp_path / "sources.txt",
                                  "/build/engine/sources.txt"), (archive, "/build/sources/evil-1.0.tar.gz"),
                                  (tmp_path / "build.sh", "/build/stage/build.sh")])
    from onlydocker.errors import BuildError
    with pytest.raises(BuildError) as e:
        engine.run(docker_client, spec, output_tar=tmp_path / "out.tar", log_path=tmp_path / "log")
    assert "tar refused evil-1.0.tar.gz" in str(e.value) and said in str(e.value)
    assert not (tmp_path / "out.tar").exists()

