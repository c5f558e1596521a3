"""The Secure Boot signing key and its certificate (issue 25).

`doit keygen` makes them beside the Ed25519 key (or they are given:
ONLYDOCKER_SECUREBOOT_KEY and ONLYDOCKER_SECUREBOOT_CERT), outside the
repository and out/. The iso stage signs the unified kernel image with them
(sbsign in the builder: RSA PKCS#1 v1.5, deterministic) and publishes the
certificate beside the artifacts, for users to enroll as a db entry.

RSA 2048 and SHA-256, because that is what UEFI firmware verifies
everywhere (the UEFI spec requires RSA-2048 support; Ed25519 is not an
Authenticode algorithm). The certificate is valid from 2015 to 2049 (X.509
UTCTime's last year): a build signs at its lane's SOURCE_DATE_EPOCH, so the
certificate must be valid then, not only today.

Everything is checked before anything is signed, each problem in one line
naming the file: a key that does not match its certificate, a certificate
not valid at the lane's SOURCE_DATE_EPOCH, a key others can read.
"""
from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .errors import SigningError
from .sign import is_inside, write_secret_and_public

COMMON_NAME = "Only Docker Secure Boot signing key"
NOT_BEFORE = datetime.datetime(2015, 1, 1, tzinfo=datetime.UTC)
NOT_AFTER = datetime.datetime(2049, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)
RSA_BITS = 2048


@dataclass(frozen=True)
class SecureBootKey:
    key: Path
    cert: Path

    def cert_sha256(self) -> str:
        """The certificate's digest (of its DER): what a stage key records,
        so that outputs signed with another key are never taken for these.
        Read with the standard library only (PEM is base64 of the DER): stage
        keys are computed in doit's worker threads, and the certificate's
        checks (cryptography) run once, before any task."""
        try:
            text = self.cert.read_text()
        except OSError as e:
            raise SigningError(f"{self.cert}: {e.strerror}") from None
        begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
        if begin not in text or end not in text:
            raise SigningError(f"{self.cert}: not a PEM X.509 certificate (no {begin} line)")
        body = text.split(begin, 1)[1].split(end, 1)[0]
        try:
            der = base64.b64decode("".join(body.split()), validate=True)
        except binascii.Error as e:
            raise SigningError(f"{self.cert}: not a PEM X.509 certificate ({e})") from None
        return hashlib.sha256(der).hexdigest()


def generate(key_path: Path, cert_path: Path, forbidden: Iterable[Path] = ()) -> SecureBootKey:
    """A new RSA key (unencrypted PKCS#8 PEM, mode 0600 from its creation,
    never overwritten) and its self-signed certificate (PEM) for code
    signing. Refuses paths inside any of `forbidden` (the repository, out/)."""
    key_path, cert_path = Path(key_path).absolute(), Path(cert_path).absolute()
    for p in (key_path, cert_path):
        for d in forbidden:
            if is_inside(p.resolve(), d):
                raise SigningError(f"refusing to write a Secure Boot key inside {Path(d).resolve()} ({p}): keep "
                                   f"keys out of the repository and out/ (set ONLYDOCKER_SECUREBOOT_KEY elsewhere)")
        if os.path.lexists(p):
            raise SigningError(f"{p} exists: refusing to overwrite a Secure Boot key or certificate")
    key_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    private = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, COMMON_NAME)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(private.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(NOT_BEFORE).not_valid_after(NOT_AFTER)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(private.public_key()), critical=False)
            .sign(private, hashes.SHA256()))
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    write_secret_and_public(key_path, pem, cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return SecureBootKey(key_path, cert_path)


def _load_cert(path: Path) -> x509.Certificate:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SigningError(f"no Secure Boot certificate at {path} (the key's certificate, PEM; "
                           f"ONLYDOCKER_SECUREBOOT_CERT names another)") from None
    except OSError as e:
        raise SigningError(f"{path}: {e.strerror}") from None
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as e:
        raise SigningError(f"{path}: not a PEM X.509 certificate ({e})") from None


def check(sb: SecureBootKey, epoch: int) -> None:
    """Everything sbsign and a firmware would trip on, each in one line,
    before anything is signed."""
    try:
        st = sb.key.stat()
    except FileNotFoundError:
        raise SigningError(f"no Secure Boot key at {sb.key}, only its certificate {sb.cert}: what is signed for "
                           f"that certificate comes from a cache or not at all; give the key "
                           f"(ONLYDOCKER_SECUREBOOT_KEY), or move the certificate away to build unsigned") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SigningError(f"{sb.key} is readable by others (mode {stat.S_IMODE(st.st_mode):o}): "
                           f"chmod 600 it before it signs anything")
    try:
        private = serialization.load_pem_private_key(sb.key.read_bytes(), password=None)
    except (ValueError, TypeError) as e:
        raise SigningError(f"{sb.key}: not an unencrypted PEM private key ({e})") from None
    if not isinstance(private, rsa.RSAPrivateKey) or private.key_size < RSA_BITS:
        raise SigningError(f"{sb.key}: a Secure Boot key is RSA of {RSA_BITS} bits or more "
                           f"(what UEFI firmware verifies)")
    cert = check_certificate(sb, epoch)
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if cert.public_key().public_bytes(*spki) != private.public_key().public_bytes(*spki):
        raise SigningError(f"{sb.key} does not match the certificate {sb.cert} (another public key): "
                           f"give the key's own certificate")


def check_certificate(sb: SecureBootKey, epoch: int) -> x509.Certificate:
    """The certificate alone: readable, and valid at the lane's epoch. Enough
    to restore what was signed for it from a cache, without its key."""
    cert = _load_cert(sb.cert)
    when = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if not start <= when <= end:
        raise SigningError(f"{sb.cert} is not valid at the lane's SOURCE_DATE_EPOCH ({when:%Y-%m-%d}): valid from "
                           f"{start:%Y-%m-%d} to {end:%Y-%m-%d}; the image is signed as of that date")
    return cert


def configured(key: Path, cert: Path) -> SecureBootKey | None:
    """The key and certificate when either exists; None when neither does
    (an unsigned unified kernel image, said once). The certificate alone
    (a developer given CI's, ONLYDOCKER_SECUREBOOT_CERT) names the signed
    outputs in the stage key: restored from a shared cache, never built."""
    if not os.path.lexists(key) and not os.path.lexists(cert):
        return None
    return SecureBootKey(key, cert)
