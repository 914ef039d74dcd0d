"""The ASGI app of one worker: every protocol's routes over one shared state (see _state.AppState).

- mlship's own (`_api`): POST /<method> per served method, /livez, /readyz, /metadata, /metrics
- MLflow's scoring protocol (`_mlflow`): POST /invocations, /ping, /health, /version
- the Open Inference Protocol (`_v2`): /v2/...
- GET /openapi.json (`_openapi`)
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
from starlette.routing import Route
from starlette.types import ASGIApp

from . import _api, _mlflow, _v2
from ._bundle import LoadedBundle, load_bundle, read_golden, read_manifest
from ._http import error_response, json_response, request_id
from ._inference import Runner
from ._logs import AccessLog
from ._metrics import Metrics
from ._observe import Observe
from ._openapi import openapi_document
from ._settings import Settings
from ._state import AppState
from ._verify import replay_case

logger = logging.getLogger(__name__)


def create_app(
    bundle_dir: str | Path,
    *,
    bundle: LoadedBundle | None = None,
    settings: Settings | None = None,
    access_log: AccessLog | None = None,
) -> Starlette:
    """The app serving the bundle at `bundle_dir`; its AppState is `app.state.mlship`.

    The model loads in the lifespan startup (raising BundleLoadError stops the server), unless `bundle` is given
    already loaded, as `serve` does before forking its workers. Readiness is decided in the lifespan too: one
    golden case must replay. Only mlship.json and golden.json are read here, to route and describe the
    endpoints. Settings default to `Settings.from_env()`.
    """
    root = Path(bundle_dir).resolve()
    limits = settings or Settings.from_env()
    manifest = bundle.manifest if bundle is not None else read_manifest(root)
    golden = bundle.golden if bundle is not None else read_golden(root, manifest)
    metrics = Metrics(manifest)
    state = AppState(
        manifest,
        limits,
        metrics,
        access_log or AccessLog(limits.access_log, limits.log_format),
        golden_cases=list(golden["cases"]),
    )
    if bundle is not None:
        state.runner = Runner(bundle, limits, metrics, state.after_response.append)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if state.runner is None:
            state.runner = Runner(load_bundle(root), limits, metrics, state.after_response.append)
        check_ready(state)
        yield
        state.access_log.flush()

    v2_routes = _v2.routes(state)
    document = openapi_document(manifest, state.method_names, _v2.output_tensors(state))

    async def openapi(request: Request) -> Response:
        return json_response(document)

    routes = [
        *_api.routes(state),
        *_mlflow.routes(state),
        *v2_routes,
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
    fast = _api.fast_routes(state)
    app = _App(
        observe=lambda inner: Observe(inner, state, fast),
        routes=routes,
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
    """Ready means "serves what the notebook computed", not just "imported": replay one golden case."""
    assert state.runner is not None
    bundle = state.runner.bundle
    result = replay_case(bundle, bundle.cases[0])
    if result.ok:
        state.ready = True
        logger.info(
            "ready: %s %s loaded, golden case %s matches",
            bundle.manifest["name"],
            bundle.manifest["version"],
            result.id,
        )
    else:
        state.not_ready = f"golden case {result.id} does not match: {result.detail}"
        logger.error("not ready: %s", state.not_ready)


def _http_exception_handler(state: AppState) -> Callable[[Request, Exception], Awaitable[Response]]:
    served = ", ".join(
        [f"POST /{name}" for name in state.method_names] + ["POST /invocations", "POST /v2/..."]
    )

    async def handler(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        path = request.url.path
        if exc.status_code == 404:
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
