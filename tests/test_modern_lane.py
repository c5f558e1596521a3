"""End to end, for real: build the modern lane with `doit`, boot it in qemu,
check Docker runs as PID 1, rebuild only what changed, audit, and prove the
build reproducible. Minutes, not seconds: marked slow, run last. The boots
of this build (kernel + initrd, the ISO, data disks) are in test_boot.py."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from onlydocker.hashing import sha256_file
from onlydocker.inputs import lock
from tests import workspace as wsmod
from tests.conftest import MODERN_LANE as LANE
from tests.conftest import MODERN_LOCK as LOCK
from tests.conftest import require_tool

pytestmark = [pytest.mark.slow, pytest.mark.docker, pytest.mark.budget(f"lane tests: {LANE}")]


@pytest.fixture(scope="module")
def lane(modern_lane):
    return modern_lane


def dist(ws) -> Path:
    return ws.out(LANE) / "dist"


def test_full_build_publishes_signed_artifacts(lane):
    d = dist(lane)
    for name in ("vmlinuz", "initrd", "onlydocker.iso", "onlydocker.efi", "onlydocker-secureboot.crt",
                 "onlydocker.qcow2", "onlydocker-virtualbox.box",
                 "onlydocker-libvirt.box", "onlydocker.json", "SHA256SUMS", "SHA256SUMS.minisig",
                 "provenance.intoto.json", "provenance.intoto.dsse.json"):
        assert (d / name).is_file(), name
    minisign = require_tool("minisign")
    pub = lane.env["ONLYDOCKER_SIGNING_KEY"] + ".pub"
    r = subprocess.run([minisign, "-V", "-p", pub, "-m", str(d / "SHA256SUMS")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    statement = json.loads((d / "provenance.intoto.json").read_text())
    names = {s["name"] for s in statement["subject"]}
    assert {"vmlinuz", "initrd", "onlydocker.iso", "onlydocker.efi", "onlydocker-secureboot.crt",
            "onlydocker.qcow2"} <= names
    assert "UNSIGNED for Secure Boot" not in lane.first.stdout
    # Every pinned .deb of the builder is a material, with the archive's sha256.
    debs = lock.load(lane.root / LOCK).builder.debs
    mats = {m["name"]: m for m in statement["predicate"]["buildDefinition"]["resolvedDependencies"]}
    for deb in debs:
        m = mats[f"builder-deb:{deb.name}:{deb.architecture}"]
        assert m["uri"] == deb.url and m["digest"] == {"sha256": deb.sha256}
    assert "UNSIGNED" not in lane.first.stdout
    assert "onlydocker.spdx.json" in names
    # The lock by its digest, and the pipeline's own source: this workspace
    # is a copy, not a git work tree, and the provenance says just that.
    external = statement["predicate"]["buildDefinition"]["externalParameters"]
    assert external["lock"] == {"path": LOCK, "digest": {"sha256": sha256_file(lane.root / LOCK)}}
    assert external["source"] == {"git": None, "python_lock": {
        "path": "requirements.lock", "sha256": sha256_file(lane.root / "requirements.lock")}}
    assert "source: not a git work tree" in lane.first.stdout
    # The setting that changes the catalog's bytes, so that a rebuild uses the same.
    from onlydocker import config
    assert external["settings"] == {"box_base_url": config.load(env=lane.env, root=lane.root).box_base_url,
                                    "supplier": "Organization: Only Docker project"}


def test_a_fresh_clone_restores_the_whole_lane_from_the_remote_cache_without_building(lane, tmp_path):
    """A developer's machine: a fresh clone, an empty local cache, read-only,
    trusting CI's key. Nothing is built, and every artifact is identical to CI's."""
    fresh = wsmod.make(tmp_path / "fresh", copy_project=True, cache=tmp_path / "empty-cache")
    fresh.env.pop("ONLYDOCKER_STAGE_CACHE", None)
    fresh.env.update(lane.remote.env(write=False))
    fresh.env["ONLYDOCKER_TRUSTED_KEYS"] = lane.env["ONLYDOCKER_SIGNING_KEY"] + ".pub"
    # CI's Secure Boot certificate, not its key: the ISO signed for it is restored.
    fresh.env["ONLYDOCKER_SECUREBOOT_CERT"] = str(dist(lane) / "onlydocker-secureboot.crt")
    before = len(lane.remote.requests())
    r = fresh.doit("-n", "2", f"lock={LOCK}", timeout=1800)
    results = {t["name"]: t["result"] for t in r.record["tasks"]}
    stages = [n for n in results if n.startswith("build:") and not n.startswith("build:fetch:")
              and n not in ("build:builder", "build:dist")]
    assert len(stages) >= 14 and all(results[n] == "restored" for n in stages), results
    assert "mmdebstrap" not in r.stdout + r.stderr
    # No stage was built, so no source was needed to build one: the kernel's
    # tarball (140 MB) was never fetched. (The SBOM reads Docker's .debs, to
    # trace the image's files to them.)
    linux = lock.load(lane.root / LOCK).source("linux")
    assert not (tmp_path / "empty-cache" / "sources" / "sha256" / linux.sha256).exists()
    assert f"fetch {linux.file}: not needed" in r.stdout
    assert (fresh.out(LANE) / "dist" / "SHA256SUMS").read_text() == (dist(lane) / "SHA256SUMS").read_text()
    assert {m for m, _, _ in lane.remote.requests()[before:]} <= {"GET", "HEAD"}


def test_the_sbom_is_valid_spdx_and_names_every_artifact_source_and_deb(lane):
    from spdx_tools.spdx.parser.parse_anything import parse_file
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    from onlydocker.inputs import lock
    from onlydocker.publish.verify import parse_sums
    d = dist(lane)
    sums = parse_sums((d / "SHA256SUMS").read_text())
    doc = parse_file(str(d / "onlydocker.spdx.json"))
    problems = validate_full_spdx_document(doc, "SPDX-2.3")
    assert problems == [], "\n".join(m.validation_message for m in problems)
    by_file = {p.file_name: p for p in doc.packages if p.file_name}
    for name, sha in sums.items():
        if name != "onlydocker.spdx.json":
            assert by_file[name].checksums[0].value == sha, name
    lk = lock.load(lane.root / LOCK)
    for s in lk.sources:
        assert by_file[s.file].version == s.version and str(by_file[s.file].license_declared) == s.license
    assert {s.file for s in lk.group("docker")} <= set(by_file)
    builder = json.loads((lane.out(LANE) / "builder.json").read_text())
    tools = {f"{p.name}={p.version}" for p in doc.packages if p.spdx_id.startswith("SPDXRef-BuildTool-")}
    assert tools == set(builder["packages"])


def test_legal_info_of_the_lane_offline(lane):
    import csv
    import io
    env = dict(lane.env, ONLYDOCKER_OFFLINE="1")
    r = wsmod.Workspace(root=lane.root, env=env, log=lane.log).doit("legal-info", "--lock", LOCK)
    out = lane.out(LANE) / "legal-info"
    rows = list(csv.DictReader(io.StringIO((out / "manifest.csv").read_text())))
    assert len(rows) == len(list((out / "sources").iterdir())) and "legal-info of lane" in r.stdout
    lk = lock.load(lane.root / LOCK)
    busybox, linux = lk.source("busybox").version, lk.source("linux").version
    assert (out / "licenses" / "busybox" / f"busybox-{busybox}" / "LICENSE").is_file()
    assert (out / "licenses" / "linux" / f"linux-{linux}" / "COPYING").is_file()
    assert (out / "licenses" / "docker.io" / "usr" / "share" / "doc" / "docker.io" / "copyright").is_file()


def test_the_kernel_passes_dockers_own_check_config(lane):
    kernel = lane.out(LANE) / "stages" / "kernel"
    report = (kernel / "docker-check-config.txt").read_text()
    assert report.splitlines()[-1].endswith(
        "every option under Generally Necessary, Optional Features and Network Drivers is enabled"), report[-2000:]
    assert "waived: CONFIG_MEMCG_SWAP" in report
    cfg = (kernel / "config").read_text()
    # Drivers are modules (loaded on demand), and modules.dep knows them.
    dep = next((kernel / "lib" / "modules").glob("*/modules.dep")).read_text()
    for opt, module in (("VXLAN", "vxlan"), ("MACVLAN", "macvlan"), ("IPVLAN", "ipvlan"),
                        ("IP_VS_RR", "ip_vs_rr"), ("XFRM_USER", "xfrm_user"), ("INET_ESP", "esp4"),
                        ("CRYPTO_GCM", "gcm"), ("NF_NAT_FTP", "nf_nat_ftp"), ("DUMMY", "dummy")):
        assert f"CONFIG_{opt}=m" in cfg, opt
        assert f"/{module}.ko:" in dep, module


def test_a_second_run_builds_and_restores_nothing(lane):
    assert wsmod.events(lane.doit(f"lock={LOCK}")) == {}


def test_verify_passes_and_then_names_a_corrupted_artifact(lane):
    r = lane.doit("verify", "--lock", LOCK)
    assert "CORRUPT" not in r.stdout
    iso = dist(lane) / "onlydocker.iso"
    original = iso.read_bytes()
    try:
        iso.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        bad = lane.doit("verify", "--lock", LOCK, check=False)
        assert bad.returncode != 0
        assert any("CORRUPT" in line and "onlydocker.iso" in line for line in bad.stdout.splitlines())
    finally:
        iso.write_bytes(original)


def test_changed_busybox_config_rebuilds_busybox_and_downstream_not_the_kernel(lane):
    config = lane.root / "stages" / "busybox" / "lanes" / LANE / "config"
    lane.original_busybox_config = config.read_text()
    config.write_text(lane.original_busybox_config + "\n# CONFIG_CAL is not set\n")
    r = lane.doit("-n", "2", f"lock={LOCK}")
    ran = wsmod.events(r)
    assert ran.get("busybox") == "built"
    # On the tree the lane's build kept (kept.py), as a developer's next build is.
    assert "busybox: built" in r.stdout and "incrementally from its kept tree" in r.stdout, r.stdout[-3000:]
    assert "kernel" not in ran and "docker" not in ran and "iptables" not in ran
    assert {"images", "rootfs", "initrd", "iso"} <= set(ran)


def test_reverting_the_change_restores_from_the_cache_without_building(lane):
    config = lane.root / "stages" / "busybox" / "lanes" / LANE / "config"
    config.write_text(lane.original_busybox_config)
    ran = wsmod.events(lane.doit("-n", "2", f"lock={LOCK}"))
    assert ran.get("busybox") == "restored"
    assert "built" not in ran.values()


def test_a_fragment_option_the_lane_s_source_does_not_define_is_named_before_its_stage_runs(lane, tmp_path):
    """Against the Kconfig symbols the archive check found (lanecheck.py):
    right after the fetch task checks the source (BusyBox, into an empty
    out/), or when the run starts, before any task, once this tree has
    checked it (the kernel's, at the second run)."""
    sources = {s.name: s.file for s in lock.load(lane.root / LOCK).sources}
    fresh = {k: v for k, v in lane.env.items() if not k.startswith("ONLYDOCKER_REMOTE_CACHE")}
    fresh.update(ONLYDOCKER_OUT=str(tmp_path / "out"), ONLYDOCKER_STAGE_CACHE=str(tmp_path / "stage-cache"))
    for stage, option, env, runs in (("busybox", "FEATURE_LS_COLOUR", fresh, 1),
                                     ("kernel", "OVERLAYFS_FS", lane.env, 2)):
        config = lane.root / "stages" / stage / "lanes" / LANE / "config"
        original = config.read_text()
        try:
            config.write_text(original + f"CONFIG_{option}=y\n")
            ws = wsmod.Workspace(root=lane.root, env=env, log=lane.log)
            results = [ws.doit(f"build:{stage}", f"lock={LOCK}", check=False) for _ in range(runs)]
        finally:
            config.write_text(original)
        said = (f"stage {stage}: stages/{stage}/lanes/{LANE}/config: line {len(original.splitlines()) + 1}: "
                f"CONFIG_{option} is no option of {sources['linux' if stage == 'kernel' else 'busybox']}: "
                f"no Kconfig file there defines {option}")
        for r in results:
            assert r.returncode != 0 and "Traceback" not in r.stderr
            assert [ln for ln in (r.stdout + r.stderr).splitlines() if said in ln], r.stdout[-3000:] + r.stderr
            # doit names a task as it starts it: the stage's never started.
            started = [ln.lstrip(".- ") for ln in r.stdout.splitlines()]
            assert f"build:{stage}" not in started, r.stdout[-3000:]
        if stage == "busybox":
            assert "build:fetch:busybox" in started and f"error: {said}" in r.stdout + r.stderr
        else:
            # The second run: the tree knows the kernel's symbols, nothing starts.
            assert f"ERROR: {said}" in r.stderr and "build:" not in r.stdout, r.stdout[-3000:] + r.stderr


def _kernel_outputs(out: Path) -> dict[str, str]:
    tree = out / "stages" / "kernel"
    return {p.relative_to(tree).as_posix(): sha256_file(p) for p in sorted(tree.rglob("*")) if p.is_file()}


def test_a_kernel_option_builds_incrementally_and_gives_the_bytes_of_a_clean_build(lane, tmp_path):
    """CONFIG_DUMMY from m to y on the tree the lane's build kept, then back
    to m, built again on that tree, into another out/ with an empty cache
    (so that the key is built, not restored): every output byte equals the
    lane's own kernel, built from a fresh extraction."""
    # The lane's own build of its kernel, if it built it (a restored stage writes no log).
    log = lane.out(LANE) / "logs" / "kernel.log"
    first_log = log.read_text() if log.is_file() else ""
    clean = _kernel_outputs(lane.out(LANE))
    config = lane.root / "stages" / "kernel" / "lanes" / LANE / "config"
    original = config.read_text()
    try:
        config.write_text(original.replace("CONFIG_DUMMY=m\n", "CONFIG_DUMMY=y\n"))
        r = lane.doit("build:kernel", f"lock={LOCK}")
        assert wsmod.events(r) == {"kernel": "built"}
        assert "incrementally from its kept tree" in r.stdout, r.stdout[-3000:]
        built = lane.out(LANE) / "stages" / "kernel"
        assert "CONFIG_DUMMY=y" in (built / "config").read_text()
        assert "/dummy.ko:" not in next((built / "lib" / "modules").glob("*/modules.dep")).read_text()
    finally:
        config.write_text(original)
    env = {k: v for k, v in lane.env.items() if not k.startswith("ONLYDOCKER_REMOTE_CACHE")}
    env.update(ONLYDOCKER_OUT=str(tmp_path / "out"), ONLYDOCKER_STAGE_CACHE=str(tmp_path / "stage-cache"))
    again = wsmod.Workspace(root=lane.root, env=env, log=lane.log)
    r = again.doit("build:kernel", f"lock={LOCK}")
    assert re.search(r"^kernel: built \(\w+\) in [\d.]+ s, incrementally from its kept tree$", r.stdout, re.M), \
        r.stdout[-3000:]
    if "prelude: kept tree: not used" not in first_log:
        # The lane's kernel was restored, or built on a tree of this machine's:
        # the clean reference is built here, from a fresh extraction.
        env.update(ONLYDOCKER_OUT=str(tmp_path / "clean-out"), ONLYDOCKER_STAGE_CACHE=str(tmp_path / "c2"),
                   ONLYDOCKER_CLEAN="1")
        wsmod.Workspace(root=lane.root, env=env, log=lane.log).doit("build:kernel", f"lock={LOCK}")
        clean = _kernel_outputs(tmp_path / "clean-out" / LANE)
    incremental = _kernel_outputs(tmp_path / "out" / LANE)
    # Every file: bzImage, .config, System.map, the check-config report, the modules and their indexes.
    assert {"bzImage", "config", "System.map"} <= set(incremental) and any(f.endswith(".ko") for f in incremental)
    assert incremental == clean, sorted(set(incremental.items()) ^ set(clean.items()))[:10]
    # The lane as the other tests know it: its kernel again (from the cache).
    assert wsmod.events(lane.doit("build:kernel", f"lock={LOCK}")) == {"kernel": "restored"}


@pytest.mark.budget(f"repro: {LANE}")
def test_the_lane_is_bit_for_bit_reproducible(lane):
    # Two stages at once, as the first build: the kernel (make -j3 in the
    # second build) overlaps the other stages instead of waiting for them.
    r = lane.doit("repro", "-n", "2", "--lock", LOCK, check=False, timeout=5400)
    written = lane.out(LANE) / "repro" / "report.json"
    assert written.is_file(), f"doit repro wrote no report (exit {r.returncode}):\n{r.stdout[-3000:]}"
    report = json.loads(written.read_text())
    differing = [row["artifact"] for row in report["rows"] if not row["same"]]
    assert r.returncode == 0 and report["identical"], f"differ: {differing}\n{r.stdout[-3000:]}"
    assert any(row["artifact"] == "dist/onlydocker.iso" for row in report["rows"])
