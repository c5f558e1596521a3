"""`doit explain` on the tiny lane of test_stages.py, built for real: the
inputs behind each key are recorded when it is made, and explain says which
changed (a patch, a file of the stage, a needed stage), that outputs in out/
were changed, or that a known key would be restored."""
from __future__ import annotations

import json

import pytest

from tests.test_stages import PATCH, tiny  # noqa: F401  (the fixture)

pytestmark = pytest.mark.docker


def _lines(ws, *stages) -> dict[str, str]:
    r = ws.doit("explain", "lock=test.lock", *stages)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    return {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in r.stdout.splitlines()}


def test_explain_says_why_each_stage_would_not_be_up_to_date(tiny):  # noqa: F811
    out = tiny.out(tiny.lane)
    never = _lines(tiny)
    assert never["hello"].startswith("never made in this tree") and never["hello"].endswith("would be built")
    assert "after hello" in never["pkg"] and set(never) == {"hello", "pkg", "other"}

    tiny.doit("lock=test.lock")
    inputs = json.loads((out / "stages" / "hello.inputs.json").read_text())
    assert "hello" in inputs["sources"] and "0001-greeting.patch" in "".join(inputs["patches"])
    r = tiny.doit("explain", "lock=test.lock")
    assert r.stdout == f"lane {tiny.lane}: every stage is up to date in {out}\n" and r.returncode == 0
    assert _lines(tiny, "pkg") == {"pkg": "up to date"}

    # A changed patch: its stage says which, its user waits on it.
    patch = tiny.root / "patches" / "hello" / "1.0" / "0001-greeting.patch"
    original = patch.read_text()
    patch.write_text(PATCH % "hello, explained")
    said = _lines(tiny)
    assert said["hello"].startswith("patch hello/0001-greeting.patch changed (") and "would be built" in said["hello"]
    assert "after hello" in said["pkg"] and "other" not in said
    patch.write_text(original)

    # A file of the stage, built once: back to it, the key is known and restored.
    script = tiny.root / "stages" / "other" / "build.sh"
    before = script.read_text()
    script.write_text(before.replace("echo other", "echo another"))
    assert _lines(tiny)["other"].startswith("file build.sh changed (")
    tiny.doit("lock=test.lock", "build:other")
    script.write_text(before)
    assert _lines(tiny)["other"].endswith("would be restored from the local cache")
    tiny.doit("lock=test.lock", "build:other")

    # Outputs changed by hand in out/: said, with the path.
    (out / "stages" / "other" / "other").write_text("edited\n")
    said = _lines(tiny)
    assert list(said) == ["other"] and "were changed since it was made (other: expected sha256" in said["other"]

    # A needed stage that comes back from the cache: its user is explained with those outputs.
    (out / "stages" / "hello.manifest.json").unlink()
    said = _lines(tiny)
    assert said["hello"].startswith("never made in this tree") and said["hello"].endswith("restored from the local cache")
    assert "pkg" not in said


def test_explain_bad_stage_is_one_error_line(tiny):  # noqa: F811
    r = tiny.doit("explain", "lock=test.lock", "nosuch", check=False)
    assert r.returncode == 1 and r.stderr.startswith("error: unknown stage(s) nosuch") and r.stderr.count("\n") == 1
