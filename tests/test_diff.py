"""`doit diff A B` on two small dist folders of a test's own (an SBOM as
sbom.py writes it, and SHA256SUMS), run for real as a doit command."""
from __future__ import annotations

import json

from tests import workspace as wsmod


def _dist(path, linux: str, extra_pkg: bool, busybox: str, vmlinuz: bytes):
    path.mkdir(parents=True)
    (path / "vmlinuz").write_bytes(vmlinuz)
    (path / "SHA256SUMS").write_text(f"{'a' * 64 if vmlinuz == b'k' else 'b' * 64}  vmlinuz\n")
    pkgs = [{"SPDXID": "SPDXRef-Source-linux", "name": "linux", "versionInfo": linux},
            {"SPDXID": "SPDXRef-Stage-kernel", "name": "stage kernel"},
            {"SPDXID": "SPDXRef-BuildTool-gcc", "name": "gcc", "versionInfo": "12"}]
    if extra_pkg:
        pkgs.append({"SPDXID": "SPDXRef-Source-tini", "name": "tini", "versionInfo": "0.19"})
    files = [{"fileName": "./bin/busybox", "checksums": [{"algorithm": "SHA256", "checksumValue": busybox}]},
             {"fileName": "./init", "checksums": [{"algorithm": "SHA256", "checksumValue": "c" * 64}]}]
    (path / "onlydocker.spdx.json").write_text(json.dumps({"packages": pkgs, "files": files}))
    return path


def test_diff_says_packages_sizes_and_image_files_and_json(tmp_path):
    ws = wsmod.make(tmp_path / "ws")
    _dist(ws.root / "a", "6.1.170", False, "1" * 64, b"k")
    _dist(ws.root / "b", "6.1.176", True, "2" * 64, b"kk" * 600)
    text = ws.doit("diff", "a", "b/SHA256SUMS").stdout
    assert "  package linux: 6.1.170 -> 6.1.176" in text and "  package tini: added (0.19)" in text
    assert "gcc" not in text and "stage kernel" not in text
    assert "  vmlinuz: changed, 1 B -> 1.2 kB (+1.2 kB)" in text
    assert "image files: 1 changed, 0 added, 0 removed\n  ~ bin/busybox" in text
    d = json.loads(ws.doit("diff", "--json", "a", "b").stdout)
    assert d["packages"]["changed"] == [{"name": "package linux", "old": "6.1.170", "new": "6.1.176"}]
    assert d["files"]["changed"] == ["bin/busybox"] and d["artifacts"][0]["new_size"] == 1200
    same = ws.doit("diff", "-d", str(ws.root), "a", "a").stdout
    assert "packages: the same" in same and "image files: the same" in same


def test_diff_bad_input_is_one_error_line(tmp_path):
    ws = wsmod.make(tmp_path / "ws")
    _dist(ws.root / "a", "1", False, "1" * 64, b"k")
    (ws.root / "b").mkdir()
    for args in (("a",), ("a", "nowhere"), ("a", "b")):
        r = ws.doit("diff", *args, check=False)
        assert r.returncode == 2 and r.stderr.startswith("error:") and r.stderr.count("\n") == 1, r.stderr
