"""The Open Inference Protocol (KServe V2) REST API, with Triton's binary tensor data extension."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from .sample_bundles import edit_golden

Serve = Callable[..., TestClient]
COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
SETOSA, VIRGINICA = [5.1, 3.5, 1.4, 0.2], [7.7, 3.0, 6.1, 2.3]
MODEL = "/v2/models/iris-frame"


def column_inputs(*rows: list[float], shape_suffix: tuple[int, ...] = ()) -> list[dict[str, Any]]:
    return [{"name": name, "shape": [len(rows), *shape_suffix], "datatype": "FP64", "data": [row[i] for row in rows]}
            for i, name in enumerate(COLUMNS)]


@pytest.fixture
def iris(serve: Serve) -> TestClient:
    return serve("iris_frame")


def test_server_metadata_live_and_ready(iris: TestClient) -> None:
    assert iris.get("/v2").json() == {"name": "mlship", "version": "0.1.0", "extensions": ["binary_tensor_data"]}
    assert iris.get("/v2/").status_code == 200
    assert iris.get("/v2/health/live").json() == {"live": True}
    assert iris.get("/v2/health/ready").json() == {"ready": True}
    for path in (f"{MODEL}/ready", f"{MODEL}/versions/0.1.0/ready"):
        response = iris.get(path)
        assert response.status_code == 200 and response.json() == {"name": "iris-frame", "ready": True}


def test_model_metadata_comes_from_the_schema_and_the_golden_outputs(iris: TestClient) -> None:
    metadata = iris.get(MODEL).json()
    assert metadata == iris.get(f"{MODEL}/versions/0.1.0").json()
    assert metadata == {
        "name": "iris-frame",
        "versions": ["0.1.0"],
        "platform": "mlship_python",
        "inputs": [{"name": name, "datatype": "FP64", "shape": [-1]} for name in COLUMNS],
        "outputs": [{"name": "predict", "datatype": "INT64", "shape": [-1]},
                    {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 3]}],
    }


def test_ndarray_and_string_models_have_one_input(serve: Serve) -> None:
    array = serve("iris_array").get("/v2/models/iris-array").json()
    assert array["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
    text = serve("text").get("/v2/models/text").json()
    assert text["inputs"] == [{"name": "input-0", "datatype": "BYTES", "shape": [-1]}]
    assert text["outputs"] == [{"name": "predict", "datatype": "INT64", "shape": [-1]},
                               {"name": "label", "datatype": "BYTES", "shape": [-1]}]


@pytest.mark.parametrize("path", [MODEL, f"{MODEL}/ready", f"{MODEL}/versions/0.1.0"])
def test_unknown_model_or_version_is_404(iris: TestClient, path: str) -> None:
    response = iris.get(path.replace("iris-frame", "iris").replace("0.1.0", "9"))
    assert response.status_code == 404 and set(response.json()) == {"error"}
    versioned = iris.get(f"{MODEL}/versions/2.0.0")
    assert versioned.status_code == 404
    assert versioned.json() == {"error": "model 'iris-frame' has no version '2.0.0'; it has '0.1.0'"}


def test_infer_returns_every_output_by_default(iris: TestClient) -> None:
    response = iris.post(f"{MODEL}/infer", json={"id": "42", "inputs": column_inputs(SETOSA, VIRGINICA)})
    assert response.status_code == 200
    answer = response.json()
    assert answer["model_name"] == "iris-frame" and answer["model_version"] == "0.1.0" and answer["id"] == "42"
    predict, proba = answer["outputs"]
    assert predict == {"name": "predict", "datatype": "INT64", "shape": [2], "data": [0, 2]}
    assert proba["name"] == "predict_proba" and proba["datatype"] == "FP64" and proba["shape"] == [2, 3]
    assert len(proba["data"]) == 6 and abs(sum(proba["data"][:3]) - 1) < 1e-9


def test_infer_with_requested_outputs_and_column_shapes_of_rows_by_1(iris: TestClient) -> None:
    body = {"inputs": column_inputs(SETOSA, shape_suffix=(1,)), "outputs": [{"name": "predict"}]}
    answer = iris.post(f"{MODEL}/versions/0.1.0/infer", json=body).json()
    assert "id" not in answer
    assert answer["outputs"] == [{"name": "predict", "datatype": "INT64", "shape": [1], "data": [0]}]


def test_infer_on_an_array_takes_flat_or_nested_data(serve: Serve) -> None:
    client = serve("iris_array")
    for data in ([*SETOSA, *VIRGINICA], [SETOSA, VIRGINICA]):
        body = {"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP32", "data": data}]}
        answer = client.post("/v2/models/iris-array/infer", json=body).json()
        assert answer["outputs"] == [{"name": "predict", "datatype": "INT64", "shape": [2], "data": [0, 2]}]


def test_bytes_tensors_in_and_out(serve: Serve) -> None:
    body = {"inputs": [{"name": "input-0", "shape": [2], "datatype": "BYTES", "data": ["great film", "bad"]}]}
    outputs = serve("text").post("/v2/models/text/infer", json=body).json()["outputs"]
    assert outputs == [{"name": "predict", "datatype": "INT64", "shape": [2], "data": [10, 3]},
                       {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["long", "short"]}]


def binary_request(header: dict[str, Any], *blobs: bytes) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header).encode()
    return head + b"".join(blobs), {"Inference-Header-Content-Length": str(len(head)),
                                    "Content-Type": "application/octet-stream"}


def split_binary(content: bytes, header_length: str) -> tuple[dict[str, Any], bytes]:
    return json.loads(content[: int(header_length)]), content[int(header_length):]


def test_binary_tensor_data_in_and_out(serve: Serve) -> None:
    # What tritonclient sends by default: inputs as binary data, every output asked as binary data.
    data = struct.pack("<8f", *SETOSA, *VIRGINICA)
    header = {"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP32",
                          "parameters": {"binary_data_size": len(data)}}],
              "parameters": {"binary_data_output": True}}
    content, headers = binary_request(header, data)
    response = serve("iris_array").post("/v2/models/iris-array/infer", content=content, headers=headers)
    assert response.status_code == 200 and response.headers["content-type"] == "application/octet-stream"
    answer, blob = split_binary(response.content, response.headers["inference-header-content-length"])
    assert answer["outputs"] == [{"name": "predict", "datatype": "INT64", "shape": [2],
                                  "parameters": {"binary_data_size": 16}}]
    assert struct.unpack("<2q", blob) == (0, 2)


def test_binary_bytes_elements_are_length_prefixed(serve: Serve) -> None:
    texts = [b"great film", b"bad"]
    data = b"".join(struct.pack("<I", len(text)) + text for text in texts)
    header = {"inputs": [{"name": "input-0", "shape": [2], "datatype": "BYTES",
                          "parameters": {"binary_data_size": len(data)}}],
              "outputs": [{"name": "label", "parameters": {"binary_data": True}}, {"name": "predict"}]}
    content, headers = binary_request(header, data)
    response = serve("text").post("/v2/models/text/infer", content=content, headers=headers)
    answer, blob = split_binary(response.content, response.headers["inference-header-content-length"])
    label, predict = answer["outputs"]
    assert predict["data"] == [10, 3] and "parameters" not in predict
    assert label["parameters"] == {"binary_data_size": len(blob)}
    assert blob == struct.pack("<I", 4) + b"long" + struct.pack("<I", 5) + b"short"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"inputs": column_inputs(SETOSA)[:3]}, 'missing inputs "petal width (cm)"'),
        ({"inputs": [{**column_inputs(SETOSA)[0], "datatype": "BYTES"}, *column_inputs(SETOSA)[1:]]},
         'input "sepal length (cm)": datatype BYTES does not fit; the model takes FP64'),
        ({"inputs": [{**column_inputs(SETOSA)[0], "shape": [2]}, *column_inputs(SETOSA)[1:]]},
         'input "sepal length (cm)": 1 elements in "data" for shape [2] (2 elements)'),
        ({"inputs": [{**column_inputs(SETOSA)[0], "shape": [1, 2]}, *column_inputs(SETOSA)[1:]]},
         'input "sepal length (cm)": 1 elements in "data" for shape [1, 2] (2 elements)'),
        ({"inputs": [{**column_inputs(SETOSA)[0], "data": ["5.1"]}, *column_inputs(SETOSA)[1:]]},
         'column "sepal length (cm)", row 0: expected a number, got the string "5.1"'),
        ({"inputs": column_inputs(SETOSA), "outputs": [{"name": "explain"}]},
         'unknown output "explain"; this model has "predict", "predict_proba"'),
        ({"inputs": column_inputs(SETOSA), "id": 7}, '"id" must be a string'),
        ({"inputs": []}, '"inputs" must be a non-empty list of tensors'),
        ([], 'the inference request must be a JSON object with "inputs"'),
        ({"inputs": [{**column_inputs(SETOSA)[0], "datatype": "FP128"}]},
         'input "sepal length (cm)": unknown datatype \'FP128\''),
    ],
)
def test_bad_infer_requests_are_400_with_the_error_object(iris: TestClient, body: Any, message: str) -> None:
    response = iris.post(f"{MODEL}/infer", json=body)
    assert response.status_code == 400
    assert set(response.json()) == {"error"} and response.json()["error"].startswith(message)


def test_bad_binary_requests_are_400(serve: Serve) -> None:
    client = serve("iris_array")
    header = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32",
                          "parameters": {"binary_data_size": 12}}]}
    content, headers = binary_request(header, struct.pack("<3f", 1, 2, 3))
    response = client.post("/v2/models/iris-array/infer", content=content, headers=headers)
    assert response.json()["error"] == ('input "input-0": binary_data_size is 12 bytes; a FP32 tensor of 4 '
                                        "elements takes 16")
    content, headers = binary_request(header, struct.pack("<3f", 1, 2, 3), b"extra")
    response = client.post("/v2/models/iris-array/infer", content=content,
                           headers={**headers, "Inference-Header-Content-Length": "100000"})
    assert response.status_code == 400 and "Inference-Header-Content-Length".lower() in response.json()["error"]
    response = client.post("/v2/models/iris-array/infer", content=b"\x00\x01",
                           headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 400


def test_a_model_error_is_500(serve: Serve) -> None:
    body = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [-1.0]}]}
    response = serve("raises").post("/v2/models/raises/infer", json=body)
    assert response.status_code == 500 and response.json()["error"].startswith("model failed on this input")


def test_not_ready_is_a_400_with_ready_false(serve: Serve, make_bundle: Callable[[str], Path]) -> None:
    bundle = make_bundle("raises")
    edit_golden(bundle, lambda golden: golden["cases"][0].update(expected=[3.5]))
    client = serve(bundle)
    assert client.get("/v2/health/ready").status_code == 400
    assert client.get("/v2/health/ready").json() == {"ready": False}
    response = client.get("/v2/models/raises/ready")
    assert response.status_code == 400 and response.json() == {"name": "raises", "ready": False}
    assert client.get("/v2/health/live").status_code == 200


EXTRA_TENSOR = {"name": "customer id", "shape": [1], "datatype": "INT64", "data": [7]}


def test_an_extra_input_tensor_is_an_extra_column_dropped_and_named(iris: TestClient) -> None:
    plain = iris.post(f"{MODEL}/infer", json={"inputs": column_inputs(SETOSA)})
    answer = iris.post(f"{MODEL}/infer", json={"inputs": [EXTRA_TENSOR, *column_inputs(SETOSA)]})
    assert plain.status_code == 200 and "mlship-ignored-columns" not in plain.headers
    assert answer.status_code == 200 and answer.json()["outputs"] == plain.json()["outputs"]
    assert json.loads(answer.headers["mlship-ignored-columns"]) == ["customer id"]


def test_an_extra_input_tensor_with_binary_data_is_skipped_unread(iris: TestClient) -> None:
    extra = struct.pack("<3d", 1.0, 2.0, 3.0)
    real = [{**t, "parameters": {"binary_data_size": 8}} for t in column_inputs(SETOSA)]
    for t in real:
        t.pop("data")
    blobs = extra + b"".join(struct.pack("<d", v) for v in SETOSA)
    header = {"inputs": [{"name": "x", "shape": [3], "datatype": "FP64",
                          "parameters": {"binary_data_size": len(extra)}}, *real]}
    content, headers = binary_request(header, blobs)
    answer = iris.post(f"{MODEL}/infer", content=content, headers=headers)
    expected = iris.post(f"{MODEL}/infer", json={"inputs": column_inputs(SETOSA)}).json()["outputs"]
    assert answer.status_code == 200 and answer.json()["outputs"] == expected
    assert json.loads(answer.headers["mlship-ignored-columns"]) == ["x"]
    header["inputs"][0]["parameters"] = {"binary_data_size": len(blobs) + 1}
    content, headers = binary_request(header, blobs)
    refused = iris.post(f"{MODEL}/infer", content=content, headers=headers)
    assert refused.status_code == 400 and 'input "x": binary_data_size' in refused.json()["error"]


def test_strict_mode_refuses_an_extra_input_tensor(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLSHIP_STRICT_COLUMNS", "1")
    answer = serve("iris_frame").post(f"{MODEL}/infer", json={"inputs": [EXTRA_TENSOR, *column_inputs(SETOSA)]})
    assert answer.status_code == 400 and 'unknown input "customer id"; this model takes' in answer.json()["error"]
