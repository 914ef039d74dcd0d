"""Capture then write, with a fake kernel: the kernel-side helpers (_kernel.py) run in this process against a
namespace where the notebook's cells were executed, reached through the real KernelInspector."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from mlship.bundle.capture import CaptureRequest, capture_served_path
from mlship.bundle.fresh import Dependencies
from mlship.bundle.writer import BundleWriter
from mlship.notebook import _kernel, _kernel_main
from mlship.notebook.analyze import index_cells, transform
from mlship.notebook.extract import Choices
from mlship.notebook.inspector import KernelInspector
from mlship.notebook.read import Notebook, read_notebook
from mlship.runtime import _contract as contract
from mlship.runtime._codec import to_jsonable
from mlship.runtime._verify import verify_bundle

CELLS = [
    "import numpy as np\nimport pandas as pd\nfrom sklearn.linear_model import LogisticRegression",
    "X = pd.DataFrame({'a': np.linspace(-1, 1, 20), 'b': np.linspace(1, -1, 20) ** 2})\ny = (X['a'] > 0).astype(int)",
    "def clean(df):\n    return df[['a', 'b']].fillna(0)",
    "clf = LogisticRegression().fit(clean(X), y)",
    "clf.predict(clean(X))",
]


class InProcessSession:
    """Stands in for KernelSession.call: runs what the inspector sends in this process, as the kernel would."""

    def __init__(self, user_ns: dict[str, Any]) -> None:
        _kernel.install(user_ns, to_jsonable)
        _kernel_main.install(user_ns)
        self.globals: dict[str, Any] = {"__mlship__": _kernel, "__mlship_main__": _kernel_main,
                                        "__mlship_emit": self._emit}
        self.result: Any = None

    def _emit(self, obj: Any) -> None:
        self.result = obj

    def call(self, code: str) -> Any:
        exec(code, self.globals)
        return json.loads(json.dumps(self.result))  # what crosses the kernel's channel: JSON


@pytest.fixture()
def notebook(tmp_path: Path) -> Notebook:
    path = tmp_path / "nb" / "clean.ipynb"
    path.parent.mkdir()
    nbformat.write(new_notebook(cells=[new_code_cell(c) for c in CELLS]), path)
    return read_notebook(path)


@pytest.fixture()
def inspector(notebook: Notebook) -> Iterator[KernelInspector]:
    ns: dict[str, Any] = {"__name__": "__main__"}
    for cell in notebook.cells:
        exec(compile(transform(cell.source), f"<cell {cell.number}>", "exec"), ns)
    yield KernelInspector(InProcessSession(ns))  # type: ignore[arg-type]
    sys.modules.pop("mlship_predictor", None)


def test_capture_is_one_typed_value_and_writes_a_bundle_that_verifies(notebook: Notebook, inspector: KernelInspector,
                                                                      tmp_path: Path) -> None:
    staging = tmp_path / "bundle"
    (staging / "artifacts").mkdir(parents=True)
    request = CaptureRequest(Choices(), name="clean", version="0.2.0", requirements=("scikit-learn>=1",))
    capture = capture_served_path(notebook, request, index_cells(notebook.cells), inspector,
                                  staging / contract.VALUES_NAME)
    assert capture.plan.methods["predict"] == "clf.predict(clean(X))" and capture.plan.sample_expr == "X"
    assert capture.code.by_value == ["clf"] and [d.name for d in capture.code.definitions] == ["clean"]
    assert capture.golden.schema.kind == "dataframe" and capture.golden.schema.column_names == ["a", "b"]
    assert {case.method for case in capture.golden.cases} >= {"predict", "predict_proba"}
    assert capture.golden.batch_safe and capture.python.executable == sys.executable
    assert capture.values == staging / contract.VALUES_NAME and capture.values.is_file()
    assert capture.source == contract.Source("clean.ipynb", notebook.sha256)

    manifest = BundleWriter(capture, staging).write(Dependencies({"scikit-learn": "1.9.1"}, {}))
    assert manifest.input == capture.golden.schema and "scikit-learn>=1" in manifest.requirements
    results = verify_bundle(staging)
    assert results and all(r.ok for r in results), [r.detail for r in results if not r.ok]


def test_nothing_captured_by_value_writes_no_values(notebook: Notebook, inspector: KernelInspector,
                                                    tmp_path: Path) -> None:
    values = tmp_path / "values.pkl"
    request = CaptureRequest(Choices(predict="np.asarray(X['a'] > 0, dtype=int)", origin={"predict": "--predict"}))
    capture = capture_served_path(notebook, request, index_cells(notebook.cells), inspector, values)
    assert capture.code.by_value == [] and capture.values is None and not values.exists()
