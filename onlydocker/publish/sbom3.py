"""The lane's SBOM in SPDX 3.0.1 (JSON-LD), beside the SPDX 2.3 one and
made from the same inputs (sbom.Inputs): data in, bytes out.

What it holds:
  - the Sbom (type "build"), whose root elements are the published
    artifacts: each a software_Package (version: the release; supplier: the
    publisher) with its dist file (hasDistributionArtifact: a software_File
    with its sha256 and sha512);
  - every source of the lock (a software_Package: version, purl, CPE,
    supplier, declared license, copyright notices) and its patches;
  - the build itself, in SPDX 3's Build profile: a build_Build per stage
    (its type, its id: the stage key, its times: SOURCE_DATE_EPOCH), with
    hasInput (its sources, its patches, the outputs of the stages it needs),
    hasOutput (its output: a directory), usesTool (the builder image, a Tool
    that contains the builder's Debian packages, Tools too, with their purls);
  - the image's files (software_File, sha256 and sha1), which the initrd
    contains, generated from the source each came from.

Its ids hang below a namespace made of the sha256 of its own content
(written with a placeholder there): the same inputs, the same bytes. The
SPDX 2.3 document lists this file among the artifacts, with its hash.
"""
from __future__ import annotations

import hashlib
import json
from urllib.parse import quote

from . import sbom
from .provenance import rfc3339

FILE = "onlydocker.spdx3.json"
CONTEXT = "https://spdx.org/rdf/3.0.1/spdx-context.jsonld"
SPEC_VERSION = "3.0.1"
BUILD_TYPE = "https://onlydocker.invalid/build/v1"
CREATION = "_:creationinfo"
DEBIAN_URL = "https://www.debian.org"
PROJECT_URL = "https://onlydocker.invalid"


def _hashes(**algos) -> list[dict]:
    return [{"type": "Hash", "algorithm": a, "hashValue": v} for a, v in sorted(algos.items()) if v]


def _agent_name(supplier: str) -> tuple[str, str]:
    """("Organization", "Debian") of "Organization: Debian"."""
    kind, _, name = supplier.partition(": ")
    return kind, name.strip()


_PLACEHOLDER = "urn:onlydocker:spdx3-base"


def document(inp: sbom.Inputs) -> dict:
    """The document, its ids below f"{NAMESPACE_BASE}/{lane}-spdx3-<sha256>":
    the sha256 of the document written with a placeholder base, so that
    the same inputs give the same ids and other inputs others."""
    doc = _document(inp, _PLACEHOLDER)
    digest = hashlib.sha256(sbom.canonical_json(doc)).hexdigest()
    text = json.dumps(doc).replace(_PLACEHOLDER, f"{sbom.NAMESPACE_BASE}/{inp.lane}-spdx3-{digest}")
    return json.loads(text)


def _document(inp: sbom.Inputs, base: str) -> dict:

    def iri(kind: str, name: str) -> str:
        return f"{base}/{kind}/{quote(name, safe='')}"

    graph: dict[str, dict] = {}
    rels: dict[tuple, dict] = {}

    def element(kind: str, key: str, typ: str, **props) -> str:
        eid = iri(kind, key)
        if eid in graph:
            raise ValueError(f"SBOM: two elements would share the id {eid} (the same name twice)")
        graph[eid] = {"type": typ, "spdxId": eid, "creationInfo": CREATION,
                      **{k: v for k, v in props.items() if v not in (None, [], "")}}
        return eid

    def rel(frm: str, typ: str, to: list[str], **props) -> None:
        to = sorted(set(to))
        if not to:
            return
        key = (frm, typ, tuple(to))
        rid = f"{base}/Relationship/" + hashlib.sha256(json.dumps(key).encode()).hexdigest()[:24]
        rels[key] = {"type": props.pop("rtype", "Relationship"), "spdxId": rid, "creationInfo": CREATION,
                     "from": frm, "relationshipType": typ, "to": to, **props}

    # Who: the publisher (the SBOM's creator, every artifact's supplier) and Debian.
    kind, name = _agent_name(inp.supplier)
    publisher = element("Agent", name, kind if kind in ("Organization", "Person") else "Agent", name=name,
                        externalIdentifier=[{"type": "ExternalIdentifier", "externalIdentifierType": "urlScheme",
                                             "identifier": PROJECT_URL}]
                        if inp.supplier == sbom.DEFAULT_SUPPLIER else None)
    debian = element("Agent", "Debian", "Organization", name="Debian",
                     externalIdentifier=[{"type": "ExternalIdentifier", "externalIdentifierType": "urlScheme",
                                          "identifier": DEBIAN_URL}])
    tool = element("Tool", inp.tool, "Tool", name=inp.tool)

    licenses: dict[str, str] = {}

    def license_of(expr: str) -> str:
        if expr not in licenses:
            licenses[expr] = element("License", expr, "simplelicensing_LicenseExpression",
                                     simplelicensing_licenseExpression=expr)
        return licenses[expr]

    # The lock's sources.
    source_ids = {}
    for s in inp.sources:
        deb = s.file.endswith((".deb", ".udeb"))
        refs = []
        purl = None
        if sbom.is_debian(s):
            purl = sbom._purl(s.name, s.version, sbom._deb_arch(s.file) if deb else "source", inp.suite)
            refs.append({"type": "ExternalIdentifier", "externalIdentifierType": "packageUrl", "identifier": purl})
        if cpe := sbom.cpe(s.name, s.version):
            refs.append({"type": "ExternalIdentifier", "externalIdentifierType": "cpe23",
                         "identifier": cpe})
        sid = element("Source", s.name, "software_Package", name=s.name, software_packageVersion=s.version,
                      software_packageUrl=purl, externalIdentifier=refs,
                      software_downloadLocation=inp.locations.get(s.name),
                      software_primaryPurpose="install" if deb else "source",
                      software_copyrightText=inp.copyrights.get(s.name),
                      suppliedBy=debian if sbom.is_debian(s) else None,
                      comment=f"locked as {', '.join(s.urls)}")
        source_ids[s.name] = sid
        fid = element("SourceFile", s.file, "software_File", name=s.file, software_fileKind="file",
                      software_primaryPurpose="archive",
                      verifiedUsing=_hashes(**{"sha512": inp.source_sha512.get(s.name), **s.hashes()}))
        rel(sid, "hasDistributionArtifact", [fid])
        rel(sid, "hasDeclaredLicense", [license_of(s.license)])
        rel(sid, "hasConcludedLicense", [license_of(s.license)])     # the project's, when it locked it

    patch_ids: dict[str, list[str]] = {}
    for p in sorted(inp.patches, key=lambda p: (p.source, p.order)):
        pid = element("Patch", f"{p.source}/{p.name}", "software_File", name=f"patches/{p.source}/{p.name}",
                      software_fileKind="file", software_primaryPurpose="patch",
                      verifiedUsing=_hashes(sha1=p.sha1, sha256=p.sha256),
                      comment=f"patch {p.order} in the order applied to {p.source}")
        patch_ids.setdefault(p.source, []).append(pid)
    for src, pids in patch_ids.items():
        if src in source_ids:
            rel(source_ids[src], "patchedBy", pids)       # every `to` is a patch for the `from`

    # The builder image and its packages: the tools of the container stages.
    builder = None
    if inp.builder:
        builder = element("Tool", "builder-image", "Tool", name="builder-image",
                          comment=f"the builder container image (mmdebstrap of Debian {inp.builder.get('suite')}), "
                                  f"version {sbom.builder_version(inp.builder)}; sha256 of its tar "
                                  f"{inp.builder['tar_sha256']}")
        arch = inp.builder.get("arch", {})
        tools = []
        for entry in sorted(inp.builder.get("packages", [])):
            name, _, version = entry.partition("=")
            purl = sbom._purl(name, version, arch.get(name), inp.suite) if version else None
            tools.append(element("BuildTool", name, "Tool", name=f"{name} {version}".strip(),
                                 externalIdentifier=[{"type": "ExternalIdentifier",
                                                      "externalIdentifierType": "packageUrl", "identifier": purl}]
                                 if purl else None,
                                 comment="a Debian package of the builder image"))
        rel(builder, "contains", tools, completeness="complete")

    # The stages: one build each, its output a directory.
    stage_ids = {st.name: iri("Stage", st.name) for st in inp.stages}
    for st in sorted(inp.stages, key=lambda st: st.name):
        out = element("Stage", st.name, "software_File", name=f"stage {st.name}", software_fileKind="directory",
                      comment=f"outputs of stage {st.name}: digest {st.digest}, stage key {st.key}")
        bid = element("Build", st.name, "build_Build", build_buildType=BUILD_TYPE,
                      build_buildId=f"{inp.lane}/{st.name}/{st.key}",
                      build_buildStartTime=rfc3339(inp.epoch), build_buildEndTime=rfc3339(inp.epoch),
                      comment=f"stage {st.name} of lane {inp.lane}"
                              + (" (in the builder image)" if st.container else " (Python, on the host)"))
        srcs = [source_ids[s] for s in st.sources if s in source_ids]
        rel(bid, "hasInput", srcs + [p for s in st.sources for p in patch_ids.get(s, [])]
            + [stage_ids[n] for n in st.needs if n in stage_ids])
        rel(bid, "hasOutput", [out])
        rel(out, "contains", [stage_ids[n] for n in st.needs if n in stage_ids], completeness="complete")
        # A build-time dependency on its sources: what ties them to the tree.
        rel(out, "dependsOn", srcs, rtype="LifecycleScopedRelationship", scope="build", completeness="complete")
        if st.container and builder:
            rel(bid, "usesTool", [builder])

    # The image's files.
    if inp.image_files and inp.image_stage in stage_ids:
        files = []
        for f in sorted(inp.image_files, key=lambda f: f.path):
            fid = element("File", f.path, "software_File", name=f"./{f.path}", software_fileKind="file",
                          verifiedUsing=_hashes(sha1=f.sha1, sha256=f.sha256))
            files.append(fid)
            for src in f.origins:
                if src in source_ids:
                    rel(source_ids[src], "generates", [fid])
            if not f.origins and f.stage in stage_ids:
                rel(stage_ids[f.stage], "generates", [fid])
        rel(stage_ids[inp.image_stage], "contains", files, completeness="complete")

    # The artifacts: the Sbom's roots.
    roots = []
    for name, sha in sorted(inp.artifacts.items()):
        aid = element("Artifact", name, "software_Package", name=name, software_packageVersion=inp.release,
                      suppliedBy=publisher, originatedBy=[publisher], software_primaryPurpose="other",
                      software_copyrightText=None if sbom.copyright_of(inp, inp.artifact_stage.get(name)) == sbom.NOASSERTION
                      else sbom.copyright_of(inp, inp.artifact_stage.get(name)),
                      comment=f"dist/{name} of lane {inp.lane}, as listed in SHA256SUMS")
        fid = element("DistFile", name, "software_File", name=name, software_fileKind="file",
                      verifiedUsing=_hashes(sha256=sha, sha512=inp.artifact_sha512.get(name)))
        rel(aid, "hasDistributionArtifact", [fid])
        stage = inp.artifact_stage.get(name)
        if sbom.concluded(inp, stage) != sbom.NOASSERTION:
            rel(aid, "hasConcludedLicense", [license_of(sbom.concluded(inp, stage))])
        if stage in stage_ids:
            rel(aid, "contains", [stage_ids[stage]], completeness="complete")
        roots.append(aid)

    elements = sorted(graph) + sorted(r["spdxId"] for r in rels.values())
    sbom_id = iri("Sbom", inp.lane)
    doc_id = iri("Document", inp.lane)
    nodes: list[dict] = [{"type": "CreationInfo", "@id": CREATION, "specVersion": SPEC_VERSION,
              "created": rfc3339(inp.epoch), "createdBy": [publisher], "createdUsing": [tool],
              "comment": "created at the lane's SOURCE_DATE_EPOCH"},
             {"type": "SpdxDocument", "spdxId": doc_id, "creationInfo": CREATION, "name": f"onlydocker-{inp.lane}",
              "profileConformance": ["build", "core", "simpleLicensing", "software"],
              "rootElement": [sbom_id], "element": [sbom_id] + elements,
              "comment": "the same build as dist/onlydocker.spdx.json (SPDX 2.3), which lists this file"},
             {"type": "software_Sbom", "spdxId": sbom_id, "creationInfo": CREATION, "name": f"onlydocker-{inp.lane}",
              "software_sbomType": ["build"], "rootElement": roots, "element": elements}]
    nodes += [graph[k] for k in sorted(graph)]
    nodes += sorted(rels.values(), key=lambda r: r["spdxId"])
    return {"@context": CONTEXT, "@graph": nodes}


def render(inp: sbom.Inputs) -> bytes:
    return sbom.canonical_json(document(inp))
