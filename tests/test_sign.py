"""sign.py: minisign's formats, checked both ways with the real minisign;
DSSE envelopes; how a key is kept."""
from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import pytest

from onlydocker import sign
from onlydocker.errors import SigningError
from tests.conftest import require_tool


@pytest.fixture
def key(tmp_path) -> sign.Key:
    return sign.generate_key(tmp_path / "keys" / "signing.key")


@pytest.fixture
def pub_path(tmp_path, key) -> Path:
    return tmp_path / "keys" / "signing.key.pub"


def minisign_V(pub: Path, file: Path, sig: Path | None = None):
    cmd = [require_tool("minisign"), "-V", "-p", str(pub), "-m", str(file)]
    if sig:
        cmd += ["-x", str(sig)]
    return subprocess.run(cmd, capture_output=True, text=True)


def test_minisign_accepts_our_signature_and_refuses_a_tampered_file(tmp_path, key, pub_path):
    f = tmp_path / "SHA256SUMS"
    f.write_text("abc  file\n")
    (tmp_path / "sums.sig").write_text(sign.minisign_sign(key, f.read_bytes(), "onlydocker bookworm SHA256SUMS"))
    ok = minisign_V(pub_path, f, tmp_path / "sums.sig")
    assert ok.returncode == 0, ok.stderr
    assert "Trusted comment: onlydocker bookworm SHA256SUMS" in ok.stdout
    f.write_text("abd  file\n")
    assert minisign_V(pub_path, f, tmp_path / "sums.sig").returncode != 0


def test_minisign_refuses_an_edited_trusted_comment(tmp_path, key, pub_path):
    f = tmp_path / "f"
    f.write_bytes(b"data")
    sig = sign.minisign_sign(key, b"data", "lane bookworm").replace("lane bookworm", "lane 2015")
    (tmp_path / "f.minisig").write_text(sig)
    assert minisign_V(pub_path, f).returncode != 0
    with pytest.raises(SigningError, match="trusted comment"):
        sign.minisign_verify(pub_path.read_text(), b"data", sig)


def test_we_verify_what_minisign_signs(tmp_path):
    minisign = require_tool("minisign")
    sec, pub = tmp_path / "ms.key", tmp_path / "ms.pub"
    subprocess.run([minisign, "-G", "-W", "-p", str(pub), "-s", str(sec)], check=True, capture_output=True)
    f = tmp_path / "file"
    f.write_bytes(os.urandom(10_000))
    subprocess.run([minisign, "-S", "-s", str(sec), "-m", str(f), "-t", "made by minisign"],
                   check=True, capture_output=True)
    comment = sign.minisign_verify(pub.read_text(), f.read_bytes(), Path(str(f) + ".minisig").read_text())
    assert comment == "made by minisign"
    with pytest.raises(SigningError, match="does not match"):
        sign.minisign_verify(pub.read_text(), f.read_bytes() + b"x", Path(str(f) + ".minisig").read_text())


def test_the_public_key_is_minisigns_format(key, pub_path):
    text = pub_path.read_text()
    assert text == sign.minisign_public_key(key)
    comment, b64 = text.splitlines()
    blob = base64.b64decode(b64)
    assert len(blob) == 42 and blob[:2] == b"Ed" and blob[10:] == key.public_bytes
    assert comment == f"untrusted comment: minisign public key {key.keyid}"


def test_another_key_is_named(tmp_path, key):
    other = sign.generate_key(tmp_path / "other.key")
    sig = sign.minisign_sign(key, b"x", "c")
    with pytest.raises(SigningError, match="not by the public key given"):
        sign.minisign_verify(sign.minisign_public_key(other), b"x", sig)


def test_malformed_signatures_are_refused(key):
    pub = sign.minisign_public_key(key)
    good = sign.minisign_sign(key, b"x", "c").splitlines()
    for lines in (good[:3], [good[0], "!!", *good[2:]], [good[0], good[1], "comment: c", good[3]]):
        with pytest.raises(SigningError, match="malformed"):
            sign.minisign_verify(pub, b"x", "\n".join(lines) + "\n")
    blob = bytearray(base64.b64decode(good[1]))
    blob[:2] = b"XX"
    with pytest.raises(SigningError, match="algorithm"):
        sign.minisign_verify(pub, b"x", "\n".join([good[0], base64.b64encode(blob).decode(), *good[2:]]))
    with pytest.raises(SigningError, match="one line"):
        sign.minisign_sign(key, b"x", "two\nlines")


def test_dsse_envelope_verifies_and_detects_tampering(key):
    pub = sign.minisign_public_key(key)
    env = sign.dsse_sign(key, b'{"a":1}', "application/vnd.in-toto+json")
    assert sign.dsse_verify(pub, json.loads(json.dumps(env))) == b'{"a":1}'
    for field, value in (("payloadType", "text/plain"), ("payload", base64.b64encode(b'{"a":2}').decode())):
        bad = {**env, field: value}
        with pytest.raises(SigningError, match="verifies"):
            sign.dsse_verify(pub, bad)
    with pytest.raises(SigningError, match="malformed"):
        sign.dsse_verify(pub, {"payload": env["payload"]})


def test_pae_is_dsses_encoding():
    # The example of the DSSE specification (protocol.md).
    assert sign._pae("http://example.com/HelloWorld", b"hello world") == \
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"


def test_the_secret_key_is_private_from_birth_even_under_umask_0(tmp_path):
    old = os.umask(0)
    try:
        key = sign.generate_key(tmp_path / "k")
    finally:
        os.umask(old)
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o600
    assert b"BEGIN PRIVATE KEY" in (tmp_path / "k").read_bytes()
    assert sign.load_key(tmp_path / "k").public_bytes == key.public_bytes


def test_a_key_is_never_made_inside_a_forbidden_dir_nor_overwritten(tmp_path):
    repo = tmp_path / "repo"
    (repo / "out").mkdir(parents=True)
    with pytest.raises(SigningError, match="inside"):
        sign.generate_key(repo / "out" / "k", forbidden=[repo])
    # Not through a symlink into it either.
    (tmp_path / "elsewhere").symlink_to(repo / "out")
    with pytest.raises(SigningError, match="inside"):
        sign.generate_key(tmp_path / "elsewhere" / "k", forbidden=[repo])
    assert not list((repo / "out").iterdir())
    sign.generate_key(tmp_path / "k")
    before = (tmp_path / "k").read_bytes()
    with pytest.raises(SigningError, match="exists"):
        sign.generate_key(tmp_path / "k")
    assert (tmp_path / "k").read_bytes() == before
    (tmp_path / "k2.pub").write_text("someone's public key\n")
    with pytest.raises(SigningError, match="exists"):
        sign.generate_key(tmp_path / "k2")
    assert not (tmp_path / "k2").exists()


def test_a_key_readable_by_others_or_missing_is_refused(tmp_path):
    sign.generate_key(tmp_path / "k")
    for mode in (0o640, 0o604):
        (tmp_path / "k").chmod(mode)
        with pytest.raises(SigningError, match="readable by others"):
            sign.load_key(tmp_path / "k")
    with pytest.raises(SigningError, match="doit keygen"):
        sign.load_key(tmp_path / "missing")
    (tmp_path / "junk").write_text("not a key")
    (tmp_path / "junk").chmod(0o600)
    with pytest.raises(SigningError, match="not an unencrypted PEM"):
        sign.load_key(tmp_path / "junk")
