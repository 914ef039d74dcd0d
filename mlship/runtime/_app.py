"""The ASGI app of one worker: the routes of every protocol in PROTOCOLS over one shared state (_state.AppState).

PROTOCOLS is the one list of the protocols the runtime speaks (see _protocol): the routes, /openapi.json, the
404 answer and the serve command's help are all derived from it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from . import _api, _mlflow, _ui, _v2
from ._auth import Auth, required_tokens
from ._bundle import LoadedBundle, load_bundle, read_servable
from ._http import MODEL_MISS_KEY, error_response, request_id
from ._logs import AccessLog
from ._metrics import Metrics
from ._model import ModelHandle
from ._observe import Observe
from ._openapi import openapi_document, openapi_endpoint
from ._protocol import Protocol
from ._settings import Settings
from ._state import AppState

logger = logging.getLogger(__name__)

PROTOCOLS: tuple[Protocol, ...] = (_api.PROTOCOL, _mlflow.PROTOCOL, _v2.PROTOCOL, _ui.PROTOCOL)


def create_app(
    bundle_dir: str | Path,
    *,
    bundle: LoadedBundle | None = None,
    settings: Settings | None = None,
    access_log: AccessLog | None = None,
) -> Starlette:
    """The app serving the bundle at `bundle_dir`; its AppState is `app.state.mlship`.

    The model loads in the lifespan startup (raising BundleLoadError stops the server), unless `bundle` is given
    already loaded, as `serve` does before forking its workers. Readiness is decided in the lifespan too: every
    golden case must replay (ModelHandle.check_ready). Only mlship.json and golden.json are read here, to route and describe the
    endpoints. Settings default to `Settings.from_env()`.
    """
    root = Path(bundle_dir).resolve()
    limits = settings or Settings.from_env()
    read = bundle if bundle is not None else read_servable(root)
    model = ModelHandle(read.manifest, read.golden, limits)
    metrics = Metrics(read.manifest)
    state = AppState(model, limits, metrics, access_log or AccessLog(limits.access_log, limits.log_format))
    if bundle is not None:
        model.start(bundle, metrics, state.after_response.append)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if model.runner is None:
            model.start(load_bundle(root), metrics, state.after_response.append)
        model.check_ready()
        yield
        state.access_log.flush()

    endpoints = [endpoint for protocol in PROTOCOLS for endpoint in protocol.endpoints(state)]
    document: dict[str, Any] = {}
    endpoints.append(openapi_endpoint(document))
    schemas = {name: schema for protocol in PROTOCOLS for name, schema in protocol.schemas(model).items()}
    document.update(openapi_document(model, endpoints, schemas, [protocol.blurb for protocol in PROTOCOLS],
                                     protected=set(required_tokens(limits))))
    auth = Auth(limits, endpoints)  # opt-in bearer tokens, checked inside Observe (a 401 is logged and counted)
    fast = {endpoint.path: auth.guard(endpoint.fast) for endpoint in endpoints if endpoint.fast is not None}
    app = _App(
        observe=lambda inner: Observe(auth.app(inner), state, fast),
        routes=[route for endpoint in endpoints for route in endpoint.routes()],
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_exception_handler(state), Exception: _unexpected_error},
    )
    app.state.mlship = state
    return app


class _App(Starlette):
    """Starlette with the Observe layer outside its own middleware, error handling included (see _observe)."""

    def __init__(self, *, observe: Callable[[ASGIApp], ASGIApp], **options: Any) -> None:
        self._observe = observe
        super().__init__(**options)

    def build_middleware_stack(self) -> ASGIApp:
        return self._observe(super().build_middleware_stack())


def check_ready(state: AppState) -> None:
    """Replay the golden cases of each model: what the lifespan does (tests that skip it call this)."""
    state.model.check_ready()


def _http_exception_handler(state: AppState) -> Callable[[Request, Exception], Awaitable[Response]]:
    served = ", ".join(entry for protocol in PROTOCOLS for entry in protocol.entry_points(state.model))

    async def handler(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        path = request.url.path
        if exc.status_code == 404 and MODEL_MISS_KEY in request.scope:
            message = f"{request.scope[MODEL_MISS_KEY]} (under /models/{state.model.name}/: {served})"
        elif exc.status_code == 404:
            message = f"no endpoint {path}; this server has {served}; GET /openapi.json lists them all"
        elif exc.status_code == 405:
            allowed = {key.lower(): value for key, value in (exc.headers or {}).items()}.get("allow", "")
            message = f"{request.method} is not allowed on {path}; allowed: {allowed}"
        else:
            message = exc.detail
        return error_response(exc.status_code, message, dict(exc.headers or {}))

    return handler


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    # The server logs the traceback (Starlette re-raises to it); the client gets no internals. The Observe layer,
    # outside, adds the request ID header.
    rid = request_id(request)
    return error_response(500, f"internal error (request id {rid})")
