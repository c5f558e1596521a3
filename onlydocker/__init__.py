"""Only Docker: a reproducible build of a kernel, BusyBox and Docker as PID 1."""

__version__ = "0.1.0"
