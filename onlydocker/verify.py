"""Audits: every file in dist/ against SHA256SUMS, and the signatures
against the public key. (Sources are audited by fetch.Fetcher.check.)"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from . import sign
from .errors import SigningError
from .hashing import sha256_file

SUMS = "SHA256SUMS"
# Files that SHA256SUMS cannot list because they are made from it.
METADATA = {"SHA256SUMS", "SHA256SUMS.minisig", "provenance.intoto.json", "provenance.intoto.dsse.json"}


@dataclass(frozen=True)
class Finding:
    state: str          # OK, MISSING, CORRUPT, EXTRA, SIGNATURE-OK, BAD-SIGNATURE, UNSIGNED
    name: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.state in ("OK", "SIGNATURE-OK")

    def __str__(self) -> str:
        return f"{self.state:<13} {self.name}" + (f"  {self.detail}" if self.detail else "")


def parse_sums(text: str) -> dict[str, str]:
    sums = {}
    for line in text.splitlines():
        if line.strip():
            digest, _, name = line.partition("  ")
            sums[name] = digest
    return sums


def verify_dist(dist: Path, public_key: Path | None) -> list[Finding]:
    findings: list[Finding] = []
    sums_path = dist / SUMS
    if not sums_path.is_file():
        return [Finding("MISSING", str(sums_path), "no build published yet (run `doit`)")]
    sums_text = sums_path.read_text()
    sums = parse_sums(sums_text)
    for name, expected in sorted(sums.items()):
        path = dist / name
        if not path.is_file():
            findings.append(Finding("MISSING", name))
            continue
        actual = sha256_file(path)
        findings.append(Finding("OK", name) if actual == expected else
                        Finding("CORRUPT", name, f"expected={expected} actual={actual}"))
    for path in sorted(dist.iterdir()):
        if path.name not in sums and path.name not in METADATA:
            findings.append(Finding("EXTRA", path.name, "not listed in SHA256SUMS"))

    sig = dist / "SHA256SUMS.minisig"
    env = dist / "provenance.intoto.dsse.json"
    if not sig.exists():
        findings.append(Finding("UNSIGNED", SUMS, "no SHA256SUMS.minisig (make a key with `doit keygen`)"))
        return findings
    if public_key is None or not public_key.exists():
        findings.append(Finding("BAD-SIGNATURE", sig.name, f"no public key at {public_key} to check it with"))
        return findings
    pub = public_key.read_text()
    try:
        sign.minisign_verify(pub, sums_text.encode(), sig.read_text())
        findings.append(Finding("SIGNATURE-OK", sig.name))
    except SigningError as e:
        findings.append(Finding("BAD-SIGNATURE", sig.name, str(e)))
    if env.exists():
        try:
            payload = sign.dsse_verify(pub, json.loads(env.read_text()))
            statement = (dist / "provenance.intoto.json").read_bytes()
            if payload != statement:
                raise SigningError("the envelope's payload is not provenance.intoto.json")
            findings.append(Finding("SIGNATURE-OK", env.name))
        except (SigningError, ValueError, OSError) as e:
            findings.append(Finding("BAD-SIGNATURE", env.name, str(e)))
    else:
        findings.append(Finding("MISSING", env.name))
    return findings
