"""The pieces of `doit rebuild` and of `doit verify --rebuilders` that need
no engine: the provenance's checks, the checkout's, the comparison (with
diffoscope's summary), and the attestation's verdicts."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from onlydocker import sign
from onlydocker.cli import rebuild
from onlydocker.inputs import source_state
from onlydocker.publish import attest, provenance
from tests.conftest import require_tool

SHA = {"a.txt": "a" * 64, "b.txt": "b" * 64}


def _statement(**source) -> bytes:
    st = provenance.statement(subjects=SHA, materials=[{"name": "x", "uri": "https://x.invalid/x",
                                                        "digest": {"sha256": "c" * 64}}],
                              builder={"id": "t"}, stage_keys={}, lane="lane", epoch=0,
                              lock={"path": "t.lock", "digest": {"sha256": "d" * 64}},
                              source=source or {"git": None})
    return provenance.canonical_json(st)


def _repo(root: Path) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    root.mkdir()
    (root / "t.lock").write_text("lock\n")
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "x"]):
        subprocess.run(["git", "-C", str(root), *args], check=True, env=env, capture_output=True)
    return source_state.describe(root)["git_commit"]


def test_provenance_is_parsed_and_checked_against_the_sums():
    p = rebuild.parse_provenance(_statement(), SHA)
    assert p.lane == "lane" and p.lock["path"] == "t.lock" and p.source == {"git": None}
    with pytest.raises(rebuild.Refused, match="its subjects are not the artifacts of SHA256SUMS"):
        rebuild.parse_provenance(_statement(), {"a.txt": "a" * 64})
    with pytest.raises(rebuild.Refused, match=r"^malformed provenance: not JSON"):
        rebuild.parse_provenance(b"{", SHA)


def test_a_release_from_a_non_git_folder_is_refused(tmp_path):
    _repo(tmp_path / "r")
    p = rebuild.parse_provenance(_statement(), SHA)
    with pytest.raises(rebuild.Refused, match="built outside a git work tree: its provenance names no commit"):
        rebuild.check_checkout(tmp_path / "r", p)


def test_a_dirty_release_is_rebuilt_only_from_the_same_changes(tmp_path):
    commit = _repo(tmp_path / "r")
    (tmp_path / "r" / "extra").write_text("uncommitted\n")
    here = source_state.describe(tmp_path / "r")
    lock = {"git_commit": commit, "git_tree": here["git_tree"], "dirty": True}
    import hashlib
    digest = hashlib.sha256(b"lock\n").hexdigest()
    same = rebuild.parse_provenance(_statement(**lock, changes_sha256=here["changes_sha256"], changed=["extra"]), SHA)
    same = rebuild.Provenance(same.lane, {"path": "t.lock", "digest": {"sha256": digest}}, same.source,
                              same.materials, same.subjects)
    assert rebuild.check_checkout(tmp_path / "r", same)["dirty"] is True
    other = rebuild.Provenance(same.lane, same.lock, dict(same.source, changes_sha256="e" * 64),
                               same.materials, same.subjects)
    with pytest.raises(rebuild.Refused, match="with uncommitted changes .* those changes are in no repository; "
                                              "this checkout has other changes"):
        rebuild.check_checkout(tmp_path / "r", other)
    clean = rebuild.Provenance(same.lane, same.lock, {"git_commit": commit, "dirty": False},
                               same.materials, same.subjects)
    with pytest.raises(rebuild.Refused, match=r"has uncommitted changes \(extra\): the release was built clean"):
        rebuild.check_checkout(tmp_path / "r", clean)


def test_a_difference_is_one_line_with_diffoscope_s_summary_and_report(tmp_path):
    require_tool("diffoscope")
    rel_dir, rebuilt = tmp_path / "release", tmp_path / "rebuilt"
    for d, text in ((rel_dir, "same\nold line\n"), (rebuilt, "same\nnew line\n")):
        d.mkdir()
        (d / "a.txt").write_text(text)
        (d / rebuild.STATEMENT).write_bytes(b"{}\n")
    import hashlib
    sums = {"a.txt": hashlib.sha256(b"same\nold line\n").hexdigest()}
    rel = rebuild.Release(str(rel_dir), {rebuild.STATEMENT: b"{}\n"}, sums)
    rows = {r.name: r for r in rebuild.compare(rel, rebuilt, tmp_path / "reports", lambda _: None)}
    assert rows[rebuild.STATEMENT].same
    line = str(rows["a.txt"])
    assert line.startswith(f"DIFFERENT  a.txt  release {sums['a.txt']}, rebuilt ")
    assert "diffoscope: 2 changed line(s), first: -old line / +new line; report " in line
    assert Path(rows["a.txt"].report).is_file()


def test_the_verdict_counts_distinct_trusted_keys_and_never_the_release_key(tmp_path):
    keys = {n: sign.generate_key(tmp_path / n / "k") for n in ("rel", "a", "b")}
    pubs = {n: str(tmp_path / n / "k.pub") for n in keys}
    folder = tmp_path / "att"

    def att(name: str, signer: str, sums=SHA):
        stmt = attest.statement(sums, lane="l", sums_sha256="0" * 64, provenance_sha256="0" * 64,
                                release_keyid="X", source={}, lock={}, materials=[],
                                rebuilder_keyid=keys[signer].keyid)
        attest.write(folder / f"{name}{attest.SUFFIX}", keys[signer], stmt)
    att("a1", "a")
    att("a2", "a")                    # the same key twice counts once
    att("rel", "rel")                 # the release's own key is no rebuilder
    lines = attest.check(SHA, folder, attest.load_trusted([pubs["a"], pubs["rel"], pubs["a"]]), 2,
                         Path(pubs["rel"]).read_text())
    states = [l.state for l in lines]
    assert states == ["NOT-INDEPENDENT", "IGNORED", "AGREED", "TOO-FEW"], lines
    att("b", "b", {"a.txt": SHA["a.txt"]})
    lines = attest.check(SHA, folder, attest.load_trusted([pubs["a"], pubs["b"]]), 2)
    [b] = [l for l in lines if l.state == "DISAGREED"]
    assert b.detail.startswith(f"b{attest.SUFFIX}: does not name b.txt")
