"""Publishing: the artifacts of every stage into out/<lane>/dist/, with
SHA256SUMS, a minisign signature over it, and a signed in-toto provenance
statement saying where every byte came from.

The signing key lives outside out/ and the repository; without one the build
still completes and says it is unsigned.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from . import box, provenance, sign
from .errors import BuildError
from .hashing import sha256_file

SUMS = "SHA256SUMS"
SUMS_SIG = "SHA256SUMS.minisig"
STATEMENT = "provenance.intoto.json"
ENVELOPE = "provenance.intoto.dsse.json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"


def dist_dir(ws) -> Path:
    return ws.out / "dist"


def _state_path(ws) -> Path:
    # Outside dist/, so that dist/ holds only what SHA256SUMS covers.
    return ws.out / "dist.state.json"


def public_key_path(settings) -> Path:
    return Path(str(settings.signing_key) + ".pub")


def _inputs(ws, stages, settings) -> dict:
    key = settings.signing_key
    return {
        "stages": {n: (ws.read_manifest(n) or {}).get("digest") for n in stages},
        "signing_key": sha256_file(public_key_path(settings)) if key.exists() and public_key_path(settings).exists() else None,
        # The box catalog's URLs come from it: another base URL, another catalog.
        "box_base_url": settings.box_base_url,
    }


def is_current(ws, stages, settings) -> bool:
    try:
        state = json.loads(_state_path(ws).read_text())
    except (OSError, ValueError):
        return False
    if state != _inputs(ws, stages, settings):
        return False
    from .verify import verify_dist
    return all(r.ok for r in verify_dist(dist_dir(ws), public_key_path(settings) if state["signing_key"] else None))


def artifacts(ws, stages) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for decl in stages.values():
        for output, name in decl.artifacts:
            path = ws.stage_dir(decl.name) / output
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
    b = ws.builder()
    mats.append({"name": "builder-image", "uri": f"mmdebstrap:{ws.lock.builder.suite}",
                 "digest": {"sha256": b["tar_sha256"]},
                 "annotations": {"packages": b["packages"], "tag": b["tag"]}})
    return mats


def publish(ws, stages, settings, log=print) -> None:
    found = artifacts(ws, stages)
    final = dist_dir(ws)
    tmp = final.with_name("dist.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    sums = {}
    for name, src in sorted(found.items()):
        dst = tmp / name
        try:
            os.link(src, dst)      # same bytes, no copy of a 100 MB initrd
        except OSError:
            shutil.copyfile(src, dst)
        sums[name] = sha256_file(dst)
    # The Vagrant catalog: written here, not in the box stage, so that its
    # URLs follow the configured base URL without rebuilding (or re-keying) a box.
    for decl in stages.values():
        template = ws.stage_dir(decl.name) / box.CATALOG_TEMPLATE
        if template.is_file():
            if box.CATALOG in sums:
                raise BuildError(f"artifact name {box.CATALOG!r} is published by two stages")
            (tmp / box.CATALOG).write_text(box.catalog_from_template(template, settings.box_base_url, ws.lane))
            sums[box.CATALOG] = sha256_file(tmp / box.CATALOG)
    sums_text = "".join(f"{h}  {n}\n" for n, h in sorted(sums.items()))
    (tmp / SUMS).write_text(sums_text)

    stage_keys = {n: (ws.read_manifest(n) or {}).get("key") for n in stages}
    statement = provenance.statement(
        subjects=sums, materials=_materials(ws),
        builder={"id": "https://onlydocker.invalid/pipeline", "version": {"onlydocker": _engine_version()}},
        stage_keys=stage_keys, lane=ws.lane, epoch=ws.lock.lane.source_date_epoch)
    payload = provenance.canonical_json(statement)
    (tmp / STATEMENT).write_bytes(payload)

    signed = settings.signing_key.exists()
    if signed:
        key = sign.load_key(settings.signing_key)
        (tmp / SUMS_SIG).write_text(sign.minisign_sign(
            key, sums_text.encode(), trusted_comment=f"onlydocker {ws.lane} {SUMS}"))
        envelope = sign.dsse_sign(key, payload, PAYLOAD_TYPE)
        (tmp / ENVELOPE).write_text(json.dumps(envelope, indent=1, sort_keys=True) + "\n")

    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    state = _inputs(ws, stages, settings)
    _state_path(ws).write_text(json.dumps(state, sort_keys=True))

    log(f"artifacts of lane {ws.lane} in {final}:")
    for name in sorted(sums):
        size = (final / name).stat().st_size
        log(f"  {size / 1e6:10.1f} MB  {name}")
    if signed:
        log(f"signed {SUMS} and the provenance with {settings.signing_key} "
            f"(public key: {public_key_path(settings)})")
    else:
        log(f"UNSIGNED: no signing key at {settings.signing_key}; make one with `doit keygen`")


def _engine_version() -> str:
    from .stage import engine_version
    return engine_version()
