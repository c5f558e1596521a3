"""Rebuilder attestations: an in-toto Statement (v1) that an independent
rebuilder rebuilt a release from its provenance's materials and got every
artifact's bytes identical, signed with the rebuilder's own Ed25519 key in a
DSSE envelope; and the check `doit verify --rebuilders K` makes of them.

The predicate type is the project's own (documented in docs/rebuild.md):

    https://onlydocker.invalid/rebuild/v1

    subject:   every artifact of the release's SHA256SUMS, with its sha256
               (exactly those: the SBOM is one of them)
    predicate: {
      "result": "identical",                 # the only result ever attested
      "lane": ...,
      "release": {"sums": {"digest": {"sha256": <SHA256SUMS>}},
                  "provenance": {"digest": {"sha256": <provenance.intoto.json>}},
                  "signedBy": <the release key's minisign key id>},
      "source": {git_commit, git_tree, dirty[, changes_sha256]},   # as the provenance
      "lock": {"path", "digest": {"sha256"}},                      # as the provenance
      "materials": [{name, uri, digest}],    # the provenance's resolvedDependencies
      "rebuilder": {"keyid": ..., "onlydocker": <version>},
      "rebuiltOn": RFC 3339, the rebuilder's clock (an attestation, not a build output)
    }

A verifier counts an attestation for a release only when a trusted
rebuilder key's signature verifies over it, its predicate type and result
are these, and its subjects are exactly the release's artifacts (same names,
same sha256, none more, none fewer); each key counts once.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from .. import sign
from ..canon import rfc3339
from ..errors import SigningError
from ..stage.paths import SUMS
from .provenance import PAYLOAD_TYPE, STATEMENT_TYPE, canonical_json

PREDICATE_TYPE = "https://onlydocker.invalid/rebuild/v1"
SUFFIX = ".rebuild.dsse.json"


def statement(sums: dict[str, str], *, lane: str, sums_sha256: str, provenance_sha256: str,
              release_keyid: str, source: dict, lock: dict, materials: list[dict], rebuilder_keyid: str,
              when: float | None = None) -> dict:
    from .. import __version__
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": n, "digest": {"sha256": d}} for n, d in sorted(sums.items())],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "result": "identical",
            "lane": lane,
            "release": {"sums": {"digest": {"sha256": sums_sha256}},
                        "provenance": {"digest": {"sha256": provenance_sha256}},
                        "signedBy": release_keyid},
            "source": source,
            "lock": lock,
            "materials": [{k: m[k] for k in ("name", "uri", "digest") if k in m} for m in materials],
            "rebuilder": {"keyid": rebuilder_keyid, "onlydocker": __version__},
            "rebuiltOn": rfc3339(time.time() if when is None else when),
        },
    }


def write(path: Path, key: sign.Key, stmt: dict) -> Path:
    from .. import atomic
    envelope = sign.dsse_sign(key, canonical_json(stmt), PAYLOAD_TYPE)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, json.dumps(envelope, indent=1, sort_keys=True) + "\n")
    return path


# --- verification --------------------------------------------------------------

@dataclass(frozen=True)
class Line:
    """One line of `doit verify`'s rebuilders section (and one JUnit case)."""
    state: str      # AGREED, MISSING, DISAGREED, IGNORED, REBUILDERS-OK, TOO-FEW, NOT-INDEPENDENT
    name: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.state != "TOO-FEW"

    def __str__(self) -> str:
        return f"{self.state:<13} {self.name}" + (f"  {self.detail}" if self.detail else "")


@dataclass(frozen=True)
class TrustedKey:
    path: str
    text: str
    keyid: str
    raw: bytes


def load_trusted(paths: list[str]) -> list[TrustedKey]:
    """Minisign public keys, each once (by its bytes, whatever the file);
    raises SigningError naming a file that is not one."""
    keys: dict[bytes, TrustedKey] = {}
    for p in paths:
        try:
            text = Path(p).read_text()
            keynum, pub = sign.parse_public_key(text)
        except OSError as e:
            raise SigningError(f"trusted rebuilder key {p}: {e.strerror or e}") from None
        except SigningError as e:
            raise SigningError(f"trusted rebuilder key {p}: {e}") from None
        from cryptography.hazmat.primitives import serialization
        raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        keys.setdefault(raw, TrustedKey(p, text, keynum[::-1].hex().upper(), raw))
    return list(keys.values())


def _subjects(stmt: dict) -> dict[str, str]:
    if stmt.get("_type") != STATEMENT_TYPE or stmt.get("predicateType") != PREDICATE_TYPE:
        raise ValueError(f"not a rebuild attestation (predicateType {stmt.get('predicateType')!r})")
    if stmt.get("predicate", {}).get("result") != "identical":
        raise ValueError(f"result {stmt.get('predicate', {}).get('result')!r}, not 'identical'")
    out = {}
    for s in stmt["subject"]:
        out[s["name"]] = s["digest"]["sha256"]
    return out


def _difference(sums: dict[str, str], subjects: dict[str, str]) -> str:
    other = sorted(n for n in sums if n in subjects and subjects[n] != sums[n])
    missing = sorted(set(sums) - set(subjects))
    extra = sorted(set(subjects) - set(sums))
    parts = []
    if other:
        parts.append("other bytes for " + ", ".join(f"{n} ({subjects[n][:12]}, release {sums[n][:12]})"
                                                    for n in other))
    if missing:
        parts.append("does not name " + ", ".join(missing))
    if extra:
        parts.append("names artifacts the release has not: " + ", ".join(extra))
    return "; ".join(parts)


def check(sums: dict[str, str], folder: Path, trusted: list[TrustedKey], required: int,
          release_pub: str | None = None) -> list[Line]:
    """The release (its SHA256SUMS) against the attestations in `folder`:
    a line per trusted key (agreed, disagreed, missing), one per attestation
    no trusted key signed, and the verdict (at least `required` distinct
    trusted keys agreed)."""
    lines: list[Line] = []
    release_raw = None
    if release_pub:
        from cryptography.hazmat.primitives import serialization
        release_raw = sign.parse_public_key(release_pub)[1].public_bytes(serialization.Encoding.Raw,
                                                                         serialization.PublicFormat.Raw)
    independent = []
    for t in trusted:
        if t.raw == release_raw:
            lines.append(Line("NOT-INDEPENDENT", t.keyid, f"{t.path} is the release's own signing key: "
                                                          f"its attestations are not counted"))
        else:
            independent.append(t)
    agreed: dict[str, str] = {}
    disagreed: dict[str, list[str]] = {}
    files = sorted(folder.glob(f"*{SUFFIX}")) if folder.is_dir() else []
    for f in files:
        try:
            envelope = json.loads(f.read_text())
            ids = ", ".join(s.get("keyid", "?") for s in envelope.get("signatures", []))
        except (OSError, ValueError, AttributeError) as e:
            lines.append(Line("IGNORED", f.name, f"not a DSSE envelope: {e}"))
            continue
        signer, payload = None, None
        for t in independent:
            try:
                payload = sign.dsse_verify(t.text, envelope)
                signer = t
                break
            except SigningError:
                continue
        if signer is None or payload is None:
            lines.append(Line("IGNORED", f.name, f"signed by key {ids or '(none)'}, not a trusted rebuilder key"))
            continue
        if envelope.get("payloadType") != PAYLOAD_TYPE:
            lines.append(Line("IGNORED", f.name, f"payloadType {envelope.get('payloadType')!r}, not {PAYLOAD_TYPE}"))
            continue
        try:
            subjects = _subjects(json.loads(payload))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            disagreed.setdefault(signer.keyid, []).append(f"{f.name}: unreadable attestation: {e}")
            continue
        if subjects == sums:
            agreed.setdefault(signer.keyid, f.name)
        else:
            disagreed.setdefault(signer.keyid, []).append(f"{f.name}: {_difference(sums, subjects)}")
    for t in independent:
        if t.keyid in agreed:
            lines.append(Line("AGREED", t.keyid, f"{agreed[t.keyid]} (key {t.path})"))
        elif t.keyid in disagreed:
            lines.append(Line("DISAGREED", t.keyid, "; ".join(disagreed[t.keyid]) + f" (key {t.path})"))
        else:
            lines.append(Line("MISSING", t.keyid, f"no attestation in {folder} signed by it (key {t.path})"))
    n = len(agreed)
    names = ", ".join(sorted(agreed)) or "none"
    if n >= required:
        lines.append(Line("REBUILDERS-OK", f"{n} of {required} required",
                          f"independent rebuilders got these exact bytes: {names}"))
    else:
        missing = [t.keyid for t in independent if t.keyid not in agreed and t.keyid not in disagreed]
        against = sorted(k for k in disagreed if k not in agreed)
        lines.append(Line("TOO-FEW", f"{n} of {required} required",
                          f"agreed: {names}; missing: {', '.join(missing) or 'none'}; "
                          f"disagreed: {', '.join(against) or 'none'}"))
    return lines


def verify_release(dist: Path, required: int, key_paths: list[str], folder: Path,
                   release_key: Path | None) -> list[Line]:
    """`doit verify --rebuilders K`: the published dist/'s SHA256SUMS against
    the attestations of the trusted rebuilder keys."""
    from .verify import parse_sums
    if required < 1 or not key_paths:
        return [Line("TOO-FEW", f"0 of {max(required, 1)} required",
                     "--rebuilders K (1 or more) needs --trusted-rebuilder-keys KEY.pub (K keys at least)")]
    try:
        trusted = load_trusted(key_paths)
        sums = parse_sums((dist / SUMS).read_text())
    except SigningError as e:
        return [Line("TOO-FEW", f"0 of {required} required", str(e))]
    except OSError:
        return [Line("TOO-FEW", f"0 of {required} required", f"no {dist / SUMS}")]
    pub = release_key.read_text() if release_key is not None and release_key.exists() else None
    return check(sums, folder, trusted, required, pub)
