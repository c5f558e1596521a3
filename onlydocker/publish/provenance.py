"""An in-toto Statement (v1) with a SLSA provenance (v1) predicate: which
artifacts, built from which materials (every source with its hash and URL,
the builder image with its package list), through which stage keys, in
which lane. Nothing in it comes from the clock: its dates are the lane's
SOURCE_DATE_EPOCH, so the same build gives the same statement bytes."""
from __future__ import annotations

import json
import re

from ..canon import readable_json, rfc3339

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
BUILD_TYPE = "https://onlydocker.invalid/build/v1"
_SHA256 = re.compile(r"[0-9a-f]{64}")


# One serialisation per value (canon.py): sorted keys, fixed indentation and
# separators, UTF-8, a final newline; NaN and infinities refused.
canonical_json = readable_json


def _material_key(m: dict) -> tuple:
    return (m.get("name", ""), m.get("uri", ""), json.dumps(m.get("digest", {}), sort_keys=True))


def statement(subjects: dict[str, str], materials: list[dict], builder: dict, stage_keys: dict,
              lane: str, epoch: int, lock: dict | None = None, source: dict | None = None,
              settings: dict | None = None) -> dict:
    """subjects: artifact name -> sha256 hex; materials: SLSA resource
    descriptors ({name?, uri, digest: {sha256: ...}, annotations?}); builder:
    at least {"id": ...}; stage_keys: stage -> key; lock: what identifies
    the lock (e.g. {"path": ..., "digest": {"sha256": ...}}); source: the
    pipeline's own source (source_state.describe, and its Python lock);
    settings: the user's settings that change an artifact's bytes (the box
    catalog's base URL), so that a rebuild can use the same."""
    for name, digest in subjects.items():
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise ValueError(f"subject {name!r}: sha256 {digest!r} is not 64 lower-case hex digits")
    for m in materials:
        if not m.get("uri") and not m.get("name"):
            raise ValueError(f"material {m!r}: needs a uri or a name")
        if not m.get("digest"):
            raise ValueError(f"material {m.get('uri') or m.get('name')!r}: needs a digest")
    if "id" not in builder:
        raise ValueError("builder: needs an id")
    external = {"lane": lane, "source_date_epoch": int(epoch)}
    if lock is not None:
        external["lock"] = lock
    if source is not None:
        external["source"] = source
    if settings is not None:
        external["settings"] = dict(sorted(settings.items()))
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": n, "digest": {"sha256": d}} for n, d in sorted(subjects.items())],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": external,
                "internalParameters": {"stage_keys": dict(sorted(stage_keys.items()))},
                "resolvedDependencies": sorted(materials, key=_material_key),
            },
            "runDetails": {
                "builder": builder,
                # The build's own date is SOURCE_DATE_EPOCH: no clock in the bytes.
                "metadata": {"invocationId": f"{lane}@{int(epoch)}", "startedOn": rfc3339(epoch),
                             "finishedOn": rfc3339(epoch)},
            },
        },
    }
