"""Audits: every file in dist/ against SHA256SUMS, the SBOM's artifact
hashes against SHA256SUMS (and the provenance naming the SBOM), and the
signatures against the public key. (Sources are audited by
fetch.Fetcher.check.)"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .. import sign
from ..errors import SigningError
from ..hashing import sha256_file
from ..stage.paths import ENVELOPE, METADATA, SBOM, STATEMENT, SUMS, SUMS_SIG
from . import sbom


@dataclass(frozen=True)
class Finding:
    state: str          # OK, MISSING, CORRUPT, EXTRA, SBOM-OK, SBOM-WRONG, SIGNATURE-OK, BAD-SIGNATURE, UNSIGNED
    name: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.state in ("OK", "SBOM-OK", "SIGNATURE-OK")

    def __str__(self) -> str:
        return f"{self.state:<13} {self.name}" + (f"  {self.detail}" if self.detail else "")


def parse_sums(text: str) -> dict[str, str]:
    sums = {}
    for line in text.splitlines():
        if line.strip():
            digest, _, name = line.partition("  ")
            sums[name] = digest
    return sums


def verify_sbom(dist: Path, sums: dict[str, str]) -> list[Finding]:
    """The SBOM names every other artifact of SHA256SUMS with the same
    sha256, and no other; the provenance names the SBOM with its sha256."""
    if SBOM not in sums:
        return [Finding("MISSING", SBOM, "SHA256SUMS lists no SBOM (published before there were SBOMs? run `doit`)")]
    try:
        doc = json.loads((dist / SBOM).read_text())
        described = sbom.artifact_hashes(doc)
    except (OSError, ValueError, AttributeError, TypeError, KeyError) as e:
        return [Finding("SBOM-WRONG", SBOM, f"not a readable SPDX JSON document: {e}")]
    wrong = []
    for name, expected in sorted(sums.items()):
        if name == SBOM:
            continue
        if name not in described:
            wrong.append(Finding("SBOM-WRONG", name, f"listed in SHA256SUMS but not described by {SBOM}"))
        elif described[name] != expected:
            wrong.append(Finding("SBOM-WRONG", name, f"{SBOM} says sha256 {described[name]}, "
                                                     f"SHA256SUMS says {expected}"))
    for name in sorted(set(described) - set(sums)):
        wrong.append(Finding("SBOM-WRONG", name, f"described by {SBOM} but not listed in SHA256SUMS"))
    statement = dist / STATEMENT
    if statement.is_file():
        try:
            subjects = {s["name"]: s["digest"]["sha256"] for s in json.loads(statement.read_text())["subject"]}
        except (ValueError, KeyError, TypeError) as e:
            subjects = {}
            wrong.append(Finding("SBOM-WRONG", statement.name, f"no readable subjects: {e}"))
        if subjects.get(SBOM) != sums[SBOM]:
            wrong.append(Finding("SBOM-WRONG", SBOM, f"{statement.name} names it with sha256 "
                                                     f"{subjects.get(SBOM)}, SHA256SUMS with {sums[SBOM]}"))
    return wrong or [Finding("SBOM-OK", SBOM, f"its {len(described)} artifact hashes agree with {SUMS}"
                                              + (" and the provenance names it" if statement.is_file() else ""))]


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

    findings += verify_sbom(dist, sums)

    sig = dist / SUMS_SIG
    env = dist / ENVELOPE
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
            statement = (dist / STATEMENT).read_bytes()
            if payload != statement:
                raise SigningError("the envelope's payload is not provenance.intoto.json")
            findings.append(Finding("SIGNATURE-OK", env.name))
        except (SigningError, ValueError, OSError) as e:
            findings.append(Finding("BAD-SIGNATURE", env.name, str(e)))
    else:
        findings.append(Finding("MISSING", env.name))
    return findings
