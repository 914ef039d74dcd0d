"""Iris as a list of dicts (kind "records"), one per row."""

from __future__ import annotations

from typing import Any

COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
INPUT = {
    "kind": "records",
    "columns": [{"name": name, "dtype": "float64", "type": "number", "nullable": False} for name in COLUMNS],
    "example": dict(zip(COLUMNS, [5.1, 3.5, 1.4, 0.2], strict=True)),
}
METHODS = [{"name": "predict", "expression": "tree.predict(table(X))"}]
BATCH_SAFE = True


def make_values() -> dict[str, Any]:
    from sklearn.datasets import load_iris
    from sklearn.tree import DecisionTreeClassifier

    X, y = load_iris(return_X_y=True)
    return {"tree": DecisionTreeClassifier(random_state=0).fit(X, y)}


def golden_inputs() -> list[tuple[str, Any, Any]]:
    from sklearn.datasets import load_iris

    X = load_iris().data
    cases = []
    for row in (0, 75, 149):
        values = X[row].tolist()
        record = dict(zip(COLUMNS, values, strict=True))
        cases.append(("predict", record, [record]))
    return cases
