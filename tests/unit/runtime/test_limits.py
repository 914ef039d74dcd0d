"""Bounded work per request before the model runs, 4xx (not 500) for inputs that used to fail inside the server,
and the model thread that keeps the event loop free while a slow model runs (issue 9, items 1, 3, 7, 8)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.mmap_dict import MmapedDict
from starlette.testclient import TestClient

from mlship.runtime import _http
from mlship.runtime._app import create_app
from mlship.runtime._bundle import load_bundle
from mlship.runtime._inference import ModelTimeout, Runner
from mlship.runtime._metrics import merge_dead_files
from mlship.runtime._schema import check_request
from mlship.runtime._settings import Settings, SettingsError
from mlship.runtime._v2_handlers import element_count

from .sample_bundles import edit_manifest

IRIS_INPUTS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]


@pytest.fixture
def client(sample_bundle: Callable[[str], Path]) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def start(sample: str, **settings: Any) -> TestClient:
        app = create_app(sample_bundle(sample), settings=Settings(**settings))
        test_client = TestClient(app).__enter__()
        clients.append(test_client)
        return test_client

    yield start
    for test_client in clients:
        test_client.__exit__(None, None, None)


def v2_body(shape: list[int], data: list[Any], name: str = IRIS_INPUTS[0]) -> dict[str, Any]:
    inputs = [{"name": column, "shape": [1], "datatype": "FP64", "data": [1.0]} for column in IRIS_INPUTS]
    inputs[IRIS_INPUTS.index(name)] = {"name": name, "shape": shape, "datatype": "FP64", "data": data}
    return {"inputs": inputs}


def test_a_shape_of_100000_dimensions_is_400_at_once(client: Callable[..., TestClient]) -> None:
    iris = client("iris_frame")
    body = v2_body([1] + [10**9] * 100_000, [1])
    started = time.monotonic()
    response = iris.post("/v2/models/iris-frame/infer", json=body)
    assert time.monotonic() - started < 2  # before: 27-34 s of big-integer multiplication
    assert response.status_code == 400
    assert response.json() == {
        "error": 'input "sepal length (cm)": "shape" has 100001 dimensions; at most 32 [env var: MLSHIP_MAX_TENSOR_DIMS]'
    }


def test_a_shape_with_too_many_elements_is_400(client: Callable[..., TestClient]) -> None:
    iris = client("iris_frame", max_elements=1000)
    response = iris.post("/v2/models/iris-frame/infer", json=v2_body([10**9, 10**9], [1]))
    assert response.status_code == 400
    assert "has more than 1000 elements [env var: MLSHIP_MAX_ELEMENTS]" in response.json()["error"]


def test_the_element_count_stops_early() -> None:
    limits = Settings()
    started = time.monotonic()
    with pytest.raises(Exception, match="more than"):
        element_count("x", [10**18] * 32, limits)
    assert time.monotonic() - started < 0.1
    assert element_count("x", [10**18, 0, 10**18], limits) == 0
    assert element_count("x", [2, 3, 4], limits) == 24


def test_a_body_with_more_values_than_the_limit_is_413(client: Callable[..., TestClient]) -> None:
    iris = client("iris_frame", max_elements=50)
    row = dict.fromkeys(IRIS_INPUTS, 1.0)
    assert iris.post("/predict", json={"instances": [row] * 2}).status_code == 200
    response = iris.post("/predict", json={"instances": [row] * 20})
    assert response.status_code == 413
    assert response.json()["error"].endswith("[env var: MLSHIP_MAX_ELEMENTS]")
    many = iris.post("/invocations", json={"instances": [row] * 20})
    assert many.status_code == 413 and many.json()["error_code"] == "BAD_REQUEST"


def test_a_csv_field_over_the_limit_is_413_not_500(client: Callable[..., TestClient]) -> None:
    iris = client("iris_frame")
    header = ",".join(f'"{name}"' for name in IRIS_INPUTS)
    csv = f"{header}\n1,2,3,{'4' * 131_073}\n"
    response = iris.post("/invocations", content=csv, headers={"Content-Type": "text/csv"})
    assert response.status_code == 413
    assert response.json() == {
        "error_code": "BAD_REQUEST",
        "message": "a CSV field is longer than 131072 characters [env var: MLSHIP_MAX_CSV_FIELD_CHARS]",
    }
    assert iris.post("/invocations", content=f"{header}\n1,2,3,4\n", headers={"Content-Type": "text/csv"}).json() == {
        "predictions": [2]
    }


# Header bytes are read as latin-1: 0xb2 is "²", 0xb9 "¹", digits to str.isdigit() that int() refuses.
@pytest.mark.parametrize("declared", [b"\xb2", b"1\xb2", b"\xb9"])
def test_a_binary_header_with_non_ascii_digits_is_400(client: Callable[..., TestClient], declared: bytes) -> None:
    iris = client("iris_frame")
    response = iris.post(
        "/v2/models/iris-frame/infer",
        content=json.dumps(v2_body([1], [1.0])).encode(),
        headers={b"Content-Type": b"application/octet-stream", b"Inference-Header-Content-Length": declared},
    )
    assert response.status_code == 400
    assert response.json()["error"].startswith("inference-header-content-length must be the length")


def test_null_for_a_text_model_that_declares_no_nulls_is_400(
    client: Callable[..., TestClient], make_bundle: Callable[[str], Path]
) -> None:
    # The packager now records nullable=false for a list of texts without missing values (_kernel.infer_schema):
    # the schema, not the model, refuses null.
    bundle = make_bundle("text_length")
    schema = json.loads((bundle / "mlship.json").read_text())["input"]
    edit_manifest(bundle, input={**schema, "nullable": False})
    with TestClient(create_app(bundle)) as texts:
        response = texts.post("/predict", json={"instances": ["a fine day", None]})
    assert response.status_code == 400
    assert response.json() == {"error": "row 1: expected a string, got null"}


def test_unfinished_bodies_are_bounded_across_requests() -> None:
    budget = _http.BODY_BUDGET
    limit = budget.limit
    _http.set_pending_limit(100)
    try:
        release = asyncio.Event()

        def stalled(chunks: list[bytes]) -> Any:
            messages = [{"type": "http.request", "body": chunk, "more_body": True} for chunk in chunks]

            async def receive() -> dict[str, Any]:
                if messages:
                    return messages.pop(0)
                await release.wait()
                return {"type": "http.request", "body": b"", "more_body": False}

            return receive

        async def main() -> list[Any]:
            first = asyncio.ensure_future(_http.receive_body(stalled([b"x" * 30, b"x" * 30]), None, 1000))
            await asyncio.sleep(0.01)
            assert budget.held == 60
            second = asyncio.ensure_future(_http.receive_body(stalled([b"y" * 50]), None, 1000))
            results: list[Any] = list(await asyncio.gather(second, return_exceptions=True))
            release.set()
            results.append(await first)
            return results

        refused, body = asyncio.run(main())
        assert isinstance(refused, _http.HttpError) and refused.status_code == 503
        assert "MLSHIP_MAX_PENDING_BYTES" in refused.message
        assert body == b"x" * 60
        assert budget.held == 0  # every byte given back, refused or finished
    finally:
        _http.set_pending_limit(limit)


def test_the_new_limits_come_from_the_environment() -> None:
    env = {"MLSHIP_MAX_ELEMENTS": "10", "MLSHIP_MAX_TENSOR_DIMS": "4", "MLSHIP_MAX_HEADER_BYTES": "2048",
           "MLSHIP_MAX_HEADERS": "20", "MLSHIP_HEADER_TIMEOUT": "1.5", "MLSHIP_KEEPALIVE_TIMEOUT": "2",
           "MLSHIP_MAX_PENDING_BYTES": "30000000", "MLSHIP_MAX_CSV_FIELD_CHARS": "99", "MLSHIP_INLINE_SECONDS": "0"}
    settings = Settings.from_env(env)
    assert (settings.max_elements, settings.max_tensor_dims, settings.max_header_bytes, settings.max_headers) == (
        10, 4, 2048, 20)
    assert (settings.header_timeout, settings.keepalive_timeout, settings.pending_limit) == (1.5, 2.0, 30_000_000)
    assert (settings.max_csv_field_chars, settings.inline_seconds) == (99, 0.0)
    assert Settings.from_env({"MLSHIP_MAX_BODY_BYTES": "1000"}).pending_limit == 3000
    with pytest.raises(SettingsError, match="MLSHIP_MAX_PENDING_BYTES=10 must be at least MLSHIP_MAX_BODY_BYTES"):
        Settings.from_env({"MLSHIP_MAX_PENDING_BYTES": "10"})


def test_dead_workers_metric_files_are_folded_into_the_archive(tmp_path: Path) -> None:
    key = json.dumps(["mlship_requests", "mlship_requests_total", {"endpoint": "/predict"}, "help"])
    for pid, value in ((101, 3.0), (102, 4.0)):
        counter = MmapedDict(str(tmp_path / f"counter_{pid}.db"))  # type: ignore[no-untyped-call]
        counter.write_value(key, value, 0.0)  # type: ignore[no-untyped-call]
        counter.close()  # type: ignore[no-untyped-call]
        gauge = MmapedDict(str(tmp_path / f"gauge_max_{pid}.db"))  # type: ignore[no-untyped-call]
        gauge.write_value(key, value, 0.0)  # type: ignore[no-untyped-call]
        gauge.close()  # type: ignore[no-untyped-call]
    merge_dead_files(tmp_path, 101)
    merge_dead_files(tmp_path, 102)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["counter_archive.db", "gauge_max_archive.db"]
    values = {
        name: [value for _, value, _, _ in MmapedDict.read_all_values_from_file(str(tmp_path / name))]  # type: ignore[no-untyped-call]
        for name in ("counter_archive.db", "gauge_max_archive.db")
    }
    assert values == {"counter_archive.db": [7.0], "gauge_max_archive.db": [4.0]}


def slow_runner(path: Path, **settings: Any) -> Runner:
    def predict(frame: Any) -> Any:
        deadline = time.monotonic() + float(frame["x"].max())
        while time.monotonic() < deadline:
            time.sleep(0.001)
        return (frame["x"] * 2).to_numpy()

    bundle = load_bundle(path)
    return Runner(dataclasses.replace(bundle, methods={"predict": predict}), Settings(**settings))


def test_a_slow_call_runs_off_the_event_loop_and_requests_keep_joining(sample_bundle: Callable[[str], Path]) -> None:
    runner = slow_runner(sample_bundle("raises"), inline_seconds=0.05)
    runner.expect("predict", 0.3)  # as the readiness replay of a slow model reports
    schema = runner.bundle.schema

    async def main() -> tuple[list[float], list[Any]]:
        ticks: list[float] = []
        first = asyncio.ensure_future(runner.predict("predict", check_request({"instances": [{"x": 0.3}]}, schema)))
        started = time.monotonic()
        while time.monotonic() - started < 0.25:  # the loop runs while the model does
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)
        later = asyncio.ensure_future(runner.predict("predict", check_request({"instances": [{"x": 0.0}]}, schema)))
        return ticks, [await first, await later]

    ticks, results = asyncio.run(main())
    assert len(ticks) > 10 and max(b - a for a, b in zip(ticks, ticks[1:], strict=False)) < 0.1
    assert results == [[0.6], [0.0]]
    assert threading.current_thread() is threading.main_thread()


def test_a_call_on_the_model_thread_is_interrupted_at_its_deadline(sample_bundle: Callable[[str], Path]) -> None:
    runner = slow_runner(sample_bundle("raises"), inline_seconds=0.0, timeout=0.3)
    runner.expect("predict", 1.0)
    schema = runner.bundle.schema

    async def main() -> Any:
        return await runner.predict("predict", check_request({"instances": [{"x": 5.0}]}, schema))

    started = time.monotonic()
    with pytest.raises(ModelTimeout, match="ran past the 0.3 s timeout"):
        asyncio.run(main())
    assert time.monotonic() - started < 2
    # and the thread serves the next call
    assert asyncio.run(runner.predict("predict", check_request({"instances": [{"x": 0.0}]}, schema))) == [0.0]
