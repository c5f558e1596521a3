"""One exception type per failure a user can act on.

Every message names what went wrong and where (file, entry, field, URL,
stage) and, where there is one, what to do next.
"""


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


class UnsafeArchive(OnlyDockerError):
    """An archive member would escape its directory or is not allowed."""


class EngineError(OnlyDockerError):
    """No Docker engine answers, or the engine refused a request."""


class BuildError(OnlyDockerError):
    """A stage's build failed; its log is kept."""


class SigningError(OnlyDockerError):
    """A key is missing or unreadable, or a signature does not verify."""
