"""Signs of life during long work. A kernel build under `make -s` or the
initrd's zstd -19 can be silent for minutes; a user watching `doit` should
still see, every half minute, that the stage is alive and what it last said,
without the whole build log scrolling past (that is in out/<lane>/logs/)."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Heartbeat:
    """Calls `say` every `every` seconds while the block runs: with the latest
    line given to note() when one came since, else "still running"."""

    def __init__(self, say: Callable[[str], None], every: float = 30.0):
        self._say = say
        self._every = every
        self._latest: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)
        self.started = time.monotonic()

    def note(self, line: str) -> None:
        with self._lock:
            self._latest = line

    def _loop(self) -> None:
        while not self._stop.wait(self._every):
            with self._lock:
                line, self._latest = self._latest, None
            elapsed = time.monotonic() - self.started
            self._say(f"[{elapsed:5.0f} s] {line[:150] if line is not None else 'still running'}")

    def __enter__(self) -> Heartbeat:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def for_stage(name: str) -> Heartbeat:
    """A stage's heartbeat: each line starts with the stage's name."""
    return Heartbeat(lambda text: print(f"{name} {text}", flush=True))
