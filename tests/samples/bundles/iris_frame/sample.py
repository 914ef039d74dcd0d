"""Iris as a DataFrame: StandardScaler + LogisticRegression, served as predict and predict_proba."""

from __future__ import annotations

from typing import Any

COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
INPUT = {
    "kind": "dataframe",
    # nullable: false, as the packager writes it for iris (which has no missing value).
    "columns": [{"name": name, "dtype": "float64", "type": "number", "nullable": False} for name in COLUMNS],
    "example": {
        "sepal length (cm)": 5.1,
        "sepal width (cm)": 3.5,
        "petal length (cm)": 1.4,
        "petal width (cm)": 0.2,
    },
}
METHODS = [
    {"name": "predict", "expression": "clf.predict(X)"},
    {"name": "predict_proba", "expression": "clf.predict_proba(X)"},
]
BATCH_SAFE = True
GOLDEN_ROWS = [0, 60, 120]


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
    for method in ("predict", "predict_proba"):
        for row in GOLDEN_ROWS:
            frame = X.iloc[[row]].reset_index(drop=True)
            cases.append((method, frame.iloc[0].to_dict(), frame))
    return cases
