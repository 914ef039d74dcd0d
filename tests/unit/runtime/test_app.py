from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from starlette.testclient import TestClient

from mlship.runtime import _api, _mlflow, _model
from mlship.runtime._app import create_app
from mlship.runtime._bundle import BundleLoadError, load_bundle

from .sample_bundles import edit_golden, edit_manifest

Serve = Callable[..., TestClient]
IRIS_ROW = {
    "sepal length (cm)": 5.1,
    "sepal width (cm)": 3.5,
    "petal length (cm)": 1.4,
    "petal width (cm)": 0.2,
}
IRIS_VIRGINICA = [7.7, 3.0, 6.1, 2.3]


@pytest.fixture
def iris(serve: Serve) -> TestClient:
    return serve("iris_frame")


def test_predict(iris: TestClient) -> None:
    response = iris.post("/predict", json={"instances": [IRIS_ROW, IRIS_VIRGINICA]})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"predictions": [0, 2]}


def test_other_methods_get_their_own_endpoint(iris: TestClient) -> None:
    response = iris.post("/predict_proba", json={"inputs": [IRIS_ROW]})
    probabilities = response.json()["predictions"]
    assert len(probabilities) == 1 and len(probabilities[0]) == 3
    assert math.isclose(sum(probabilities[0]), 1.0) and probabilities[0][0] > 0.9


def test_ndarray_bundle(serve: Serve) -> None:
    response = serve("iris_array").post(
        "/predict", json={"instances": [[5.1, 3.5, 1.4, 0.2], IRIS_VIRGINICA]}
    )
    assert response.json() == {"predictions": [0, 2]}


def test_probes_and_metadata(iris: TestClient, sample_bundle: Callable[[str], Path]) -> None:
    assert iris.get("/livez").json() == {"status": "alive"}
    assert iris.get("/readyz").json() == {"status": "ready"}
    metadata = iris.get("/metadata").json()
    assert metadata["name"] == "iris-frame" and metadata["version"] == "0.1.0"
    assert metadata["methods"] == ["predict", "predict_proba"]
    assert metadata["input"]["kind"] == "dataframe"
    # Synthetic by default (MLSHIP_PUBLISH_EXAMPLE=1 publishes the real row: tests/unit/runtime/test_auth.py)
    assert metadata["input"]["example"] == dict.fromkeys(IRIS_ROW, 1.0)
    assert metadata["source"] == {"notebook": "iris_frame.ipynb", "sha256": "0" * 64}
    assert metadata["python"]["version"].count(".") == 2
    assert "scikit-learn" in " ".join(metadata["requirements"])


def test_request_id_is_generated_or_echoed(iris: TestClient) -> None:
    generated = iris.get("/livez").headers["x-request-id"]
    assert len(generated) == 32 and generated != iris.get("/livez").headers["x-request-id"]
    assert iris.get("/livez", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    assert iris.get("/livez", headers={"X-Request-ID": "has space"}).headers["x-request-id"] != "has space"
    assert iris.post("/nope").headers["x-request-id"]


def orjson_reading_any_depth(real: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """orjson as it was before 3.13, which read arrays nested to any depth (and had no limit to refuse them)."""

    def loads(body: bytes) -> Any:
        depth = len(body) - len(body.lstrip(b"["))
        if depth and body == b"[" * depth + b"]" * depth:
            value: list[Any] = []
            for _ in range(depth - 1):
                value = [value]
            return value
        return real(body)

    return loads


@pytest.mark.parametrize("parser", ["installed orjson", "orjson reading any depth"])
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b'{"instances": [',
            "the request body is not valid JSON: Expecting value: line 1 column 16 (char 15)",
        ),
        (b"", 'the request body is empty; send a JSON object such as {"instances": [...]}'),
        (b"\xff\xfe", "the request body is not valid JSON:"),
        # The runtime reads 1024 levels of arrays and objects, and refuses more itself, whatever orjson reads.
        (b"[" * 1024 + b"]" * 1024, "the request body must be a JSON object with one of the keys"),
        (b"[" * 1025 + b"]" * 1025, "the request body is nested too deeply"),
        (b"[" * 100_000 + b"]" * 100_000, "the request body is nested too deeply"),
        # orjson refuses NaN, so the standard library reads this one, and runs out of stack.
        (b"[" * 100_000 + b"NaN" + b"]" * 100_000, "the request body is nested too deeply"),
    ],
)
def test_malformed_json_is_400(
    iris: TestClient, content: bytes, message: str, parser: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if parser == "orjson reading any depth":
        import orjson

        from mlship.runtime import _http

        monkeypatch.setattr(orjson, "loads", orjson_reading_any_depth(orjson.loads))
        monkeypatch.setattr(_http, "_CHECK_DEPTH", _http._orjson_reads_any_depth())
    response = iris.post("/predict", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"].startswith(message)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"instances": [{"sepal length (cm)": 5.1}]},
            'row 0: missing columns "sepal width (cm)", "petal length (cm)", "petal width (cm)"',
        ),
        (
            {"instances": [{**IRIS_ROW, "petal width (cm)": "0.2"}]},
            'column "petal width (cm)", row 0: expected a number, got the string "0.2"',
        ),
        ({"instances": []}, "no rows: the request holds an empty list of rows"),
        ({"rows": [IRIS_ROW]}, "the request body must be a JSON object with exactly one of the keys"),
    ],
)
def test_invalid_input_is_400_with_a_precise_message(iris: TestClient, body: Any, message: str) -> None:
    response = iris.post("/predict", json=body)
    assert response.status_code == 400
    assert response.json()["error"].startswith(message)


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_400(iris: TestClient, token: str) -> None:
    content = '{"instances": [[5.1, 3.5, ' + token + ", 0.2]]}"
    response = iris.post("/predict", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json() == {
        "error": f'column "petal length (cm)", row 0: expected a finite number, got {token}'
    }


def test_50_mb_body_is_413(iris: TestClient) -> None:
    response = iris.post(
        "/predict", content=b" " * (50 * 1024 * 1024), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["error"].startswith("the request body is larger than 20971520 bytes")


def test_body_limit_is_enforced_while_streaming(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLSHIP_MAX_BODY_BYTES", "1000")
    client = serve("iris_frame")

    def chunks() -> Iterator[bytes]:  # no Content-Length: sent chunked
        yield b'{"instances": ['
        for _ in range(100):
            yield b"[5.1, 3.5, 1.4, 0.2],"
        yield b"[5.1, 3.5, 1.4, 0.2]]}"

    response = client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"].startswith("the request body is larger than 1000 bytes")
    assert client.post("/predict", json={"instances": [IRIS_ROW]}).status_code == 200


def test_row_limit_from_environment(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLSHIP_MAX_ROWS", "2")
    response = serve("iris_frame").post("/predict", json={"instances": [IRIS_ROW] * 3})
    assert response.status_code == 400
    assert response.json()["error"].startswith("too many rows: 3; this server accepts at most 2 per request")


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "application/json",
        "application/json; charset=utf-8",
        "application/vnd.mlship+json",
        "application/x-www-form-urlencoded",
    ],
)
def test_json_content_types_are_accepted(iris: TestClient, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = iris.post("/predict", content=b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}', headers=headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": [0]}


@pytest.mark.parametrize("content_type", ["text/plain", "multipart/form-data; boundary=x", "application/xml"])
def test_other_content_types_are_415(iris: TestClient, content_type: str) -> None:
    response = iris.post("/predict", content=b'{"instances": []}', headers={"content-type": content_type})
    assert response.status_code == 415
    assert response.json() == {
        "error": f"unsupported Content-Type {content_type!r}; send JSON with Content-Type: application/json"
    }


def test_unknown_method_is_404_json(iris: TestClient) -> None:
    response = iris.post("/explain", json={"instances": [IRIS_ROW]})
    assert response.status_code == 404
    assert response.json() == {
        "error": "no endpoint /explain; this server has POST /predict, POST /predict_proba, POST /invocations, "
        "POST /v2/...; GET /openapi.json lists them all"
    }


def test_get_on_a_method_is_405_json(iris: TestClient) -> None:
    response = iris.get("/predict")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json() == {"error": "GET is not allowed on /predict; allowed: POST"}


def test_model_exception_is_500_then_the_server_still_serves(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    client = serve("raises")
    with caplog.at_level(logging.ERROR):
        response = client.post(
            "/predict", json={"instances": [{"x": -1}]}, headers={"X-Request-ID": "req-42"}
        )
    assert response.status_code == 500
    assert response.json() == {"error": "model failed on this input (request id req-42)"}
    [record] = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert record.request_id == "req-42"  # type: ignore[attr-defined]  # a field of the JSON log line
    assert record.getMessage() == "method predict failed (request id req-42)"
    assert record.exc_info is not None and "x must not be negative" in str(record.exc_info[1])
    assert client.post("/predict", json={"instances": [{"x": 2}]}).json() == {"predictions": [4.0]}


def test_rows_are_predicted_one_by_one_unless_batch_safe(
    serve: Serve, make_bundle: Callable[[str], Path]
) -> None:
    body = {"instances": [{"x": 1.0}, {"x": 5.0}]}
    assert serve("not_batch_safe").post("/predict", json=body).json() == {"predictions": [10.0, 10.0]}
    batched = make_bundle("not_batch_safe")
    edit_manifest(batched, batch_safe=True)
    assert serve(batched).post("/predict", json=body).json() == {"predictions": [8.0, 12.0]}


def test_golden_mismatch_at_startup_makes_readyz_503(
    serve: Serve, make_bundle: Callable[[str], Path], caplog: pytest.LogCaptureFixture
) -> None:
    bundle = make_bundle("raises")
    edit_golden(bundle, lambda golden: golden["cases"][0].update(expected=[3.5]))
    with caplog.at_level(logging.ERROR, logger="mlship.runtime._app"):
        client = serve(bundle)
    detail = "golden case predict-0 does not match: at [0]: expected 3.5, got 3.0 (rtol=1e-06, atol=1e-09)"
    assert caplog.messages == [f"not ready: {detail}"]
    response = client.get("/readyz")
    assert response.status_code == 503 and response.json() == {"error": detail}
    assert client.get("/livez").status_code == 200


def test_before_startup_the_model_is_not_loaded(sample_bundle: Callable[[str], Path]) -> None:
    client = TestClient(create_app(sample_bundle("raises")))  # no `with`: the lifespan does not run
    assert client.get("/readyz").status_code == 503
    response = client.post("/predict", json={"instances": [{"x": 1}]})
    assert response.status_code == 503 and response.json() == {"error": "the model is not loaded yet"}


def test_a_bundle_that_fails_to_load_stops_startup(serve: Serve, make_bundle: Callable[[str], Path]) -> None:
    bundle = make_bundle("raises")
    (bundle / "artifacts" / "values.pkl").write_bytes(b"tampered")
    with pytest.raises(BundleLoadError, match="artifact artifacts/values.pkl has sha256"):
        serve(bundle)


def test_not_a_bundle_fails_at_create_app(tmp_path: Path) -> None:
    with pytest.raises(BundleLoadError, match="is not a bundle"):
        create_app(tmp_path)


def serve_with_method(path: Path, method: Callable[[Any], Any]) -> TestClient:
    bundle = load_bundle(path)
    return TestClient(create_app(path, bundle=dataclasses.replace(bundle, methods={"predict": method})))


def test_the_model_runs_inline_on_the_event_loop(sample_bundle: Callable[[str], Path]) -> None:
    def predict(frame: Any) -> list[str]:
        asyncio.get_running_loop()  # raises RuntimeError in a thread-pool thread
        return ["inline"]

    with serve_with_method(sample_bundle("raises"), predict) as client:
        assert client.post("/predict", json={"instances": [{"x": 1}]}).json() == {"predictions": ["inline"]}


def test_non_finite_outputs_are_sent_as_null(sample_bundle: Callable[[str], Path]) -> None:
    with serve_with_method(sample_bundle("raises"), lambda frame: np.array([np.nan, np.inf, 1.0])) as client:
        assert (
            client.post("/predict", json={"instances": [{"x": 1}]}).content
            == b'{"predictions":[null,null,1.0]}'
        )


def test_an_output_that_cannot_be_encoded_is_500(sample_bundle: Callable[[str], Path]) -> None:
    with serve_with_method(sample_bundle("raises"), lambda frame: object()) as client:
        response = client.post("/predict", json={"instances": [{"x": 1}]})
    assert response.status_code == 500
    assert response.json()["error"].startswith("model failed on this input (request id ")


def test_unexpected_decoding_failures_are_still_400(
    iris: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("surprise")

    monkeypatch.setattr(_model, "check_request", broken)
    response = iris.post("/predict", json={"instances": [IRIS_ROW]})
    assert response.status_code == 400
    assert response.json() == {"error": "cannot decode the input: KeyError: 'surprise'"}


@pytest.mark.parametrize(
    ("module", "function", "path"),
    [(_api, "check_media_type", "/predict"), (_mlflow, "_content_type", "/invocations")],  # fast path; Starlette's
)
def test_a_bug_outside_the_model_is_a_json_500(
    serve: Serve, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, module: Any, function: str,
    path: str,
) -> None:
    def broken(*args: Any) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(module, function, broken)
    client = serve("raises", raise_server_exceptions=False)
    with caplog.at_level(logging.ERROR):
        response = client.post(path, json={"instances": [{"x": 1}]}, headers={"X-Request-ID": "r-1"})
    assert response.status_code == 500
    assert response.json() == {"error": "internal error (request id r-1)"}
    assert response.headers.get_list("x-request-id") == ["r-1"]
    assert any(record.exc_info and "bug" in str(record.exc_info[1]) for record in caplog.records)
