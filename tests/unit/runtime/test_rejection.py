"""A model's own input validation refusing an input is a 422 with the library's message (mlship/runtime/_rejection.py);
a genuine failure of the model stays a 500 with a generic message."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from mlship.runtime._rejection import MESSAGE_LIMIT, rejection

from .sample_bundles import edit_manifest
from .test_observe import sample

Serve = Callable[..., TestClient]
IRIS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
FINITE_MSG = "Input X contains infinity or a value too large for dtype('float64')"
# The suite turns warnings into errors; served, StandardScaler's overflow is only a warning (then check_array
# refuses the inf it made), so these tests let it stay one.
overflow_warns = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")


def huge_row() -> dict[str, float]:
    # Finite in float64; StandardScaler makes it inf, and LogisticRegression's check_array refuses it.
    return {IRIS[0]: 1.7e308, IRIS[1]: 3.5, IRIS[2]: 1.4, IRIS[3]: 0.2}


@overflow_warns
def test_a_value_the_scaler_makes_infinite_is_422_with_sklearns_message(serve: Serve) -> None:
    client = serve("iris_frame")
    response = client.post("/predict", json={"instances": [huge_row()]})
    assert response.status_code == 422
    assert response.json() == {"error": f"the model rejected the input: ValueError: {FINITE_MSG}."}
    # The server goes on serving, and a good row next to it alone is fine.
    good = {**huge_row(), IRIS[0]: 5.1}
    assert client.post("/predict", json={"instances": [good]}).json() == {"predictions": [0]}
    metrics = client.get("/metrics").text
    assert sample(metrics, "mlship_model_failures_total", method="predict", reason="rejected") == 1
    assert sample(metrics, "mlship_model_failures_total", method="predict", reason="error") is None  # not counted as a failure


def test_an_unknown_category_is_422_naming_it(serve: Serve) -> None:
    client = serve("categories")
    assert client.post("/predict", json={"instances": [{"colour": "red", "size": 1.0}]}).status_code == 200
    response = client.post("/predict", json={"instances": [{"colour": "purple", "size": 1.0}]})
    assert response.status_code == 422
    assert response.json()["error"] == (
        "the model rejected the input: ValueError: Found unknown categories ['purple'] in column 0 during transform"
    )


def test_a_bug_in_the_notebooks_code_stays_a_generic_500(serve: Serve) -> None:
    # The sample's own code raises ValueError: the same type, but not from a library's input validation.
    response = serve("raises").post("/predict", json={"instances": [{"x": -1.0}]}, headers={"x-request-id": "r-1"})
    assert response.status_code == 500
    assert response.json() == {"error": "model failed on this input (request id r-1)"}


@overflow_warns
def test_mlflow_and_v2_answer_the_same_422(serve: Serve) -> None:
    client = serve("iris_frame")
    row = huge_row()
    mlflow = client.post("/invocations", json={"dataframe_records": [row]})
    assert mlflow.status_code == 422
    assert mlflow.json() == {"error_code": "BAD_REQUEST",
                             "message": f"the model rejected the input: ValueError: {FINITE_MSG}."}
    inputs = [{"name": name, "datatype": "FP64", "shape": [1], "data": [row[name]]} for name in IRIS]
    v2 = client.post("/v2/models/iris-frame/infer", json={"inputs": inputs})
    assert v2.status_code == 422
    assert v2.json() == {"error": f"the model rejected the input: ValueError: {FINITE_MSG}."}


@overflow_warns
def test_a_rejected_request_in_a_batch_fails_only_itself(serve: Serve) -> None:
    # Merged with a good request, the merged call fails; each then runs alone and gets its own answer.
    client = serve("iris_frame")
    response = client.post("/predict_proba", json={"instances": [huge_row(), {**huge_row(), IRIS[0]: 5.1}]})
    assert response.status_code == 422


def test_the_openapi_document_lists_422_on_every_predict_operation(serve: Serve) -> None:
    document = serve("iris_frame").get("/openapi.json").json()
    for path in ("/predict", "/predict_proba", "/invocations", "/v2/models/{name}/infer",
                 "/v2/models/{name}/versions/{version}/infer"):
        assert "422" in document["paths"][path]["post"]["responses"], path


@overflow_warns
def test_model_rejections_off_makes_them_500(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLSHIP_MODEL_REJECTIONS", "0")
    response = serve("iris_frame").post("/predict", json={"instances": [huge_row()]})
    assert response.status_code == 500
    assert response.json()["error"].startswith("model failed on this input")


def _raised(function: Callable[[], Any]) -> BaseException:
    try:
        function()
    except BaseException as exc:
        return exc
    raise AssertionError("did not raise")


def test_the_rule_looks_at_the_raising_frame_only() -> None:
    import numpy as np
    from sklearn.exceptions import NotFittedError
    from sklearn.preprocessing import StandardScaler
    from sklearn.utils.validation import check_array

    # check_array's own refusal: a rejection, with its message's first line, bounded and escaped.
    message = rejection(_raised(lambda: check_array(np.array([[np.inf]]))))
    assert message is not None and message.startswith("the model rejected the input: ValueError: Input contains")

    def notebook_code() -> None:
        check_array(np.array([[1.0]]))
        raise ValueError("Input contains infinity")  # same words, but raised by the notebook: a failure

    assert rejection(_raised(notebook_code)) is None
    # Raised in sklearn.utils.validation, but about the model: not fitted is a 500.
    unfitted = _raised(lambda: StandardScaler().transform(np.array([[1.0]])))
    assert isinstance(unfitted, NotFittedError) and rejection(unfitted) is None
    # An exception without a traceback (never raised) is no rejection.
    assert rejection(ValueError("x")) is None


def test_a_long_or_unsafe_library_message_is_bounded_and_escaped() -> None:
    from sklearn.preprocessing import OneHotEncoder

    encoder = OneHotEncoder(handle_unknown="error").fit([["a"]])
    message = rejection(_raised(lambda: encoder.transform([["\u202e" + "x" * 1000 + "\nforged"]])))
    assert message is not None
    assert "\u202e" not in message and "\\u202e" in message and "forged" not in message
    assert len(message) <= len("the model rejected the input: ValueError: ") + MESSAGE_LIMIT


def float32_iris(make_bundle: Callable[[str], Any]) -> Any:
    """iris_frame with float32 columns, as a notebook that casts its frame would be packaged."""
    import json

    bundle = make_bundle("iris_frame")
    manifest = json.loads((bundle / "mlship.json").read_text())
    for column in manifest["input"]["columns"]:
        column["dtype"] = "float32"
    edit_manifest(bundle, input=manifest["input"])
    return bundle


def test_a_finite_value_beyond_a_float32_column_is_400_before_the_model(
    serve: Serve, make_bundle: Callable[[str], Any]
) -> None:
    client = serve(float32_iris(make_bundle))
    row = {**huge_row(), IRIS[0]: 5.1, IRIS[2]: -3.5e38}
    response = client.post("/predict", json={"instances": [{**huge_row(), IRIS[0]: 5.1}, row]})
    assert response.status_code == 400
    assert response.json()["error"] == (
        'column "petal length (cm)", row 1: -3.5e+38 is beyond the range of float32 '
        "(at most 3.4028235e+38 in absolute value)"
    )
    inside = {**row, IRIS[2]: 3.4e38}  # within float32's range: the model decides
    assert client.post("/predict", json={"instances": [inside]}).json() == {"predictions": [2]}


@overflow_warns
def test_batch_predict_rejects_a_refused_row_like_an_invalid_one(
    sample_bundle: Callable[[str], Any], tmp_path: Any
) -> None:
    import json

    from mlship.runtime._batch import BatchError, BatchOptions, predict_file
    from mlship.runtime._bundle import load_bundle

    bundle = load_bundle(sample_bundle("iris_frame"))
    good = {IRIS[0]: 5.1, IRIS[1]: 3.5, IRIS[2]: 1.4, IRIS[3]: 0.2}
    rows = [{"id": "a", **good}, {"id": "b", **huge_row()}, {"id": "c", **good}, {"id": "d", **huge_row()}]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    options = BatchOptions(chunk_rows=3, id_columns=("id",), skip_invalid=True)
    result = predict_file(bundle, source, tmp_path / "out.jsonl", options)
    assert (result.rows, result.rejected) == (2, 2)
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert out == [{"id": "a", "prediction": 0}, {"id": "c", "prediction": 0}]
    rejects = [json.loads(line) for line in (tmp_path / "out.rejects.jsonl").read_text().splitlines()]
    message = f"the model rejected the input: ValueError: {FINITE_MSG}."
    assert [(r["where"], r["error"], r["row"]["id"]) for r in rejects] == [
        ("line 2", message, "b"), ("line 4", message, "d")
    ]
    # Without --skip-invalid the job stops at the first refused row, with the library's message.
    with pytest.raises(BatchError) as error:
        predict_file(bundle, source, tmp_path / "out2.jsonl", BatchOptions(chunk_rows=3, id_columns=("id",)))
    assert error.value.message == f"{source}, line 2: {message}"
    assert not (tmp_path / "out2.jsonl").exists()
