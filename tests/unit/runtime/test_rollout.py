"""The shadow/canary split, the shadow's comparison and the guard (mlship/runtime/_rollout.py), without a server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from mlship.runtime._contract import Golden
from mlship.runtime._rollout import (
    AGREE,
    DISAGREE,
    ERROR,
    DisagreementLog,
    Live,
    compare,
    predictions_of,
    split_by_count,
    split_by_key,
)
from mlship.runtime._service import Rollout

GOLDEN = Golden((), rtol=1e-6, atol=1e-9)


def test_a_canary_of_10_percent_over_10000_requests_gets_10_percent() -> None:
    share = sum(split_by_count(10, n) for n in range(10_000)) / 10_000
    assert abs(share - 0.10) <= 0.015
    assert sum(split_by_count(10, n) for n in range(10)) == 1  # spread evenly, not in runs
    assert not any(split_by_count(0, n) for n in range(1000)) and all(split_by_count(100, n) for n in range(1000))


def test_sticky_keys_split_by_weight_and_never_change_version() -> None:
    keys = [f"user-{n}" for n in range(10_000)]
    picked = {key: split_by_key(10, key) for key in keys}
    assert abs(sum(picked.values()) / len(keys) - 0.10) <= 0.015
    assert all(split_by_key(10, key) == picked[key] for key in keys)
    assert not any(split_by_key(0, key) for key in keys) and all(split_by_key(100, key) for key in keys)


def test_compare_uses_the_golden_tolerance() -> None:
    assert compare([1.0, "a"], 200, b'{"predictions": [1.0000000001, "a"]}', GOLDEN, "r")[0] == AGREE
    assert compare([1.0, "a"], 200, b'{"predictions": [1.1, "a"]}', GOLDEN, "r")[0] == DISAGREE
    assert compare(["a"], 200, b'{"predictions": ["b"]}', GOLDEN, "r") == (DISAGREE, ["b"])
    assert compare(["a"], 503, b'{"error": "x"}', GOLDEN, "r")[0] == ERROR
    assert compare(["a"], 400, b'{"error": "bad input"}', GOLDEN, "r")[0] == DISAGREE
    v2 = b'{"outputs": [{"name": "predict", "data": [1, 2]}]}'
    assert predictions_of(v2) == {"predict": [1, 2]} and predictions_of(b"not json") is None


def _shadow(rollout: Rollout, answers: list[tuple[int, bytes]], log: DisagreementLog) -> Live:
    live = Live("fraud", "1.0.0", rollout, GOLDEN, log, queue_size=10_000)

    async def run() -> None:
        async def send(method: str, target: bytes, headers: list[tuple[bytes, bytes]],
                       body: bytes) -> tuple[int, bytes]:
            status, answer = answers[int(json.loads(body)["n"]) % len(answers)]
            if status == 0:
                raise ConnectionError("reset")
            return status, answer

        for n in range(100):
            live.offer("POST", b"/predict", [], json.dumps({"n": n}).encode(), ["a"], f"r{n}", send)
        await live.queue.join()
        await live.stop()

    asyncio.run(run())
    return live


def test_shadow_counts_and_logs_disagreements(tmp_path: Path) -> None:
    log = DisagreementLog(tmp_path / "shadow.jsonl")
    same, other = (200, b'{"predictions": ["a"]}'), (200, b'{"predictions": ["b"]}')
    live = _shadow(Rollout("shadow", "2.0.0", 50.0, window=1000), [same, same, same, same, other], log)
    assert live.results == {AGREE: 40, DISAGREE: 10, ERROR: 0} and live.active  # half of 100 sampled
    records = [json.loads(line) for line in (tmp_path / "shadow.jsonl").read_text().splitlines()]
    assert len(records) == 10 and records[0]["stable_output"] == ["a"] and records[0]["candidate_output"] == ["b"]
    assert set(records[0]) >= {"request_id", "input", "stable", "candidate"}


def test_the_disagreement_log_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "shadow.jsonl"
    log = DisagreementLog(path, limit=1000)
    for n in range(200):
        log.write({"request_id": n, "input": "x" * 50})
    assert path.stat().st_size <= 1000 and (tmp_path / "shadow.jsonl.1").stat().st_size <= 1000
    DisagreementLog(tmp_path / "missing" / "x.jsonl").write({"a": 1})  # cannot be written: logged, not raised


def test_the_guard_trips_on_disagreement_and_on_errors(tmp_path: Path) -> None:
    log = DisagreementLog(None)
    bad = _shadow(Rollout("shadow", "2.0.0", 100.0, max_disagreement=0.1, window=20),
                  [(200, b'{"predictions": ["b"]}')], log)
    assert not bad.active and "disagreement rate 1.000 > max_disagreement 0.1" in (bad.tripped or "")
    assert sum(bad.results.values()) == 20  # nothing more is sent once it tripped
    failing = _shadow(Rollout("shadow", "2.0.0", 100.0, max_disagreement=1.0, window=20), [(0, b"")], log)
    assert not failing.active and "error rate" in (failing.tripped or "")
    fine = _shadow(Rollout("shadow", "2.0.0", 100.0, window=20), [(200, b'{"predictions": ["a"]}')], log)
    assert fine.active and fine.results[AGREE] == 100


def test_a_canary_that_fails_is_taken_out_and_then_gets_nothing() -> None:
    live = Live("fraud", "1.0.0", Rollout("canary", "2.0.0", 50.0, max_error_rate=0.1, window=10), GOLDEN,
                DisagreementLog(None))
    for _ in range(100):
        if live.pick(None):
            live.answered("1.0.0", candidate_failed=True)
    assert not live.active and live.retried == 10
    assert not any(live.pick(None) for _ in range(100))
