"""An in-toto Statement (v1) with a SLSA provenance (v1) predicate: which
artifacts, built from which materials (every source with its hash and URL,
the builder image with its package list), through which stage keys, in
which lane. Nothing in it comes from the clock."""
from __future__ import annotations

import datetime
import json

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://onlydocker.invalid/build/v1"


def canonical_json(obj) -> bytes:
    return (json.dumps(obj, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode()


def _rfc3339(epoch: int) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def statement(subjects: dict[str, str], materials: list[dict], builder: dict, stage_keys: dict,
              lane: str, epoch: int) -> dict:
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": n, "digest": {"sha256": d}} for n, d in sorted(subjects.items())],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {"lane": lane, "source_date_epoch": epoch},
                "internalParameters": {"stage_keys": dict(sorted(stage_keys.items()))},
                "resolvedDependencies": sorted(materials, key=lambda m: m["name"]),
            },
            "runDetails": {
                "builder": builder,
                # The build's own date is SOURCE_DATE_EPOCH: no clock in the bytes.
                "metadata": {"invocationId": f"{lane}@{epoch}", "startedOn": _rfc3339(epoch),
                             "finishedOn": _rfc3339(epoch)},
            },
        },
    }
