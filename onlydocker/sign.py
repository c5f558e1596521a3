"""Ed25519 signatures that standard tools verify too: minisign's detached
signature format over SHA256SUMS, and DSSE envelopes over the provenance.

The secret key is a PKCS#8 PEM file readable by its owner alone, made on
request (`doit keygen`), and never inside the repository or out/.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import SigningError


@dataclass(frozen=True)
class Key:
    private: Ed25519PrivateKey

    @property
    def public_bytes(self) -> bytes:
        return self.private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @property
    def keynum(self) -> bytes:
        # minisign's 8-byte key id; derived from the public key, so stable.
        return hashlib.blake2b(self.public_bytes, digest_size=8).digest()

    @property
    def keyid(self) -> str:
        return self.keynum[::-1].hex().upper()


def generate_key(path: Path, forbidden: list[Path] = ()) -> Key:
    path = Path(path).absolute()
    for d in forbidden:
        d = Path(d).resolve()
        if path.resolve() == d or d in path.resolve().parents:
            raise SigningError(f"refusing to write a signing key inside {d} ({path}): keep keys out of "
                               f"the repository and out/ (set ONLYDOCKER_SIGNING_KEY elsewhere)")
    if path.exists():
        raise SigningError(f"{path} exists: refusing to overwrite a signing key")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Key(Ed25519PrivateKey.generate())
    pem = key.private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    pub = Path(str(path) + ".pub")
    pub.write_text(minisign_public_key(key))
    return key


def load_key(path: Path) -> Key:
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise SigningError(f"no signing key at {path}: make one with `doit keygen`") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SigningError(f"{path} is readable by others (mode {stat.S_IMODE(st.st_mode):o}): "
                           f"chmod 600 it before it signs anything")
    try:
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except ValueError as e:
        raise SigningError(f"{path}: not a PEM Ed25519 private key ({e})") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise SigningError(f"{path}: not an Ed25519 key")
    return Key(private)


def minisign_public_key(key: Key) -> str:
    blob = b"Ed" + key.keynum + key.public_bytes
    return f"untrusted comment: minisign public key {key.keyid}\n{base64.b64encode(blob).decode()}\n"


def _parse_public(pub_text: str) -> tuple[bytes, Ed25519PublicKey]:
    lines = [l for l in pub_text.splitlines() if l.strip()]
    try:
        blob = base64.b64decode(lines[-1])
    except (IndexError, ValueError):
        raise SigningError("unreadable minisign public key") from None
    if len(blob) != 42 or blob[:2] != b"Ed":
        raise SigningError("not a minisign Ed25519 public key")
    return blob[2:10], Ed25519PublicKey.from_public_bytes(blob[10:])


def minisign_sign(key: Key, data: bytes, trusted_comment: str) -> str:
    """minisign's prehashed ("ED") detached signature of `data`."""
    if "\n" in trusted_comment:
        raise SigningError("a trusted comment is one line")
    digest = hashlib.blake2b(data, digest_size=64).digest()
    sig = key.private.sign(digest)
    global_sig = key.private.sign(sig + trusted_comment.encode())
    return (f"untrusted comment: signature from onlydocker secret key {key.keyid}\n"
            f"{base64.b64encode(b'ED' + key.keynum + sig).decode()}\n"
            f"trusted comment: {trusted_comment}\n"
            f"{base64.b64encode(global_sig).decode()}\n")


def minisign_verify(pub_text: str, data: bytes, sig_text: str) -> str:
    """Check a minisign signature; returns the trusted comment."""
    keynum, pub = _parse_public(pub_text)
    lines = sig_text.splitlines()
    try:
        blob = base64.b64decode(lines[1])
        comment_line = lines[2]
        global_sig = base64.b64decode(lines[3])
    except (IndexError, ValueError):
        raise SigningError("malformed minisign signature") from None
    if not comment_line.startswith("trusted comment: ") or len(blob) != 74:
        raise SigningError("malformed minisign signature")
    algo, sig_keynum, sig = blob[:2], blob[2:10], blob[10:]
    if sig_keynum != keynum:
        raise SigningError("signed by another key than the public key given")
    message = hashlib.blake2b(data, digest_size=64).digest() if algo == b"ED" else data
    comment = comment_line[len("trusted comment: "):]
    try:
        pub.verify(sig, message)
    except InvalidSignature:
        raise SigningError("signature does not match the file") from None
    try:
        pub.verify(global_sig, sig + comment.encode())
    except InvalidSignature:
        raise SigningError("trusted comment was tampered with") from None
    return comment


def _pae(payload_type: str, payload: bytes) -> bytes:
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def dsse_sign(key: Key, payload: bytes, payload_type: str) -> dict:
    return {
        "payloadType": payload_type,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [{"keyid": key.keyid, "sig": base64.b64encode(key.private.sign(_pae(payload_type, payload))).decode()}],
    }


def dsse_verify(pub_text: str, envelope: dict) -> bytes:
    _, pub = _parse_public(pub_text)
    try:
        payload = base64.b64decode(envelope["payload"])
        payload_type = envelope["payloadType"]
        sigs = envelope["signatures"]
    except (KeyError, ValueError, TypeError):
        raise SigningError("malformed DSSE envelope") from None
    for s in sigs:
        try:
            pub.verify(base64.b64decode(s["sig"]), _pae(payload_type, payload))
            return payload
        except (InvalidSignature, KeyError, ValueError):
            continue
    raise SigningError("no signature in the DSSE envelope verifies with the public key")
