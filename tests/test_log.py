"""The one layer the project's messages go through (onlydocker/log.py)."""
from __future__ import annotations

import logging
import subprocess
import sys

from onlydocker import log


def test_messages_are_one_line_each_on_the_standard_error_of_the_moment(capsys):
    log.say("resolved 220 packages in 12 s", "builder")
    log.say("plain")
    log.warning("could not write the run record")
    log.error("stage kernel failed")
    out, err = capsys.readouterr()
    assert out == ""
    assert err == ("builder: resolved 220 packages in 12 s\nplain\nwarning: could not write the run record\n"
                   "error: stage kernel failed\n")


def test_a_root_logger_configured_elsewhere_does_not_print_them_twice():
    code = ("import logging; logging.basicConfig(level=logging.INFO)\n"
            "from onlydocker import log; log.say('once', 'engine')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == "engine: once\n", r.stderr


def test_a_caller_can_take_the_messages_with_logging_s_own_means():
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    keep = Keep()
    logging.getLogger("onlydocker").addHandler(keep)
    try:
        log.say("taken", "remote cache")
    finally:
        logging.getLogger("onlydocker").removeHandler(keep)
    assert seen == ["remote cache: taken"]
