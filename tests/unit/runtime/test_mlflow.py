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


ARRAY_ROWS = [[5.1, 3.5, 1.4, 0.2], [5.9, 3.0, 4.2, 1.5]]  # iris_array's golden rows 0 and 75: classes 0 and 1
TEXTS = ["great film", "bad"]  # the text sample's length(): 10, 3


# What MLflow 3's scoring server takes for a model whose signature is an unnamed tensor (iris_array) or one unnamed
# string column (text), measured with mlflow 3.17 (docs/RUNTIME.md has the table): a frame, with or without column
# names, its records, rows of one value; and CSV, which MLflow's reader fails on for a tensor signature. Then the
# other kinds' MLflow forms.
@pytest.mark.parametrize(
    ("sample", "body", "predictions"),
    [
        ("iris_array", {"dataframe_split": {"index": [0, 1], "columns": [0, 1, 2, 3], "data": ARRAY_ROWS}}, [0, 1]),
        ("iris_array", {"dataframe_split": {"data": ARRAY_ROWS}}, [0, 1]),
        ("iris_array", {"dataframe_split": {"columns": ["a", "b", "c", "d"], "data": ARRAY_ROWS}}, [0, 1]),
        ("iris_array", {"dataframe_records": [dict(zip("abcd", row, strict=True)) for row in ARRAY_ROWS]}, [0, 1]),
        ("iris_array", {"inputs": ARRAY_ROWS, "params": {}}, [0, 1]),
        ("text", {"dataframe_split": {"index": [0, 1], "columns": ["text"], "data": [[t] for t in TEXTS]}}, [10, 3]),
        ("text", {"dataframe_split": {"data": [[t] for t in TEXTS]}}, [10, 3]),
        ("text", {"dataframe_records": [{"review": t} for t in TEXTS]}, [10, 3]),
        ("text", {"instances": [[t] for t in TEXTS]}, [10, 3]),
        ("text", {"inputs": [{"review": t} for t in TEXTS]}, [10, 3]),
        ("text", {"inputs": {"review": TEXTS}}, [10, 3]),
        # a named series: its name where a frame names the column, as MLflow's signature ['x': double] does
        ("series", {"dataframe_split": {"columns": ["x"], "data": [[1.5], [-4.0]]}}, [4.75, -9.0]),
        ("series", {"inputs": {"x": [1.5]}}, [4.75]),
        ("series", {"instances": [{"x": 1.5}]}, [4.75]),
        ("iris_columns", {"instances": [dict(zip(COLUMNS, SETOSA, strict=True))]}, [0]),
        ("iris_records", {"dataframe_split": {"columns": COLUMNS, "data": [SETOSA]}}, [0]),
    ],
)
def test_every_kind_takes_mlflows_frames(serve: Serve, sample: str, body: Any, predictions: list[int]) -> None:
    response = serve(sample).post("/invocations", json=body)
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": predictions}


@pytest.mark.parametrize(
    ("sample", "csv", "predictions"),
    [
        ("iris_array", "c0,c1,c2,c3\n" + "\n".join(",".join(map(str, row)) for row in ARRAY_ROWS), [0, 1]),
        ("text", 'text\n"great film"\nbad\n', [10, 3]),
        ("text", "text\n\n", None),  # no rows: a 400 as for JSON
    ],
)
def test_row_kinds_take_csv(serve: Serve, sample: str, csv: str, predictions: list[int] | None) -> None:
    response = serve(sample).post("/invocations", content=csv, headers={"Content-Type": "text/csv"})
    if predictions is None:
        assert response.status_code == 400 and response.json()["message"].startswith("no rows")
    else:
        assert response.json() == {"predictions": predictions}


def test_dataframe_split_without_columns_is_in_schema_order(iris: TestClient) -> None:
    response = iris.post("/invocations", json={"dataframe_split": {"index": [7, 8], "data": [SETOSA, VIRGINICA]}})
    assert response.json() == {"predictions": [0, 2]}


def test_instances_as_columns(iris: TestClient) -> None:
    body = {"instances": {name: [SETOSA[i], VIRGINICA[i]] for i, name in enumerate(COLUMNS)}}
    assert iris.post("/invocations", json=body).json() == {"predictions": [0, 2]}


def test_nan_is_a_missing_value(serve: Serve) -> None:
    # What MLflow's client sends for a DataFrame with missing values: json.dumps writes NaN (not JSON, but
    # Python's json and so MLflow's server read it).
    mixed = serve("mixed")
    body = '{"dataframe_split": {"columns": ["n", "k", "flag", "city", "at"], "data": [[NaN, -8, false, NaN, NaN]]}}'
    response = mixed.post("/invocations", content=body, headers={"Content-Type": "application/json"})
    expected = mixed.post("/invocations", json={"dataframe_records": [
        {"n": None, "k": -8, "flag": False, "city": None, "at": None}]})
    assert response.status_code == 200 and response.json() == expected.json()
    infinite = mixed.post("/invocations", content=body.replace("NaN", "Infinity", 1),
                          headers={"Content-Type": "application/json"})
    assert infinite.status_code == 400 and "Infinity" in infinite.json()["message"]


def test_an_empty_csv_cell_is_a_missing_value(serve: Serve) -> None:
    # mixed: n (number) and at (datetime) and city (string) are nullable; pandas reads an empty cell as missing.
    csv = "n,k,flag,city,at\n,-8,false,,\n"
    response = serve("mixed").post("/invocations", content=csv, headers={"Content-Type": "text/csv"})
    expected = serve("mixed").post("/invocations", json={"dataframe_records": [
        {"n": None, "k": -8, "flag": False, "city": None, "at": None}]})
    assert response.status_code == 200 and response.json() == expected.json()


@pytest.mark.parametrize(
    ("sample", "body", "message"),
    [
        ("iris_array", {"dataframe_split": {"data": [[5.1, 3.5]]}},
         "expected an array of shape [null, 4] (null: any size), got [1, 2]"),
        ("iris_array", {"dataframe_split": {"columns": ["a"], "data": [[5.1, 3.5]]}},
         '"dataframe_split" row 0: expected a list of 1 values (one per "columns" entry)'),
        ("iris_array", {"dataframe_split": {"data": [[1, 2, 3, 4]], "orient": "split"}},
         '"dataframe_split" has unexpected keys "orient"'),
        ("iris_array", {"dataframe_split": [[1, 2, 3, 4]]}, '"dataframe_split" must be an object with "data"'),
        ("iris_array", {"dataframe_records": [{"a": 1, "b": 2, "c": 3, "d": 4}, {"a": 1}]},
         '"dataframe_records" row 1: expected an object with the keys of row 0'),
        ("text", {"dataframe_split": {"columns": ["a", "b"], "data": [["x", "y"]]}},
         '"dataframe_split": "columns": this model takes one column (a list of strings), got 2'),
        ("text", {"instances": [["a", "b"]]}, '"instances" row 0: expected one value (a list of strings)'),
        ("text", {"dataframe_records": {"review": "a"}}, '"dataframe_records" must be a list of records'),
        ("iris_frame", {"dataframe_split": {"columns": COLUMNS[:2], "data": [[5.1, 3.5]]}}, "missing columns"),
        ("series", {"dataframe_split": {"columns": ["y"], "data": [[1.0]]}},
         '"dataframe_split": "columns": expected the column "x", got "y"'),
        ("iris_records", {"dataframe_split": {"data": [SETOSA]}}, '"dataframe_split" must be an object with'),
    ],
)
def test_frames_that_do_not_fit_are_400s_naming_the_field(serve: Serve, sample: str, body: Any, message: str) -> None:
    response = serve(sample).post("/invocations", json=body)
    assert response.status_code == 400 and response.json()["error_code"] == "BAD_REQUEST"
    assert response.json()["message"].startswith(message), response.json()


def test_a_model_error_is_an_mlflow_500(serve: Serve) -> None:
    response = serve("raises").post("/invocations", json={"dataframe_records": [{"x": -1}]})
    assert response.status_code == 500 and response.json()["error_code"] == "INTERNAL_ERROR"


def test_ping_health_and_version(iris: TestClient) -> None:
    for path in ("/ping", "/health"):
        response = iris.get(path)
        assert response.status_code == 200 and response.text == "\n"
    assert iris.get("/version").text == "0.1.0"


@pytest.mark.parametrize(("sample", "header"), [("iris_frame", ",".join(COLUMNS)), ("iris_array", "c0,c1,c2,c3"),
                                                ("text", "value"), ("series", "x")])
def test_the_document_offers_csv_for_every_kind(serve: Serve, sample: str, header: str) -> None:
    document = serve(sample).get("/openapi.json").json()
    content = document["paths"]["/invocations"]["post"]["requestBody"]["content"]
    assert content["text/csv"]["example"] == f"{header}\n"
