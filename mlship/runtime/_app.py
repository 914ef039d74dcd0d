"""The ASGI app: one POST endpoint per method of the bundle, plus /livez, /readyz and /metadata."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ._build import split_rows
from ._bundle import LoadedBundle, load_bundle, read_manifest
from ._codec import encode_json, to_jsonable
from ._http import (
    HttpError,
    RequestIdMiddleware,
    check_content_type,
    error_response,
    json_response,
    parse_json,
    read_body,
    request_id,
)
from ._schema import InputError, decode_request
from ._settings import Settings
from ._verify import replay_case

logger = logging.getLogger(__name__)

BUNDLE_ENV = "MLSHIP_BUNDLE"
LOG_LEVEL_ENV = "MLSHIP_LOG_LEVEL"
_PROBES = ("livez", "readyz", "metadata")


@dataclass
class _State:
    bundle: LoadedBundle | None
    ready: bool = False
    not_ready: str = "the model is still loading"


def create_app(
    bundle_dir: str | Path, *, bundle: LoadedBundle | None = None, settings: Settings | None = None
) -> Starlette:
    """The app serving the bundle at `bundle_dir`.

    The model loads in the lifespan startup (raising BundleLoadError stops the server), unless `bundle` is
    given already loaded: `serve` loads it first, so that a bad bundle fails with one line before uvicorn
    starts. Only mlship.json is read here, to know which endpoints to route. Settings default to
    `Settings.from_env()`.
    """
    root = Path(bundle_dir).resolve()
    limits = settings or Settings.from_env()
    manifest = bundle.manifest if bundle is not None else read_manifest(root)
    names = [method["name"] for method in manifest["methods"]]
    state = _State(bundle)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if state.bundle is None:
            state.bundle = load_bundle(root)
        _check_ready(state, state.bundle)
        yield

    routes = [Route(f"/{name}", _method_endpoint(state, name, limits), methods=["POST"]) for name in names]
    routes += [
        Route("/livez", _livez, methods=["GET"]),
        Route("/readyz", _readyz_endpoint(state), methods=["GET"]),
        Route("/metadata", _metadata_endpoint(manifest), methods=["GET"]),
    ]
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(RequestIdMiddleware)],
        exception_handlers={HTTPException: _http_exception_handler(names), Exception: _unexpected_error},
    )


def configure_logging(level: str) -> None:
    """Our log lines beside uvicorn's: uvicorn configures only its own loggers, ours propagate to the root."""
    logging.basicConfig(level=level.upper(), format="%(levelname)s:  %(name)s: %(message)s")


def create_app_from_env() -> Starlette:
    """Factory for `uvicorn --factory` with several workers: each (spawned) worker process builds its own app.

    The parent passes the bundle path in MLSHIP_BUNDLE and its log level in MLSHIP_LOG_LEVEL.
    """
    configure_logging(os.environ.get(LOG_LEVEL_ENV, "info"))
    bundle_dir = os.environ.get(BUNDLE_ENV)
    if not bundle_dir:
        raise RuntimeError(f"{BUNDLE_ENV} is not set; it must name the bundle directory to serve")
    return create_app(bundle_dir)


def _check_ready(state: _State, bundle: LoadedBundle) -> None:
    # Ready means "serves what the notebook computed", not just "imported": replay one golden case.
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


Endpoint = Callable[[Request], Awaitable[Response]]


def _method_endpoint(state: _State, name: str, limits: Settings) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        bundle = state.bundle
        if bundle is None:
            return error_response(503, "the model is not loaded yet")
        try:
            check_content_type(request)
            body = parse_json(await read_body(request, limits.max_body_bytes))
            value = _decode(body, bundle, limits)
        except HttpError as exc:
            return error_response(exc.status_code, exc.message)
        try:
            # Called inline on the event loop, deliberately: the same predict costs about twice the CPU from a
            # thread pool (docs: FIELD-NOTES "Serving speed"); concurrency comes from uvicorn workers instead.
            content = encode_json({"predictions": _predict(bundle, name, value)})
        except Exception:
            rid = request_id(request)
            logger.exception("method %s failed (request id %s)", name, rid)
            return error_response(500, f"model failed on this input (request id {rid})")
        return Response(content, media_type="application/json")

    return endpoint


def _decode(body: Any, bundle: LoadedBundle, limits: Settings) -> Any:
    try:
        return decode_request(body, bundle.schema, max_rows=limits.max_rows)
    except InputError as exc:
        raise HttpError(400, exc.message) from None
    except Exception as exc:
        # Decoding depends only on the request and the schema, so whatever fails here is the client's input.
        logger.warning("could not decode a request", exc_info=True)
        raise HttpError(400, f"cannot decode the input: {type(exc).__name__}: {exc}") from None


def _predict(bundle: LoadedBundle, name: str, value: Any) -> Any:
    method = bundle.methods[name]
    kind = bundle.schema["kind"]
    if bundle.manifest.get("batch_safe", True):
        return to_jsonable(method(value))
    outputs: list[Any] = []
    for row in split_rows(kind, value):
        output = to_jsonable(method(row))
        # One row in, one entry out: unwrap the row axis so the rows' outputs line up as one list.
        outputs.extend(output if isinstance(output, list) and len(output) == 1 else [output])
    return outputs


async def _livez(request: Request) -> Response:
    return json_response({"status": "alive"})


def _readyz_endpoint(state: _State) -> Endpoint:
    async def readyz(request: Request) -> Response:
        if state.ready:
            return json_response({"status": "ready"})
        return error_response(503, state.not_ready)

    return readyz


def _metadata_endpoint(manifest: dict[str, Any]) -> Endpoint:
    keys = (
        "name",
        "version",
        "runtime_version",
        "created_at",
        "python",
        "requirements",
        "input",
        "batch_safe",
    )
    metadata = {key: manifest.get(key) for key in keys}
    metadata["methods"] = [method["name"] for method in manifest["methods"]]
    metadata["source"] = manifest.get("source")

    async def endpoint(request: Request) -> Response:
        return json_response(metadata)

    return endpoint


def _http_exception_handler(names: list[str]) -> Callable[[Request, Exception], Awaitable[Response]]:
    served = ", ".join([f"POST /{name}" for name in names] + [f"GET /{probe}" for probe in _PROBES])

    async def handler(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        path = request.url.path
        if exc.status_code == 404:
            message = f"no endpoint {path}; this server has {served}"
        elif exc.status_code == 405:
            allowed = {key.lower(): value for key, value in (exc.headers or {}).items()}.get("allow", "")
            message = f"{request.method} is not allowed on {path}; allowed: {allowed}"
        else:
            message = exc.detail
        return error_response(exc.status_code, message, dict(exc.headers or {}))

    return handler


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    # The server logs the traceback (Starlette re-raises to it); the client gets no internals. This handler runs
    # outside RequestIdMiddleware, so it sets the header itself.
    rid = request_id(request)
    return error_response(500, f"internal error (request id {rid})", {"x-request-id": rid})
