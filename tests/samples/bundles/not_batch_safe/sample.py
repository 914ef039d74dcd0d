"""Centering on the batch mean: a row's output depends on the rows sent with it (batch_safe: false)."""

from __future__ import annotations

from typing import Any

INPUT = {
    "kind": "dataframe",
    "columns": [{"name": "x", "dtype": "float64", "type": "number"}],
    "example": {"x": 1.0},
}
METHODS = [{"name": "predict", "expression": "X['x'] - X['x'].mean() + offset"}]
BATCH_SAFE = False


def make_values() -> dict[str, Any]:
    return {"offset": 10.0}


def golden_inputs() -> list[tuple[str, Any, Any]]:
    import pandas as pd

    return [("predict", {"x": value}, pd.DataFrame({"x": [value]})) for value in (1.0, 5.0)]
