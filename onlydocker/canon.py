"""One spelling for each value that ends up in bytes or keys.

- `compact_json`: sorted keys, no spaces (stage keys, Docker image configs,
  whose sha256 is the image id);
- `readable_json`: sorted keys, indented, UTF-8, final newline, NaN refused
  (the provenance statement, the SBOM: documents people read and sign);
- `rfc3339` / `rfc2822`: a UTC time from an epoch (JSON documents; Linux's
  KBUILD_BUILD_TIMESTAMP, which GNU date must parse).
"""
from __future__ import annotations

import datetime
import email.utils
import json


def compact_json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def readable_json(obj: object) -> bytes:
    return (json.dumps(obj, sort_keys=True, indent=1, separators=(",", ": "), ensure_ascii=False,
                       allow_nan=False) + "\n").encode("utf-8")


def rfc3339(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(int(epoch), datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc2822(epoch: float) -> str:
    return email.utils.formatdate(int(epoch), usegmt=True)
