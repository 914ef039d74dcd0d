"""Open a bundle directory (docs/BUNDLE.md), refusing it with the reason unless it can be served as recorded."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from . import RUNTIME_VERSION
from ._schema import SchemaError, check_schema

BUNDLE_FORMAT = 1
MANIFEST_NAME = "mlship.json"
PREDICTOR_NAME = "predictor.py"
# The module name predictor.py is imported under (BUNDLE.md "predictor.py").
PREDICTOR_MODULE = "mlship_predictor"

_REQUIRED_KEYS = ("name", "version", "runtime_version", "python", "artifacts", "methods", "input", "golden")


class BundleLoadError(Exception):
    """The bundle cannot be served: missing, damaged, or made for another Python or runtime."""


@dataclass(frozen=True)
class LoadedBundle:
    """A bundle ready to serve: manifest, callables by method name, input schema and golden cases."""

    path: Path
    manifest: dict[str, Any]
    methods: dict[str, Callable[[Any], Any]]
    schema: dict[str, Any]
    golden: dict[str, Any]

    @property
    def cases(self) -> list[dict[str, Any]]:
        cases: list[dict[str, Any]] = self.golden["cases"]
        return cases

    @property
    def rtol(self) -> float:
        return float(self.golden.get("rtol", 1e-6))

    @property
    def atol(self) -> float:
        return float(self.golden.get("atol", 1e-9))


def is_batch_safe(manifest: Mapping[str, Any]) -> bool:
    """The manifest's `batch_safe`, true when a bundle does not say (BUNDLE.md)."""
    return bool(manifest.get("batch_safe", True))


def load_bundle(path: str | Path) -> LoadedBundle:
    """Check everything about the bundle at `path`, then import its predictor.py; raise BundleLoadError if
    not.

    Order matters: the Python version is checked before anything is unpickled, and every digest before
    predictor.py runs, so a damaged or foreign bundle is refused without executing any of it.
    """
    root = Path(path).resolve()
    manifest = read_manifest(root)
    check_artifacts(root, manifest)
    golden = read_golden(root, manifest)
    methods = _import_methods(root / PREDICTOR_NAME, [method["name"] for method in manifest["methods"]])
    return LoadedBundle(root, manifest, methods, manifest["input"], golden)


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Read and check mlship.json: format, required keys, runtime and Python versions, input schema."""
    manifest_path = Path(path) / MANIFEST_NAME
    if not manifest_path.is_file():
        raise BundleLoadError(f"{path} is not a bundle: it has no {MANIFEST_NAME}")
    manifest = _read_json(manifest_path)
    if not isinstance(manifest, dict):
        raise BundleLoadError(f"{manifest_path} must hold a JSON object")
    if manifest.get("format") != BUNDLE_FORMAT:
        raise BundleLoadError(
            f"{manifest_path} has format {manifest.get('format')!r}; this runtime reads "
            f"format {BUNDLE_FORMAT}"
        )
    missing = [key for key in _REQUIRED_KEYS if key not in manifest]
    if missing:
        raise BundleLoadError(f"{manifest_path} lacks {', '.join(repr(key) for key in missing)}")
    if str(manifest["runtime_version"]) != RUNTIME_VERSION:
        raise BundleLoadError(
            f"the bundle was made for mlship runtime version {manifest['runtime_version']!r}, "
            f"but its mlship_runtime is version {RUNTIME_VERSION!r}"
        )
    _check_python(manifest["python"])
    if (
        not all(isinstance(m, dict) and isinstance(m.get("name"), str) for m in manifest["methods"])
        or not manifest["methods"]
    ):
        raise BundleLoadError(
            f"{manifest_path}: 'methods' must be a non-empty list of {{\"name\": …}} objects"
        )
    try:
        check_schema(manifest["input"])
    except SchemaError as exc:
        raise BundleLoadError(f"{manifest_path}: bad input schema: {exc}") from None
    return manifest


def _check_python(python: Any) -> None:
    recorded = str(python.get("version", "")) if isinstance(python, dict) else ""
    parts = recorded.split(".")
    if len(parts) < 2 or not all(part.isdigit() for part in parts[:2]):
        raise BundleLoadError(f"mlship.json: python.version must look like '3.11.7', got {recorded!r}")
    ours = sys.version_info
    if (int(parts[0]), int(parts[1])) != (ours.major, ours.minor):
        # Pickles of numpy, scikit-learn and friends do not travel across Python minor versions.
        raise BundleLoadError(
            f"the bundle was packaged with Python {recorded} and must be served by Python "
            f"{parts[0]}.{parts[1]}, but this is Python {ours.major}.{ours.minor}.{ours.micro}; its pickled "
            "values would not load"
        )


def check_artifacts(root: Path, manifest: Mapping[str, Any]) -> None:
    """Every file in `artifacts` exists with the recorded sha256; predictor.py and golden.json are listed."""
    artifacts = manifest["artifacts"]
    if not isinstance(artifacts, dict):
        raise BundleLoadError("mlship.json: 'artifacts' must map file paths to sha256 digests")
    for required in (PREDICTOR_NAME, manifest["golden"]):
        if required not in artifacts:
            # An unlisted predictor.py could be changed without anyone noticing.
            raise BundleLoadError(f"mlship.json: 'artifacts' does not list {required}")
    for name, expected in artifacts.items():
        file = _bundle_file(root, name)
        if not file.is_file():
            raise BundleLoadError(f"artifact {name} is missing from the bundle {root}")
        actual = _sha256(file)
        if actual != str(expected).lower():
            raise BundleLoadError(
                f"artifact {name} has sha256 {actual}, but mlship.json expects {expected}: "
                "the file changed after packaging"
            )


def read_golden(root: Path, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """golden.json, checked: at least one case, each naming one of the manifest's methods."""
    golden_path = _bundle_file(root, str(manifest["golden"]))
    golden = _read_json(golden_path)
    cases = golden.get("cases") if isinstance(golden, dict) else None
    if not isinstance(golden, dict) or not isinstance(cases, list) or not cases:
        raise BundleLoadError(f"{golden_path} must be an object with a non-empty list of 'cases'")
    names = {method["name"] for method in manifest["methods"]}
    for case in cases:
        if not isinstance(case, dict) or not {"id", "method", "instances", "expected"} <= case.keys():
            raise BundleLoadError(f"{golden_path}: every case needs id, method, instances and expected")
        if case["method"] not in names:
            raise BundleLoadError(
                f"{golden_path}: case {case['id']!r} uses method {case['method']!r}, which "
                "mlship.json does not list"
            )
    return golden


def _import_methods(predictor: Path, names: list[str]) -> dict[str, Callable[[Any], Any]]:
    spec = importlib.util.spec_from_file_location(PREDICTOR_MODULE, predictor)
    if spec is None or spec.loader is None:  # pragma: no cover - only for a path without a .py suffix
        raise BundleLoadError(f"cannot import {predictor}")
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs, as importlib's recipe says: dataclasses and pickle look classes up there.
    sys.modules[PREDICTOR_MODULE] = module
    try:
        spec.loader.exec_module(module)
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


def _bundle_file(root: Path, name: str) -> Path:
    relative = PurePosixPath(name)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise BundleLoadError(f"mlship.json names {name!r}, which is not a path inside the bundle")
    return root.joinpath(*relative.parts)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        raise BundleLoadError(f"{path} is missing") from None
    except (OSError, ValueError) as exc:
        raise BundleLoadError(f"{path} cannot be read as JSON: {exc}") from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
