"""An encoder that refuses unseen categories: OneHotEncoder(handle_unknown="error") + LogisticRegression."""

from __future__ import annotations

from typing import Any

INPUT = {
    "kind": "dataframe",
    "columns": [
        {"name": "colour", "dtype": "object", "type": "string", "nullable": False},
        {"name": "size", "dtype": "float64", "type": "number", "nullable": False},
    ],
    "example": {"colour": "red", "size": 1.0},
}
METHODS = [{"name": "predict", "expression": "clf.predict(X)"}]
BATCH_SAFE = True
ROWS = [("red", 1.0), ("green", 2.0), ("blue", 3.0), ("red", 4.0), ("green", 5.0), ("blue", 6.0)]


def _frame(rows: list[tuple[str, float]]) -> Any:
    import pandas as pd

    return pd.DataFrame({"colour": [row[0] for row in rows], "size": [row[1] for row in rows]})


def make_values() -> dict[str, Any]:
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    encode = make_column_transformer((OneHotEncoder(handle_unknown="error"), ["colour"]), remainder="passthrough")
    clf = make_pipeline(encode, LogisticRegression(max_iter=500))
    return {"clf": clf.fit(_frame(ROWS), [0, 1, 0, 1, 0, 1])}


def golden_inputs() -> list[tuple[str, Any, Any]]:
    return [("predict", {"colour": colour, "size": size}, _frame([(colour, size)])) for colour, size in ROWS[:2]]
