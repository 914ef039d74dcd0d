"""Iris as a numpy array: a decision tree fitted on plain arrays, input shape [null, 4]."""

from __future__ import annotations

from typing import Any

INPUT = {
    "kind": "ndarray",
    "dtype": "float64",
    "type": "number",
    "shape": [None, 4],
    "example": [5.1, 3.5, 1.4, 0.2],
}
METHODS = [{"name": "predict", "expression": "tree.predict(X)"}]
BATCH_SAFE = True


def make_values() -> dict[str, Any]:
    from sklearn.datasets import load_iris
    from sklearn.tree import DecisionTreeClassifier

    X, y = load_iris(return_X_y=True)
    return {"tree": DecisionTreeClassifier(random_state=0).fit(X, y)}


def golden_inputs() -> list[tuple[str, Any, Any]]:
    from sklearn.datasets import load_iris

    X = load_iris().data
    return [("predict", X[row].tolist(), X[row : row + 1]) for row in (0, 75, 149)]
