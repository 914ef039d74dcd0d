"""iris_frame's pipeline, served as methods that return an object per row (Spark: a struct, or JSON text)."""

from __future__ import annotations

from typing import Any

COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
INPUT = {
    "kind": "dataframe",
    "columns": [{"name": name, "dtype": "float64", "type": "number", "nullable": False} for name in COLUMNS],
    "example": {
        "sepal length (cm)": 5.1,
        "sepal width (cm)": 3.5,
        "petal length (cm)": 1.4,
        "petal width (cm)": 0.2,
    },
}
METHODS = [
    {"name": "explain", "expression": "explain(X)"},
    {"name": "likely", "expression": "likely(X)"},
]
BATCH_SAFE = True
# 0: a setosa (likely has one key); 70 and 83: versicolor/virginica borders (two keys)
GOLDEN_ROWS = [0, 70, 83, 120]


def make_values() -> dict[str, Any]:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = load_iris(return_X_y=True, as_frame=True)
    return {"clf": make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)}


def golden_inputs() -> list[tuple[str, Any, Any]]:
    from sklearn.datasets import load_iris

    X = load_iris(as_frame=True).data
    cases = []
    for method in ("explain", "likely"):
        for row in GOLDEN_ROWS:
            frame = X.iloc[[row]].reset_index(drop=True)
            cases.append((method, frame.iloc[0].to_dict(), frame))
    return cases
