"""The one error family core code raises; the CLI turns it into `error:`/`hint:` lines."""

from __future__ import annotations


class MlshipError(Exception):
    """A user-facing failure: a message naming the thing, and a hint saying what to do next."""

    def __init__(self, message: str, *, hint: str | None = None, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class NotebookError(MlshipError):
    """The notebook cannot be read, or one of its cells failed."""


class ExtractionError(MlshipError):
    """Nothing (or too much) to serve was found, or it cannot be captured."""


class BundleError(MlshipError):
    """A bundle is missing, damaged, or failed verification."""


class BuildError(MlshipError):
    """A build target failed."""


class DockerUnavailable(BuildError):
    """No Docker daemon is reachable."""
