"""House rules that keep one implementation per job: a test fails naming the
module that grows a second one."""
from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "onlydocker"


def test_dist_s_file_names_are_spelt_in_paths_py_only():
    # A file name as a string literal: "SHA256SUMS", 'provenance.intoto.json', ...
    literal = re.compile(r"""["'](SHA256SUMS(\.minisig)?|provenance\.intoto(\.dsse)?\.json|onlydocker\.spdx\.json)["']""")
    found = [f"{p.name}:{n}" for p in sorted(PACKAGE.rglob("*.py")) if p.name != "paths.py"
             for n, line in enumerate(p.read_text().splitlines(), 1) if literal.search(line)]
    assert found == [], f"dist/'s file names belong to paths.py; spelt again in {found}"


def test_out_lane_paths_are_made_by_paths_py():
    # `settings.out_root / lane / "dist"` and the like bypass LanePaths.
    by_hand = re.compile(r"""out_root\s*/\s*[\w.]+\s*/\s*["']""")
    found = [f"{p.name}:{n}" for p in sorted(PACKAGE.rglob("*.py"))
             for n, line in enumerate(p.read_text().splitlines(), 1) if by_hand.search(line)]
    assert found == [], f"out/<lane>/... is LanePaths' (paths.py); made by hand in {found}"


def test_messages_go_through_log_py():
    # print(..., file=sys.stderr) anywhere else is a second way to say things.
    found = [f"{p.name}:{n}" for p in sorted(PACKAGE.rglob("*.py")) if p.name != "log.py"
             for n, line in enumerate(p.read_text().splitlines(), 1) if "file=sys.stderr" in line]
    assert found == [], f"messages to the user go through onlydocker/log.py; printed directly in {found}"
