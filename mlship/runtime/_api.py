"""mlship's own endpoints: POST /<method> per served method, probes, metadata and metrics."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ._http import (
    HttpError,
    check_media_type,
    encode_json,
    error_response,
    header,
    json_response,
    parse_json,
    receive_body,
    send_json,
)
from ._schema import Checked, InputError, check_request
from ._state import AppState

logger = logging.getLogger(__name__)

METADATA_KEYS = (
    "name",
    "version",
    "runtime_version",
    "created_at",
    "python",
    "requirements",
    "input",
    "batch_safe",
)


def routes(state: AppState) -> list[Route]:
    result = [
        Route(f"/{name}", _method_endpoint(state, name), methods=["POST"]) for name in state.method_names
    ]
    return result + [
        Route("/livez", _livez, methods=["GET"]),
        Route("/readyz", _readyz_endpoint(state), methods=["GET"]),
        Route("/metadata", _metadata_endpoint(state), methods=["GET"]),
        Route("/metrics", _metrics_endpoint(state), methods=["GET"]),
    ]


def check_body(state: AppState, body: Any) -> Checked:
    """A parsed request body checked against the bundle's schema; HttpError 400 naming the problem if not."""
    try:
        return check_request(body, state.schema, max_rows=state.settings.max_rows)
    except InputError as exc:
        raise HttpError(400, exc.message) from None
    except Exception as exc:
        # Checking depends only on the request and the schema, so whatever fails here is the client's input.
        logger.warning("could not decode a request", exc_info=True)
        raise HttpError(400, f"cannot decode the input: {type(exc).__name__}: {exc}") from None


def _method_endpoint(state: AppState, name: str) -> Any:
    async def endpoint(request: Request) -> Response:
        # POST requests take the plain-ASGI path below (see fast_routes); this one serves tests that call the
        # Starlette app without the Observe layer, and stays the route that answers 405 to other methods.
        try:
            state.loaded_runner()
            checked = check_body(state, await state.read_json(request))
            predictions = await state.predict(request, name, checked)
        except HttpError as exc:
            return error_response(exc.status_code, exc.message)
        return Response(encode_json({"predictions": predictions}), media_type="application/json")

    return endpoint


def fast_routes(state: AppState) -> dict[str, FastHandler]:
    """POST /<method> as plain ASGI handlers, by path, for the Observe layer to call directly.

    The hot path skips Starlette's middleware, routing and Request/Response objects: about a tenth of a
    millisecond less per request, which at concurrency 1 is what keeps mlship's latency at the bare baseline's
    (docs/RUNTIME.md). Behaviour is the same as the routes': same checks, same errors.
    """
    return {f"/{name}": _fast_method(state, name) for name in state.method_names}


FastHandler = Callable[[Scope, Receive, Send, str], Awaitable[None]]


def _fast_method(state: AppState, name: str) -> FastHandler:
    limit = state.settings.max_body_bytes

    async def handle(scope: Scope, receive: Receive, send: Send, rid: str) -> None:
        try:
            state.loaded_runner()
            check_media_type(header(scope, b"content-type"))
            body = await receive_body(receive, header(scope, b"content-length"), limit)
            checked = check_body(state, parse_json(body))
            predictions = await state.predict_checked(name, checked, rid)
        except HttpError as exc:
            await send_json(send, exc.status_code, encode_json({"error": exc.message}))
            return
        await send_json(send, 200, encode_json({"predictions": predictions}))

    return handle


async def _livez(request: Request) -> Response:
    return json_response({"status": "alive"})


def _readyz_endpoint(state: AppState) -> Any:
    async def readyz(request: Request) -> Response:
        reason = state.readiness()
        if reason is None:
            return json_response({"status": "ready"})
        return error_response(503, reason)

    return readyz


def _metadata_endpoint(state: AppState) -> Any:
    metadata = {key: state.manifest.get(key) for key in METADATA_KEYS}
    metadata["methods"] = state.method_names
    metadata["source"] = state.manifest.get("source")

    async def endpoint(request: Request) -> Response:
        return json_response(metadata)

    return endpoint


def _metrics_endpoint(state: AppState) -> Any:
    async def endpoint(request: Request) -> Response:
        content, content_type = state.metrics.exposition(request.headers.get("accept"))
        return Response(content, headers={"content-type": content_type})

    return endpoint
