"""A model that takes `x` seconds per row (sleeping in Python): timeouts, draining and load tests."""

from __future__ import annotations

from typing import Any

INPUT = {
    "kind": "dataframe",
    "columns": [{"name": "x", "dtype": "float64", "type": "number"}],
    "example": {"x": 0.0},
}
METHODS = [{"name": "predict", "expression": "wait(X)"}]
BATCH_SAFE = True


def make_values() -> dict[str, Any]:
    return {}


def golden_inputs() -> list[tuple[str, Any, Any]]:
    import pandas as pd

    return [("predict", {"x": 0.0}, pd.DataFrame({"x": [0.0]}))]
