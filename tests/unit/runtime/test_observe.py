"""Metrics, access logs, request IDs, overload and draining: the Observe layer and /metrics."""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from mlship.runtime._app import check_ready, create_app
from mlship.runtime._bundle import load_bundle
from mlship.runtime._logs import AccessLog, JsonFormatter
from mlship.runtime._settings import Settings

Serve = Callable[..., TestClient]
ROW = [5.1, 3.5, 1.4, 0.2]


def sample(text: str, metric: str, /, **labels: str) -> float | None:
    """The value of one sample of the text exposition, or None."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{metric}(?:\{{(.*)\}})? (\S+)", line)
        if match and ",".join(sorted((match.group(1) or "").split(","))) == wanted:
            return float(match.group(2))
    return None


def test_metrics_count_requests_latency_batches_and_the_model(serve: Serve) -> None:
    client = serve("iris_frame")
    for _ in range(3):
        client.post("/predict", json={"instances": [ROW, ROW]})
    client.post("/predict", json={"instances": []})
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    labels = {"endpoint": "/predict", "method": "POST"}
    assert sample(text, "mlship_requests_total", status="200", **labels) == 3
    assert sample(text, "mlship_requests_total", status="400", **labels) == 1
    assert sample(text, "mlship_request_duration_seconds_count", status="200", **labels) == 3
    assert sample(text, "mlship_request_duration_seconds_bucket", status="200", le="+Inf", **labels) == 3
    assert sample(text, "mlship_batch_rows_sum", method="predict") == 6
    assert sample(text, "mlship_batch_requests_count", method="predict") == 3
    assert sample(text, "mlship_inference_duration_seconds_count", method="predict") == 3
    assert sample(text, "mlship_requests_in_flight") == 1  # this scrape
    info = {"name": "iris-frame", "version": "0.1.0", "runtime_version": "1", "batch_safe": "true"}
    assert sample(text, "mlship_model_info", **info) == 1


def test_routes_are_labelled_by_template_and_unknown_paths_share_one_label(serve: Serve) -> None:
    client = serve("iris_frame")
    client.get("/v2/models/iris-frame")
    client.get("/v2/models/other")
    for path in ("/a", "/b", "/c"):
        client.get(path)
    text = client.get("/metrics").text
    template = {"endpoint": "/v2/models/{name}", "method": "GET"}
    assert sample(text, "mlship_requests_total", status="200", **template) == 1
    assert sample(text, "mlship_requests_total", status="404", **template) == 1
    assert sample(text, "mlship_requests_total", endpoint="unmatched", method="GET", status="404") == 3


def test_model_failures_are_counted(serve: Serve) -> None:
    client = serve("raises")
    client.post("/predict", json={"instances": [{"x": -1}]})
    assert sample(client.get("/metrics").text, "mlship_model_failures_total", method="predict", reason="error") == 1


def test_openmetrics_when_asked(serve: Serve) -> None:
    response = serve("iris_frame").get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


def served_with_log(path: Path, **settings: Any) -> tuple[TestClient, io.StringIO]:
    stream = io.StringIO()
    limits = Settings(**settings)
    app = create_app(path, bundle=load_bundle(path), settings=limits,
                     access_log=AccessLog(limits.access_log, limits.log_format, stream))
    check_ready(app.state.mlship)
    return TestClient(app), stream


def test_one_json_access_line_per_request_with_the_request_id(sample_bundle: Callable[[str], Path]) -> None:
    client, stream = served_with_log(sample_bundle("iris_frame"))
    response = client.post("/predict", json={"instances": [ROW]}, headers={"X-Request-ID": "abc"})
    assert response.headers["x-request-id"] == "abc"
    client.get("/nowhere")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["logger"] == "mlship.access" and first["level"] == "info"
    assert first["message"] == "POST /predict 200" and first["request_id"] == "abc"
    assert first["status"] == 200 and first["duration_ms"] > 0 and first["client"].startswith("testclient:")
    assert {"time", "pid", "method", "path"} <= set(first)
    assert second["status"] == 404 and len(second["request_id"]) == 32


def test_the_access_log_can_be_off_or_text(sample_bundle: Callable[[str], Path]) -> None:
    client, stream = served_with_log(sample_bundle("iris_frame"), access_log=False)
    client.get("/livez")
    assert stream.getvalue() == ""
    client, stream = served_with_log(sample_bundle("iris_frame"), log_format="text")
    client.get("/livez", headers={"X-Request-ID": "r1"})
    assert stream.getvalue().startswith("INFO:  mlship.access: testclient:") and "GET /livez 200" in stream.getvalue()


def test_error_records_are_json_with_their_extra_fields() -> None:
    import logging

    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("mlship.x", logging.ERROR, __file__, 1, "failed %s", ("here",), None)
        import sys

        record.exc_info = sys.exc_info()
    record.request_id = "r-9"
    entry = json.loads(JsonFormatter().format(record))
    assert entry["level"] == "error" and entry["message"] == "failed here" and entry["request_id"] == "r-9"
    assert entry["exception"].startswith("Traceback") and entry["exception"].endswith("ValueError: boom")


def test_draining_makes_readiness_false_and_closes_connections(serve: Serve) -> None:
    client = serve("iris_frame")
    state = client.app.state.mlship  # type: ignore[attr-defined]
    state.draining = True
    assert client.get("/readyz").status_code == 503
    assert client.get("/readyz").json() == {"error": "the server is shutting down"}
    assert client.get("/v2/health/ready").status_code == 400
    assert client.get("/ping").status_code == 503
    response = client.post("/predict", json={"instances": [ROW]})
    assert response.status_code == 200 and response.headers["connection"] == "close"
    assert client.get("/livez").status_code == 200


def test_past_max_in_flight_requests_are_503(sample_bundle: Callable[[str], Path]) -> None:
    path = sample_bundle("iris_frame")
    app = create_app(path, bundle=load_bundle(path), settings=Settings(max_in_flight=1, access_log=False))
    release = asyncio.Event()

    async def hold(scope: Any, receive: Any, send: Any) -> None:
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    observe = app.middleware_stack = app.build_middleware_stack()
    while not hasattr(observe, "state"):  # down to the Observe layer, then hold requests inside it
        observe = observe.app
    observe.app = hold

    async def main() -> list[tuple[int, bytes]]:
        async def call() -> tuple[int, bytes]:
            sent: list[Any] = []
            scope = {"type": "http", "method": "GET", "path": "/livez", "headers": [], "client": ("c", 1)}

            async def send(message: Any) -> None:
                sent.append(message)

            await app(scope, None, send)  # type: ignore[arg-type]
            return sent[0]["status"], sent[-1]["body"]

        first = asyncio.ensure_future(call())
        await asyncio.sleep(0)
        second = await call()
        release.set()
        return [await first, second]

    (first_status, _), (second_status, second_body) = asyncio.run(main())
    assert first_status == 200 and second_status == 503
    assert json.loads(second_body)["error"].startswith("the server is overloaded: 1 requests in flight")


def test_multiprocess_metrics_directory_and_its_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prometheus_client import values

    from mlship.runtime import _metrics

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")  # so that monkeypatch restores what the test sets
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)

    def unwritable(**kwargs: Any) -> str:
        raise OSError("read-only file system")

    monkeypatch.setattr(_metrics.tempfile, "mkdtemp", unwritable)
    assert _metrics.enable_multiprocess() is None and not _metrics.is_multiprocess()
    stale = tmp_path / "counter_123.db"
    stale.write_bytes(b"old")
    assert _metrics.enable_multiprocess(str(tmp_path)) == tmp_path
    assert _metrics.is_multiprocess() and not stale.exists()
