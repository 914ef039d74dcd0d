"""`python -m mlship_runtime serve-service FILE`: one address in front of one backend process per model.

The front is a small asyncio reverse proxy under uvicorn (the runtime's own server and HTTP protocol, with its
limits on headers, bodies and timeouts). A request under `/models/{name}[/versions/{version}]/` or
`/v2/models/{name}[/versions/{version}]/` goes, as plain ASGI and without Starlette's routing, to that model
version's backend (_backends: the bundle's own server, its supervisor and workers) over a pool of kept-alive
connections (_upstream). Everything else is the front's own, a small Starlette app: GET /models, POST
/v2/repository/index, /openapi.json and /metrics merged from every backend (_catalog), the probes (ready when
every model is), and the page at /.

Isolation: each model runs in its own processes, so a model that fails to load, fails its golden case, hangs or
dies affects its own requests only; the front answers 503 for it, with the reason, while it is unavailable, and
starts it again when it died (see _backends). The routing table is one object (_routes.RouteTable) that `swap`
replaces whole: what a reload needs (start the new backends, `await backend.wait_ready(...)`, `swap`, then
`stop` the old ones), bound to SIGHUP through `Front.reload_hook`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from . import _catalog
from ._auth import Auth, required_tokens
from ._backends import Backend
from ._http import (
    HttpError,
    encode_json,
    error_response,
    header,
    json_response,
    new_request_id,
    receive_body,
    send_json,
)
from ._openapi import ANY_JSON, get_operation
from ._protocol import Endpoint
from ._reload import DEFAULT_TIMEOUT as DEFAULT_RELOAD_TIMEOUT
from ._reload import Reloader, fingerprint, reload_metrics, status_file_for
from ._rollout import DisagreementLog, Live, predictions_of, rollout_metrics
from ._routes import ModelPath, RouteTable, parse_model_path, upstream_target
from ._server import available_cpus, configured_settings, protocol_class
from ._settings import Settings
from ._ui import CONTENT_SECURITY_POLICY
from ._upstream import HOP_BY_HOP, UpstreamError, UpstreamResponse

logger = logging.getLogger(__name__)

_REQUEST_ID = b"x-request-id"
# Response headers the front writes itself (uvicorn its Date; the request ID the front chose, the same).
_OWN_HEADERS = frozenset({_REQUEST_ID, b"date", b"server"})
# Seconds past MLSHIP_TIMEOUT a backend may take before the front gives up on it (the backend answers 503 at
# the timeout itself; this only catches a backend that stopped answering at all, e.g. stopped by SIGSTOP).
_UPSTREAM_SLACK = 10.0
_MODEL_VERSION = b"x-model-version"  # on every answer of a model route: the version that answered


def pid_file_for(service_file: Path) -> Path | None:
    """Where the front of `service_file` writes its pid unless told (`mlship reload` reads it): one file per
    service file, in $XDG_RUNTIME_DIR or the temporary directory; None when there is neither (a read-only root
    without a writable /tmp: MLSHIP_PID_FILE then names one)."""
    digest = hashlib.sha256(str(service_file.resolve()).encode()).hexdigest()[:16]
    folder = os.environ.get("XDG_RUNTIME_DIR")
    if not folder:
        try:
            folder = tempfile.gettempdir()
        except FileNotFoundError:  # "No usable temporary directory found": none it tried could be written
            return None
    return Path(folder) / f"mlship-{digest}.pid"


class Front:
    """The front's ASGI app: model requests proxied, the rest answered by its own small Starlette app."""

    def __init__(self, service: str, table: RouteTable, settings: Settings) -> None:
        self.service = service
        self.table = table
        self.settings = settings
        self.draining = False
        self.failures: dict[tuple[str, str, str], int] = {}  # (model, version, reason) -> answers the front gave
        # Called on SIGHUP (a reload: see the module docstring); None logs that there is nothing to reload.
        self.reload_hook: Callable[[], Coroutine[Any, Any, None]] | None = None
        self.reloader: Reloader | None = None  # set with reload_hook by serve_service (_reload)
        self.timeout = settings.timeout + _UPSTREAM_SLACK
        self.rollouts: dict[str, Live] = {}  # by model name: its shadow or canary (_rollout; set_rollouts)
        self.shadow_log = DisagreementLog(None)
        endpoints = self._endpoints()
        self.auth = Auth(settings, endpoints)
        self.own_paths = _operations(endpoints, set(required_tokens(settings)))
        self.local = self.auth.app(Starlette(
            routes=[route for endpoint in endpoints for route in endpoint.routes()],
            exception_handlers={HTTPException: self._http_error},
        ))

    def swap(self, table: RouteTable) -> RouteTable:
        """Route every request from now on by `table`; returns the one it replaces (whose backends the caller
        drains). One assignment: a request is routed by the old table or the new one, never by a mix."""
        old, self.table = self.table, table
        return old

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        rid = new_request_id(header(scope, _REQUEST_ID))
        extra = [(_REQUEST_ID, rid.encode())]
        if self.draining:
            extra.append((b"connection", b"close"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        model_path = parse_model_path(scope["path"])
        if model_path is None:
            await self.local(scope, receive, send_with_id)
            return
        try:
            await self._model_request(scope, receive, send_with_id, model_path, rid)
        except HttpError as exc:
            await send_json(send_with_id, exc.status_code, encode_json({"error": exc.message}))

    async def _model_request(self, scope: Scope, receive: Receive, send: Send, model_path: ModelPath,
                             rid: str) -> None:
        table = self.table
        try:
            backend = table.lookup(model_path.name, model_path.version)
        except LookupError as exc:
            refusal = self.auth.refusal(scope)  # an unknown model is answered only to whoever may know the others
            if refusal is not None:
                await self.local(scope, receive, send)
                return
            raise HttpError(404, str(exc)) from None
        if model_path.upstream is None:
            await self._model_entry(scope, receive, send, table, backend, model_path)
            return
        backend.inflight += 1  # from routing to answer: a reload stops a backend it replaced only when idle
        try:
            await self._forward(scope, receive, send, backend, model_path, rid)
        finally:
            backend.inflight -= 1

    def set_rollouts(self, service: Any) -> None:
        """The shadow and canary of each model of `service` (a _service.Service) from now on; a rollout that did
        not change keeps its counts and its guard's verdict (a reload of the same file)."""
        from ._contract import Golden
        from ._verify import read_golden

        lives: dict[str, Live] = {}
        for name, rollout in service.rollouts.items():
            stable = self.table.default_of(name)  # after a reload: what the table really routes to
            if rollout.version == stable:  # promoted: the candidate is the default now, nothing to split
                logger.info("%s: %s %s is the default version; it gets every request", name, rollout.mode, stable)
                continue
            old = self.rollouts.get(name)
            if old is not None and old.stable == stable and old.rollout == rollout:
                lives[name] = old
                continue
            try:
                golden = read_golden(service.model(name, rollout.version).bundle)
            except Exception as exc:  # noqa: BLE001 - the backend says why it cannot load; compare by default
                logger.warning("%s %s: cannot read its golden tolerance (%s); comparing with the default one",
                               name, rollout.version, exc)
                golden = Golden(())
            lives[name] = Live(name, stable, rollout, golden, self.shadow_log,
                               queue_size=int(os.environ.get("MLSHIP_SHADOW_QUEUE", "") or 1000))
            logger.info("%s: %s %s at %g%% next to %s", name, rollout.mode, rollout.version, rollout.percent,
                        stable)
        for name, old in self.rollouts.items():
            if lives.get(name) is not old:
                asyncio.get_running_loop().create_task(old.stop())
        self.rollouts = lives

    async def _forward(self, scope: Scope, receive: Receive, send: Send, backend: Backend, model_path: ModelPath,
                       rid: str) -> None:
        if not backend.ready:
            self._count(backend, "unavailable")
            raise HttpError(503, f"model {backend.name!r} version {backend.version!r} is unavailable: "
                                 f"{backend.reason}")
        body = await receive_body(receive, header(scope, b"content-length"), self.settings.max_body_bytes)
        method = scope["method"]
        headers = [(name, value) for name, value in scope["headers"]
                   if name not in HOP_BY_HOP and name != _REQUEST_ID]
        headers.append((_REQUEST_ID, rid.encode()))
        target = upstream_target(model_path, scope.get("raw_path"), scope.get("query_string", b""))
        live = self.rollouts.get(backend.name) if model_path.version is None and method == "POST" else None
        if live is not None and live.stable != backend.version:
            live = None
        answer: UpstreamResponse | None = None
        if live is not None and live.rollout.mode == "canary":
            sticky = live.rollout.sticky
            candidate = self.table.backends.get((backend.name, live.candidate))
            if candidate is not None and candidate.ready and live.pick(
                    header(scope, sticky.lower().encode()) if sticky else None):
                tried = await self._try_candidate(candidate, target, headers, body, rid)
                if tried is not None and tried.status < 400:
                    answer, backend = tried, candidate
                else:  # the default answers; the candidate failed unless the default refuses the request too
                    answer = await self._ask(backend, method, target, headers, body, rid)
                live.answered(backend.version, candidate_failed=answer is not tried and (
                    tried is None or tried.status >= 500 or answer.status < 400))
            else:
                live.answered(backend.version, candidate_failed=False)
        if answer is None:
            answer = await self._ask(backend, method, target, headers, body, rid)
        await self._send_answer(scope, send, backend, model_path, answer)
        if live is not None and live.rollout.mode == "shadow" and answer.status == 200:
            candidate = self.table.backends.get((backend.name, live.candidate))
            if candidate is not None and candidate.ready:
                live.offer(method, target, headers, body, predictions_of(answer.body), rid,
                           self._copy_sender(candidate))

    def _copy_sender(self, candidate: Backend) -> Any:
        async def send_copy(method: str, target: bytes, headers: list[tuple[bytes, bytes]],
                            body: bytes) -> tuple[int, bytes]:
            answer = await candidate.request(method, target, headers, body, self.timeout)
            return answer.status, answer.body
        return send_copy

    async def _try_candidate(self, candidate: Backend, target: bytes, headers: list[tuple[bytes, bytes]],
                             body: bytes, rid: str) -> UpstreamResponse | None:
        """A canary's answer, or None when there was none; a 4xx or 5xx one is answered by the default instead."""
        try:
            answer = await candidate.request("POST", target, headers, body, self.timeout)
        except (UpstreamError, TimeoutError) as exc:
            logger.warning("canary %s failed request %s (%s); the default answers it", candidate.label, rid, exc,
                           extra={"request_id": rid})
            return None
        if answer.status >= 400:
            logger.warning("canary %s answered request %s with HTTP %d; the default answers it", candidate.label,
                           rid, answer.status, extra={"request_id": rid})
        return answer

    async def _ask(self, backend: Backend, method: str, target: bytes, headers: list[tuple[bytes, bytes]],
                   body: bytes, rid: str) -> UpstreamResponse:
        try:
            return await backend.request("GET" if method == "HEAD" else method, target, headers, body,
                                         self.timeout)
        except UpstreamError as exc:
            self._count(backend, "failed")
            logger.warning("%s failed to answer request %s: %s", backend.label, rid, exc,
                           extra={"request_id": rid})
            raise HttpError(502, f"model {backend.name!r} version {backend.version!r} failed to answer "
                                 f"(request id {rid}); retry") from None
        except TimeoutError:
            self._count(backend, "timeout")
            raise HttpError(504, f"model {backend.name!r} version {backend.version!r} did not answer within "
                                 f"{self.timeout:g} s (request id {rid})") from None

    async def _send_answer(self, scope: Scope, send: Send, backend: Backend, model_path: ModelPath,
                           answer: UpstreamResponse) -> None:
        method = scope["method"]
        payload = answer.body
        if model_path.v2 and answer.status == 200 and scope["path"] == f"/v2/models/{backend.name}":
            payload = self._all_versions(backend.name, payload)
        content = b"" if method == "HEAD" else payload
        headers = [(name, value) for name, value in answer.headers if name not in _OWN_HEADERS]
        headers.append((b"content-length", str(len(payload)).encode()))
        headers.append((_MODEL_VERSION, backend.version.encode()))
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    def _all_versions(self, name: str, payload: bytes) -> bytes:
        """The Open Inference Protocol's model metadata lists the versions a client may ask for: every one this
        server has of the model (its backend knows only its own)."""
        try:
            metadata = json.loads(payload)
        except ValueError:
            return payload
        if not isinstance(metadata, dict):
            return payload
        return encode_json({**metadata, "versions": self.table.versions(name)})

    async def _model_entry(self, scope: Scope, receive: Receive, send: Send, table: RouteTable, backend: Backend,
                           model_path: ModelPath) -> None:
        if self.auth.refusal(scope) is not None:
            await self.local(scope, receive, send)  # its 401, with the WWW-Authenticate challenge
            return
        if scope["method"] not in ("GET", "HEAD"):
            raise HttpError(405, f"{scope['method']} is not allowed on {scope['path']}; allowed: GET")
        if model_path.version is None:
            entry = _catalog.model_entry(table, backend.name)
        else:
            entry = {"name": backend.name, **_catalog.version_entry(table, backend)}
        await send_json(send, 200, encode_json(entry))

    def _count(self, backend: Backend, reason: str) -> None:
        key = (backend.name, backend.version, reason)
        self.failures[key] = self.failures.get(key, 0) + 1

    # -- the front's own endpoints --------------------------------------------------------------------------

    def _endpoints(self) -> list[Endpoint]:
        status = {"application/json": {"schema": {"type": "object"}}}
        text = {"text/plain": {"schema": {"type": "string"}}}
        html = {"text/html": {"schema": {"type": "string"}}}
        endpoints = [
            Endpoint("/livez", "GET", self._livez, get_operation("livez", "liveness: the front serves", status),
                     access="probe"),
            Endpoint("/readyz", "GET", self._readyz,
                     get_operation("readyz", "readiness: every model ready (503 names those that are not)",
                                   status, 503), access="probe"),
            Endpoint("/ping", "GET", self._ping, get_operation("ping", "MLflow health check", text, 503),
                     access="probe"),
            Endpoint("/health", "GET", self._ping, get_operation("health", "MLflow health check", text, 503),
                     access="probe"),
            Endpoint("/v2/health/live", "GET", self._v2_live, get_operation("v2_live", "server live", status),
                     access="probe"),
            Endpoint("/v2/health/ready", "GET", self._v2_ready,
                     get_operation("v2_ready", "server ready: every model (400 when not)", status),
                     access="probe"),
            Endpoint("/v2", "GET", self._v2_server, get_operation("v2_server_metadata", "server metadata", status),
                     aliases=("/v2/",)),
            Endpoint("/v2/repository/index", "POST", self._repository_index, {
                "operationId": "v2_repository_index",
                "summary": "every model version with its state: READY, or UNAVAILABLE and why",
                "responses": {"200": {"description": "OK", "content": ANY_JSON}}}),
            Endpoint("/models", "GET", self._models,
                     get_operation("models", "every model: versions, default, methods, input schema", status)),
            Endpoint("/metrics", "GET", self._metrics,
                     get_operation("metrics", "Prometheus metrics of every model, labelled model and version",
                                   text), access="metrics"),
            Endpoint("/openapi.json", "GET", self._openapi, get_operation("openapi", "this document", ANY_JSON)),
        ]
        if self.settings.ui:
            endpoints.append(Endpoint("/", "GET", self._page, get_operation("ui_index", "the models", html),
                                      access="public"))
        return endpoints

    async def _livez(self, request: Request) -> Response:
        return json_response({"status": "alive"})

    def _unready_reason(self) -> str | None:
        if self.draining:
            return "the server is shutting down"
        missing = _catalog.unready(self.table)
        if not missing:
            return None
        return "not ready: " + "; ".join(f"{b.name} {b.version} ({b.reason})" for b in missing)

    async def _readyz(self, request: Request) -> Response:
        reason = self._unready_reason()
        if reason is None:
            return json_response({"status": "ready"})
        unavailable = [{"name": b.name, "version": b.version, "reason": b.reason or ""}
                       for b in _catalog.unready(self.table)]
        return json_response({"error": reason, "unavailable": unavailable}, 503)

    async def _ping(self, request: Request) -> Response:
        ready = self._unready_reason() is None
        return Response("\n", status_code=200 if ready else 503, media_type="text/plain")

    async def _v2_live(self, request: Request) -> Response:
        return json_response({"live": True})

    async def _v2_ready(self, request: Request) -> Response:
        ready = self._unready_reason() is None
        return json_response({"ready": ready}, 200 if ready else 400)

    async def _v2_server(self, request: Request) -> Response:
        return json_response({"name": "mlship", "version": _runtime_version(self.table),
                              "extensions": ["binary_tensor_data", "model_repository"]})

    async def _repository_index(self, request: Request) -> Response:
        raw = await request.body()
        ready_only = False
        if raw.strip():
            with contextlib.suppress(ValueError):
                body = json.loads(raw)
                ready_only = isinstance(body, dict) and body.get("ready") is True
        table = self.table
        index = _catalog.repository_index(table, ready_only)
        if self.reloader is not None:
            for entry in index:  # a version whose new bundle failed a reload: it serves, and says why
                entry["reason"] = self.reloader.reason_for(entry["name"], entry["version"]) or entry["reason"]
            if not ready_only:
                index += self.reloader.index_entries(table)
        for entry in index:  # a shadow or canary candidate: its role, and why the guard took it out
            live = self.rollouts.get(entry["name"])
            if live is not None and entry["version"] == live.candidate:
                entry["rollout"] = f"{live.rollout.mode} {'active' if live.active else 'tripped'}"
                entry["reason"] = live.tripped or entry["reason"]
        return json_response(index)

    async def _models(self, request: Request) -> Response:
        listing = _catalog.models_listing(self.table, self.service)
        for model in listing["models"]:
            live = self.rollouts.get(model["name"])
            if live is not None:
                model["rollout"] = live.state()
        return json_response(listing)

    async def _openapi(self, request: Request) -> Response:
        return json_response(_catalog.merged_openapi(self.table, self.service, self.own_paths))

    async def _metrics(self, request: Request) -> Response:
        table = self.table
        ready = [backend for backend in table.backends.values() if backend.ready]
        answers = await asyncio.gather(*(backend.request("GET", b"/metrics", backend.metrics_headers, b"", 5.0)
                                         for backend in ready),
                                       return_exceptions=True)
        scraped = [(backend, answer.body.decode("utf-8", "replace")) for backend, answer in zip(ready, answers, strict=True)
                   if not isinstance(answer, BaseException) and answer.status == 200]
        content = _catalog.merged_metrics(scraped, self._own_metrics(table))
        return Response(content, media_type="text/plain; version=0.0.4; charset=utf-8")

    def _own_metrics(self, table: RouteTable) -> list[Any]:
        labels = ["model", "version"]
        ready = GaugeMetricFamily("mlship_model_ready", "1 when the model version serves, 0 when it is "
                                  "unavailable.", labels=labels)
        restarts = CounterMetricFamily("mlship_backend_restarts", "Times the front started a model's backend "
                                       "again after it died.", labels=labels)
        failures = CounterMetricFamily("mlship_front_failures", "Requests the front answered itself for a model: "
                                       "unavailable (503), failed (502), timeout (504).",
                                       labels=[*labels, "reason"])
        for backend in table.backends.values():
            ready.add_metric([backend.name, backend.version], 1.0 if backend.ready else 0.0)
            restarts.add_metric([backend.name, backend.version], float(backend.restarts))
        for (name, version, reason), count in sorted(self.failures.items()):
            failures.add_metric([name, version, reason], float(count))
        return [ready, restarts, failures, *reload_metrics(self.reloader),
                *rollout_metrics(list(self.rollouts.values()))]

    async def _page(self, request: Request) -> Response:
        return Response(_catalog.page(self.table, self.service, self.settings.ui), media_type="text/html",
                        headers={"content-security-policy": CONTENT_SECURITY_POLICY,
                                 "x-content-type-options": "nosniff", "referrer-policy": "no-referrer",
                                 "cache-control": "no-cache"})

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        path = request.url.path
        if exc.status_code == 404:
            routes = self.table.model_routes()
            return json_response({"error": f"no endpoint {path}; this server serves several models, each under "
                                  "/models/{name}/ (GET /models lists them)", "routes": routes}, 404)
        if exc.status_code == 405:
            allowed = {k.lower(): v for k, v in (exc.headers or {}).items()}.get("allow", "")
            return error_response(405, f"{request.method} is not allowed on {path}; allowed: {allowed}",
                                  dict(exc.headers or {}))
        return error_response(exc.status_code, str(exc.detail))

    # -- lifespan ---------------------------------------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                for backend in self.table.backends.values():
                    backend.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop_all()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def stop_all(self) -> None:
        limit = self.settings.drain_delay + self.settings.grace_period + 5
        await asyncio.gather(*(live.stop() for live in self.rollouts.values()))
        await asyncio.gather(*(backend.stop(limit) for backend in self.table.backends.values()))
        if self.reloader is not None:
            await self.reloader.drain_all()


def _operations(endpoints: list[Endpoint], protected: set[str]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for endpoint in endpoints:
        operation = endpoint.operation
        if endpoint.access in protected:
            scheme = "apiToken" if endpoint.access == "api" else "metricsToken"
            operation = {**operation, "security": [{scheme: []}]}
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = operation
    return paths


def _runtime_version(table: RouteTable) -> str:
    for backend in table.backends.values():
        if backend.metadata and backend.metadata.get("mlship_version"):
            return str(backend.metadata["mlship_version"])
    return "unknown"


class FrontServer(uvicorn.Server):
    """uvicorn's server with the runtime's shutdown (not ready at once, drain delay, grace) and SIGHUP -> reload."""

    def __init__(self, config: uvicorn.Config, front: Front) -> None:
        super().__init__(config)
        self.front = front
        self._exit_at: float | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_hangup)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_hangup(self, sig: int, frame: FrameType | None) -> None:
        hook = self.front.reload_hook
        if hook is None:
            logger.warning("SIGHUP: this front has no reload; ignored")
            return
        loop = asyncio.get_event_loop()
        loop.call_soon_threadsafe(lambda: loop.create_task(hook()))

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.front.draining:
            if sig == signal.SIGINT:
                self.force_exit = True
            return
        self.front.draining = True
        delay = self.front.settings.drain_delay
        logger.info("%s: not ready; closing the listener in %g s, then up to %g s for in-flight requests",
                    signal.Signals(sig).name, delay, self.front.settings.grace_period)
        self._exit_at = time.monotonic() + delay

    async def on_tick(self, counter: int) -> bool:
        if self._exit_at is not None and time.monotonic() >= self._exit_at:
            self.should_exit = True
        return await super().on_tick(counter)


def build_table(service: Any, *, workers: int, log_level: str, boot: Path) -> RouteTable:
    """A backend (not started) for every model of `service` (a _service.Service), and its defaults."""
    backends = {(model.name, model.version): make_backend(model, workers=workers, log_level=log_level, boot=boot)
                for model in service.models}
    defaults = {name: service.defaults.get(name) or versions[0]
                for name in dict.fromkeys(m.name for m in service.models)
                for versions in [[m.version for m in service.models if m.name == name]]}
    return RouteTable(backends, defaults)


def make_backend(model: Any, *, workers: int, log_level: str, boot: Path) -> Backend:
    """The backend (not started) of one _service.ServiceModel: its Python (else ours), its workers (else the
    service's)."""
    return Backend(model.name, model.version, Path(model.bundle), python=model.python or sys.executable,
                   workers=model.workers or workers, boot=boot, log_level=log_level, env=os.environ)


def _reloader(front: Front, service_file: Path, *, workers: int, log_level: str, boot: Path,
              pid_file: Path | None) -> Reloader:
    """The reload of SIGHUP (_reload), building backends exactly as the start did."""
    def fingerprint_of(model: Any) -> tuple[str, str, str, int]:
        return fingerprint(Path(model.bundle), model.python or sys.executable, model.workers or workers)

    timeout = front.settings.drain_delay + front.settings.grace_period + 5
    reload_timeout = _env_seconds("MLSHIP_RELOAD_TIMEOUT", DEFAULT_RELOAD_TIMEOUT)
    return Reloader(front, service_file,
                    make_backend=lambda model: make_backend(model, workers=workers, log_level=log_level, boot=boot),
                    fingerprint_of=fingerprint_of, stop_timeout=timeout,
                    status_file=status_file_for(pid_file) if pid_file is not None else None, timeout=reload_timeout)


def _env_seconds(name: str, default: float) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < math.inf:
        logger.warning("%s=%r is not a positive number of seconds; using %g", name, text, default)
        return default
    return value


def serve_service(service_file: Path, *, host: str, port: int, workers: int | None, log_level: str,
                  pid_file: Path | None) -> int:
    """Serve every model of `service_file` until SIGINT/SIGTERM; 1 after one log line if it cannot start."""
    from ._service import ServiceError, read_service

    settings = configured_settings(service_file, log_level)
    if settings is None:
        return 1
    try:
        service = read_service(service_file)
    except ServiceError as exc:
        logger.error("cannot serve %s: %s (%s)", service_file, exc.message, exc.hint)
        return 1
    boot = Path(__file__).resolve().with_name("_boot.py")
    count = workers or available_cpus()
    table = build_table(service, workers=count, log_level=log_level, boot=boot)
    front = Front(service.name, table, settings)
    pid_file = pid_file or pid_file_for(service_file)
    front.shadow_log = DisagreementLog(shadow_log_for(pid_file), limit=_env_bytes("MLSHIP_SHADOW_LOG_BYTES"))
    front.set_rollouts(service)
    front.reloader = _reloader(front, service_file, workers=count, log_level=log_level, boot=boot,
                               pid_file=pid_file)
    front.reloader.remember(service)
    front.reload_hook = front.reloader.reload
    config = uvicorn.Config(
        front, host=host, port=port, loop="auto", http=protocol_class(settings), lifespan="on",
        timeout_keep_alive=settings.keepalive_timeout,  # type: ignore[arg-type]  # uvicorn takes a float too
        h11_max_incomplete_event_size=settings.max_header_bytes, log_config=None, log_level=log_level,
        access_log=False, server_header=False, timeout_graceful_shutdown=math.ceil(settings.grace_period))
    server = FrontServer(config, front)
    written = _write_pid(pid_file)
    models = ", ".join(f"{name} {version}" for name, version in table.backends)
    logger.info("serving %s (%s) on http://%s:%d", service.name, models, host, port)
    try:
        server.run()
    finally:
        if written is not None:
            written.unlink(missing_ok=True)
            front.reloader.forget_status()
    return 0 if server.started else 1


def shadow_log_for(pid_file: Path | None) -> Path | None:
    """Where the shadow's disagreements go: $MLSHIP_SHADOW_LOG, else beside the pid file (<pid file>.shadow.jsonl);
    None (not written) with neither."""
    configured = os.environ.get("MLSHIP_SHADOW_LOG", "").strip()
    if configured:
        return Path(configured)
    return pid_file.with_name(pid_file.name + ".shadow.jsonl") if pid_file is not None else None


def _env_bytes(name: str) -> int:
    from ._rollout import LOG_BYTES

    text = os.environ.get(name, "").strip()
    if text.isdigit() and int(text) > 0:
        return int(text)
    if text:
        logger.warning("%s=%r is not a positive number of bytes; using %d", name, text, LOG_BYTES)
    return LOG_BYTES


def _write_pid(path: Path | None) -> Path | None:
    """Best effort: a read-only filesystem must not stop the server; `mlship reload` then cannot find it, so the
    one log line says how to reach it (its pid for SIGHUP, or MLSHIP_PID_FILE)."""
    unfound = f"`mlship reload` cannot find this server: send SIGHUP to pid {os.getpid()} to reload it, or set " \
        "MLSHIP_PID_FILE (--pid-file) to a writable path"
    if path is None:
        logger.warning("no pid file (no $XDG_RUNTIME_DIR and no writable temporary directory): %s", unfound)
        return None
    try:
        path.write_text(f"{os.getpid()}\n")
    except OSError as exc:
        logger.warning("cannot write the pid file %s (%s): %s", path, exc.strerror or exc, unfound)
        return None
    return path
