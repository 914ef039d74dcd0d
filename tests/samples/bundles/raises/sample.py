"""A notebook function that raises on some inputs: doubles `x`, refuses negative values."""

from __future__ import annotations

from typing import Any

INPUT = {
    "kind": "dataframe",
    "columns": [{"name": "x", "dtype": "float64", "type": "number"}],
    "example": {"x": 1.0},
}
METHODS = [{"name": "predict", "expression": "double(X)"}]
BATCH_SAFE = True


def make_values() -> dict[str, Any]:
    return {"factor": 2.0}


def golden_inputs() -> list[tuple[str, Any, Any]]:
    import pandas as pd

    return [("predict", {"x": 1.5}, pd.DataFrame({"x": [1.5]}))]
