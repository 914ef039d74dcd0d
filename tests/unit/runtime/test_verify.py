from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from starlette.testclient import TestClient

from mlship.runtime import _verify
from mlship.runtime._bundle import BundleLoadError
from mlship.runtime._verify import CaseResult, ServerUnreachable, verify_bundle, verify_url

from .sample_bundles import edit_golden

MakeBundle = Callable[[str], Path]


def test_all_golden_cases_match(sample_bundle: MakeBundle) -> None:
    results = verify_bundle(sample_bundle("iris_frame"))
    assert [(r.id, r.method, r.ok, r.detail) for r in results] == [
        ("predict-0", "predict", True, ""),
        ("predict-1", "predict", True, ""),
        ("predict-2", "predict", True, ""),
        ("predict_proba-3", "predict_proba", True, ""),
        ("predict_proba-4", "predict_proba", True, ""),
        ("predict_proba-5", "predict_proba", True, ""),
    ]
    assert results[1].expected == results[1].actual == [1]


def test_mismatch_is_reported_with_both_values(make_bundle: MakeBundle) -> None:
    bundle = make_bundle("iris_frame")
    edit_golden(bundle, lambda golden: golden["cases"][2].update(expected=[1]))
    result = verify_bundle(bundle)[2]
    assert result == CaseResult("predict-2", "predict", False, "at [0]: expected 1, got 2", [1], [2])


def test_tolerance_comes_from_golden_json(make_bundle: MakeBundle) -> None:
    bundle = make_bundle("raises")
    edit_golden(
        bundle, lambda golden: golden.update(rtol=0.1, cases=[{**golden["cases"][0], "expected": [3.2]}])
    )
    assert verify_bundle(bundle)[0].ok


def test_a_raising_model_fails_its_case(make_bundle: MakeBundle) -> None:
    bundle = make_bundle("raises")
    edit_golden(bundle, lambda golden: golden["cases"][0].update(instances=[{"x": -1.0}]))
    result = verify_bundle(bundle)[0]
    assert not result.ok and result.actual is None
    assert result.detail == "predict raised ValueError: x must not be negative"


def test_a_golden_input_the_runtime_rejects_fails_its_case(make_bundle: MakeBundle) -> None:
    bundle = make_bundle("raises")
    edit_golden(bundle, lambda golden: golden["cases"][0].update(instances=[{"x": "1.5"}]))
    assert verify_bundle(bundle)[0].detail == (
        'the runtime rejects the golden input: column "x", row 0: expected a number, got the string "1.5"'
    )


def test_verify_bundle_raises_for_a_bad_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleLoadError):
        verify_bundle(tmp_path)


def route_to(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Send verify_url's HTTP requests to an in-process app instead of a socket."""

    def post(url: str, body: Any, timeout: float) -> tuple[int, Any]:
        response = client.post(urlsplit(url).path, json=body)
        return response.status_code, response.json()

    monkeypatch.setattr(_verify, "_post", post)


def test_verify_url_replays_over_http(
    serve: Callable[..., TestClient], sample_bundle: MakeBundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    route_to(serve("iris_frame"), monkeypatch)
    results = verify_url("http://server/", sample_bundle("iris_frame"))
    assert len(results) == 6 and all(result.ok for result in results)


def test_verify_url_reports_http_errors(
    serve: Callable[..., TestClient], make_bundle: MakeBundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    route_to(serve("raises"), monkeypatch)
    bundle = make_bundle("raises")
    edit_golden(bundle, lambda golden: golden["cases"][0].update(instances=[{"x": -1.0}]))
    [result] = verify_url("http://server", bundle)
    assert not result.ok and result.detail.startswith("HTTP 500: model failed on this input (request id ")


def test_verify_url_compares_non_finite_expectations_with_null(
    serve: Callable[..., TestClient], make_bundle: MakeBundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = make_bundle("raises")
    edit_golden(bundle, lambda golden: golden["cases"][0].update(expected=[float("nan")]))
    monkeypatch.setattr(_verify, "_post", lambda url, body, timeout: (200, {"predictions": [None]}))
    [result] = verify_url("http://server", bundle)
    assert result.ok and result.expected == [None]


def test_verify_url_without_a_server_raises(
    sample_bundle: MakeBundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(request: urllib.request.Request, timeout: float) -> None:
        raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    with pytest.raises(
        ServerUnreachable, match=r"cannot reach http://127.0.0.1:9/predict: \[Errno 111\] Connection"
    ):
        verify_url("http://127.0.0.1:9", sample_bundle("raises"))
