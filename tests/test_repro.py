"""`doit repro` catches a stage that is not reproducible and explains why,
and passes a stage that is."""
from __future__ import annotations

import json

import pytest

from tests import workspace as wsmod
from tests.conftest import require_tool

pytestmark = pytest.mark.docker


@pytest.fixture
def lane(tmp_path, docker_client):
    ws = wsmod.make(tmp_path / "ws")
    (ws.root / "test.lock").write_text(wsmod.builder_tables())
    for name, script in {
        # Writes what the build's conditions are: the date, the host name,
        # the user, the umask, the time zone. Every one differs in repro.
        "leaky": 'set -eu\n{ date; hostname; id -u; umask; echo "$TZ"; } > /build/out/stamp\n'
                 'echo same > /build/out/steady\n',
        "steady": "set -eu\nprintf 'built at %s\\n' \"$SOURCE_DATE_EPOCH\" > /build/out/stamp\n",
    }.items():
        d = ws.root / "stages" / name
        d.mkdir(parents=True)
        (d / "stage.toml").write_text(f'description = "{name}"\noutputs = ["stamp"]\n')
        (d / "build.sh").write_text(script)
    return ws


def test_a_reproducible_stage_passes(lane):
    # Two stages at once in each build (doit's -n), as CI's repro of the lane.
    r = lane.doit("repro", "-n", "2", "--lock", "test.lock", "steady", check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count(" -n 2 ") == 2, r.stdout     # both builds
    report = json.loads((lane.out(wsmod.lane_name()) / "repro" / "report.json").read_text())
    assert report["identical"] is True
    assert [row["artifact"] for row in report["rows"]] == ["stages/steady/stamp"]


def test_a_stage_that_writes_the_date_is_caught_and_explained(lane, tmp_path):
    require_tool("diffoscope")
    r = lane.doit("repro", "--lock", "test.lock", "--junit", str(tmp_path / "repro.xml"), "leaky", check=False)
    assert r.returncode == 1, r.stdout + r.stderr
    # The JUnit report: one case per output, the difference failed with its diffoscope report.
    import xml.etree.ElementTree as ET
    cases = {tc.get("name"): tc.find("failure") for tc in ET.parse(tmp_path / "repro.xml").iter("testcase")}
    assert set(cases) == {"stamp", "steady"} and cases["steady"] is None
    assert cases["stamp"].get("message").startswith("stages/leaky/stamp: first ")
    assert "stages__leaky__stamp.diffoscope.html" in cases["stamp"].text
    assert "stages/leaky/stamp" in r.stdout and "NO" in r.stdout
    report_dir = lane.out(wsmod.lane_name()) / "repro"
    report = json.loads((report_dir / "report.json").read_text())
    rows = {row["artifact"]: row["same"] for row in report["rows"]}
    assert rows == {"stages/leaky/stamp": False, "stages/leaky/steady": True}
    [explained] = report["diffoscope"]
    text = open(explained["text"]).read()
    assert explained["exit"] == 1 and "stamp" in text
    # the report shows the varied conditions themselves
    assert "repro-other-host" in text
    assert (report_dir / "stages__leaky__stamp.diffoscope.html").exists()


def test_repro_refuses_a_number_of_stages_at_once_below_one(lane):
    r = lane.doit("repro", "-n", "0", "--lock", "test.lock", check=False)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: -n 0: the number of stages at once is 1 or more"], r.stderr
