"""JUnit XML reports of `doit verify` and `doit repro` (--junit PATH): what
CI's test reporters read, one case per check, a failure with its message."""
from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET

from onlydocker.cli import junit
from tests.test_commands import BODY, setup_lane


def _cases(path) -> dict[str, str | None]:
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    [suite] = root.findall("testsuite")
    cases = {}
    for tc in suite.findall("testcase"):
        failure = tc.find("failure")
        cases[f"{tc.get('classname')}/{tc.get('name')}"] = None if failure is None else failure.get("message")
    assert int(suite.get("tests")) == len(cases)
    assert int(suite.get("failures")) == sum(v is not None for v in cases.values())
    return cases


def test_the_same_findings_give_the_same_bytes_and_text_is_escaped():
    cases = [junit.Case("artifacts", "sha256: a<b>&c"), junit.Case("sources", "x", 'CORRUPT "x"', "both hashes")]
    one = junit.render("doit verify t", cases)
    assert one == junit.render("doit verify t", list(cases))
    assert b"a&lt;b&gt;&amp;c" in one and one.startswith(b"<?xml")


def test_verify_writes_one_case_per_check_and_a_failure_per_problem(tmp_path, httpserver):
    ws = setup_lane(tmp_path, httpserver, pinned=True)
    ws.doit("lock=t.lock", "build:fetch:src")
    report = tmp_path / "reports" / "verify.xml"
    ok = ws.doit("verify", "--lock", "t.lock", "--junit", str(report), check=False)
    cases = _cases(report)
    assert cases["sources/src"] is None and f"verify: JUnit report {report}" in ok.stdout
    # The same failures in the report as on the console, and the exit code.
    assert ok.returncode == (1 if any(cases.values()) else 0)
    cached = tmp_path / "cache" / "sources" / "sha256" / hashlib.sha256(BODY).hexdigest()
    cached.write_bytes(b"bit rot" + BODY[7:])
    bad = ws.doit("verify", "--lock", "t.lock", "--junit", str(report), check=False)
    cases = _cases(report)
    assert bad.returncode == 1 and cases["sources/src"].startswith("CORRUPT src")
    assert hashlib.sha256(BODY).hexdigest() in cases["sources/src"]
