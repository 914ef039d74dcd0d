"""Build the sample bundles of tests/samples/bundles/<name>/ the way docs/BUNDLE.md lays a bundle out."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import platform
import shutil
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import cloudpickle

from mlship.runtime import RUNTIME_VERSION
from mlship.runtime._codec import to_jsonable
from mlship.runtime._contract import (
    Golden,
    GoldenCase,
    InputSchema,
    Manifest,
    Method,
    PythonInfo,
    Selection,
    Source,
    write,
)

SAMPLES_DIR = Path(__file__).resolve().parents[2] / "samples" / "bundles"
RUNTIME_SOURCE = Path(__file__).resolve().parents[3] / "mlship" / "runtime"


def _import_file(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _pins(*names: str) -> list[str]:
    return sorted(f"{name}=={importlib.metadata.version(name)}" for name in names)


def build_bundle(sample: str, out: Path) -> Path:
    """Write the bundle for `sample` into `out` (BUNDLE.md layout, real pickles, digests, golden cases)."""
    source = SAMPLES_DIR / sample
    spec = _import_file(source / "sample.py", f"_sample_{sample}")
    (out / "artifacts").mkdir(parents=True)
    (out / "artifacts" / "values.pkl").write_bytes(cloudpickle.dumps(spec.make_values()))
    shutil.copy(source / "predictor.py", out / "predictor.py")
    requirements = _pins("numpy", "pandas", "scikit-learn", "starlette", "uvicorn")
    (out / "requirements.txt").write_text("".join(f"{line}\n" for line in requirements))

    # Golden outputs as the kernel records them: the served function on the notebook's own value,
    # to_jsonable'd.
    predictor = _import_file(out / "predictor.py", f"_golden_{sample}")
    cases = []
    for index, (method, row, value) in enumerate(spec.golden_inputs()):
        expected = to_jsonable(predictor.METHODS[method](value))
        cases.append(GoldenCase(f"{method}-{index}", method, [row], expected))
    shutil.copytree(RUNTIME_SOURCE, out / "mlship_runtime", ignore=shutil.ignore_patterns("__pycache__"))
    # Written by the contract, as `mlship package` writes a bundle: the current format, every file digested.
    manifest = Manifest(
        name=sample.replace("_", "-"),
        version="0.1.0",
        mlship_version="0.1.0",
        runtime_version=RUNTIME_VERSION,
        created_at="2026-11-27T10:00:00Z",
        source=Source(f"{sample}.ipynb", "0" * 64),
        python=PythonInfo(platform.python_version(), platform.python_implementation()),
        requirements=tuple(requirements),
        methods=tuple(Method(m["name"], m.get("expression", "")) for m in spec.METHODS),
        batch_safe=spec.BATCH_SAFE,
        input=InputSchema.from_json(spec.INPUT),
        selection=Selection("auto", "sample bundle"),
    )
    write(out, manifest, Golden(tuple(cases), rtol=1e-6, atol=1e-9))
    return out


def edit_manifest(bundle: Path, **changes: Any) -> None:
    manifest = json.loads((bundle / "mlship.json").read_text())
    manifest.update(changes)
    (bundle / "mlship.json").write_text(json.dumps(manifest, indent=2))


def rehash(bundle: Path) -> None:
    """Record the current digests of the listed files, as if the edited bundle had been packaged that way."""
    listed = json.loads((bundle / "mlship.json").read_text())["artifacts"]
    edit_manifest(bundle, artifacts={name: _sha256(bundle / name) for name in listed})


def edit_golden(bundle: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    golden = json.loads((bundle / "golden.json").read_text())
    edit(golden)
    (bundle / "golden.json").write_text(json.dumps(golden))
    rehash(bundle)
