"""Load a bundle to serve it: the contract's checks (_contract.read), then this runtime's, then its predictor.py.

What a bundle holds, and every check of its files, is the contract's (docs/BUNDLE.md, _contract.py); this module
adds what only the serving side can know: whether this Python and this runtime can run it, and its methods.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from . import RUNTIME_VERSION
from ._boot import VerifiedImporter, code_roots, install
from ._contract import (
    PREDICTOR_NAME,
    Bundle,
    BundleLoadError,
    Golden,
    InputSchema,
    Manifest,
    read,
    read_checked,
)

__all__ = ["BundleLoadError", "LoadedBundle", "PREDICTOR_MODULE", "load_bundle", "read_servable"]

# The module name predictor.py is imported under (BUNDLE.md "predictor.py").
PREDICTOR_MODULE = "mlship_predictor"


@dataclass(frozen=True)
class LoadedBundle:
    """A bundle ready to serve: its checked manifest and golden cases, and its callables by method name."""

    path: Path
    manifest: Manifest
    golden: Golden
    methods: dict[str, Callable[[Any], Any]]

    @property
    def schema(self) -> InputSchema:
        return self.manifest.input


def load_bundle(path: str | os.PathLike[str]) -> LoadedBundle:
    """Check everything about the bundle at `path`, then import its predictor.py; raise BundleLoadError if
    not.

    Order matters: every digest and the Python version are checked before predictor.py runs (and so before
    anything is unpickled), so a damaged or foreign bundle is refused without executing any of it.
    """
    bundle = read_servable(path)
    methods = _import_methods(bundle, bundle.manifest.method_names)
    return LoadedBundle(bundle.path, bundle.manifest, bundle.golden, methods)


def read_servable(path: str | os.PathLike[str]) -> Bundle:
    """The bundle's files read and checked (_contract.read), and refused unless this runtime and this Python
    can serve it. Nothing is imported."""
    bundle = read(path)
    _check_runtime(bundle.manifest)
    return bundle


def _check_runtime(manifest: Manifest) -> None:
    if manifest.runtime_version != RUNTIME_VERSION:
        raise BundleLoadError(
            f"the bundle was made for mlship runtime version {manifest.runtime_version!r}, "
            f"but its mlship_runtime is version {RUNTIME_VERSION!r}"
        )
    recorded, ours = manifest.python, sys.version_info
    if recorded.minor != (ours.major, ours.minor):
        # Pickles of numpy, scikit-learn and friends do not travel across Python minor versions.
        major, minor = recorded.minor
        raise BundleLoadError(
            f"the bundle was packaged with Python {recorded.version} and must be served by Python "
            f"{major}.{minor}, but this is Python {ours.major}.{ours.minor}.{ours.micro}; its pickled "
            "values would not load"
        )


def _import_methods(bundle: Bundle, names: list[str]) -> dict[str, Callable[[Any], Any]]:
    """Run predictor.py from the bytes whose digest is checked here (never through a loader that would trust a
    `__pycache__`), with the notebook's modules in code/ importable only from their checked sources."""
    predictor = bundle.file(PREDICTOR_NAME)
    artifacts = bundle.manifest.artifacts
    source = read_checked(bundle.path, PREDICTOR_NAME, artifacts)
    sys.dont_write_bytecode = True
    roots = code_roots(artifacts)
    if roots:
        install(VerifiedImporter(bundle.path, artifacts, roots))
    module = ModuleType(PREDICTOR_MODULE)
    module.__file__ = str(predictor)
    # Registered before it runs, as importlib's recipe says: dataclasses and pickle look classes up there.
    sys.modules[PREDICTOR_MODULE] = module
    try:
        exec(compile(source, str(predictor), "exec", dont_inherit=True), module.__dict__)
    except Exception as exc:
        del sys.modules[PREDICTOR_MODULE]
        raise BundleLoadError(
            f"{predictor.name} failed to import{_where(exc, predictor)}: {type(exc).__name__}: {exc}"
        ) from exc
    found = getattr(module, "METHODS", None)
    if not isinstance(found, dict):
        raise BundleLoadError(f"{predictor.name} defines no METHODS dict")
    missing = [name for name in names if not callable(found.get(name))]
    if missing:
        raise BundleLoadError(
            f"mlship.json lists methods {', '.join(missing)} that {predictor.name}'s METHODS "
            f"lacks (it has: {', '.join(map(str, found)) or 'none'})"
        )
    return {name: found[name] for name in names}


def _where(exc: BaseException, predictor: Path) -> str:
    # The line of predictor.py that failed says more than the frames deep inside a library.
    lines = [
        frame.lineno for frame in traceback.extract_tb(exc.__traceback__) if frame.filename == str(predictor)
    ]
    return f" (line {lines[-1]})" if lines else ""
