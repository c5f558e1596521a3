"""`doit rebuild` and rebuilders' attestations for real: a tiny lane in a
git repository is built and its release folder published; two independent
rebuilders, each in a fresh clone with an empty cache (only the builder
image shared: bootstrapping it is minutes), rebuild it from that folder
alone (one by URL with its source served by a loopback HTTP mirror, one
from the folder with a `doit legal-info` folder; the lock's own URL answers
404) and attest with keys of their own; `doit verify --rebuilders 2` then
passes with both, and fails with one, with an untrusted key, and with an
attestation for other bytes. The refusals come before anything is fetched."""
from __future__ import annotations

import base64
import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from onlydocker import sign
from onlydocker.cli import rebuild
from onlydocker.publish import attest, provenance
from tests import workspace as wsmod

LOCK = "test.lock"
BODY = b"a tiny source for rebuilding\n" * 32
STAGE = ('description = "tiny"\nsources = ["tiny-src"]\noutputs = ["data"]\n'
         'artifacts = { "data" = "tiny-data.txt" }\n')
SCRIPT = "set -eu\ncat /build/sources/tiny.txt > /build/out/data\necho rebuilt-alike >> /build/out/data\n"


def _git(root: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "GIT_AUTHOR_DATE": "2020-01-01T00:00:00Z",
           "GIT_COMMITTER_DATE": "2020-01-01T00:00:00Z"}
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


def _cache(path: Path) -> Path:
    """An empty cache but for the builder image, shared (as runs share a cache)."""
    path.mkdir(parents=True)
    shared = Path(os.environ.get("ONLYDOCKER_CACHE") or Path.home() / ".cache" / "onlydocker") / "builders"
    shared.mkdir(parents=True, exist_ok=True)
    (path / "builders").symlink_to(shared)
    return path


class _Server:
    def __init__(self, folder: Path):
        handler = functools.partial(_Quiet, directory=str(folder))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass


def _rebuilder(base: Path, name: str, project: Path, env: dict) -> wsmod.Workspace:
    root = base / name
    subprocess.run(["git", "clone", "-q", str(project), str(root)], check=True)
    ws = wsmod.Workspace(root=root, env=dict(env), log=base / f"{name}.log")
    ws.env.update({"ONLYDOCKER_OUT": str(root / "out"), "ONLYDOCKER_CACHE": str(_cache(base / f"{name}-cache")),
                   "ONLYDOCKER_SIGNING_KEY": str(base / f"{name}-keys" / "signing.key")})
    ws.env.pop("ONLYDOCKER_MIRRORS", None)
    ws.doit("keygen")
    ws.pub = Path(ws.env["ONLYDOCKER_SIGNING_KEY"] + ".pub")
    return ws


@pytest.fixture(scope="module")
def world(tmp_path_factory, docker_client):
    base = tmp_path_factory.mktemp("rebuild")
    served = base / "served"
    (served / "sources").mkdir(parents=True)
    (served / "sources" / "tiny.txt").write_bytes(BODY)
    server = _Server(served)
    pub = wsmod.make(base / "publisher", cache=_cache(base / "publisher-cache"))
    pub.env.pop("ONLYDOCKER_STAGE_CACHE", None)
    pub.env["ONLYDOCKER_MIRRORS"] = f"{server.url}/sources"
    # The lock's own URL no longer has the file (as Debian's pool drops old versions).
    (pub.root / LOCK).write_text(wsmod.builder_tables()
                                 + wsmod.source_entry("tiny-src", "tiny.txt", f"{server.url}/gone/tiny.txt", BODY))
    wsmod.add_stage(pub.root, "tiny", STAGE, SCRIPT)
    (pub.root / ".gitignore").write_text("/out/\n__pycache__/\n")
    _git(pub.root, "init", "-q")
    _git(pub.root, "add", "-A")
    _git(pub.root, "commit", "-q", "-m", "tiny lane")
    pub.doit("keygen")
    pub.doit(f"lock={LOCK}", timeout=900)
    pub.doit("legal-info", f"lock={LOCK}")
    lane = wsmod.lane_name()
    release = served / "release"
    shutil.copytree(pub.out(lane) / "dist", release)
    pub.key = Path(pub.env["ONLYDOCKER_SIGNING_KEY"])
    env = dict(pub.env)
    a = _rebuilder(base, "rebuilder-a", pub.root, env)
    b = _rebuilder(base, "rebuilder-b", pub.root, env)
    a.env["ONLYDOCKER_MIRRORS"] = f"{server.url}/sources"
    yield {"base": base, "server": server, "pub": pub, "lane": lane, "release": release, "a": a, "b": b,
           "legal": pub.out(lane) / "legal-info"}
    server.httpd.shutdown()


@pytest.fixture(scope="module")
def rebuilt(world):
    """Both rebuilders' runs: A from the release's URL (its source from the
    loopback mirror), B from the folder (its source from legal-info)."""
    a, b = world["a"], world["b"]
    ra = a.doit("rebuild", "--release-key", str(world["pub"].key) + ".pub", "--junit",
                str(world["base"] / "a.xml"), f"{world['server'].url}/release/", check=False, timeout=900)
    rb = b.doit("rebuild", "--release-key", str(world["pub"].key) + ".pub", "--legal-info", str(world["legal"]),
                str(world["release"]), check=False, timeout=900)
    return ra, rb


pytestmark = pytest.mark.docker


def test_two_rebuilders_get_identical_bytes_and_attest(world, rebuilt):
    ra, rb = rebuilt
    assert ra.returncode == 0, ra.stdout + ra.stderr
    assert rb.returncode == 0, rb.stdout + rb.stderr
    sums = dict(reversed(line.split("  ")) for line in (world["release"] / "SHA256SUMS").read_text().splitlines())
    for r in (ra, rb):
        for name, sha in sums.items():
            assert f"identical  {name}  sha256 {sha}\n" in r.stdout
        assert "identical  provenance.intoto.json  sha256 " in r.stdout
        assert "DIFFERENT" not in r.stdout
        assert "tiny: built (" in r.stdout          # from scratch, never restored from a cache
    assert "material tiny-src (tiny.txt): fetched and verified" in ra.stdout
    assert f"material tiny-src (tiny.txt): from {world['legal'] / 'sources' / 'tiny.txt'}" in rb.stdout
    cases = list(ET.parse(world["base"] / "a.xml").iter("testcase"))
    assert cases and all(c.find("failure") is None for c in cases)
    for ws in (world["a"], world["b"]):
        [path] = (ws.out(world["lane"]) / "rebuild").glob(f"*{attest.SUFFIX}")
        envelope = json.loads(path.read_text())
        stmt = json.loads(sign.dsse_verify(ws.pub.read_text(), envelope))
        assert stmt["predicateType"] == attest.PREDICATE_TYPE and stmt["predicate"]["result"] == "identical"
        assert {s["name"]: s["digest"]["sha256"] for s in stmt["subject"]} == sums
        assert stmt["predicate"]["source"]["git_commit"] == _git(world["pub"].root, "rev-parse", "HEAD")


def _verify(world, tmp_path, keys: list[Path], attestations: list[Path], name: str):
    folder = tmp_path / name
    folder.mkdir()
    for i, p in enumerate(attestations):
        shutil.copy(p, folder / f"{i}{attest.SUFFIX}")
    junit = tmp_path / f"{name}.xml"
    args = ["verify", f"lock={LOCK}", "--rebuilders", "2", "--attestations", str(folder), "--junit", str(junit)]
    for k in keys:
        args += ["--trusted-rebuilder-keys", str(k)]
    r = world["pub"].doit(*args, check=False)
    failed = {c.get("name"): c.find("failure").get("message") for c in ET.parse(junit).iter("testcase")
              if c.get("classname") == "rebuilders" and c.find("failure") is not None}
    return r, failed


def _attestations(world) -> list[Path]:
    return [next((ws.out(world["lane"]) / "rebuild").glob(f"*{attest.SUFFIX}")) for ws in (world["a"], world["b"])]


def _keyid(pub: Path) -> str:
    return sign.parse_public_key(pub.read_text())[0][::-1].hex().upper()


def test_verify_accepts_two_trusted_rebuilders_and_names_them(world, rebuilt, tmp_path):
    a, b = world["a"], world["b"]
    r, failed = _verify(world, tmp_path, [a.pub, b.pub], _attestations(world), "both")
    assert failed == {}, r.stdout
    assert f"AGREED        {_keyid(a.pub)}" in r.stdout and f"AGREED        {_keyid(b.pub)}" in r.stdout
    assert "REBUILDERS-OK 2 of 2 required" in r.stdout


def test_verify_refuses_one_attestation_an_untrusted_key_and_other_bytes(world, rebuilt, tmp_path):
    a, b = world["a"], world["b"]
    att_a, att_b = _attestations(world)
    # One attestation: B is missing.
    r, failed = _verify(world, tmp_path, [a.pub, b.pub], [att_a], "one")
    assert list(failed.values()) == [f"TOO-FEW       1 of 2 required  agreed: {_keyid(a.pub)}; "
                                     f"missing: {_keyid(b.pub)}; disagreed: none"], r.stdout
    # B's attestation, but B's key is not trusted (C's is, and C attested nothing).
    c = world["base"] / "c-keys" / "signing.key"
    sign.generate_key(c)
    r, failed = _verify(world, tmp_path, [a.pub, Path(f"{c}.pub")], [att_a, att_b], "untrusted")
    assert f"IGNORED       1{attest.SUFFIX}  signed by key {_keyid(b.pub)}, not a trusted rebuilder key" in r.stdout
    assert list(failed.values())[0].startswith("TOO-FEW       1 of 2 required"), r.stdout
    # B attests other bytes for the artifact.
    stmt = json.loads(base64.b64decode(json.loads(att_b.read_text())["payload"]))
    stmt["subject"][-1]["digest"]["sha256"] = "0" * 64
    forged = tmp_path / "forged.json"
    attest.write(forged, sign.load_key(Path(b.env["ONLYDOCKER_SIGNING_KEY"])), stmt)
    r, failed = _verify(world, tmp_path, [a.pub, b.pub], [att_a, forged], "other-bytes")
    assert f"DISAGREED     {_keyid(b.pub)}  1{attest.SUFFIX}: other bytes for {stmt['subject'][-1]['name']}" \
        in r.stdout
    assert list(failed.values()) == [f"TOO-FEW       1 of 2 required  agreed: {_keyid(a.pub)}; missing: none; "
                                     f"disagreed: {_keyid(b.pub)}"], r.stdout


# --- refusals: one line, before anything is fetched or built -------------------------

def _resign(world, tmp_path, edit) -> Path:
    """A copy of the release whose provenance `edit` changed, signed again
    with the release key (so only the provenance is wrong)."""
    rel = tmp_path / "release"
    shutil.copytree(world["release"], rel)
    data = edit((rel / rebuild.STATEMENT).read_bytes())
    (rel / rebuild.STATEMENT).write_bytes(data)
    env = sign.dsse_sign(sign.load_key(world["pub"].key), data, provenance.PAYLOAD_TYPE)
    (rel / rebuild.ENVELOPE).write_text(json.dumps(env))
    return rel


def _refused(world, release: Path, ws=None):
    ws = ws or world["b"]
    r = ws.doit("rebuild", "--release-key", str(world["pub"].key) + ".pub", str(release), check=False)
    assert r.returncode == 2, r.stdout + r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "material" not in r.stdout and "building" not in r.stdout, r.stdout
    return r.stderr.strip()


def test_a_release_whose_signature_does_not_verify_is_refused(world, rebuilt, tmp_path):
    rel = tmp_path / "release"
    shutil.copytree(world["release"], rel)
    sums = (rel / "SHA256SUMS").read_text()
    (rel / "SHA256SUMS").write_text(sums.replace(sums[:8], "00000000", 1))
    assert _refused(world, rel) == (f"error: refused: release {rel}: SHA256SUMS.minisig does not verify with "
                                    f"the release key: signature does not match the file")


def test_a_malformed_provenance_is_refused(world, rebuilt, tmp_path):
    def drop_lock(data: bytes) -> bytes:
        st = json.loads(data)
        del st["predicate"]["buildDefinition"]["externalParameters"]["lock"]
        return json.dumps(st).encode()
    assert _refused(world, _resign(world, tmp_path, drop_lock)) == \
        "error: refused: malformed provenance: no 'lock' where a statement of this pipeline has one"


def test_a_commit_this_repository_does_not_have_is_refused(world, rebuilt, tmp_path):
    def other_commit(data: bytes) -> bytes:
        st = json.loads(data)
        st["predicate"]["buildDefinition"]["externalParameters"]["source"]["git_commit"] = "b" * 40
        return json.dumps(st).encode()
    assert _refused(world, _resign(world, tmp_path, other_commit)) == (
        f"error: refused: the release names commit {'b' * 40}, which this repository does not have "
        f"(`git fetch` the repository that built it, or clone it)")


def test_a_checkout_at_another_commit_is_told_which_to_check_out(world, rebuilt, tmp_path):
    ws = world["b"]
    commit = _git(ws.root, "rev-parse", "HEAD")
    (ws.root / "NOTES").write_text("later\n")
    _git(ws.root, "add", "NOTES")
    _git(ws.root, "commit", "-q", "-m", "later")
    try:
        line = _refused(world, world["release"], ws)
    finally:
        _git(ws.root, "reset", "-q", "--hard", commit)
    assert line.startswith(f"error: refused: the release was built from commit {commit}; this checkout is at ")
    assert f"`git switch --detach {commit}`" in line


def test_a_material_nobody_has_is_named_with_where_it_was_looked_for(world, rebuilt, tmp_path):
    ws = world["b"]
    env = dict(ws.env, ONLYDOCKER_CACHE=str(tmp_path / "empty-cache"))
    r = subprocess.run([sys.executable, "-m", "doit", "rebuild", "--release-key", str(world["pub"].key) + ".pub",
                        "--legal-info", str(tmp_path / "no-legal-info"), str(world["release"])],
                       cwd=ws.root, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    url = f"{world['server'].url}/gone/tiny.txt"
    [line] = [l for l in r.stderr.splitlines() if l.startswith("error: material")]
    assert line.startswith("error: material tiny-src (tiny.txt, sha256 ") and ": nobody has it; looked in the cache (" in line
    assert f"{tmp_path / 'no-legal-info' / 'sources' / 'tiny.txt'}: absent" in line
    assert f"{url}: HTTP 404 Not Found" in line
    assert "building" not in r.stdout and not (ws.out(world["lane"]) / "rebuild" / "work").exists()
