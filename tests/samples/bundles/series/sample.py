"""A pandas Series named "x" in (kind "series"), a number per row out: the served function uses Series methods."""

from __future__ import annotations

from typing import Any

INPUT = {"kind": "series", "name": "x", "dtype": "float64", "type": "number", "nullable": False, "example": 1.5}
METHODS = [{"name": "predict", "expression": "scale(X)"}]
BATCH_SAFE = True


def make_values() -> dict[str, Any]:
    return {"factor": 2.5}


def golden_inputs() -> list[tuple[str, Any, Any]]:
    import pandas as pd

    return [("predict", value, pd.Series([value], name="x", dtype="float64")) for value in (1.5, -4.0, 10.25)]
