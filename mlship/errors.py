"""The one error family core code raises; the CLI turns it into `error:`/`hint:` lines."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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


@contextmanager
def bundle_errors(bundle_dir: str | os.PathLike[str]) -> Iterator[None]:
    """Turn the bundle contract's BundleLoadError (mlship/runtime/_contract.py: stdlib-only, message only) into a
    BundleError with a hint, for host code reading a bundle: `with bundle_errors(path): bundle = read(path)`."""
    from .runtime._contract import MANIFEST_NAME, BundleLoadError

    try:
        yield
    except BundleLoadError as exc:
        if not (Path(bundle_dir) / MANIFEST_NAME).is_file():
            hint = "pass the directory `mlship package` wrote (e.g. dist/iris)"
        else:
            hint = "package the notebook again with this version of mlship"
        raise BundleError(exc.message, hint=hint) from None
