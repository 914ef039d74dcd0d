"""Replay golden.json: in-process against the loaded bundle, or over HTTP against a running server."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterable
from typing import Any

from ._bundle import LoadedBundle, load_bundle, read_servable
from ._codec import outputs_match, replace_non_finite, to_jsonable
from ._contract import CaseResult, Golden, GoldenCase
from ._schema import InputError, decode_request

__all__ = ["CaseResult", "ServerUnreachable", "check_answer", "read_golden", "replay_case", "replay_golden",
           "verify_bundle", "verify_url"]


class ServerUnreachable(Exception):
    """verify_url could not talk to the server at all (as opposed to the server answering wrongly)."""


def verify_bundle(bundle_dir: str | os.PathLike[str]) -> list[CaseResult]:
    """Load the bundle (raises BundleLoadError) and replay every golden case in-process."""
    return replay_golden(load_bundle(bundle_dir))


def replay_golden(bundle: LoadedBundle, cases: Iterable[GoldenCase] | None = None, *,
                  batch_rows: int = 1) -> list[CaseResult]:
    """Replay `cases` (default: every golden case), one result per case, in their order.

    With `batch_rows` > 1 (a batch-safe bundle: the serving runtime merges requests too), the cases of a method
    are replayed together, up to `batch_rows` rows per model call, which is how a server replays hundreds of
    cases at start-up in the time of a few calls. A case is taken as passed from a merged call only when its own
    slice of the output matches; every other case (a merged call that raised, an output of the wrong length, a
    slice that differs) is replayed alone, so its verdict and detail are exactly those of replay_case."""
    todo = list(bundle.golden.cases if cases is None else cases)
    passed: dict[int, CaseResult] = {}
    if batch_rows > 1:
        for chunk in _chunks(todo, batch_rows):
            if len(chunk) > 1:
                passed.update(_replay_merged(bundle, chunk))
    return [passed[index] if index in passed else replay_case(bundle, case) for index, case in enumerate(todo)]


def _chunks(cases: list[GoldenCase], batch_rows: int) -> list[list[tuple[int, GoldenCase]]]:
    """The cases grouped by method, in order, each group at most `batch_rows` rows (a bigger case alone)."""
    chunks: list[list[tuple[int, GoldenCase]]] = []
    open_chunks: dict[str, tuple[list[tuple[int, GoldenCase]], int]] = {}
    for index, case in enumerate(cases):
        rows = len(case.instances)
        chunk, total = open_chunks.get(case.method, ([], 0))
        if not chunk or total + rows > batch_rows:
            chunk, total = [], 0
            chunks.append(chunk)
        chunk.append((index, case))
        open_chunks[case.method] = (chunk, total + rows)
    return chunks


def _replay_merged(bundle: LoadedBundle, chunk: list[tuple[int, GoldenCase]]) -> dict[int, CaseResult]:
    """The cases of `chunk` (one method) whose slice of one merged call's output matches, by index."""
    method = chunk[0][1].method
    instances = [row for _, case in chunk for row in case.instances]
    try:
        value = decode_request({"instances": instances}, bundle.schema)
        actual = to_jsonable(bundle.methods[method](value))
    except Exception:  # noqa: BLE001 - each case is then replayed alone, where its failure is named
        return {}
    if not isinstance(actual, list) or len(actual) != len(instances):
        return {}
    passed, start = {}, 0
    for index, case in chunk:
        part = actual[start : start + len(case.instances)]
        start += len(case.instances)
        ok, detail = outputs_match(part, case.expected, bundle.golden.rtol, bundle.golden.atol)
        if ok:
            passed[index] = CaseResult(case.id, method, True, detail, case.expected, part)
    return passed


def replay_case(bundle: LoadedBundle, case: GoldenCase) -> CaseResult:
    """Replay one case the way a request is served: decode `{"instances": …}`, call, to_jsonable, compare."""
    method = case.method
    try:
        value = decode_request({"instances": case.instances}, bundle.schema)
    except InputError as exc:
        return _failed(case, f"the runtime rejects the golden input: {exc}")
    try:
        actual = to_jsonable(bundle.methods[method](value))
    except Exception as exc:  # noqa: BLE001 - the model's failure is this case's result, not the verifier's
        return _failed(case, f"{method} raised {type(exc).__name__}: {exc}")
    ok, detail = outputs_match(actual, case.expected, bundle.golden.rtol, bundle.golden.atol)
    return CaseResult(case.id, method, ok, detail, case.expected, actual)


def verify_url(url: str, bundle_dir: str | os.PathLike[str], *, timeout: float = 30.0) -> list[CaseResult]:
    """Send every golden case of the bundle at `bundle_dir` to the server at `url` and compare its
    predictions.

    Only the manifest and golden.json are read (and the digests checked); predictor.py is not imported, so
    this works from a machine that could not run the model. Raises BundleLoadError, or ServerUnreachable when
    no HTTP answer comes back at all.
    """
    golden = read_golden(bundle_dir)
    results = []
    for case in golden.cases:
        status, answer = _post(f"{url.rstrip('/')}/{case.method}", {"instances": case.instances}, timeout)
        results.append(check_answer(case, golden, status, answer))
    return results


def read_golden(bundle_dir: str | os.PathLike[str]) -> Golden:
    """The bundle's golden cases (its manifest and digests checked, predictor.py not imported)."""
    return read_servable(bundle_dir).golden


def check_answer(case: GoldenCase, golden: Golden, status: int, answer: Any) -> CaseResult:
    """A server's answer (`status`, decoded JSON body) to `case`, compared with what the notebook computed."""
    if status != 200 or not isinstance(answer, dict) or "predictions" not in answer:
        error = answer.get("error", answer) if isinstance(answer, dict) else answer
        return _failed(case, f"HTTP {status}: {error}")
    # The server writes NaN and Infinity as null (they are not JSON), so compare with what it must send.
    expected = replace_non_finite(case.expected)
    ok, detail = outputs_match(answer["predictions"], expected, golden.rtol, golden.atol)
    return CaseResult(case.id, case.method, ok, detail, expected, answer["predictions"])


def _post(url: str, body: Any, timeout: float) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        raise ServerUnreachable(f"cannot reach {url}: {getattr(exc, 'reason', exc)}") from None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode("utf-8", "replace")[:200]


def _failed(case: GoldenCase, detail: str) -> CaseResult:
    return CaseResult(case.id, case.method, False, detail, case.expected, None)
