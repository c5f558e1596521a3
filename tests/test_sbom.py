"""The SBOM writer, checked by SPDX's own tools (spdx-tools' JSON parser
and its full validator), on a tiny lane of our own and on the real lock."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from onlydocker.cache.store import StageStore
from onlydocker.inputs import lock
from onlydocker.publish import sbom
from onlydocker.stage.decl import load_stages

REPO = Path(__file__).resolve().parent.parent
SHA = {n: hashlib.sha256(n.encode()).hexdigest() for n in ("vmlinuz", "initrd", "onlydocker.iso", "tar")}


def tiny_lock(tmp_path) -> lock.Lock:
    path = tmp_path / "t.lock"
    path.write_text(f"""
[lane]
name = "tiny"
source_date_epoch = 1686355200
initrd_compression = "zstd"

[builder]
suite = "bookworm"
mirror = "debian:"
packages = ["gcc"]

[[source]]
name = "busybox"
version = "1.35.0"
file = "busybox_1.35.0.orig.tar.bz2"
urls = ["debian:pool/main/b/busybox/busybox_1.35.0.orig.tar.bz2"]
sha256 = "{'a' * 64}"
size = 10
license = "gpl-2.0-only"

[[source]]
name = "libselinux1"
group = "docker"
version = "3.4-1+b6"
file = "libselinux1_3.4-1+b6_amd64.deb"
urls = ["debian:pool/main/libs/libselinux/libselinux1_3.4-1+b6_amd64.deb"]
sha256 = "{'b' * 64}"
size = 10
license = "LicenseRef-public-domain"

[[source]]
name = "libdevmapper1.02.1"
group = "docker"
version = "2:1.02.185-2"
file = "libdevmapper1.02.1_1.02.185-2_amd64.deb"
urls = ["https://example.invalid/libdevmapper.deb"]
sha256 = "{'c' * 64}"
size = 10
license = "LGPL-2.1-only OR (BSD-3-Clause AND MIT)"
""")
    return lock.load(path)


def inputs(lk, **over) -> sbom.Inputs:
    base = dict(
        lane="tiny", epoch=lk.lane.source_date_epoch, tool="onlydocker-test", sources=lk.sources,
        locations={"busybox": "http://mirror.invalid/debian/pool/main/b/busybox/busybox_1.35.0.orig.tar.bz2",
                   "libdevmapper1.02.1": "https://example.invalid/libdevmapper.deb"},
        artifacts={"vmlinuz": SHA["vmlinuz"], "initrd": SHA["initrd"]},
        artifact_stage={"vmlinuz": "kernel", "initrd": "initrd"},
        stages=(sbom.StageInfo("busybox", "k1", "d1", (), ("busybox",)),
                sbom.StageInfo("docker", "k2", "d2", (), ("libselinux1", "libdevmapper1.02.1")),
                sbom.StageInfo("kernel", "k3", "d3", (), ()),
                sbom.StageInfo("initrd", "k4", "d4", ("busybox", "docker", "kernel"), (), container=False)),
        patches=(sbom.Patch("busybox", "0002-b.patch", 2, "2" * 64, "2" * 40),
                 sbom.Patch("busybox", "0001-a.patch", 1, "1" * 64, "1" * 40)),
        builder={"tar_sha256": SHA["tar"], "packages": ["gcc-12=12.2.0-14", "libc6=2.36-9+deb12u14"],
                 "suite": "bookworm"})
    base.update(over)
    return sbom.Inputs(**base)


def validated(tmp_path, data: bytes):
    path = tmp_path / "doc.spdx.json"
    path.write_bytes(data)
    doc = parse_file(str(path))                  # SPDX's own parser: raises on a malformed document
    problems = validate_full_spdx_document(doc, "SPDX-2.3")
    assert problems == [], "\n".join(m.validation_message for m in problems)
    return doc


def test_the_sbom_is_valid_spdx_2_3_by_spdx_tools_and_says_what_the_lane_holds(tmp_path):
    lk = tiny_lock(tmp_path)
    doc = validated(tmp_path, sbom.render(inputs(lk)))
    pkgs = {p.spdx_id: p for p in doc.packages}
    bb = pkgs["SPDXRef-Source-busybox"]
    assert (bb.name, bb.version, bb.download_location) == (
        "busybox", "1.35.0", "http://mirror.invalid/debian/pool/main/b/busybox/busybox_1.35.0.orig.tar.bz2")
    assert str(bb.license_declared) == "GPL-2.0-only"        # the lock's "gpl-2.0-only", made canonical
    assert [(c.algorithm.name, c.value) for c in bb.checksums] == [("SHA256", "a" * 64)]
    dm = pkgs["SPDXRef-Source-libdevmapper1.02.1"]
    assert dm.version == "2:1.02.185-2" and "LGPL-2.1-only" in str(dm.license_declared)
    assert str(pkgs["SPDXRef-Artifact-vmlinuz"].checksums[0].value) == SHA["vmlinuz"]
    tools = {p.name: p.version for p in doc.packages if p.spdx_id.startswith("SPDXRef-BuildTool-")}
    assert tools == {"gcc-12": "12.2.0-14", "libc6": "2.36-9+deb12u14"}
    rels = {(r.spdx_element_id, r.relationship_type.name, r.related_spdx_element_id) for r in doc.relationships}
    assert ("SPDXRef-DOCUMENT", "DESCRIBES", "SPDXRef-Artifact-initrd") in rels
    assert ("SPDXRef-Artifact-initrd", "CONTAINS", "SPDXRef-Stage-initrd") in rels
    assert ("SPDXRef-Stage-initrd", "CONTAINS", "SPDXRef-Stage-docker") in rels
    assert ("SPDXRef-Stage-docker", "GENERATED_FROM", "SPDXRef-Source-libselinux1") in rels
    assert ("SPDXRef-Stage-busybox", "GENERATED_FROM", "SPDXRef-Source-busybox") in rels
    assert ("SPDXRef-Builder", "BUILD_TOOL_OF", "SPDXRef-Stage-kernel") in rels
    assert ("SPDXRef-Builder", "BUILD_TOOL_OF", "SPDXRef-Stage-initrd") not in rels   # a python stage
    assert ("SPDXRef-Builder", "CONTAINS", "SPDXRef-BuildTool-gcc-12") in rels
    assert ("SPDXRef-Patch-busybox-0001-a.patch", "PATCH_APPLIED", "SPDXRef-Source-busybox") in rels
    # The public-domain LicenseRef is defined in the document, as SPDX requires.
    assert [e.license_id for e in doc.extracted_licensing_info] == ["LicenseRef-public-domain"]
    raw = json.loads(sbom.render(inputs(lk)))
    assert [f["fileName"] for f in raw["files"]] == ["./patches/busybox/0001-a.patch", "./patches/busybox/0002-b.patch"]
    assert raw["creationInfo"]["created"] == "2023-06-10T00:00:00Z"
    assert sbom.artifact_hashes(raw) == {"vmlinuz": SHA["vmlinuz"], "initrd": SHA["initrd"]}


def test_the_same_inputs_give_the_same_bytes_and_other_inputs_another_namespace(tmp_path):
    lk = tiny_lock(tmp_path)
    first, second = sbom.render(inputs(lk)), sbom.render(inputs(lk))
    assert first == second
    other = sbom.render(inputs(lk, artifacts={"vmlinuz": SHA["initrd"], "initrd": SHA["initrd"]}))
    ns = [json.loads(d)["documentNamespace"] for d in (first, other)]
    assert ns[0] != ns[1] and all(n.startswith("https://onlydocker.invalid/spdx/tiny-") for n in ns)
    assert json.loads(first)["documentNamespace"].endswith(
        hashlib.sha256(sbom.canonical_json({k: v for k, v in json.loads(first).items()
                                            if k != "documentNamespace"})).hexdigest())


def test_ids_are_stable_and_distinct_and_a_name_twice_is_refused(tmp_path):
    assert sbom.spdx_id("Source", "docker.io") == "SPDXRef-Source-docker.io"
    assert sbom.spdx_id("BuildTool", "a+b") != sbom.spdx_id("BuildTool", "a_b")
    assert sbom.spdx_id("BuildTool", "a+b") == sbom.spdx_id("BuildTool", "a+b")
    lk = tiny_lock(tmp_path)
    with pytest.raises(ValueError, match="SPDXRef-BuildTool-gcc"):
        sbom.render(inputs(lk, builder={"tar_sha256": SHA["tar"], "packages": ["gcc=1", "gcc=2"]}))


def test_the_real_lock_and_stages_make_a_valid_sbom(tmp_path):
    lk = lock.load(REPO / "locks" / "bookworm.lock")
    stages = load_stages(REPO / "stages")
    infos = tuple(sbom.StageInfo(d.name, "k", "d", d.needs,
                                 tuple(s.name for g in d.sources for s in lk.group(g)), d.kind == "container")
                  for d in stages.values())
    names = {name: d.name for d in stages.values() for _, name in d.artifacts}
    inp = sbom.Inputs(lane="bookworm", epoch=lk.lane.source_date_epoch, tool="onlydocker-test",
                      sources=lk.sources, artifacts={n: "0" * 64 for n in names}, artifact_stage=names,
                      stages=infos, builder={"tar_sha256": "1" * 64, "packages": ["bash=5.2.15-2+b7"]})
    doc = validated(tmp_path, sbom.render(inp))
    debs = {p.name for p in doc.packages if (p.file_name or "").endswith(".deb")}
    assert {s.name for s in lk.group("docker")} <= debs and "ca-certificates" in debs
    rels = {(r.spdx_element_id, r.relationship_type.name, r.related_spdx_element_id) for r in doc.relationships}
    assert ("SPDXRef-Stage-docker", "GENERATED_FROM", "SPDXRef-Source-docker.io") in rels
    assert ("SPDXRef-Stage-rootfs", "CONTAINS", "SPDXRef-Stage-docker") in rels


def publish_by_hand(dist: Path, lk, described: dict[str, str] | None = None, sbom_subject: str | None = None):
    """A dist/ as dist.publish lays it out: artifacts, the SBOM, SHA256SUMS
    listing both, and a provenance statement whose subjects are SHA256SUMS."""
    from onlydocker.publish import provenance
    dist.mkdir()
    sums = {}
    for name in ("vmlinuz", "initrd"):
        (dist / name).write_bytes(name.encode() * 100)
        sums[name] = hashlib.sha256((dist / name).read_bytes()).hexdigest()
    (dist / "onlydocker.spdx.json").write_bytes(sbom.render(inputs(lk, artifacts=described or sums)))
    sums["onlydocker.spdx.json"] = hashlib.sha256((dist / "onlydocker.spdx.json").read_bytes()).hexdigest()
    (dist / "SHA256SUMS").write_text("".join(f"{h}  {n}\n" for n, h in sorted(sums.items())))
    subjects = dict(sums, **({"onlydocker.spdx.json": sbom_subject} if sbom_subject else {}))
    (dist / "provenance.intoto.json").write_bytes(provenance.canonical_json(provenance.statement(
        subjects=subjects, materials=[], builder={"id": "t"}, stage_keys={}, lane="tiny", epoch=1)))
    return sums


def test_verify_checks_the_sboms_hashes_against_sha256sums_and_the_provenance(tmp_path):
    from onlydocker.publish.verify import verify_dist
    lk = tiny_lock(tmp_path)
    publish_by_hand(tmp_path / "good", lk)
    findings = verify_dist(tmp_path / "good", None)
    assert [str(f) for f in findings if f.name == "onlydocker.spdx.json"] == [
        "OK            onlydocker.spdx.json",
        "SBOM-OK       onlydocker.spdx.json  its 2 artifact hashes agree with SHA256SUMS and the provenance names it"]

    # An SBOM that says another sha256 for the initrd (SHA256SUMS itself consistent).
    sums = publish_by_hand(tmp_path / "other", lk,
                           described={"vmlinuz": hashlib.sha256(b"vmlinuz" * 100).hexdigest(), "initrd": "0" * 64})
    wrong = [f for f in verify_dist(tmp_path / "other", None) if f.state == "SBOM-WRONG"]
    assert [(f.name, "0" * 64 in f.detail and sums["initrd"] in f.detail) for f in wrong] == [("initrd", True)]
    assert not wrong[0].ok

    # An SBOM that leaves an artifact out, and a provenance naming another SBOM.
    publish_by_hand(tmp_path / "short", lk, described={"vmlinuz": hashlib.sha256(b"vmlinuz" * 100).hexdigest()},
                    sbom_subject="1" * 64)
    details = sorted(str(f) for f in verify_dist(tmp_path / "short", None) if f.state == "SBOM-WRONG")
    assert len(details) == 2
    assert "initrd" in details[0] and "not described by onlydocker.spdx.json" in details[0]
    assert "provenance.intoto.json names it with sha256 " + "1" * 64 in details[1]


def test_a_dist_without_an_sbom_fails_verification(tmp_path):
    from onlydocker.publish.verify import verify_dist
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "vmlinuz").write_bytes(b"k")
    (dist / "SHA256SUMS").write_text(f"{hashlib.sha256(b'k').hexdigest()}  vmlinuz\n")
    missing = [f for f in verify_dist(dist, None) if f.name == "onlydocker.spdx.json"]
    assert [f.state for f in missing] == ["MISSING"] and not missing[0].ok


def test_publish_puts_the_sbom_in_sha256sums_and_the_provenance_and_verify_agrees(tmp_path):
    """dist.publish on hand-made stage outputs (no engine): the SBOM is
    written, valid, listed, a subject of the statement, the same bytes twice;
    the image's files are traced to the .deb or the stage they came from."""
    from onlydocker import config
    from onlydocker.inputs.fetch import Fetcher
    from onlydocker.publish import dist
    from onlydocker.publish.verify import parse_sums, verify_dist
    from onlydocker.stage.build import Workspace
    from tests.test_unpack import make_deb
    so = b"\x7fELF libfoo"
    deb = make_deb(tmp_path / "libfoo_1.0_amd64.deb", [("./usr/lib/libfoo.so.1", "file", so)])
    lk_path = tmp_path / "t.lock"
    lk_path.write_text(tiny_lock(tmp_path).path.read_text() + f"""
[[source]]
name = "libfoo"
group = "debs"
version = "1.0"
file = "libfoo_1.0_amd64.deb"
urls = ["{deb.as_uri()}"]
sha256 = "{hashlib.sha256(deb.read_bytes()).hexdigest()}"
size = {deb.stat().st_size}
license = "MIT"
""")
    lk = lock.load(lk_path)
    decls = {"kernel": 'sources = ["busybox"]\noutputs = ["bzImage"]\nartifacts = { "bzImage" = "vmlinuz" }\n',
             "docker": 'sources = ["debs"]\noutputs = ["sysroot"]\n',
             "rootfs": 'kind = "python"\nneeds = ["kernel", "docker"]\n'
                       'outputs = ["init"]\n',
             "rootfs-docker": 'kind = "python"\nneeds = ["docker"]\n'
                              'outputs = ["tree", "initrd-piece"]\n',
             "initrd": 'kind = "python"\n'
                       'needs = ["rootfs", "rootfs-docker"]\noutputs = ["initrd.img"]\n'}
    for name, text in decls.items():
        (tmp_path / "stages" / name).mkdir(parents=True)
        (tmp_path / "stages" / name / "stage.toml").write_text(f'description = "{name}"\n' + text)
        script = "stage.py" if "python" in text else "build.sh"
        (tmp_path / "stages" / name / script).write_text("def build(ctx):\n    pass\n" if "python" in text else "true\n")
    stages = load_stages(tmp_path / "stages")
    settings = config.Settings(root=tmp_path, lock_path=lk.path, cache_dir=tmp_path / "cache",
                               downloads_dir=tmp_path / "dl", signing_key=tmp_path / "no.key",
                               debian_mirror="http://mirror.invalid/debian")
    ws = Workspace(root=tmp_path, out=tmp_path / "out" / "tiny", store=StageStore(tmp_path / "cache" / "stages"),
                   lock=lk, fetcher=Fetcher(settings))
    outputs = {"kernel": {"bzImage": b"kernel"}, "docker": {"sysroot/usr/lib/libfoo.so.1": so, "ca.crt": b"made"},
               "rootfs": {"boot/vmlinuz": b"kernel", "init": b"#!/bin/sh\n", "etc/ca.crt": b"made"},
               # The image's files are in its layers: the rootfs tree and Docker's layer.
               "rootfs-docker": {"tree/usr/lib/libfoo.so.1": so, "initrd-piece": b"compressed"},
               "initrd": {"initrd.img": b"pieces"}}
    for name, tree in outputs.items():
        for rel, body in tree.items():
            (ws.paths.stage_dir(name) / rel).parent.mkdir(parents=True, exist_ok=True)
            (ws.paths.stage_dir(name) / rel).write_bytes(body)
        ws.paths.manifest_path(name).write_text(json.dumps({"stage": name, "key": "k" * 64, "digest": name * 8}))
    (ws.out / "builder.json").write_text(json.dumps({"tag": "t", "tar_sha256": SHA["tar"],
                                                     "packages": ["gcc-12=12.2.0-14"]}))
    (tmp_path / "patches" / "busybox" / "1.35.0").mkdir(parents=True)
    (tmp_path / "patches" / "busybox" / "1.35.0" / "0001-x.patch").write_bytes(PATCH := b"--- a\n+++ b\n")
    dist.publish(ws, stages, settings, log=lambda *_: None)
    d = ws.out / "dist"
    first = (d / "onlydocker.spdx.json").read_bytes()
    doc = validated(tmp_path, first)
    sums = parse_sums((d / "SHA256SUMS").read_text())
    assert sums["onlydocker.spdx.json"] == hashlib.sha256(first).hexdigest()
    statement = json.loads((d / "provenance.intoto.json").read_text())
    assert {s["name"]: s["digest"]["sha256"] for s in statement["subject"]} == sums
    assert {p.file_name: p.checksums[0].value for p in doc.packages if p.spdx_id.startswith("SPDXRef-Artifact-")} \
        == {"vmlinuz": hashlib.sha256(b"kernel").hexdigest(), "onlydocker.spdx3.json": sums["onlydocker.spdx3.json"]}
    load_spdx3((d / "onlydocker.spdx3.json").read_bytes())       # the same build in SPDX 3.0.1, valid
    patch = next(f for f in doc.files if f.name.startswith("./patches/"))
    assert patch.name == "./patches/busybox/0001-x.patch" and \
        {c.value for c in patch.checksums} == {hashlib.sha1(PATCH).hexdigest(), hashlib.sha256(PATCH).hexdigest()}
    # A `debian:` source names no host: the SBOM does not depend on this
    # machine's mirror (every artifact is a function of the lock).
    busybox = next(p for p in doc.packages if p.spdx_id == "SPDXRef-Source-busybox")
    assert str(busybox.download_location) == "NOASSERTION" and b"mirror.invalid" not in first
    # The image's files, and where each came from.
    ids = {f.name: f.spdx_id for f in doc.files}
    rels = {(r.spdx_element_id, r.relationship_type.name, r.related_spdx_element_id) for r in doc.relationships}
    assert {n for n in ids if not n.startswith("./patches/")} == {"./boot/vmlinuz", "./usr/lib/libfoo.so.1", "./init",
                                                                          "./etc/ca.crt"}
    assert (ids["./usr/lib/libfoo.so.1"], "GENERATED_FROM", "SPDXRef-Source-libfoo") in rels
    assert (ids["./boot/vmlinuz"], "GENERATED_FROM", "SPDXRef-Source-busybox") in rels
    assert not any(r[0] == ids["./init"] and r[1] == "GENERATED_FROM" for r in rels)
    # Made by a stage of .debs, in none of them: from that stage, not from every .deb.
    assert [r[2] for r in rels if r[0] == ids["./etc/ca.crt"] and r[1] == "GENERATED_FROM"] == ["SPDXRef-Stage-docker"]
    assert ("SPDXRef-Stage-initrd", "CONTAINS", ids["./init"]) in rels
    assert ("SPDXRef-Stage-initrd", "CONTAINS", ids["./usr/lib/libfoo.so.1"]) in rels
    assert [f.state for f in verify_dist(d, None) if f.name == "onlydocker.spdx.json"] == ["OK", "SBOM-OK"]
    recorded = json.loads((ws.out / "dist.state.json").read_text())
    assert recorded == dist._inputs(ws, stages, settings)
    dist.publish(ws, stages, settings, log=lambda *_: None)
    assert (d / "onlydocker.spdx.json").read_bytes() == first
    # The lock changes (a license), no stage does: dist/ is out of date (the SBOM says licenses).
    lk.path.write_text(lk.path.read_text().replace('license = "gpl-2.0-only"', 'license = "GPL-2.0-or-later"'))
    assert json.loads((ws.out / "dist.state.json").read_text()) != dist._inputs(ws, stages, settings)


# --- issue 27: what compliance checkers and scanners read ---------------------

def load_spdx3(data: bytes):
    """The SPDX 3.0.1 document as spdx-python-model loads it (offline): its
    deserializer refuses wrong types; linking finds every reference; writing
    it again refuses a missing required property."""
    import io

    from spdx_python_model.bindings import v3_0_1 as spdx3
    objects = spdx3.SHACLObjectSet()
    spdx3.JSONLDDeserializer().read(io.BytesIO(data), objects)
    missing = objects.link()
    # The only ids not in the document: SPDX's own individuals (e.g. NoAssertionElement).
    assert {m for m in missing if not m.startswith("https://spdx.org/rdf/3.0.1/terms/")} == set()
    spdx3.JSONLDSerializer().write(objects, io.BytesIO())
    return spdx3, objects


def test_the_spdx3_document_is_valid_3_0_1_and_holds_the_build(tmp_path):
    from onlydocker.publish import sbom3
    lk = tiny_lock(tmp_path)
    inp = inputs(lk, release="0.1.0+tiny.abc", suite="bookworm", artifact_sha512={"vmlinuz": "5" * 128},
                 copyrights={"busybox": "Copyright (C) 1999 Erik Andersen"})
    data = sbom3.render(inp)
    assert data == sbom3.render(inp)                         # same inputs, same bytes
    spdx3, objects = load_spdx3(data)
    [doc] = objects.foreach_type(spdx3.SpdxDocument)
    [bom] = doc.rootElement
    assert isinstance(bom, spdx3.software_Sbom) and list(bom.software_sbomType) == [spdx3.software_SbomType.build]
    pkgs = {p.name: p for p in objects.foreach_type(spdx3.software_Package)}
    assert {p.name for p in bom.rootElement} == {"vmlinuz", "initrd"}
    assert pkgs["vmlinuz"].software_packageVersion == "0.1.0+tiny.abc"
    assert pkgs["busybox"].software_copyrightText == "Copyright (C) 1999 Erik Andersen"
    assert pkgs["busybox"].software_packageUrl == "pkg:deb/debian/busybox@1.35.0?arch=source&distro=debian-12"
    builds = {b.build_buildId: b for b in objects.foreach_type(spdx3.build_Build)}
    assert set(builds) == {"tiny/busybox/k1", "tiny/docker/k2", "tiny/kernel/k3", "tiny/initrd/k4"}
    rels = {(getattr(r.from_, "spdxId", r.from_), r.relationshipType.rsplit("/", 1)[-1],
             tuple(sorted(getattr(t, "spdxId", t) for t in r.to))) for r in objects.foreach_type(spdx3.Relationship)}
    kinds = {t for _, t, _ in rels}
    assert {"hasInput", "hasOutput", "usesTool", "contains", "hasDistributionArtifact", "hasConcludedLicense",
            "hasDeclaredLicense", "patchedBy", "dependsOn"} <= kinds
    busybox_build = builds["tiny/busybox/k1"].spdxId
    assert any(f == busybox_build and t == "hasInput" and pkgs["busybox"].spdxId in to for f, t, to in rels)
    # The builder's packages are tools of the container stages' builds, with their purls.
    tools = {t.name: t for t in objects.foreach_type(spdx3.Tool)}
    assert [e.identifier for e in tools["gcc-12 12.2.0-14"].externalIdentifier] == \
        ["pkg:deb/debian/gcc-12@12.2.0-14?distro=debian-12"]
    assert not any(f == builds["tiny/initrd/k4"].spdxId and t == "usesTool" for f, t, _ in rels)  # a python stage


def test_purls_cpes_suppliers_and_versions_scanners_read(tmp_path):
    lk = tiny_lock(tmp_path)
    raw = json.loads(sbom.render(inputs(lk, release="0.1.0+tiny.abc", suite="bookworm",
                                        builder={"tar_sha256": SHA["tar"], "packages": ["gcc-12=12.2.0-14"],
                                                 "suite": "bookworm", "arch": {"gcc-12": "amd64"}})))
    pkgs = {p["SPDXID"]: p for p in raw["packages"]}
    refs = {p["name"]: {r["referenceType"]: r["referenceLocator"] for r in p.get("externalRefs", [])}
            for p in raw["packages"]}
    assert refs["libselinux1"]["purl"] == "pkg:deb/debian/libselinux1@3.4-1%2Bb6?arch=amd64&distro=debian-12"
    assert refs["busybox"]["cpe23Type"] == "cpe:2.3:a:busybox:busybox:1.35.0:*:*:*:*:*:*:*"
    assert refs["gcc-12"]["purl"] == "pkg:deb/debian/gcc-12@12.2.0-14?arch=amd64&distro=debian-12"
    assert "purl" not in refs["libdevmapper1.02.1"]          # not from Debian's archive: no Debian purl
    assert pkgs["SPDXRef-Source-busybox"]["supplier"] == "Organization: Debian"
    assert pkgs["SPDXRef-Source-libdevmapper1.02.1"]["supplier"] == "NOASSERTION"
    for aid in ("SPDXRef-Artifact-vmlinuz", "SPDXRef-Stage-kernel"):
        assert (pkgs[aid]["versionInfo"], pkgs[aid]["supplier"]) == ("0.1.0+tiny.abc", sbom.DEFAULT_SUPPLIER)
    assert sorted(raw["creationInfo"]["creators"]) == ["Organization: Only Docker project", "Tool: onlydocker-test"]
    # Every package hangs from an artifact (NTIA's checker ignores a floating one).
    edges = {}
    for r in raw["relationships"]:
        if r["relationshipType"] in ("DESCRIBES", "CONTAINS", "DEPENDS_ON"):
            edges.setdefault(r["spdxElementId"], set()).add(r["relatedSpdxElement"])
    seen, todo = set(), ["SPDXRef-DOCUMENT"]
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(edges.get(n, ()))
    assert set(pkgs) <= seen
    # CPEs: the upstream version, escaped as CPE 2.3 wants.
    assert sbom.cpe("docker.io", "20.10.24+dfsg1-1+deb12u1+b6") == "cpe:2.3:a:docker:docker:20.10.24:*:*:*:*:*:*:*"
    assert sbom.cpe("containerd", "1.6.20~ds1-1+deb12u3").split(":")[5] == "1.6.20"
    assert sbom.cpe("runc", "1:1.1.5+ds1-1").split(":")[3:6] == ["linuxfoundation", "runc", "1.1.5"]
    assert sbom.cpe("tini", "0.19.0-1") is None
    assert sbom.distro("bookworm") == "debian-12" and sbom.distro("sid") == "sid"


def test_copyright_notices_from_copyright_files_and_source_headers():
    from onlydocker.publish import legal
    dep5 = (b"Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
            b"Files: *\nCopyright: 2012-2018 Docker, Inc.\n 2015 John Howard\nLicense: Apache-2.0\n\n"
            b"Files: debian/*\nCopyright: Copyright (c) 2015 Thomas Orozco\nLicense: MIT\n")
    assert legal.copyright_notices([("usr/share/doc/x/copyright", dep5)], deb=True) == [
        "Copyright 2012-2018 Docker, Inc.", "Copyright 2015 John Howard", "Copyright (c) 2015 Thomas Orozco"]
    gpl = b"GNU GENERAL PUBLIC LICENSE\nCopyright (C) 1989, 1991 Free Software Foundation, Inc.\n"
    mit = b"Copyright (c) 2002-2020 Matt Johnston\nPortions copyright (c) 2004 Mihnea Stoenescu\n"
    assert legal.copyright_notices([("COPYING", gpl), ("LICENSE", mit)], deb=False) == [
        "Copyright (c) 2002-2020 Matt Johnston", "Portions copyright (c) 2004 Mihnea Stoenescu"]


def test_the_project_license_is_pyproject_tomls():
    import tomllib
    assert tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["license"]["text"] == sbom.PROJECT_LICENSE


def test_the_release_and_the_supplier_setting(tmp_path, monkeypatch):
    from onlydocker.errors import BuildError
    from onlydocker.publish import dist
    assert dist.supplier({}) == "Organization: Only Docker project"
    assert dist.supplier({"ONLYDOCKER_SUPPLIER": "Organization: ACME"}) == "Organization: ACME"
    with pytest.raises(BuildError, match="ONLYDOCKER_SUPPLIER='ACME': expected \"Organization: <name>\""):
        dist.supplier({"ONLYDOCKER_SUPPLIER": "ACME"})
    lk = tiny_lock(tmp_path)

    class WS:
        lane, lock = "tiny", lk
    assert dist.release(WS) == f"0.1.0+tiny.{hashlib.sha256(lk.path.read_bytes()).hexdigest()[:12]}"


def test_the_image_sbom_describes_its_files_and_packages_not_itself(tmp_path):
    lk = tiny_lock(tmp_path)
    files = (sbom.ImageFile("bin/busybox", "a" * 64, "a" * 40, ("busybox",)),
             sbom.ImageFile("init", "b" * 64, "b" * 40))
    data = sbom.canonical_json(sbom.image_document("tiny", lk.lane.source_date_epoch, "onlydocker-test",
                                                   "20.10-tiny", lk.sources, "bookworm", files))
    doc = validated(tmp_path, data)
    assert {f.name for f in doc.files} == {"./bin/busybox", "./init"}
    rels = {(r.spdx_element_id, r.relationship_type.name, r.related_spdx_element_id) for r in doc.relationships}
    assert ("SPDXRef-Image", "CONTAINS", "SPDXRef-Source-busybox") in rels
    assert (sbom.spdx_id("File", "bin/busybox"), "GENERATED_FROM", "SPDXRef-Source-busybox") in rels
    assert b"pkg:deb/debian/busybox@1.35.0?arch=source&distro=debian-12" in data
