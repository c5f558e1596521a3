"""Publishing: the artifacts of every stage into out/<lane>/dist/, with
their SPDX SBOM, SHA256SUMS (which lists the SBOM too), a minisign signature
over it, and a signed in-toto provenance statement saying where every byte
came from (the SBOM is one of its subjects).

The signing key lives outside out/ and the repository; without one the build
still completes and says it is unsigned.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path

from .. import atomic, sign
from ..cache import snapshot
from ..errors import BuildError
from ..formats import box
from ..hashing import sha256_file
from ..stage.paths import ENVELOPE, SBOM, STATEMENT, SUMS, SUMS_SIG
from . import provenance, sbom, sbom3

# The stage that packs the image: its needs are the image's layers (the
# rootfs tree, Docker's layer tree); the SBOM lists their files and where
# each came from.
IMAGE_STAGE = "initrd"
SBOM3 = sbom3.FILE
# The stage that writes the SBOM the image keeps of its own contents (as Talos
# keeps /usr/share/spdx), a layer of its own; it states the sources' notices.
IMAGE_SBOM_STAGE = "image-sbom"
SUPPLIER_ENV = "ONLYDOCKER_SUPPLIER"
# The modules that write dist/'s metadata: a change to one republishes.
SBOM_CODE = ("dist.py", "sbom.py", "sbom3.py", "legal.py", "provenance.py")


def dist_dir(ws) -> Path:
    return ws.paths.dist


def _state_path(ws) -> Path:
    # Outside dist/, so that dist/ holds only what SHA256SUMS covers.
    return ws.out / "dist.state.json"


def _snapshot_path(ws) -> Path:
    return ws.out / "dist.snapshot.json"


def public_key_path(settings) -> Path:
    return Path(str(settings.signing_key) + ".pub")


def _inputs(ws, stages, settings) -> dict:
    key = settings.signing_key
    try:
        builder = ws.paths.builder().get("tar_sha256")
    except BuildError:
        builder = None
    return {
        "stages": {n: (ws.paths.read_manifest(n) or {}).get("digest") for n in stages},
        # The SBOM also says what the lock (licenses, URLs) and the builder say.
        "lock": sha256_file(ws.lock.path),
        "builder": builder,
        "signing_key": sha256_file(public_key_path(settings)) if key.exists() and public_key_path(settings).exists() else None,
        # The box catalog's URLs come from it: another base URL, another catalog.
        "box_base_url": settings.box_base_url,
        # The provenance names the pipeline's own source: a commit, another provenance.
        "source": _source(settings),
        # The SBOMs name the publisher; another SBOM writer, other SBOMs.
        "supplier": supplier(),
        "code": {m: sha256_file(Path(__file__).with_name(m)) for m in SBOM_CODE},
    }


def _source(settings) -> dict:
    """The pipeline's source as the provenance names it: its git state
    (source_state.py) and the digest of its locked Python tools."""
    from ..inputs import source_state
    state = source_state.describe(settings.root)
    state["python_lock"] = source_state.file_digest(settings.root, source_state.PYTHON_LOCK)
    return state


def _lock_identity(ws, settings) -> dict:
    """The lock by its path in the project and its content digest."""
    path = ws.lock.path.resolve()
    root = settings.root.resolve()
    return {"path": str(path.relative_to(root)) if path.is_relative_to(root) else path.name,
            "digest": {"sha256": sha256_file(ws.lock.path)}}


def supplier(env=None) -> str:
    """Who publishes the lane's artifacts, as an SPDX supplier
    ("Organization: <name>" or "Person: <name> (<email>)"): ONLYDOCKER_SUPPLIER,
    else the project. One clear line for anything else."""
    value = (os.environ if env is None else env).get(SUPPLIER_ENV, "").strip() or sbom.DEFAULT_SUPPLIER
    if not value.startswith(("Organization: ", "Person: ")) or not value.split(": ", 1)[1].strip():
        raise BuildError(f"{SUPPLIER_ENV}={value!r}: expected \"Organization: <name>\" or \"Person: <name>\"")
    return value


def release(ws) -> str:
    """The version of everything the lane publishes: the pipeline's version,
    then the lane and the first 12 hex digits of its lock's sha256
    (onlydocker 0.1.0, lane bookworm: "0.1.0+bookworm.1a2b3c4d5e6f"). The
    code and the lock are what make the artifacts: another lock, another
    release; the lock's digest is in dist.state.json and legal-info's README."""
    from .. import __version__
    return f"{__version__}+{ws.lane}.{sha256_file(ws.lock.path)[:12]}"


def source_facts(ws) -> tuple[dict[str, str], dict[str, str]]:
    """(source name -> copyright notices, source name -> sha512), as the
    image's own SBOM states them: the image-sbom stage reads them from the
    sources (legal.copyright_text), so that dist/ is made of stage outputs
    and the lock, never of what this machine's cache holds."""
    path = ws.paths.stage_dir(IMAGE_SBOM_STAGE) / sbom.IMAGE_PATH
    try:
        return sbom.source_facts(json.loads(path.read_text()))
    except FileNotFoundError:
        return {}, {}
    except ValueError as e:
        raise BuildError(f"{path}: not a readable SPDX JSON document ({e})") from None


def tool_copyrights(settings, builder: dict) -> dict[str, str]:
    """The builder's package name -> its copyright notices, from the builder
    image's tar (legal.builder_copyrights), which the builder task keeps in
    the cache (restoring it from a remote cache if need be). Without it:
    none (NOASSERTION)."""
    from ..builder.image import store
    from .legal import builder_copyrights
    tar_sha256, key = builder["tar_sha256"], builder.get("input_key")
    builders = store(settings)
    # Read once per builder (2 s of zstd for 200 MB), then from the record
    # beside the tar: a pure function of the tar's bytes, named by its sha256.
    # A record of another shape is read again from the tar, never trusted.
    memo = builders.root / f"{tar_sha256}.copyrights.json"
    try:
        known = json.loads(memo.read_text())
        if isinstance(known, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in known.items()):
            return known
    except (OSError, ValueError):
        pass
    # The tar, by the builder's input key (a record naming none names no entry).
    tar = builders.entry(key) if isinstance(key, str) else None
    if tar is None or not tar.is_file():
        return {}
    found = builder_copyrights(tar)
    try:
        atomic.write_json(memo, found)
    except OSError:
        pass            # a read-only or full cache: read from the tar again next time
    return found


def is_current(ws, stages, settings) -> bool:
    try:
        state = json.loads(_state_path(ws).read_text())
    except (OSError, ValueError):
        return False
    if state != _inputs(ws, stages, settings):
        return False
    if snapshot.unchanged(_snapshot_path(ws), dist_dir(ws)):
        return True        # every file as published, by stat (snapshot.py); else hash them all
    from .verify import verify_dist
    signed = state["signing_key"] is not None
    # An unsigned lane (no key yet) is up to date as it is; `doit verify`
    # still reports UNSIGNED as a problem.
    return all(r.ok or (r.state == "UNSIGNED" and not signed)
               for r in verify_dist(dist_dir(ws), public_key_path(settings) if signed else None))


def artifacts(ws, stages) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for decl in stages.values():
        for output, name in decl.artifacts:
            path = ws.paths.stage_dir(decl.name) / output
            if not path.is_file() and decl.optional(output):
                continue        # this lane's data did not ask for it
            if not path.is_file():
                raise BuildError(f"stage {decl.name}: artifact {output} is missing from {path.parent}")
            if name in found:
                raise BuildError(f"artifact name {name!r} is published by two stages")
            found[name] = path
    return found


def _materials(ws) -> list[dict]:
    mats = [{"name": s.name, "uri": s.urls[0], "digest": {"sha256": s.sha256},
             "annotations": {"file": s.file, "version": s.version, "size": s.size, "license": s.license}}
            for s in ws.lock.sources if s.pinned]
    b = ws.paths.builder()
    mats.append({"name": "builder-image", "uri": f"mmdebstrap:{ws.lock.builder.suite}",
                 "digest": {"sha256": b["tar_sha256"]},
                 "annotations": {"packages": b["packages"], "tag": b["tag"]}})
    # The files the builder was made of, as a .buildinfo lists them.
    mats += [{"name": f"builder-deb:{d.name}:{d.architecture}", "uri": d.url, "digest": {"sha256": d.sha256},
              "annotations": {"file": d.file, "version": d.version, "size": d.size}}
             for d in ws.lock.builder.debs]
    return mats


def _location(url: str) -> str | None:
    """Where a source can be downloaded, as the SBOM says it: an http(s) URL
    as the lock writes it. A `debian:` URL names no host (each machine has its
    mirror), and a file: URL names a place on one machine: no assertion, so
    that the SBOM, like every artifact, is a function of the lock alone (the
    purl and the lock's URL still say what the file is)."""
    return url if url.split(":", 1)[0] in ("http", "https") else None


def _upstream(stages, name: str) -> list[str]:
    seen: list[str] = []
    todo = list(stages[name].needs)
    while todo:
        n = todo.pop(0)
        if n not in seen and n in stages:
            seen.append(n)
            todo.extend(stages[n].needs)
    return seen


def _layers(ws, stages) -> list[Path]:
    """The trees the image is made of: each need of the image stage, or its
    `tree/` when it brings its initrd piece ready-made (Docker's layer)."""
    trees = []
    for name in stages[IMAGE_STAGE].needs:
        d = ws.paths.stage_dir(name)
        trees.append(d / "tree" if (d / "initrd-piece").is_file() else d)
    return trees


def image_files(ws, stages) -> tuple[sbom.ImageFile, ...]:
    """Every regular file of the image (every layer), with where it came
    from, found by content: a file with the sha256 of a file a .deb installs
    comes from that .deb; one with the sha256 of an output of an upstream
    stage that has tar sources comes from those (busybox, linux, ...); an
    output of a stage without (the CA bundle the docker stage makes from its
    .debs, the images stage's archive) from that stage; the rest the pipeline
    wrote."""
    from ..cache.manifest import manifest_of_tree
    if IMAGE_STAGE not in stages or not all(t.is_dir() for t in _layers(ws, stages)):
        return ()
    empty = hashlib.sha256(b"").hexdigest()       # an empty file says nothing about where it came from
    by_hash: dict[str, tuple[tuple[str, ...], str | None]] = {}
    layer_stages = set(stages[IMAGE_STAGE].needs)
    for name in reversed([n for n in _upstream(stages, IMAGE_STAGE) if n not in layer_stages]):  # nearer win
        srcs = [s for s in ws.sources.of(stages[name]) if s.pinned]
        debs = [s for s in srcs if s.file.endswith((".deb", ".udeb"))]
        tars = tuple(s.name for s in srcs if s not in debs)
        deb_of = {h: s.name for s in debs for h in ws.sources.deb_file_hashes(s)}
        for f in manifest_of_tree(ws.paths.stage_dir(name)).values():
            if f["type"] == "file" and f["sha256"] != empty:
                by_hash[f["sha256"]] = ((deb_of[f["sha256"]],), None) if f["sha256"] in deb_of else \
                    (tars, None) if tars else ((), name)
    files: dict[str, tuple[Path, dict]] = {}
    for root in _layers(ws, stages):
        for rel, f in manifest_of_tree(root).items():
            if f["type"] == "file":
                files[rel] = (root, f)
    out = []
    for rel, (root, f) in sorted(files.items()):
        with open(root / rel, "rb") as fh:
            sha1 = hashlib.file_digest(fh, "sha1").hexdigest()
        origins, stage = by_hash.get(f["sha256"], ((), None))
        out.append(sbom.ImageFile(path=rel, sha256=f["sha256"], sha1=sha1, origins=origins,
                                  stage=stage))
    return tuple(out)


def sbom_inputs(ws, stages, sums: dict[str, str], settings, sha512: dict[str, str] | None = None) -> sbom.Inputs:
    from .. import __version__
    from .legal import patch_series
    sources = tuple(s for s in ws.lock.sources if s.pinned)
    patches = []
    for s in sources:
        for i, p in enumerate(patch_series(ws.root, s), 1):
            patches.append(sbom.Patch(source=s.name, name=p.name, order=i, sha256=sha256_file(p),
                                      sha1=hashlib.sha1(p.read_bytes()).hexdigest()))
    infos = []
    for decl in stages.values():
        m = ws.paths.read_manifest(decl.name) or {}
        infos.append(sbom.StageInfo(name=decl.name, key=m.get("key"), digest=m.get("digest"), needs=decl.needs,
                                    sources=tuple(s.name for s in ws.sources.of(decl)),
                                    container=decl.kind == "container"))
    record = ws.paths.builder()
    arch = {d.name: d.architecture for d in ws.lock.builder.debs}
    notices, source_sha512 = source_facts(ws)
    return sbom.Inputs(
        lane=ws.lane, epoch=ws.lock.lane.source_date_epoch, tool=f"onlydocker-{__version__}",
        sources=sources, locations={s.name: _location(s.urls[0]) for s in sources},
        artifacts=dict(sums), artifact_stage={name: d.name for d in stages.values() for _, name in d.artifacts},
        stages=tuple(infos), patches=tuple(patches),
        builder={"tar_sha256": record["tar_sha256"], "packages": record.get("packages", []),
                 "suite": ws.lock.builder.suite, "arch": arch,
                 "copyrights": tool_copyrights(settings, record)},
        image_stage=IMAGE_STAGE, image_files=image_files(ws, stages),
        release=release(ws), supplier=supplier(), suite=ws.lock.builder.suite,
        copyrights=notices, artifact_sha512=dict(sha512 or {}),
        project_license=sbom.PROJECT_LICENSE, source_sha512=source_sha512, sbom_files=(SBOM3,))


def publish(ws, stages, settings, log=print) -> None:
    state = _inputs(ws, stages, settings)      # what this publication is of; kept to say when it is current
    found = artifacts(ws, stages)
    final = dist_dir(ws)
    tmp = final.with_name("dist.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    sums, sha512 = {}, {}
    relinked = []
    for name, src in sorted(found.items()):
        dst = tmp / name
        try:
            os.link(src, dst)      # same bytes, no copy of a 100 MB initrd
            linked = True
        except OSError:
            shutil.copyfile(src, dst)
            linked = False
        before = snapshot.take_file(dst)
        sums[name] = sha256_file(dst)
        sha512[name] = _sha512(dst)
        if linked:
            relinked.append((src, sums[name], before))
    # The Vagrant catalog: written here, not in the box stage, so that its
    # URLs follow the configured base URL without rebuilding (or re-keying) a box.
    for decl in stages.values():
        template = ws.paths.stage_dir(decl.name) / box.CATALOG_TEMPLATE
        if template.is_file():
            if box.CATALOG in sums:
                raise BuildError(f"artifact name {box.CATALOG!r} is published by two stages")
            (tmp / box.CATALOG).write_text(box.catalog_from_template(template, settings.box_base_url, ws.lane))
            sums[box.CATALOG] = sha256_file(tmp / box.CATALOG)
            sha512[box.CATALOG] = _sha512(tmp / box.CATALOG)
    # The SBOMs (SPDX 2.3 and 3.0.1) name every artifact (the catalog too) by
    # its hash, and are themselves listed in SHA256SUMS (so signed with it)
    # and subjects of the provenance.
    # The SPDX 3 one first: the SPDX 2.3 one lists it (and verify checks its hash).
    inputs = sbom_inputs(ws, stages, sums, settings, sha512)
    (tmp / SBOM3).write_bytes(sbom3.render(inputs))
    sums[SBOM3] = sha256_file(tmp / SBOM3)
    sha512[SBOM3] = _sha512(tmp / SBOM3)
    (tmp / SBOM).write_bytes(sbom.render(dataclasses.replace(inputs, artifacts=dict(sums), artifact_sha512=dict(sha512))))
    sums[SBOM] = sha256_file(tmp / SBOM)
    sums_text = "".join(f"{h}  {n}\n" for n, h in sorted(sums.items()))
    (tmp / SUMS).write_text(sums_text)

    stage_keys = {n: (ws.paths.read_manifest(n) or {}).get("key") for n in stages}
    source = state["source"]
    from ..inputs.source_state import summary
    log(f"source: {summary(source)}")
    statement = provenance.statement(
        subjects=sums, materials=_materials(ws),
        builder={"id": "https://onlydocker.invalid/pipeline", "version": {"onlydocker": _engine_version()}},
        stage_keys=stage_keys, lane=ws.lane, epoch=ws.lock.lane.source_date_epoch,
        lock=_lock_identity(ws, settings), source=source,
        settings={"box_base_url": settings.box_base_url, "supplier": state["supplier"]})
    payload = provenance.canonical_json(statement)
    (tmp / STATEMENT).write_bytes(payload)

    signed = settings.signing_key.exists()
    if signed:
        key = sign.load_key(settings.signing_key)
        (tmp / SUMS_SIG).write_text(sign.minisign_sign(
            key, sums_text.encode(), trusted_comment=f"onlydocker {ws.lane} {SUMS}"))
        envelope = sign.dsse_sign(key, payload, provenance.PAYLOAD_TYPE)
        (tmp / ENVELOPE).write_text(json.dumps(envelope, indent=1, sort_keys=True) + "\n")

    _snapshot_path(ws).unlink(missing_ok=True)
    atomic.replace_dir(tmp, final)
    # Linking (and unlinking the old dist/) moved the stage outputs' ctimes,
    # not their bytes (just hashed): their snapshots take the new stat.
    for src, sha, before in relinked:
        ws.refresh_snapshot(src, sha, before)
    from ..cache.manifest import manifest_of_tree
    taken = snapshot.take(final)
    snapshot.write(_snapshot_path(ws), final, manifest_of_tree(final), taken)
    atomic.write_text(_state_path(ws), json.dumps(state, sort_keys=True))

    log(f"artifacts of lane {ws.lane} in {final}:")
    for name in sorted(sums):
        size = (final / name).stat().st_size
        log(f"  {size / 1e6:10.1f} MB  {name}")
    if signed:
        log(f"signed {SUMS} and the provenance with {settings.signing_key} "
            f"(public key: {public_key_path(settings)})")
    else:
        log(f"UNSIGNED: no signing key at {settings.signing_key}; make one with `doit keygen`")
    if "onlydocker.efi" in sums and "onlydocker-secureboot.crt" not in sums:
        log(f"UNSIGNED for Secure Boot: onlydocker.efi (no Secure Boot key at {settings.secureboot_key}; "
            f"`doit keygen` makes one); it boots with Secure Boot off")


def _sha512(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha512").hexdigest()


def _engine_version() -> str:
    from ..stage.key import engine_version
    return engine_version()
