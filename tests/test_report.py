"""What a user sees when something fails: one line, once, never a
traceback or a function's repr (the traceback goes to a log, named)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests import workspace as wsmod

pytestmark = pytest.mark.docker


@pytest.fixture
def lane(tmp_path, docker_client):
    ws = wsmod.make(tmp_path / "ws")
    ws.env["ONLYDOCKER_STAGE_CACHE"] = str(tmp_path / "stage-cache")
    (ws.root / "test.lock").write_text(wsmod.builder_tables())
    wsmod.add_stage(ws.root, "other", 'description = "other"\noutputs = ["other"]\n', "echo other > /build/out/other\n")
    ws.lane = wsmod.lane_name()
    return ws


def test_an_unexpected_error_in_a_stage_is_one_line_naming_the_log(lane, tmp_path):
    # The stage cache's folder of locks is a file: taking the stage's lock
    # fails with an OSError that none of our checks foresee (a cache folder
    # that cannot be written at all is a read-only cache: built, not stored).
    (tmp_path / "stage-cache").mkdir()
    blocker = tmp_path / "stage-cache" / "locks"
    blocker.write_text("not a folder")
    r = lane.doit("lock=test.lock", "build:other", check=False)
    text = r.stdout + r.stderr
    assert r.returncode != 0
    log = lane.out(lane.lane) / "logs" / "other.log"
    lines = [line for line in text.splitlines() if line.startswith("error:")]
    assert lines == [f"error: stage other: unexpected FileExistsError: [Errno 17] File exists: "
                     f"'{blocker}' (traceback in {log})"], text
    assert "Traceback" not in text and "<function" not in text and "PythonAction" not in text, text
    assert "Traceback (most recent call last)" in log.read_text()


def test_an_error_while_deciding_up_to_date_is_one_line_naming_the_log(lane):
    # out/<lane>/stages is a file: deciding whether a stage is up to date fails.
    lane.doit("lock=test.lock", "build:builder")
    stages = lane.out(lane.lane) / "stages"
    stages.mkdir(parents=True, exist_ok=True)
    stages.rmdir()
    stages.write_text("not a folder")
    r = lane.doit("lock=test.lock", "build:other", check=False)
    text = r.stdout + r.stderr
    assert r.returncode != 0
    assert "Traceback" not in text and "<function" not in text, text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    log = lane.out(lane.lane) / "logs" / "other.log"
    assert len(errors) == 1 and "unexpected NotADirectoryError" in errors[0], text
    assert errors[0].endswith(f"(traceback in {log})")


def test_a_stage_not_run_because_another_failed_is_one_line(lane):
    (lane.root / "stages" / "other" / "build.sh").write_text("echo 'it broke'; exit 3\n")
    wsmod.add_stage(lane.root, "pkg", 'description = "pkg"\nneeds = ["other"]\noutputs = ["x"]\n',
                    "echo x > /build/out/x\n")
    r = lane.doit("--continue", "lock=test.lock", check=False)
    text = r.stdout + r.stderr
    assert r.returncode != 0
    assert "not run: build:pkg (it needs build:other, which failed)" in text, text
    assert text.count("stage other failed") == 1, text
    assert "TaskError" not in text and "TaskFailed" not in text and "<function" not in text, text


def test_a_closed_pipe_ends_the_command_quietly(lane):
    # `true` exits at once without reading: doit's first write meets a
    # closed pipe, as `doit list | head` does once head has its lines.
    for command in ("list --all lock=test.lock", "verify --lock test.lock"):
        subprocess.run(f"{sys.executable} -m doit {command} 2>err.txt | true", shell=True,
                       cwd=lane.root, env=lane.env)
        err = (lane.root / "err.txt").read_text()
        assert "BrokenPipeError" not in err and "Traceback" not in err, (command, err)
