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
from mlship.runtime._bundle import BundleLoadError, LoadedBundle, load_bundle
from mlship.runtime._verify import (
    CaseResult,
    ServerUnreachable,
    replay_case,
    replay_golden,
    verify_bundle,
    verify_url,
)

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


def _counting_calls(bundle: LoadedBundle) -> list[int]:
    """Wrap each method of a loaded bundle to record the rows of every call; returns that record."""
    calls: list[int] = []
    for name, method in list(bundle.methods.items()):
        def counted(value: Any, method: Callable[[Any], Any] = method) -> Any:
            calls.append(len(value))
            return method(value)
        bundle.methods[name] = counted
    return calls


def _verdicts(results: list[CaseResult]) -> list[tuple[Any, ...]]:
    """Each case's verdict and expected output, with its actual output to 12 significant digits: a model called
    on three rows at once may differ from three calls in the last bit (BLAS blocks the rows by the CPU it finds)."""
    return [(r.id, r.method, r.ok, r.detail, r.expected, _rounded(r.actual)) for r in results]


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.12g}")
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def test_batched_replay_gives_the_one_by_one_results_in_fewer_calls(sample_bundle: MakeBundle) -> None:
    bundle = load_bundle(sample_bundle("iris_frame"))
    calls = _counting_calls(bundle)
    alone = _verdicts(replay_golden(bundle))
    assert calls == [1] * 6 and all(verdict[2] for verdict in alone)
    calls.clear()
    assert _verdicts(replay_golden(bundle, batch_rows=128)) == alone and calls == [3, 3]  # one call per method
    calls.clear()
    # the chunks of 2, then the odd ones alone
    assert _verdicts(replay_golden(bundle, batch_rows=2)) == alone and calls == [2, 2, 1, 1]


def test_a_case_that_differs_in_a_batch_gets_its_own_replays_verdict(make_bundle: MakeBundle) -> None:
    path = make_bundle("iris_frame")
    edit_golden(path, lambda golden: golden["cases"][4].update(expected=[[0.5, 0.25, 0.25]]))
    bundle = load_bundle(path)
    calls = _counting_calls(bundle)
    batched = replay_golden(bundle, batch_rows=128)
    assert [r.ok for r in batched] == [True, True, True, True, False, True]
    assert calls == [3, 3, 1]  # the merged calls, then the differing case alone
    assert batched[4] == replay_case(bundle, bundle.golden.cases[4])


def test_a_merged_call_that_fails_replays_each_case_alone(make_bundle: MakeBundle) -> None:
    path = make_bundle("raises")
    # The model doubles x and refuses a negative one: the merged call of the three raises.
    edit_golden(path, lambda golden: golden.update(cases=[
        {**golden["cases"][0], "id": f"predict-{n}", "instances": [{"x": x}], "expected": [2 * x]}
        for n, x in enumerate([1.0, -1.0, 2.0])]))
    results = replay_golden(load_bundle(path), batch_rows=128)
    assert [(r.id, r.ok) for r in results] == [("predict-0", True), ("predict-1", False), ("predict-2", True)]
    assert results[1].detail == "predict raised ValueError: x must not be negative"


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
