"""progress.Heartbeat: a silent stretch still shows signs of life, with the
latest line when one came, and stops when the block ends."""
import time

from onlydocker.progress import Heartbeat


def _until(cond, limit=10.0):
    end = time.monotonic() + limit
    while not cond():
        assert time.monotonic() < end, "no beat in time"
        time.sleep(0.01)


def test_says_the_latest_line_then_still_running_then_stops():
    said = []
    with Heartbeat(said.append, every=0.1) as beat:
        beat.note("first")
        beat.note("CC kernel/fork.o")
        _until(lambda: said)
        _until(lambda: len(said) >= 2)
    count = len(said)
    time.sleep(0.3)
    assert said[0].endswith("] CC kernel/fork.o"), said
    assert said[1].endswith("] still running"), said
    assert len(said) == count, "it went on after the block ended"
