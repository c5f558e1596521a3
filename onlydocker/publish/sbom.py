"""The lane's SBOM: an SPDX 2.3 JSON document, made from data only (inputs
in, bytes out; no clock, no files, no random ids).

What it holds:
  - every artifact of dist/ (a package, with its sha256 as in SHA256SUMS),
    described by the document;
  - every stage's output (a package); an artifact CONTAINS the output of the
    stage that publishes it, a stage's output CONTAINS the outputs of the
    stages it needs, and is GENERATED_FROM its sources;
  - every source of the lock: name, version, download location, file,
    sha256 (and any other hash the lock gives), declared license; a patch
    (an SPDX file) is PATCH_APPLIED to its source;
  - every regular file of the image (the layers the initrd stage packs: the
    rootfs tree and Docker's layer; an SPDX file with its SHA1 and SHA256),
    which the initrd stage CONTAINS and which is
    GENERATED_FROM the sources it came from (or, when that is not one
    source, the upstream stage whose output it is);
  - the builder image (BUILD_TOOL_OF every container stage), which CONTAINS
    its Debian packages (name and version from the builder record).

Its ids are stable: SPDXIDs are made from names, and the documentNamespace
ends with the sha256 of the document's own content (written without the
namespace), so the same inputs give the same bytes and other inputs another
namespace. Its date is the lane's SOURCE_DATE_EPOCH.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from urllib.parse import quote

from .provenance import canonical_json, rfc3339

SPDX_VERSION = "SPDX-2.3"
NAMESPACE_BASE = "https://onlydocker.invalid/spdx"
NOASSERTION = "NOASSERTION"
# Who publishes the artifacts (ONLYDOCKER_SUPPLIER overrides it): the
# supplier of every artifact and stage output, and a creator of the SBOM.
DEFAULT_SUPPLIER = "Organization: Only Docker project"
DEBIAN = "Organization: Debian"
# The pipeline's own license (pyproject.toml's): of what it writes itself.
PROJECT_LICENSE = "Apache-2.0"
# Debian's releases by code name, as purl's `distro` qualifier writes them.
DEBIAN_VERSIONS = {"jessie": "8", "stretch": "9", "buster": "10", "bullseye": "11", "bookworm": "12",
                   "trixie": "13"}
DEBIAN_SCHEMES = ("debian", "debian-security", "debian-archive")
# The components scanners look up in the NVD by CPE (vendor, product, part),
# keyed by the lock's source name; the version is the upstream one.
CPES = {"linux": ("o", "linux", "linux_kernel"), "busybox": ("a", "busybox", "busybox"),
        "docker.io": ("a", "docker", "docker"), "containerd": ("a", "linuxfoundation", "containerd"),
        "runc": ("a", "linuxfoundation", "runc")}
DOCUMENT = "SPDXRef-DOCUMENT"
_LICENSE_REF = re.compile(r"LicenseRef-[A-Za-z0-9.\-]+")


@dataclass(frozen=True)
class StageInfo:
    name: str
    key: str | None                 # the stage key (from its manifest)
    digest: str | None              # the digest of its outputs (from its manifest)
    needs: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()   # source names (groups already expanded)
    container: bool = True          # built in the builder image


@dataclass(frozen=True)
class Patch:
    source: str                     # the source it is applied to
    name: str                       # file name, as in patches/<source>/<version>/
    order: int                      # 1, 2, ...: the order the prelude applies them
    sha256: str
    sha1: str


@dataclass(frozen=True)
class ImageFile:
    path: str                       # inside the image, e.g. "usr/bin/dockerd"
    sha256: str
    sha1: str
    origins: tuple[str, ...] = ()   # source names it was made from
    stage: str | None = None        # else: the upstream stage whose output it is (made from all its inputs)


@dataclass(frozen=True)
class Inputs:
    lane: str
    epoch: int
    tool: str                       # e.g. "onlydocker-0.1.0"
    sources: tuple = ()             # lock.Source objects (pinned)
    locations: dict = field(default_factory=dict)   # source name -> download URL
    artifacts: dict = field(default_factory=dict)   # dist name -> sha256
    artifact_stage: dict = field(default_factory=dict)  # dist name -> stage name
    stages: tuple[StageInfo, ...] = ()
    patches: tuple[Patch, ...] = ()
    builder: dict | None = None     # {"tar_sha256", "packages": ["name=version", ...], "suite"}
    image_stage: str | None = None  # the stage whose tree is the image (rootfs)
    image_files: tuple[ImageFile, ...] = ()
    release: str | None = None      # the version of what the lane publishes (dist.release)
    supplier: str = DEFAULT_SUPPLIER    # who publishes it, as SPDX writes a supplier
    suite: str | None = None        # the Debian release the sources come from ("bookworm")
    copyrights: dict = field(default_factory=dict)      # source name -> copyright text (legal.copyright_text)
    artifact_sha512: dict = field(default_factory=dict)  # dist name -> sha512 (SPDX 3: BSI asks for SHA-512)
    project_license: str | None = None  # the pipeline's own license (pyproject.toml): of what it writes itself
    sbom_files: tuple[str, ...] = ()    # artifacts that are SBOMs of this build (the SPDX 3 one): CC0-1.0, as SPDX data
    source_sha512: dict = field(default_factory=dict)   # source name -> sha512 of its verified file


def spdx_id(kind: str, name: str) -> str:
    """SPDXRef-<kind>-<name>; a name with characters an SPDXID cannot hold
    ("/", "_", "+") gets them as "-" and a short hash of the name, so that
    "a_b" and "a+b" stay two ids."""
    safe = re.sub(r"[^A-Za-z0-9.-]", "-", name)
    if safe != name:
        safe += "-" + hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"SPDXRef-{kind}-{safe}"


def distro(suite: str | None) -> str | None:
    """purl's distro qualifier for a Debian suite: "debian-12" for bookworm."""
    if not suite:
        return None
    return f"debian-{DEBIAN_VERSIONS[suite]}" if suite in DEBIAN_VERSIONS else suite


def _purl(name: str, version: str, arch: str | None, suite: str | None = None) -> str:
    v = quote(version, safe=".-_~")
    quals = [f"arch={arch}"] if arch else []
    if distro(suite):
        quals.append(f"distro={distro(suite)}")
    return f"pkg:deb/debian/{quote(name, safe='.-_~+')}@{v}" + ("?" + "&".join(quals) if quals else "")


def upstream_version(version: str) -> str:
    """The upstream part of a Debian version: no epoch, no Debian revision,
    no repack suffix (+dfsg, ~ds): "20.10.24" of "20.10.24+dfsg1-1+deb12u1+b6"."""
    v = version.split(":", 1)[1] if re.match(r"\d+:", version) else version
    if "-" in v:
        v = v.rsplit("-", 1)[0]
    return re.split(r"[+~]", v, maxsplit=1)[0]


def cpe(source_name: str, version: str) -> str | None:
    """The CPE 2.3 name of a source scanners know by one (CPES), else None."""
    if source_name not in CPES:
        return None
    part, vendor, product = CPES[source_name]
    v = re.sub(r"([\\:*?!\"#$&'()+,/;<=>@\[\]^`{|}~])", r"\\\1", upstream_version(version))
    return f"cpe:2.3:{part}:{vendor}:{product}:{v}:*:*:*:*:*:*:*"


def is_debian(source) -> bool:
    return source.urls[0].split(":", 1)[0] in DEBIAN_SCHEMES


def _deb_arch(file: str) -> str | None:
    m = re.search(r"_([a-z0-9]+)\.u?deb$", file)
    return m.group(1) if m else None


def _source_package(s, location: str | None, suite: str | None = None, copyright: str | None = None) -> dict:
    is_deb = s.file.endswith((".deb", ".udeb"))
    checksums = [{"algorithm": algo.upper(), "checksumValue": value} for algo, value in sorted(s.hashes().items())]
    pkg = {
        "SPDXID": spdx_id("Source", s.name),
        "name": s.name,
        "versionInfo": s.version,
        "packageFileName": s.file,
        "downloadLocation": location or NOASSERTION,
        "filesAnalyzed": False,
        "checksums": checksums,
        "licenseDeclared": s.license,
        # The lock's license is the project's reading of the package's
        # copyright file (scripts/debian-lock-entries takes it from a person).
        "licenseConcluded": s.license,
        "licenseComments": "concluded by the project when it locked the source, from its copyright file",
        "copyrightText": copyright or NOASSERTION,
        # Debian's archive supplies every `debian:` file (its .debs and the
        # upstream tarballs it keeps as .orig); another URL: not known.
        "supplier": DEBIAN if is_debian(s) else NOASSERTION,
        "primaryPackagePurpose": "INSTALL" if is_deb else "SOURCE",
        # The lock's own URL: `debian:` ones resolve against any Debian mirror.
        "sourceInfo": f"locked as {', '.join(s.urls)}",
    }
    refs = []
    if is_debian(s):
        arch = _deb_arch(s.file) if is_deb else "source"
        refs.append({"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                     "referenceLocator": _purl(s.name, s.version, arch, suite)})
    if cpe_name := cpe(s.name, s.version):
        refs.append({"referenceCategory": "SECURITY", "referenceType": "cpe23Type",
                     "referenceLocator": cpe_name})
    if refs:
        pkg["externalRefs"] = refs
    return pkg


def _package(spdxid: str, name: str, *, version: str | None = None, comment: str | None = None,
             purpose: str | None = None, sha256: str | None = None, file: str | None = None,
             purl: str | None = None, location: str = NOASSERTION, supplier: str | None = None,
             license: str = NOASSERTION, copyright: str = NOASSERTION) -> dict:
    pkg = {"SPDXID": spdxid, "name": name, "downloadLocation": location, "filesAnalyzed": False,
           "licenseConcluded": license, "licenseDeclared": NOASSERTION, "copyrightText": copyright,
           "supplier": supplier or NOASSERTION}
    if version is not None:
        pkg["versionInfo"] = version
    if file is not None:
        pkg["packageFileName"] = file
    if sha256 is not None:
        pkg["checksums"] = [{"algorithm": "SHA256", "checksumValue": sha256}]
    if purpose is not None:
        pkg["primaryPackagePurpose"] = purpose
    if comment is not None:
        pkg["comment"] = comment
    if purl is not None:
        pkg["externalRefs"] = [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                                "referenceLocator": purl}]
    return pkg


def document(inp: Inputs) -> dict:
    """The SPDX document as a dict (its namespace included)."""
    packages: list[dict] = []
    files: list[dict] = []
    rels: set[tuple[str, str, str]] = set()
    stage_ids = {st.name: spdx_id("Stage", st.name) for st in inp.stages}
    source_ids = {s.name: spdx_id("Source", s.name) for s in inp.sources}

    for name, sha in sorted(inp.artifacts.items()):
        aid = spdx_id("Artifact", name)
        is_sbom = name in inp.sbom_files
        packages.append(_package(aid, name, file=name, sha256=sha, purpose="FILE", version=inp.release,
                                 supplier=inp.supplier,
                                 license="CC0-1.0" if is_sbom else concluded(inp, inp.artifact_stage.get(name)),
                                 copyright="NONE" if is_sbom else copyright_of(inp, inp.artifact_stage.get(name)),
                                 comment=f"dist/{name} of lane {inp.lane}, as listed in SHA256SUMS"
                                 + ("; this build's SBOM in SPDX 3.0.1 (its data license: CC0-1.0)" if is_sbom
                                    else "")))
        rels.add((DOCUMENT, "DESCRIBES", aid))
        stage = inp.artifact_stage.get(name)
        if stage in stage_ids:
            rels.add((aid, "CONTAINS", stage_ids[stage]))

    for st in sorted(inp.stages, key=lambda st: st.name):
        sid = stage_ids[st.name]
        pkg = _package(sid, f"stage {st.name}", purpose="OTHER", location="NONE", version=inp.release,
                       supplier=inp.supplier, license=concluded(inp, st.name),
                       comment=f"outputs of stage {st.name}: digest {st.digest}, stage key {st.key}")
        if st.name == inp.image_stage and inp.image_files:
            # It CONTAINS files: SPDX then wants them analysed, with the
            # verification code over their SHA1s (SPDX 2.3, 7.9).
            code = hashlib.sha1("".join(sorted(f.sha1 for f in inp.image_files)).encode()).hexdigest()
            pkg.update(filesAnalyzed=True, packageVerificationCode={"packageVerificationCodeValue": code},
                       licenseInfoFromFiles=[NOASSERTION])
        packages.append(pkg)
        for need in st.needs:
            if need in stage_ids:
                rels.add((sid, "CONTAINS", stage_ids[need]))
        for src in st.sources:
            if src in source_ids:
                # Made from it (GENERATED_FROM), and could not be made
                # without it (DEPENDS_ON: what ties it to the tree).
                rels.add((sid, "GENERATED_FROM", source_ids[src]))
                rels.add((sid, "DEPENDS_ON", source_ids[src]))

    for s in inp.sources:
        packages.append(_source_package(s, inp.locations.get(s.name), inp.suite, inp.copyrights.get(s.name)))

    for p in sorted(inp.patches, key=lambda p: (p.source, p.order)):
        fid = spdx_id("Patch", f"{p.source}-{p.name}")
        files.append({"SPDXID": fid, "fileName": f"./patches/{p.source}/{p.name}",
                      "checksums": [{"algorithm": "SHA1", "checksumValue": p.sha1},
                                    {"algorithm": "SHA256", "checksumValue": p.sha256}],
                      "fileTypes": ["SOURCE"], "licenseConcluded": NOASSERTION, "copyrightText": NOASSERTION,
                      "comment": f"patch {p.order} in the order applied to {p.source}"})
        if p.source in source_ids:
            rels.add((fid, "PATCH_APPLIED", source_ids[p.source]))

    for f in sorted(inp.image_files, key=lambda f: f.path):
        fid = spdx_id("File", f.path)
        files.append({"SPDXID": fid, "fileName": f"./{f.path}",
                      "checksums": [{"algorithm": "SHA1", "checksumValue": f.sha1},
                                    {"algorithm": "SHA256", "checksumValue": f.sha256}],
                      "licenseConcluded": NOASSERTION, "copyrightText": NOASSERTION})
        if inp.image_stage in stage_ids:
            rels.add((stage_ids[inp.image_stage], "CONTAINS", fid))
        for src in f.origins:
            if src in source_ids:
                rels.add((fid, "GENERATED_FROM", source_ids[src]))
        if not f.origins and f.stage in stage_ids:
            rels.add((fid, "GENERATED_FROM", stage_ids[f.stage]))

    if inp.builder:
        bid = "SPDXRef-Builder"
        packages.append(_package(bid, "builder-image", version=builder_version(inp.builder), purpose="OTHER",
                                 sha256=inp.builder["tar_sha256"], supplier=inp.supplier,
                                 comment=f"the builder container image (mmdebstrap of Debian "
                                         f"{inp.builder.get('suite')}); its version: the start of its tar's sha256"))
        for st in inp.stages:
            if st.container:
                rels.add((bid, "BUILD_TOOL_OF", stage_ids[st.name]))
                rels.add((stage_ids[st.name], "DEPENDS_ON", bid))   # built in it: ties it to the tree
        arch = inp.builder.get("arch", {})
        for entry in sorted(inp.builder.get("packages", [])):
            name, _, version = entry.partition("=")
            tid = spdx_id("BuildTool", name)
            packages.append(_package(tid, name, version=version or None, supplier=DEBIAN,
                                     copyright=inp.builder.get("copyrights", {}).get(name) or NOASSERTION,
                                     purl=_purl(name, version, arch.get(name), inp.suite) if version else None,
                                     comment="a Debian package of the builder image"))
            rels.add((bid, "CONTAINS", tid))

    ids = [p["SPDXID"] for p in packages] + [f["SPDXID"] for f in files]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ValueError(f"SBOM: two elements would share the SPDXID {dupes[0]} (the same name twice)")

    refs = sorted({r for s in inp.sources for r in _LICENSE_REF.findall(s.license)})
    doc = {
        "spdxVersion": SPDX_VERSION,
        "dataLicense": "CC0-1.0",
        "SPDXID": DOCUMENT,
        "name": f"onlydocker-{inp.lane}",
        "creationInfo": {"created": rfc3339(inp.epoch), "creators": sorted([f"Tool: {inp.tool}", inp.supplier]),
                         "comment": "created at the lane's SOURCE_DATE_EPOCH"},
        "packages": packages,
        "files": files,
        "relationships": [{"spdxElementId": a, "relationshipType": t, "relatedSpdxElement": b}
                          for a, t, b in sorted(rels)],
    }
    if refs:
        doc["hasExtractedLicensingInfos"] = [
            {"licenseId": r, "name": r.removeprefix("LicenseRef-"),
             "extractedText": f"{r}: see the package's copyright file (`doit legal-info` copies it "
                              f"into licenses/<package>/)"} for r in refs]
    digest = hashlib.sha256(canonical_json(doc)).hexdigest()
    return {**doc, "documentNamespace": f"{NAMESPACE_BASE}/{inp.lane}-{digest}"}


def stage_sources(inp: Inputs, stage: str) -> list[str]:
    """The sources a stage's output is made of: its own and those of every
    stage it needs, transitively (names, in the lock's order)."""
    by_name = {st.name: st for st in inp.stages}
    seen, todo, names = set(), [stage], set[str]()
    while todo:
        n = todo.pop()
        if n in seen or n not in by_name:
            continue
        seen.add(n)
        names.update(by_name[n].sources)
        todo.extend(by_name[n].needs)
    return [s.name for s in inp.sources if s.name in names]


def concluded(inp: Inputs, stage: str | None) -> str:
    """The license of a stage's output (or an artifact's): every license of
    the sources it is made of, joined with AND (each as the lock concludes
    it); NOASSERTION when it is made of none."""
    if stage is None and inp.project_license:
        return inp.project_license      # written by the pipeline itself (the box catalog), from its own template
    lic = {s.name: s.license for s in inp.sources}
    exprs = sorted({lic[n] for n in stage_sources(inp, stage)}) if stage else []
    if not exprs:
        return NOASSERTION
    return exprs[0] if len(exprs) == 1 else " AND ".join(f"({e})" if " " in e else e for e in exprs)


def copyright_of(inp: Inputs, stage: str | None) -> str:
    """The copyright notices of a stage's output (or an artifact's): those of
    every source it is made of, each once, in the lock's order; NONE for an
    artifact the pipeline writes itself (no stage: the box catalog); NOASSERTION
    when it is made of none, or of one whose notices the build does not have."""
    if stage is None and inp.project_license:
        return "NONE"       # the pipeline wrote all of it (the box catalog) and put no notice in it
    names = stage_sources(inp, stage) if stage else []
    if not names or any(not inp.copyrights.get(n) for n in names):
        return NOASSERTION
    lines = [line for n in names for line in inp.copyrights[n].splitlines()]
    return "\n".join(dict.fromkeys(lines))


def builder_version(builder: dict) -> str:
    """The builder image's version: the first 16 hex digits of its tar's
    sha256 (what its tag says, onlydocker-builder:<them>)."""
    return builder["tar_sha256"][:16]


def render(inp: Inputs) -> bytes:
    return canonical_json(document(inp))


def artifact_hashes(doc: dict) -> dict[str, str | None]:
    """dist name -> sha256 of every artifact the document describes (None: it gives none)."""
    described = {r["relatedSpdxElement"] for r in doc.get("relationships", [])
                 if r.get("spdxElementId") == DOCUMENT and r.get("relationshipType") == "DESCRIBES"}
    out = {}
    for p in doc.get("packages", []):
        if p.get("SPDXID") in described:
            sha = next((c["checksumValue"] for c in p.get("checksums", []) if c.get("algorithm") == "SHA256"), None)
            out[p.get("packageFileName") or p.get("name")] = sha
    return out


IMAGE_PATH = "usr/share/spdx/onlydocker.spdx.json"     # where the image keeps the SBOM of its contents


def image_document(lane: str, epoch: int, tool: str, version: str, sources, suite: str | None,
                   files: tuple[ImageFile, ...], copyrights: dict | None = None,
                   sha512: dict | None = None) -> dict:
    """The SBOM the image carries (IMAGE_PATH): the image (a package, its
    version as its os-release says it) CONTAINS every package it is made of
    (the lock's sources of the stages its layers come from: name, version,
    purl, CPE, supplier, licenses) and every regular file of its layers
    (sha1, sha256), each GENERATED_FROM the package it came from. Not the
    artifacts that hold the image, nor this file: nothing circular."""
    image = "SPDXRef-Image"
    packages = [{"SPDXID": image, "name": "onlydocker-image", "versionInfo": version,
                 "downloadLocation": NOASSERTION, "filesAnalyzed": True, "supplier": NOASSERTION,
                 "licenseConcluded": NOASSERTION, "licenseDeclared": NOASSERTION, "copyrightText": NOASSERTION,
                 "licenseInfoFromFiles": [NOASSERTION], "primaryPackagePurpose": "OPERATING-SYSTEM",
                 "packageVerificationCode": {"packageVerificationCodeValue": hashlib.sha1(
                     "".join(sorted(f.sha1 for f in files)).encode()).hexdigest()},
                 "comment": f"the root filesystem of lane {lane} (every layer of its initrd but this SBOM's)"}]
    rels = {(DOCUMENT, "DESCRIBES", image)}
    ids = {}
    for s in sources:
        pkg = _source_package(s, None, suite, (copyrights or {}).get(s.name))
        pkg.pop("sourceInfo", None)
        if sha512 and sha512.get(s.name) and "SHA512" not in {c["algorithm"] for c in pkg["checksums"]}:
            pkg["checksums"] = sorted(pkg["checksums"] + [{"algorithm": "SHA512", "checksumValue": sha512[s.name]}],
                                      key=lambda c: c["algorithm"])
        packages.append(pkg)
        ids[s.name] = pkg["SPDXID"]
        rels.add((image, "CONTAINS", pkg["SPDXID"]))
    out_files = []
    for f in sorted(files, key=lambda f: f.path):
        fid = spdx_id("File", f.path)
        out_files.append({"SPDXID": fid, "fileName": f"./{f.path}",
                          "checksums": [{"algorithm": "SHA1", "checksumValue": f.sha1},
                                        {"algorithm": "SHA256", "checksumValue": f.sha256}],
                          "licenseConcluded": NOASSERTION, "copyrightText": NOASSERTION})
        rels.add((image, "CONTAINS", fid))
        for src in f.origins:
            if src in ids:
                rels.add((fid, "GENERATED_FROM", ids[src]))
    refs = sorted({r for s in sources for r in _LICENSE_REF.findall(s.license)})
    doc = {
        "spdxVersion": SPDX_VERSION, "dataLicense": "CC0-1.0", "SPDXID": DOCUMENT,
        "name": f"onlydocker-image-{lane}",
        "creationInfo": {"created": rfc3339(epoch), "creators": [f"Tool: {tool}"],
                         "comment": "created at the lane's SOURCE_DATE_EPOCH"},
        "packages": packages, "files": out_files,
        "relationships": [{"spdxElementId": a, "relationshipType": t, "relatedSpdxElement": b}
                          for a, t, b in sorted(rels)],
    }
    if refs:
        doc["hasExtractedLicensingInfos"] = [
            {"licenseId": r, "name": r.removeprefix("LicenseRef-"),
             "extractedText": f"{r}: see the package's copyright file"} for r in refs]
    digest = hashlib.sha256(canonical_json(doc)).hexdigest()
    return {**doc, "documentNamespace": f"{NAMESPACE_BASE}/image-{lane}-{digest}"}


def source_facts(doc: dict) -> tuple[dict[str, str], dict[str, str]]:
    """(source name -> copyright text, source name -> sha512) as an image
    document (image_document) states them."""
    notices, sha512 = {}, {}
    for p in doc.get("packages", []):
        if not p.get("SPDXID", "").startswith("SPDXRef-Source-"):
            continue
        if p.get("copyrightText") not in (None, NOASSERTION, "NONE"):
            notices[p["name"]] = p["copyrightText"]
        for c in p.get("checksums", []):
            if c.get("algorithm") == "SHA512":
                sha512[p["name"]] = c["checksumValue"]
    return notices, sha512
