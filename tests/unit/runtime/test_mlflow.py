"""MLflow's scoring protocol: POST /invocations, GET /ping, /health and /version."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

Serve = Callable[..., TestClient]
COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
SETOSA, VIRGINICA = [5.1, 3.5, 1.4, 0.2], [7.7, 3.0, 6.1, 2.3]


@pytest.fixture
def iris(serve: Serve) -> TestClient:
    return serve("iris_frame")


@pytest.mark.parametrize(
    "body",
    [
        # What mlflow's own client sends for a DataFrame: to_dict(orient="split"), index included.
        {"dataframe_split": {"index": [0, 1], "columns": COLUMNS, "data": [SETOSA, VIRGINICA]}},
        {"dataframe_split": {"columns": COLUMNS, "data": [SETOSA, VIRGINICA]}, "params": {"threshold": 0.5}},
        {"dataframe_records": [dict(zip(COLUMNS, SETOSA, strict=True)), dict(zip(COLUMNS, VIRGINICA, strict=True))]},
        {"instances": [SETOSA, VIRGINICA]},
        {"inputs": {name: [SETOSA[i], VIRGINICA[i]] for i, name in enumerate(COLUMNS)}},
    ],
)
def test_invocations_accepts_every_mlflow_payload(iris: TestClient, body: Any) -> None:
    response = iris.post("/invocations", json=body)
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert response.json() == {"predictions": [0, 2]}


def test_invocations_takes_csv(iris: TestClient) -> None:
    csv = ",".join(COLUMNS) + "\n" + ",".join(map(str, SETOSA)) + "\n" + ",".join(map(str, VIRGINICA)) + "\n"
    response = iris.post("/invocations", content=csv, headers={"Content-Type": "text/csv; charset=utf-8"})
    assert response.json() == {"predictions": [0, 2]}


def test_csv_values_must_fit_the_column_types(iris: TestClient) -> None:
    csv = ",".join(COLUMNS) + "\n5.1,3.5,wide,0.2\n"
    response = iris.post("/invocations", content=csv, headers={"Content-Type": "text/csv"})
    assert response.status_code == 400
    assert response.json() == {"error_code": "BAD_REQUEST",
                               "message": "column \"petal length (cm)\", row 0: 'wide' is not a CSV number"}


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"instances": [SETOSA], "inputs": [SETOSA]}, 400, "the input must be a JSON object with exactly one"),
        ({"params": {}}, 400, "the input must be a JSON object with exactly one"),
        ({"instances": [[5.1, 3.5]]}, 400, "row 0 has 2 values; expected 4"),
    ],
)
def test_errors_have_mlflows_shape(iris: TestClient, body: Any, status: int, message: str) -> None:
    response = iris.post("/invocations", json=body)
    assert response.status_code == status
    assert set(response.json()) == {"error_code", "message"}
    assert response.json()["error_code"] == "BAD_REQUEST" and response.json()["message"].startswith(message)


@pytest.mark.parametrize(
    ("content_type", "message"),
    [("text/plain", "unsupported Content-Type 'text/plain'"),
     ("application/json; charset=latin-1", "the scoring server only supports UTF-8")],
)
def test_other_content_types_are_415(iris: TestClient, content_type: str, message: str) -> None:
    response = iris.post("/invocations", content=b"{}", headers={"Content-Type": content_type})
    assert response.status_code == 415 and response.json()["message"].startswith(message)


def test_csv_needs_named_columns(serve: Serve) -> None:
    response = serve("iris_array").post("/invocations", content="a,b\n1,2\n", headers={"Content-Type": "text/csv"})
    assert response.status_code == 415
    assert response.json()["message"].startswith("this model takes a ndarray, not a table")


def test_a_model_error_is_an_mlflow_500(serve: Serve) -> None:
    response = serve("raises").post("/invocations", json={"dataframe_records": [{"x": -1}]})
    assert response.status_code == 500 and response.json()["error_code"] == "INTERNAL_ERROR"


def test_ping_health_and_version(iris: TestClient) -> None:
    for path in ("/ping", "/health"):
        response = iris.get(path)
        assert response.status_code == 200 and response.text == "\n"
    assert iris.get("/version").text == "0.1.0"
