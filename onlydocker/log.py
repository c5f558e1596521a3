"""What the project says to the person at the terminal, besides doit's own
lines: progress of long work (the builder, fetches, the remote cache,
engines) and errors, in one line each, on standard error. One small layer
over stdlib logging, as mkosi's log.py is: every module says things the
same way, and a caller (a test, a tool embedding the build) can take them
with logging's own means (the "onlydocker" logger).

The text is the message as written: `say("resolved 220 packages", "builder")`
prints `builder: resolved 220 packages`; `error(...)` prints `error: ...`.
"""
from __future__ import annotations

import logging
import sys

logger = logging.getLogger("onlydocker")


class _Stderr(logging.StreamHandler):
    """Standard error as it is when a line is written: doit and pytest
    replace sys.stderr after this module is imported. A line is flushed as
    it is written (StreamHandler does), so progress shows at once."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:       # StreamHandler's own __init__ sets it
        pass


if not logger.handlers:
    _handler = _Stderr()
    _handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(_handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False        # a root logger configured elsewhere does not print it twice


def say(text: str, part: str | None = None) -> None:
    """One line of progress, `part: text` when a part is named."""
    logger.info(f"{part}: {text}" if part else text)


def warning(text: str) -> None:
    logger.warning(f"warning: {text}")


def error(text: str) -> None:
    """One line saying why a command or a task failed."""
    logger.error(f"error: {text}")
