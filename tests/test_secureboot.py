"""The Secure Boot key and certificate (onlydocker/secureboot.py): made by
`doit keygen` beside the Ed25519 key, checked before anything is signed
(each problem one line naming the file), and their place in the iso stage's
key. The signed image's boots are in tests/test_boot.py."""
from __future__ import annotations

import datetime
import shutil
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from onlydocker import secureboot
from onlydocker.errors import SigningError, StageError
from onlydocker.stage.decl import load_stages
from onlydocker.stage.lanecheck import check_secureboot, signs
from tests import workspace as wsmod

ROOT = Path(__file__).resolve().parent.parent
TRIXIE_EPOCH = 1754697600          # locks/trixie.lock's source_date_epoch (2025-08-09)


def _cert_for(key: rsa.RSAPrivateKey, start: datetime.datetime, end: datetime.datetime) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(start).not_valid_after(end).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def _made(tmp_path: Path) -> secureboot.SecureBootKey:
    return secureboot.generate(tmp_path / "keys" / "secureboot.key", tmp_path / "keys" / "secureboot.crt")


def test_a_made_key_is_private_and_its_certificate_signs_code_and_holds_at_every_lanes_epoch(tmp_path):
    sb = _made(tmp_path)
    assert stat.S_IMODE(sb.key.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(sb.cert.read_bytes())
    assert cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [x509.oid.ExtendedKeyUsageOID.CODE_SIGNING])
    assert cert.public_key().key_size == 2048
    for epoch in (1423526400, TRIXIE_EPOCH, 2_000_000_000):       # 2015, trixie, 2033
        secureboot.check(sb, epoch)
    with pytest.raises(SigningError, match="exists: refusing to overwrite"):
        _made(tmp_path)


def test_a_key_is_never_written_inside_the_repository(tmp_path):
    with pytest.raises(SigningError, match="refusing to write a Secure Boot key inside"):
        secureboot.generate(tmp_path / "repo" / "k.key", tmp_path / "repo" / "k.crt", forbidden=[tmp_path / "repo"])
    assert not (tmp_path / "repo" / "k.key").exists()


def test_a_key_that_does_not_match_its_certificate_is_refused_in_one_line(tmp_path):
    sb = _made(tmp_path)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sb.cert.write_bytes(_cert_for(other, secureboot.NOT_BEFORE, secureboot.NOT_AFTER))
    with pytest.raises(SigningError) as e:
        secureboot.check(sb, TRIXIE_EPOCH)
    assert str(e.value) == (f"{sb.key} does not match the certificate {sb.cert} (another public key): "
                            f"give the key's own certificate")


def test_a_certificate_not_valid_at_the_lanes_epoch_is_refused_in_one_line(tmp_path):
    sb = _made(tmp_path)
    key = serialization.load_pem_private_key(sb.key.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    utc = datetime.UTC
    # Made today, valid for a year: trixie's epoch (2025-08-09) is before it.
    sb.cert.write_bytes(_cert_for(key, datetime.datetime(2026, 1, 1, tzinfo=utc),
                                  datetime.datetime(2027, 1, 1, tzinfo=utc)))
    with pytest.raises(SigningError) as e:
        secureboot.check(sb, TRIXIE_EPOCH)
    assert str(e.value) == (f"{sb.cert} is not valid at the lane's SOURCE_DATE_EPOCH (2025-08-09): valid from "
                            f"2026-01-01 to 2027-01-01; the image is signed as of that date")
    # Expired before it.
    sb.cert.write_bytes(_cert_for(key, datetime.datetime(2015, 1, 1, tzinfo=utc),
                                  datetime.datetime(2020, 1, 1, tzinfo=utc)))
    with pytest.raises(SigningError, match=r"not valid at the lane's SOURCE_DATE_EPOCH \(2025-08-09\)"):
        secureboot.check(sb, TRIXIE_EPOCH)


def test_a_key_others_can_read_a_missing_certificate_and_a_key_of_another_kind_are_refused(tmp_path):
    sb = _made(tmp_path)
    sb.key.chmod(0o644)
    with pytest.raises(SigningError, match="is readable by others"):
        secureboot.check(sb, TRIXIE_EPOCH)
    sb.key.chmod(0o600)
    sb.cert.unlink()
    with pytest.raises(SigningError, match=f"no Secure Boot certificate at {sb.cert}"):
        secureboot.check(sb, TRIXIE_EPOCH)
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    sb.key.write_bytes(small.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    with pytest.raises(SigningError, match="RSA of 2048 bits or more"):
        secureboot.check(sb, TRIXIE_EPOCH)


def test_only_the_uefi_lanes_iso_signs_and_a_bad_key_stops_the_run_before_any_task(tmp_path):
    stages = load_stages(ROOT / "stages")
    assert [d.name for d in stages.values() if signs(d, "trixie")] == ["iso"]
    assert not any(signs(d, lane) for d in stages.values() for lane in ("2015", "bookworm"))
    sb = _made(tmp_path)
    from onlydocker import config
    settings = config.Settings(root=ROOT, lock_path=ROOT / "locks/trixie.lock", cache_dir=tmp_path / "c",
                               downloads_dir=tmp_path / "d", signing_key=tmp_path / "keys" / "signing.key")
    assert settings.secureboot_key == sb.key and settings.secureboot_cert == sb.cert
    check_secureboot(stages, "trixie", settings, TRIXIE_EPOCH, tmp_path / "memo")
    assert (tmp_path / "memo" / "secureboot.json").is_file()      # remembered: the next run pays nothing
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sb.cert.write_bytes(_cert_for(other, secureboot.NOT_BEFORE, secureboot.NOT_AFTER))
    with pytest.raises(SigningError, match="does not match the certificate"):
        check_secureboot(stages, "trixie", settings, TRIXIE_EPOCH, tmp_path / "memo")
    check_secureboot(stages, "bookworm", settings, TRIXIE_EPOCH, tmp_path / "memo")    # it signs nothing


def test_doit_with_a_mismatched_certificate_says_one_line_and_starts_nothing(tmp_path):
    ws = wsmod.make(tmp_path / "ws", copy_project=True)
    r = ws.doit("keygen")
    assert "Secure Boot key:" in r.stdout and "its certificate:" in r.stdout
    keys = Path(ws.env["ONLYDOCKER_SIGNING_KEY"]).parent
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (keys / "secureboot.crt").write_bytes(_cert_for(other, secureboot.NOT_BEFORE, secureboot.NOT_AFTER))
    r = ws.doit("lock=locks/trixie.lock", check=False)
    assert r.returncode != 0
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert lines == [f"ERROR: {keys / 'secureboot.key'} does not match the certificate {keys / 'secureboot.crt'} "
                     f"(another public key): give the key's own certificate"], r.stderr
    assert not (ws.root / "out" / "trixie" / "logs" / "builder.log").exists()
    # keygen again keeps both keys and says so.
    r = ws.doit("keygen")
    assert "(there already: kept)" in r.stdout


def test_the_secureboot_setting_must_name_a_boolean_lane_setting(tmp_path):
    shutil.copytree(ROOT / "stages" / "iso", tmp_path / "iso")
    toml = tmp_path / "iso" / "stage.toml"
    toml.write_text(toml.read_text().replace('secureboot = "uefi"', 'secureboot = "efi"'))
    with pytest.raises(StageError, match="secureboot = \"<a boolean setting of \\[lane_settings\\]>\""):
        load_stages(tmp_path)


def test_the_certificate_alone_names_the_signed_outputs_but_cannot_sign(tmp_path):
    """A developer given CI's certificate (not its key): the iso stage's key
    is CI's, so its signed outputs are restored from a shared cache
    (tests/test_modern_lane.py); building them needs the key, said in one line."""
    sb = _made(tmp_path)
    sb.key.unlink()
    assert secureboot.configured(sb.key, sb.cert) == sb
    assert secureboot.check_certificate(sb, TRIXIE_EPOCH).subject.rfc4514_string() == \
        f"CN={secureboot.COMMON_NAME}"
    with pytest.raises(SigningError) as e:
        secureboot.check(sb, TRIXIE_EPOCH)
    assert str(e.value) == (f"no Secure Boot key at {sb.key}, only its certificate {sb.cert}: what is signed for "
                            f"that certificate comes from a cache or not at all; give the key "
                            f"(ONLYDOCKER_SECUREBOOT_KEY), or move the certificate away to build unsigned")
    sb.cert.unlink()
    assert secureboot.configured(sb.key, sb.cert) is None
