"""One exception type per failure a user can act on.

Every message names what went wrong and where (file, entry, field, URL,
stage) and, where there is one, what to do next.
"""
import errno
import os
import shutil


class OnlyDockerError(Exception):
    """Base of every error the pipeline reports to a user."""


class LockError(OnlyDockerError):
    """A lock file is malformed; nothing has run."""

    def __init__(self, path, entry, field, problem):
        self.path, self.entry, self.field, self.problem = path, entry, field, problem
        where = f"{path}"
        if entry is not None:
            where += f": source {entry!r}"
        if field is not None:
            where += f", field {field!r}"
        super().__init__(f"{where}: {problem}")


class ConfigError(OnlyDockerError):
    """A setting (environment, config file) is missing or wrong."""


class HashMismatch(OnlyDockerError):
    """Bytes did not match their pin; they were moved aside, never cached."""

    def __init__(self, what, algorithm, expected, actual, kept_at=None):
        self.what, self.algorithm = what, algorithm
        self.expected, self.actual, self.kept_at = expected, actual, kept_at
        msg = f"{what}: {algorithm} mismatch: expected {expected}, got {actual}"
        if kept_at:
            msg += f" (bytes kept for inspection at {kept_at})"
        super().__init__(msg)


class FetchError(OnlyDockerError):
    """No URL gave the pinned bytes; lists every URL tried and why."""


class UnpinnedSource(OnlyDockerError):
    """A source has no sha256/size yet: `doit lock` must pin it first."""


class StageError(OnlyDockerError):
    """A stage folder is wrong (its stage.toml, its shape, a need, a cycle): nothing has run."""


class LegalInfoError(OnlyDockerError):
    """`doit legal-info` cannot assemble its folder from the lane (a patch
    series names a missing file, a source is unpinned, a license file
    cannot be written); nothing is left half-written."""


class UnsafeArchive(OnlyDockerError):
    """An archive member would escape its directory or is not allowed."""


class EngineError(OnlyDockerError):
    """No Docker engine answers, or the engine refused a request."""


class BuildError(OnlyDockerError):
    """A stage's build failed; its log is kept."""


class SigningError(OnlyDockerError):
    """A key is missing or unreadable, or a signature does not verify."""


class MachineError(OnlyDockerError):
    """The machine, not the data: a full disk, a read-only or vanished
    folder, a permission refused on our own folders. Nothing is blamed on a
    cache entry for it; the next run completes once the machine is fixed."""


# The errnos that say "this machine's file system", never "these bytes".
MACHINE_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOENT: "no such file or directory (the folder vanished?)",
}
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


def machine_cause(e: BaseException | None) -> OSError | None:
    """The OSError of the machine behind `e` (itself, or what it was raised
    from or during), or None when `e` is no such error."""
    seen = 0
    while e is not None and seen < 8:
        if type(e).__module__.split(".")[0] in ("requests", "urllib3", "docker") or isinstance(e, ConnectionError):
            return None       # a server or an engine, not this machine's files (a socket's ENOENT)
        if isinstance(e, OSError) and e.errno in MACHINE_ERRNOS:
            return e
        # What the error was raised from, or during unless said otherwise (`from None`).
        e = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
        seen += 1
    return None


def _mount_point(path) -> str:
    """The mount point of the file system `path` is (or would be) on."""
    probe = os.path.abspath(os.fspath(path))
    while not os.path.isdir(probe) or not os.path.ismount(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    return probe


def human_bytes(n: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def machine_error(e: OSError, path=None, doing: str = "", need: int | None = None,
                  advice: bool = True) -> MachineError:
    """One line for an OSError of the machine: what was being done, the
    path, why, and (a full disk) how much space there is and was needed."""
    path = path or e.filename
    why = MACHINE_ERRNOS.get(e.errno) or (e.strerror or str(e))
    text = f"{doing + ': ' if doing else ''}{path}: {why} (errno {e.errno})"
    if e.errno in NO_SPACE and path is not None:
        probe = _mount_point(path)
        try:
            free = shutil.disk_usage(probe).free
            text += f"; {human_bytes(free)} free on {probe}"
        except OSError:
            pass
        if need:
            text += f", about {human_bytes(need)} needed"
        if advice:
            text += "; make room and run again (the cache entries are kept)"
    elif e.errno in NOT_WRITABLE and advice:
        text += "; a folder this run must write into is not writable"
    return MachineError(text)


def check_free(dest, need: int | None, what: str) -> None:
    """Refuse before starting when `dest`'s file system has less than
    `need` bytes free (unknown `need`: no check)."""
    if not need:
        return
    probe = _mount_point(dest)
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return
    if free < need:
        raise MachineError(f"{what} needs about {human_bytes(need)}; {human_bytes(free)} free on {probe}: "
                           f"make room and run again (the cache entries are kept)")
