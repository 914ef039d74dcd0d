"""Reloading a running service without downtime: SIGHUP on the front (`mlship reload mlship.toml` sends it).

What a reload does, in order (docs/SERVICE.md "Changes without downtime"):

1. Read the service file again. One that no longer reads (bad TOML, an unknown key, a missing bundle...) is
   logged and counted (`mlship_reloads_total{result="invalid"}`); nothing changes.
2. Compare it with what runs. A model version is *unchanged* when its bundle folder, its mlship.json (which holds
   the digest of every file), its Python and its worker count are the same: its backend keeps running untouched.
   Added and changed versions get a new backend, started beside the running ones on sockets of its own.
3. Each new backend must become ready (each of its workers replays every golden case in-process before it answers
   at all, and stays not ready on any mismatch: _model.ModelHandle.check_ready), then answer golden cases over the
   connections the front will use: the first of each method (the routing, end to end) and any case its /metadata
   does not report as passed at start-up (a bundle whose own runtime predates the full start-up replay checked only
   one; see over_http). Not every case again: hundreds of cases would be hundreds of requests before the swap.
   One that fails to start, to become ready within MLSHIP_RELOAD_TIMEOUT seconds (default 120) or to answer a case
   never takes traffic: it is stopped, the version it would have replaced keeps serving, and the failure is
   logged, listed by /v2/repository/index (state UNAVAILABLE and why) and counted
   (`mlship_reload_models_total{result="failed"}`).
4. One swap of the routing table (_routes.RouteTable): a request is routed by the old table or the new one.
5. The backends that left the table (removed, or replaced by a new bundle) are drained: the front waits until
   none of its requests to them are in flight, then stops their processes (SIGTERM, then SIGKILL after the
   drain delay + grace period + 5 s), so their memory is returned.

Reloads never overlap: a SIGHUP during a reload runs one more reload after it. After each reload the front writes
its outcome next to its pid file (`<pid file>.reload.json`, best effort), which `mlship reload` waits for.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily

from ._routes import RouteTable

if TYPE_CHECKING:
    from ._backends import Backend
    from ._contract import GoldenCase
    from ._service import Service, ServiceModel

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 120.0  # seconds a new backend gets to become ready and answer its golden cases
_CASE_TIMEOUT = 30.0


def status_file_for(pid_file: Path) -> Path:
    """Where the front writes the outcome of its last reload (`mlship reload` reads it)."""
    return pid_file.with_name(pid_file.name + ".reload.json")


def fingerprint(bundle: Path, python: str, workers: int) -> tuple[str, str, str, int]:
    """What makes a running backend the same as a model in the service file: its folder, the hash of its
    mlship.json (every file's digest is in it), its Python and its worker count."""
    try:
        digest = hashlib.sha256((bundle / "mlship.json").read_bytes()).hexdigest()
    except OSError:
        digest = ""
    return str(bundle), digest, python, workers


@dataclass
class Outcome:
    """One reload: what was started, kept, removed, and which candidates failed and why."""

    generation: int
    result: str = "ok"  # ok | partial (some candidates failed) | failed (all did) | invalid (the file) | unchanged
    error: str | None = None
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    defaults: dict[str, str] = field(default_factory=dict)  # what each name routes to after it (`mlship promote`)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"generation": self.generation, "result": self.result, "error": self.error, "added": self.added,
                "changed": self.changed, "removed": self.removed, "failed": self.failed,
                "defaults": self.defaults, "seconds": round(self.seconds, 3)}

    def summary(self) -> str:
        if self.result == "invalid":
            return f"refused: {self.error}; nothing changed"
        parts = [f"{what} {', '.join(items)}" for what, items in
                 (("added", self.added), ("changed", self.changed), ("removed", self.removed)) if items]
        parts += [f"{label} FAILED ({reason}); nothing of it takes traffic" for label, reason in self.failed.items()]
        return "; ".join(parts) or "nothing changed"


@dataclass
class Rejected:
    """A reload candidate that failed: what /v2/repository/index shows for it until a later reload."""

    name: str
    version: str
    reason: str


class Reloader:
    """The front's reload (its `reload_hook`): see the module docstring.

    `make_backend(model)` builds a (not started) Backend for a ServiceModel as the front's own start does;
    `fingerprint_of(model)` gives that model's fingerprint; `stop_timeout` bounds each old backend's stop."""

    def __init__(self, front: Any, service_file: Path, *, make_backend: Callable[[ServiceModel], Backend],
                 fingerprint_of: Callable[[ServiceModel], tuple[str, str, str, int]], stop_timeout: float,
                 status_file: Path | None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.front = front
        self.service_file = service_file
        self.make_backend = make_backend
        self.fingerprint_of = fingerprint_of
        self.stop_timeout = stop_timeout
        self.status_file = status_file
        self.timeout = timeout
        self.generation = 0
        self.results: dict[str, int] = {}  # mlship_reloads_total by result
        self.models: dict[tuple[str, str, str, str], int] = {}  # (model, version, action, result) -> count
        self.rejected: dict[tuple[str, str], Rejected] = {}
        self.fingerprints: dict[tuple[str, str], tuple[str, str, str, int]] = {}
        self._lock = asyncio.Lock()
        self._again = False
        self._draining: set[asyncio.Task[None]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    def remember(self, service: Service) -> None:
        """The fingerprints of the models the front started with."""
        for model in service.models:
            self.fingerprints[(model.name, model.version)] = self.fingerprint_of(model)

    async def reload(self) -> None:
        """Run one reload; a SIGHUP during it runs one more after it (never two at once)."""
        task = asyncio.current_task()
        if task is not None:  # the signal handler that created it keeps no reference to it
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if self._lock.locked():
            self._again = True
            logger.info("SIGHUP during a reload: %s will be read again after it", self.service_file)
            return
        async with self._lock:
            while True:
                self._again = False
                try:
                    outcome = await self._reload_once()
                except Exception:  # a bug here must not take the front down: log it, count it
                    logger.exception("reload of %s failed", self.service_file)
                    outcome = Outcome(self.generation, "failed", error="internal error (see the log)")
                self._record(outcome)
                if not self._again:
                    return

    def index_entries(self, table: RouteTable) -> list[dict[str, str]]:
        """/v2/repository/index entries for failed candidates whose version is not in the table; those whose
        version still serves (a failed change of its bundle) are said in `reason_for` instead."""
        return [{"name": r.name, "version": r.version, "state": "UNAVAILABLE", "reason": r.reason}
                for key, r in self.rejected.items() if key not in table.backends]

    def reason_for(self, name: str, version: str) -> str | None:
        rejected = self.rejected.get((name, version))
        return rejected.reason if rejected else None

    # -- one reload -------------------------------------------------------------------------------------------

    async def _reload_once(self) -> Outcome:
        from ._service import ServiceError, read_service

        self.generation += 1
        began = time.monotonic()
        outcome = Outcome(self.generation)
        logger.info("SIGHUP: reloading %s", self.service_file)
        try:
            service = await asyncio.to_thread(read_service, self.service_file)
        except ServiceError as exc:
            outcome.result, outcome.error = "invalid", f"{exc.message} ({exc.hint})" if exc.hint else exc.message
            logger.error("reload of %s refused, nothing changed: %s", self.service_file, outcome.error)
            return outcome
        except OSError as exc:
            outcome.result, outcome.error = "invalid", f"cannot read {self.service_file}: {exc.strerror or exc}"
            logger.error("reload refused, nothing changed: %s", outcome.error)
            return outcome

        old: RouteTable = self.front.table
        wanted: dict[tuple[str, str], ServiceModel] = {(m.name, m.version): m for m in service.models}
        prints = {key: await asyncio.to_thread(self.fingerprint_of, model) for key, model in wanted.items()}
        starting: dict[tuple[str, str], Backend] = {}
        for key, model in wanted.items():
            if key in old.backends and self.fingerprints.get(key) == prints[key]:
                continue
            starting[key] = self.make_backend(model)
        for backend in starting.values():
            backend.start()
        verdicts = await asyncio.gather(*(self._check(backend) for backend in starting.values()))

        backends: dict[tuple[str, str], Backend] = {}
        failed: list[Backend] = []
        for key in wanted:
            label = f"{key[0]} {key[1]}"
            if key not in starting:
                backends[key] = old.backends[key]
                continue
            backend, problem = starting[key], verdicts[list(starting).index(key)]
            action = "change" if key in old.backends else "add"
            if problem is None:
                backends[key] = backend
                self.fingerprints[key] = prints[key]
                self.rejected.pop(key, None)
                (outcome.changed if key in old.backends else outcome.added).append(label)
                self._count(key, action, "ok")
                continue
            failed.append(backend)
            outcome.failed[label] = problem
            self._count(key, action, "failed")
            kept = key in old.backends
            reason = f"reload {self.generation} failed: {problem}" + (
                "; the previous bundle of this version keeps serving" if kept else "")
            self.rejected[key] = Rejected(key[0], key[1], reason)
            logger.error("reload: %s never takes traffic: %s%s", label, problem,
                         "; its previous bundle keeps serving" if kept else "")
            if kept:
                backends[key] = old.backends[key]
        for key in old.backends:
            if key not in wanted:
                outcome.removed.append(f"{key[0]} {key[1]}")
                self.fingerprints.pop(key, None)
                self._count(key, "remove", "ok")
        for key in list(self.rejected):
            if key not in wanted:
                del self.rejected[key]

        new = RouteTable(_ordered(backends, wanted), _defaults(service.defaults, backends, old))
        outcome.defaults = dict(new.defaults)
        self.front.swap(new)
        self.front.set_rollouts(service)  # issue 12: the shadow/canary of the new file (h12shadow)
        leaving = [b for key, b in old.backends.items() if new.backends.get(key) is not b]
        for backend in [*leaving, *failed]:
            task = asyncio.get_running_loop().create_task(self._drain(backend), name=f"drain {backend.label}")
            self._draining.add(task)
            task.add_done_callback(self._draining.discard)
        if failed:
            outcome.result = "failed" if len(failed) == len(starting) else "partial"
        elif not (outcome.added or outcome.changed or outcome.removed):
            outcome.result = "unchanged"
        outcome.seconds = time.monotonic() - began
        logger.info("reload %d of %s: %s", self.generation, self.service_file, outcome.summary())
        return outcome

    async def _check(self, backend: Backend) -> str | None:
        """None when `backend` became ready and answered its golden cases over HTTP (over_http), else why not."""
        deadline = time.monotonic() + self.timeout
        while not backend.ready:
            if backend.gave_up:
                return backend.reason or "its process exited before it was ready"
            if backend.reason not in (None, "starting"):
                # /readyz answered 503: the golden case of its readiness failed (permanent), or it is stopping
                return backend.reason
            if time.monotonic() > deadline:
                return f"not ready within {self.timeout:g} s [env var: MLSHIP_RELOAD_TIMEOUT]"
            await backend.wait_ready(min(0.2, max(0.0, deadline - time.monotonic())))
        return await self._replay_golden(backend)

    async def _replay_golden(self, backend: Backend) -> str | None:
        from ._verify import check_answer, read_golden

        try:
            golden = await asyncio.to_thread(read_golden, backend.bundle)
        except Exception as exc:  # noqa: BLE001 - any unreadable golden.json is this candidate's failure
            return f"cannot read its golden cases: {exc}"
        for case in over_http(golden.cases, backend.metadata):
            body = json.dumps({"instances": case.instances}).encode()  # as `mlship verify --url` sends it
            headers = [(b"content-type", b"application/json")]
            try:
                answer = await backend.request("POST", f"/{case.method}".encode(), headers, body, _CASE_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - no answer (refused, reset, timed out) is a failed case
                return f"golden case {case.id} got no answer: {type(exc).__name__}: {exc}"
            try:
                parsed: Any = json.loads(answer.body)
            except ValueError:
                parsed = answer.body[:200].decode("utf-8", "replace")
            result = check_answer(case, golden, answer.status, parsed)
            if not result.ok:
                return f"golden case {case.id} does not match: {result.detail}"
        return None

    async def _drain(self, backend: Backend) -> None:
        """Stop `backend` once the front has no request in flight to it (bounded by the stop timeout)."""
        deadline = time.monotonic() + self.stop_timeout
        while getattr(backend, "inflight", 0) > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await backend.stop(self.stop_timeout)
        logger.info("%s stopped (left the service)", backend.label)

    async def drain_all(self) -> None:
        """Wait for the backends still draining (at shutdown)."""
        if self._draining:
            await asyncio.gather(*self._draining, return_exceptions=True)

    def _count(self, key: tuple[str, str], action: str, result: str) -> None:
        entry = (key[0], key[1], action, result)
        self.models[entry] = self.models.get(entry, 0) + 1

    def _record(self, outcome: Outcome) -> None:
        self.results[outcome.result] = self.results.get(outcome.result, 0) + 1
        if self.status_file is None:
            return
        data = {**outcome.to_json(), "pid": os.getpid(), "service": str(self.service_file),
                "summary": outcome.summary()}
        temporary = self.status_file.with_name(self.status_file.name + ".tmp")
        try:
            temporary.write_text(json.dumps(data))
            temporary.replace(self.status_file)
        except OSError as exc:
            logger.warning("cannot write the reload status %s: %s", self.status_file, exc.strerror or exc)

    def forget_status(self) -> None:
        if self.status_file is not None:
            with contextlib.suppress(OSError):
                self.status_file.unlink()


def over_http(cases: Sequence[GoldenCase], metadata: Mapping[str, Any] | None) -> list[GoldenCase]:
    """The golden cases a new backend must answer over HTTP before it takes traffic: the first of each method (the
    routing, end to end) and every case its /metadata (`golden`: each case's id and `startup` result, in order)
    does not report as "passed" at its start-up; all of them when it reports none (no metadata, another list)."""
    reported = metadata.get("golden") if isinstance(metadata, Mapping) else None
    if not isinstance(reported, list) or len(reported) != len(cases):
        reported = []
    passed = {index for index, (case, entry) in enumerate(zip(cases, reported, strict=False))
              if isinstance(entry, Mapping) and entry.get("id") == case.id and entry.get("startup") == "passed"}
    methods: set[str] = set()
    chosen = []
    for index, case in enumerate(cases):
        if case.method not in methods or index not in passed:
            chosen.append(case)
        methods.add(case.method)
    return chosen


def reload_metrics(reloader: Reloader | None) -> list[Any]:
    """mlship_reloads_total{result} and mlship_reload_models_total{model,version,action,result} for /metrics."""
    reloads = CounterMetricFamily("mlship_reloads", "Reloads of the service file (SIGHUP, mlship reload), by "
                                  "result: ok, unchanged, partial (some new versions failed), failed, invalid "
                                  "(the file did not read; nothing changed).", labels=["result"])
    models = CounterMetricFamily("mlship_reload_models", "Model versions a reload added, changed or removed, by "
                                 "result (failed: it never took traffic).",
                                 labels=["model", "version", "action", "result"])
    if reloader is not None:
        for result in ("ok", "unchanged", "partial", "failed", "invalid"):
            reloads.add_metric([result], float(reloader.results.get(result, 0)))
        for (name, version, action, result), count in sorted(reloader.models.items()):
            models.add_metric([name, version, action, result], float(count))
    return [reloads, models]


def _ordered(backends: dict[tuple[str, str], Backend],
             wanted: Mapping[tuple[str, str], ServiceModel]) -> dict[tuple[str, str], Backend]:
    """The table in the service file's order."""
    return {key: backends[key] for key in wanted if key in backends}


def _defaults(declared: Mapping[str, str], backends: Mapping[tuple[str, str], Backend],
              old: RouteTable) -> dict[str, str]:
    """Each served name's default: the file's, unless that version failed to start; then the old default if
    it still serves, else the name's first served version."""
    defaults = {}
    for name in dict.fromkeys(name for name, _ in backends):
        versions = [version for model, version in backends if model == name]
        choice = declared.get(name)
        if choice not in versions:
            previous = old.defaults.get(name)
            choice = previous if previous in versions else versions[0]
        defaults[name] = choice
    return defaults
