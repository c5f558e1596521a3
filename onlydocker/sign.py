"""Ed25519 signatures that standard tools verify too: minisign's detached
signature format over SHA256SUMS, and DSSE envelopes over the provenance.

The secret key is a PKCS#8 PEM file readable by its owner alone, made on
request (`doit keygen`), and never inside the repository or out/.
"""
from __future__ import annotations

import base64
import hashlib
import os
import stat
from collections.abc import Iterable
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


def is_inside(path: Path, d: Path) -> bool:
    d = Path(d).resolve()
    return path == d or d in path.parents


def generate_key(path: Path, forbidden: Iterable[Path] = ()) -> Key:
    """Make a new Ed25519 key: the secret as unencrypted PKCS#8 PEM at `path`
    (mode 0600 from its creation, never overwritten), the public key beside
    it in minisign's format (`<path>.pub`). Refuses a `path` inside any of
    the `forbidden` directories (the repository, out/)."""
    path = Path(path).absolute()
    real = path.resolve()
    for d in forbidden:
        if is_inside(real, d):
            raise SigningError(f"refusing to write a signing key inside {Path(d).resolve()} ({path}): keep "
                               f"keys out of the repository and out/ (set ONLYDOCKER_SIGNING_KEY elsewhere)")
    pub = Path(str(path) + ".pub")
    for p in (path, pub):
        if os.path.lexists(p):
            raise SigningError(f"{p} exists: refusing to overwrite a signing key")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Key(Ed25519PrivateKey.generate())
    pem = key.private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    write_secret_and_public(path, pem, pub, minisign_public_key(key).encode())
    return key


def write_secret_and_public(secret: Path, pem: bytes, public: Path, public_data: bytes) -> None:
    """A new secret key file and its public part beside it (a key pair, or
    a key and its certificate). O_EXCL: no race with another keygen, and no
    moment at which the secret exists with a wider mode; O_NOFOLLOW: never
    write through a planted link. The public file is replaced whole; when it
    cannot be written, the secret is removed again."""
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        tmp = public.with_name(public.name + ".tmp")
        tmp.write_bytes(public_data)
        os.replace(tmp, public)
    except BaseException:
        secret.unlink(missing_ok=True)
        raise


def load_key(path: Path) -> Key:
    """Load a secret key made by generate_key; refuses one that others can
    read or that belongs to another user."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise SigningError(f"no signing key at {path}: make one with `doit keygen`") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SigningError(f"{path} is readable by others (mode {stat.S_IMODE(st.st_mode):o}): "
                           f"chmod 600 it before it signs anything")
    if st.st_uid != os.getuid():
        raise SigningError(f"{path} belongs to uid {st.st_uid}, not to this user ({os.getuid()})")
    try:
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as e:
        raise SigningError(f"{path}: not an unencrypted PEM Ed25519 private key ({e})") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise SigningError(f"{path}: not an Ed25519 key")
    return Key(private)


def minisign_public_key(key: Key) -> str:
    blob = b"Ed" + key.keynum + key.public_bytes
    return f"untrusted comment: minisign public key {key.keyid}\n{base64.b64encode(blob).decode()}\n"


def parse_public_key(pub_text: str) -> tuple[bytes, Ed25519PublicKey]:
    """minisign's public key: an optional untrusted comment line, then
    base64("Ed" || keynum || 32-byte key)."""
    lines = [l for l in pub_text.splitlines() if l.strip()]
    try:
        blob = base64.b64decode(lines[-1], validate=True)
    except (IndexError, ValueError):
        raise SigningError("unreadable minisign public key") from None
    if len(blob) != 42 or blob[:2] != b"Ed":
        raise SigningError("not a minisign Ed25519 public key")
    return blob[2:10], Ed25519PublicKey.from_public_bytes(blob[10:])


def minisign_sign(key: Key, data: bytes, trusted_comment: str) -> str:
    """minisign's prehashed ("ED") detached signature of `data`."""
    if "\n" in trusted_comment or "\r" in trusted_comment:
        raise SigningError("a trusted comment is one line")
    digest = hashlib.blake2b(data, digest_size=64).digest()
    sig = key.private.sign(digest)
    global_sig = key.private.sign(sig + trusted_comment.encode())
    return (f"untrusted comment: signature from onlydocker secret key {key.keyid}\n"
            f"{base64.b64encode(b'ED' + key.keynum + sig).decode()}\n"
            f"trusted comment: {trusted_comment}\n"
            f"{base64.b64encode(global_sig).decode()}\n")


def minisign_verify(pub_text: str, data: bytes, sig_text: str) -> str:
    """Check a minisign signature of `data` (prehashed "ED" or legacy "Ed")
    and its trusted comment; returns the trusted comment. Raises SigningError."""
    keynum, pub = parse_public_key(pub_text)
    lines = sig_text.splitlines()
    try:
        if not lines[0].startswith("untrusted comment:"):
            raise ValueError
        blob = base64.b64decode(lines[1], validate=True)
        comment_line = lines[2]
        global_sig = base64.b64decode(lines[3], validate=True)
    except (IndexError, ValueError):
        raise SigningError("malformed minisign signature (expected 4 lines: untrusted comment, "
                           "signature, trusted comment, global signature)") from None
    if not comment_line.startswith("trusted comment: ") or len(blob) != 74 or len(global_sig) != 64:
        raise SigningError("malformed minisign signature")
    algo, sig_keynum, sig = blob[:2], blob[2:10], blob[10:]
    if algo == b"ED":
        message = hashlib.blake2b(data, digest_size=64).digest()
    elif algo == b"Ed":
        message = data
    else:
        raise SigningError(f"unknown minisign signature algorithm {algo!r}")
    if sig_keynum != keynum:
        raise SigningError(f"signed by key {sig_keynum[::-1].hex().upper()}, "
                           f"not by the public key given ({keynum[::-1].hex().upper()})")
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
    # DSSE's pre-authentication encoding; lengths are byte counts in ASCII decimal.
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def dsse_sign(key: Key, payload: bytes, payload_type: str) -> dict:
    """A DSSE envelope: Ed25519 over PAE(payloadType, payload)."""
    return {
        "payloadType": payload_type,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [{"keyid": key.keyid, "sig": base64.b64encode(key.private.sign(_pae(payload_type, payload))).decode()}],
    }


def dsse_verify(pub_text: str, envelope: dict) -> bytes:
    """The payload of a DSSE envelope, once one of its signatures verifies
    over PAE(payloadType, payload) with the (minisign) public key."""
    _, pub = parse_public_key(pub_text)
    try:
        payload = base64.b64decode(envelope["payload"])
        payload_type = envelope["payloadType"]
        sigs = envelope["signatures"]
        if not isinstance(payload_type, str) or not isinstance(sigs, list):
            raise TypeError
    except (KeyError, ValueError, TypeError):
        raise SigningError("malformed DSSE envelope (payloadType, payload, signatures[])") from None
    message = _pae(payload_type, payload)
    for s in sigs:
        try:
            pub.verify(base64.b64decode(s["sig"], validate=True), message)
            return payload
        except (InvalidSignature, KeyError, ValueError, TypeError):
            continue
    raise SigningError("no signature in the DSSE envelope verifies with the public key")
