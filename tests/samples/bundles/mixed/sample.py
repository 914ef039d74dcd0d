"""One column of every JSON type, and a model that accepts any value the schema allows (fuzzing targets it)."""

from __future__ import annotations

from typing import Any

INPUT = {
    "kind": "dataframe",
    "columns": [
        {"name": "n", "dtype": "float64", "type": "number", "nullable": True},
        {"name": "k", "dtype": "int64", "type": "integer", "nullable": False},
        {"name": "flag", "dtype": "bool", "type": "boolean", "nullable": False},
        {"name": "city", "dtype": "object", "type": "string", "nullable": True},
        {"name": "at", "dtype": "datetime64[ns]", "type": "datetime", "nullable": True},
    ],
    "example": {"n": 1.5, "k": 3, "flag": True, "city": "Lyon", "at": "2026-11-27T10:00:00"},
}
METHODS = [{"name": "predict", "expression": "score(X)"}]
BATCH_SAFE = True
ROWS = [
    {"n": 1.5, "k": 3, "flag": True, "city": "Lyon", "at": "2026-11-27T10:00:00"},
    {"n": None, "k": -8, "flag": False, "city": None, "at": None},
]


def make_values() -> dict[str, Any]:
    return {}


def golden_inputs() -> list[tuple[str, Any, Any]]:
    import pandas as pd

    cases = []
    for row in ROWS:
        frame = pd.DataFrame({
            "n": pd.Series([row["n"]], dtype="float64"),
            "k": pd.Series([row["k"]], dtype="int64"),
            "flag": pd.Series([row["flag"]], dtype="bool"),
            "city": pd.Series([row["city"]], dtype="object"),
            "at": pd.to_datetime(pd.Series([row["at"]]), format="ISO8601").astype("datetime64[ns]"),
        })
        cases.append(("predict", row, frame))
    return cases
