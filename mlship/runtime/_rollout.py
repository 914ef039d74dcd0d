"""Shadow and canary traffic in the front, and the guard that takes a bad candidate out of it.

A `[routes.NAME]` table with `shadow` or `canary` (_service.Rollout) makes one `Live` object here per model name:

- canary: `Live.pick(key)` says whether an unversioned request goes to the candidate. Without `sticky` a counter
  spreads exactly `percent` % of requests (split_by_count); with it, the hash of the header's value does
  (split_by_key), so one user always gets the same version. A candidate that fails (no answer, 5xx) is counted
  against it and the request is answered by the default instead (predict is idempotent): the client sees no error.
- shadow: after the default's answer is sent, `Live.offer(...)` queues a copy of the request for the candidate
  (a bounded queue: when it is full the copy is dropped and counted; the client is never slowed). A few worker
  tasks send the copies and compare both answers with the golden comparison (_verify.check_answer: labels equal,
  floats within the bundle's golden tolerance), counted as agree, disagree or error; disagreements are written to
  a bounded JSON-lines log (DisagreementLog: request id, input, both outputs).
- guard: over the last `window` outcomes, a disagreement rate above `max_disagreement` (shadow) or an error rate
  above `max_error_rate` (either) trips it: the candidate gets no more traffic (its explicit version routes still
  answer), which is logged, counted (mlship_guard_trips_total) and shown in /models and /v2/repository/index.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ._contract import Golden, GoldenCase
from ._service import Rollout
from ._verify import check_answer

logger = logging.getLogger(__name__)

AGREE, DISAGREE, ERROR = "agree", "disagree", "error"
QUEUE_SIZE = 1000  # shadow copies waiting for the candidate (MLSHIP_SHADOW_QUEUE)
SHADOW_WORKERS = 4  # copies in flight to the candidate at once
LOG_BYTES = 10 * 1024 * 1024  # the disagreement log's cap (MLSHIP_SHADOW_LOG_BYTES); then one older file kept
_BUCKETS = 10_000  # sticky hashes land in one of these; percent allows two decimals


def split_by_count(percent: float, count: int) -> bool:
    """Whether request number `count` (0, 1, 2...) goes to the candidate: exactly floor(n * percent / 100) of
    the first n requests do, spread evenly."""
    return int((count + 1) * percent // 100) > int(count * percent // 100)


def split_by_key(percent: float, key: str) -> bool:
    """Whether the request whose sticky header is `key` goes to the candidate: the same key always gets the same
    answer (sha256, not Python's per-process hash), and a `percent` share of keys do."""
    bucket = int.from_bytes(hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()[:8], "big") % _BUCKETS
    return bucket < round(percent * _BUCKETS / 100)


def predictions_of(body: bytes) -> Any:
    """What to compare in an answer: a REST answer's "predictions", a V2 answer's outputs (name -> data)."""
    try:
        answer = json.loads(body)
    except ValueError:
        return None
    if not isinstance(answer, dict):
        return None
    if "predictions" in answer:
        return answer["predictions"]
    outputs = answer.get("outputs")
    if isinstance(outputs, list):
        return {str(o.get("name")): o.get("data") for o in outputs if isinstance(o, dict)}
    return None


def compare(stable: Any, status: int, candidate_body: bytes, golden: Golden, rid: str) -> tuple[str, Any]:
    """The candidate's answer (status, body) to a request the default answered with `stable`: agree, disagree or
    error, and the candidate's predictions."""
    if status >= 500:
        return ERROR, None
    theirs = predictions_of(candidate_body)
    if status != 200 or theirs is None:
        return DISAGREE, theirs  # the default answered that request; the candidate refused it
    case = GoldenCase(rid, "shadow", [], stable)
    result = check_answer(case, golden, 200, {"predictions": theirs})
    return (AGREE if result.ok else DISAGREE), theirs


class DisagreementLog:
    """JSON lines appended to `path` until it holds `limit` bytes; then it becomes `path`.1 (the one older file
    kept) and a new one starts. Best effort: a filesystem that cannot be written is logged once, then skipped."""

    def __init__(self, path: Path | None, limit: int = LOG_BYTES) -> None:
        self.path = path
        self.limit = limit
        self.written = 0
        self._failed = False

    def write(self, record: dict[str, Any]) -> None:
        if self.path is None or self._failed:
            return
        line = (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode()
        try:
            size = self.path.stat().st_size if self.path.exists() else 0
            if size and size + len(line) > self.limit:
                os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            with self.path.open("ab") as stream:
                stream.write(line)
            self.written += 1
        except OSError as exc:
            self._failed = True
            logger.warning("cannot write the shadow disagreement log %s: %s", self.path, exc.strerror or exc)


# A function sending one copy to the candidate: (method, target, headers, body) -> (status, body); raises on no
# answer at all.
Send = Callable[[str, bytes, list[tuple[bytes, bytes]], bytes], Awaitable[tuple[int, bytes]]]


class Live:
    """One model's rollout while it serves: the split, the shadow queue, the guard and their counts."""

    def __init__(self, name: str, stable: str, rollout: Rollout, golden: Golden, log: DisagreementLog,
                 queue_size: int = QUEUE_SIZE) -> None:
        self.name = name
        self.stable = stable
        self.rollout = rollout
        self.golden = golden
        self.log = log
        self.tripped: str | None = None  # why the guard took the candidate out of traffic
        self.count = 0  # unversioned requests seen (the canary's and the shadow's sampling counter)
        self.results = {AGREE: 0, DISAGREE: 0, ERROR: 0}
        self.served = {stable: 0, rollout.version: 0}  # canary: unversioned answers by version
        self.retried = 0  # canary requests the candidate failed, answered by the default
        self.dropped = 0  # shadow copies dropped: the queue was full
        self.window: deque[str] = deque(maxlen=rollout.window)
        self.queue: asyncio.Queue[tuple[str, bytes, list[tuple[bytes, bytes]], bytes, Any, str, Any]] = (
            asyncio.Queue(maxsize=queue_size))
        self.tasks: list[asyncio.Task[None]] = []

    @property
    def candidate(self) -> str:
        return self.rollout.version

    @property
    def active(self) -> bool:
        return self.tripped is None

    def state(self) -> dict[str, Any]:
        """What /models and the repository index say about this rollout."""
        rollout = self.rollout
        return {"mode": rollout.mode, "stable": self.stable, "candidate": rollout.version,
                "percent": rollout.percent, "sticky": rollout.sticky,
                "state": "active" if self.active else "tripped", "reason": self.tripped or "",
                "comparisons": dict(self.results), "served": dict(self.served), "dropped": self.dropped}

    # -- canary -----------------------------------------------------------------------------------------------

    def pick(self, key: str | None) -> bool:
        """Whether this unversioned request is the candidate's (a canary that the guard has not tripped)."""
        if self.rollout.mode != "canary" or not self.active:
            return False
        if self.rollout.sticky is not None and key is not None:
            return split_by_key(self.rollout.percent, key)
        self.count += 1
        return split_by_count(self.rollout.percent, self.count - 1)

    def answered(self, version: str, candidate_failed: bool) -> None:
        """A canary request was answered by `version`; `candidate_failed`: the candidate failed it first."""
        self.served[version] = self.served.get(version, 0) + 1
        if candidate_failed:
            self.retried += 1
        if version == self.candidate or candidate_failed:
            self._outcome(ERROR if candidate_failed else AGREE)

    # -- shadow -----------------------------------------------------------------------------------------------

    def offer(self, method: str, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes, stable: Any,
              rid: str, send: Send) -> None:
        """Queue a copy of a request the default answered with `stable` (sampled by percent); never waits."""
        if self.rollout.mode != "shadow" or not self.active:
            return
        self.count += 1
        if not split_by_count(self.rollout.percent, self.count - 1):
            return
        try:
            self.queue.put_nowait((method, target, headers, body, stable, rid, send))
        except asyncio.QueueFull:
            self.dropped += 1
            return
        if not self.tasks:
            self.tasks = [asyncio.get_running_loop().create_task(self._worker()) for _ in range(SHADOW_WORKERS)]

    async def _worker(self) -> None:
        while True:
            method, target, headers, body, stable, rid, send = await self.queue.get()
            try:
                if self.active:
                    await self._shadow(method, target, headers, body, stable, rid, send)
            except Exception:  # noqa: BLE001 - a shadow failure must never stop the worker
                logger.exception("shadow comparison of request %s failed", rid)
            finally:
                self.queue.task_done()

    async def _shadow(self, method: str, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes,
                      stable: Any, rid: str, send: Send) -> None:
        try:
            status, answer = await send(method, target, headers, body)
        except Exception as exc:  # noqa: BLE001 - no answer at all: the candidate's error
            result, theirs = ERROR, f"no answer: {exc}"
        else:
            result, theirs = compare(stable, status, answer, self.golden, rid)
            if result == ERROR:
                theirs = f"HTTP {status}: {answer[:200].decode('utf-8', 'replace')}"
        self.results[result] += 1
        if result == DISAGREE:
            try:
                request: Any = json.loads(body)
            except ValueError:
                request = body[:1000].decode("utf-8", "replace")
            self.log.write({"request_id": rid, "model": self.name, "stable": self.stable,
                            "candidate": self.candidate, "path": target.decode("latin-1"), "input": request,
                            "stable_output": stable, "candidate_output": theirs})
        self._outcome(result)

    # -- guard ------------------------------------------------------------------------------------------------

    def _outcome(self, result: str) -> None:
        self.window.append(result)
        rollout = self.rollout
        if not self.active or len(self.window) < rollout.window:
            return
        errors = self.window.count(ERROR) / len(self.window)
        disagreements = self.window.count(DISAGREE) / len(self.window)
        if errors > rollout.max_error_rate:
            self._trip(f"error rate {errors:.3f} > max_error_rate {rollout.max_error_rate:g}")
        elif rollout.mode == "shadow" and disagreements > rollout.max_disagreement:
            self._trip(f"disagreement rate {disagreements:.3f} > max_disagreement {rollout.max_disagreement:g}")

    def _trip(self, why: str) -> None:
        self.tripped = (f"taken out of {self.rollout.mode} traffic by the guard: {why} over the last "
                        f"{self.rollout.window} requests")
        logger.error("%s %s: %s; %s keeps serving", self.name, self.candidate, self.tripped, self.stable)
        while not self.queue.empty():  # the copies waiting are no longer needed
            self.queue.get_nowait()
            self.queue.task_done()

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.tasks = []


def rollout_metrics(lives: list[Live]) -> list[Any]:
    labels = ["model", "stable", "candidate"]
    comparisons = CounterMetricFamily("mlship_shadow_comparisons", "Shadow copies compared with the default's "
                                      "answer: agree, disagree, or error (the candidate failed).",
                                      labels=[*labels, "result"])
    dropped = CounterMetricFamily("mlship_shadow_dropped", "Shadow copies dropped because the queue was full.",
                                  labels=labels)
    canary = CounterMetricFamily("mlship_canary_requests", "Unversioned requests of a canary model, by the "
                                 "version that answered.", labels=["model", "version"])
    retried = CounterMetricFamily("mlship_canary_retries", "Canary requests the candidate failed, answered by "
                                  "the default instead.", labels=labels)
    trips = CounterMetricFamily("mlship_guard_trips", "Candidates the guard took out of traffic.",
                                labels=[*labels, "mode"])
    active = GaugeMetricFamily("mlship_rollout_active", "1 while the candidate gets shadow or canary traffic, 0 "
                               "once the guard took it out.", labels=[*labels, "mode"])
    for live in lives:
        key = [live.name, live.stable, live.candidate]
        mode = live.rollout.mode
        if mode == "shadow":
            for result, count in live.results.items():
                comparisons.add_metric([*key, result], float(count))
            dropped.add_metric(key, float(live.dropped))
        else:
            for version, count in live.served.items():
                canary.add_metric([live.name, version], float(count))
            retried.add_metric(key, float(live.retried))
        trips.add_metric([*key, mode], 0.0 if live.active else 1.0)
        active.add_metric([*key, mode], 1.0 if live.active else 0.0)
    return [comparisons, dropped, canary, retried, trips, active]
