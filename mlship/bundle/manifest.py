"""Host-side helpers around the bundle contract (mlship/runtime/_contract.py): opening a bundle with a
user-facing error, and pinning the requirements that `mlship package` writes into requirements.txt."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import re
from collections.abc import Iterable
from pathlib import Path

from ..errors import BundleError, bundle_errors
from ..runtime import _contract as contract
from ..runtime._contract import Bundle, Manifest

# The runtime's own dependencies; their versions are pinned to what is installed beside mlship. uvloop is never
# imported by the runtime itself: uvicorn picks it up, and serving is much faster with it (docs/RUNTIME.md).
# httptools is uvicorn's parser too, and the multi-model front parses its backends' answers with it
# (runtime/_upstream.py). GET /docs needs no package: Swagger UI's files are part of the runtime (runtime/_ui.py).
RUNTIME_REQUIREMENTS = ("starlette", "uvicorn", "orjson", "prometheus-client", "uvloop", "httptools")
# Packages that a notebook imports for its own sake and serving never needs, even when an import mentions them.
NEVER_SERVED = {"ipykernel", "ipython", "jupyter", "jupyter-client", "jupyter-core", "notebook", "jupyterlab",
                "matplotlib-inline", "ipywidgets"}
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def canonical(name: str) -> str:
    """PEP 503 normalized project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_pins() -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in RUNTIME_REQUIREMENTS}


def build_requirements(found: dict[str, str], overrides: Iterable[str] = ()) -> list[str]:
    """`name==version` for what serving needs, then the runtime's pins, then --requirement overrides by name."""
    pins: dict[str, str] = {}
    for name, version in sorted(found.items(), key=lambda kv: canonical(kv[0])):
        if canonical(name) not in NEVER_SERVED:
            pins[canonical(name)] = f"{name}=={version}"
    for name, version in runtime_pins().items():
        pins.setdefault(canonical(name), f"{name}=={version}")
    for spec in overrides:
        m = _NAME.match(spec)
        if not m:
            raise BundleError(f"--requirement {spec!r} is not a requirement", hint="use pip syntax, e.g. pandas==2.2.3")
        pins[canonical(m.group(1).split("[")[0])] = spec.strip()
    return sorted(pins.values(), key=lambda line: canonical(_NAME.match(line).group(1)))  # type: ignore[union-attr]


def created_at() -> str:
    """SOURCE_DATE_EPOCH when set (reproducible builds), else now; the only field that differs between runs."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = (_dt.datetime.fromtimestamp(int(epoch), _dt.UTC) if epoch and epoch.isdigit()
            else _dt.datetime.now(_dt.UTC).replace(microsecond=0))
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def open_bundle(path: str | os.PathLike[str], *, check_digests: bool = True) -> Bundle:
    """The bundle at `path` read through the contract (manifest, golden cases, digests); BundleError with a hint
    when it is not a bundle, or a damaged one."""
    _require_manifest(Path(path))
    with bundle_errors(path):
        return contract.read(path, check_digests=check_digests)


def open_manifest(path: str | os.PathLike[str]) -> Manifest:
    """mlship.json of the bundle at `path`, validated (digests not checked); BundleError with a hint if not."""
    _require_manifest(Path(path))
    with bundle_errors(path):
        return contract.read_manifest(path)


def _require_manifest(path: Path) -> None:
    if (path / contract.MANIFEST_NAME).is_file():
        return
    if not path.exists():
        raise BundleError(f"{path} does not exist", hint="pass the directory `mlship package` wrote (e.g. dist/iris)")
    if not path.is_dir():
        raise BundleError(f"{path} is not an mlship bundle: a bundle is a directory",
                          hint="pass the directory `mlship package` wrote (e.g. dist/iris)")
    inside = sorted(p for p in path.iterdir() if (p / contract.MANIFEST_NAME).is_file())
    if inside:
        held = f"the bundle {inside[0]}" if len(inside) == 1 else f"{len(inside)} bundles: " + ", ".join(map(str, inside))
        raise BundleError(f"{path} is not an mlship bundle; it holds {held}",
                          hint=f"pass {'it' if len(inside) == 1 else 'one of them'}, e.g. {inside[0]}")
    raise BundleError(f"{path} is not an mlship bundle: {contract.MANIFEST_NAME} is missing",
                      hint="pass the directory `mlship package` wrote (e.g. dist/iris)")
