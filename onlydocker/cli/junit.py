"""JUnit XML reports (`--junit PATH` of `doit verify` and `doit repro`): one
test case per check or artifact, with the failure's message, in the format
that Jenkins, GitLab and GitHub's test reporters read. Written atomically,
with sorted, stable content: the same findings give the same bytes."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from .. import atomic


@dataclass(frozen=True)
class Case:
    classname: str          # the group: "sources", "artifacts", "stages/kernel", ...
    name: str               # the thing checked
    failure: str | None = None      # None: passed
    detail: str = ""        # the failure's longer text (a report's path, both hashes)


def render(suite: str, cases: list[Case]) -> bytes:
    failures = sum(c.failure is not None for c in cases)
    root = ET.Element("testsuites", name=suite, tests=str(len(cases)), failures=str(failures), errors="0")
    ts = ET.SubElement(root, "testsuite", name=suite, tests=str(len(cases)), failures=str(failures),
                       errors="0", skipped="0")
    for c in cases:
        tc = ET.SubElement(ts, "testcase", classname=c.classname, name=c.name)
        if c.failure is not None:
            f = ET.SubElement(tc, "failure", message=c.failure, type="failure")
            f.text = c.detail or c.failure
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def write(path: Path, suite: str, cases: list[Case]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(path, render(suite, cases))
