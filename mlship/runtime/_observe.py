"""The outermost ASGI layer: request IDs, the access log, request metrics, in-flight limit, draining, and the
plain-ASGI fast path of POST /<method>.

Plain ASGI rather than Starlette middleware classes: it runs for every request, and a BaseHTTPMiddleware would
add a task and a stream per request. It wraps the whole Starlette app (its error middleware included), so that
every response, a 500 too, carries the request ID and is counted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._http import (
    MODEL_MISS_KEY,
    RECEIVED_KEY,
    REQUEST_ID_HEADER,
    REQUEST_ID_KEY,
    encode_json,
    header,
    new_request_id,
    send_json,
)
from ._inference import REQUEST_RECEIVED
from ._protocol import FastHandler
from ._routes import MODELS, parse_model_path
from ._state import AppState

logger = logging.getLogger(__name__)
_REQUEST_ID = REQUEST_ID_HEADER.encode()
MODELS_PREFIX = MODELS + "/"


def _unprefixed(scope: Scope, state: AppState) -> Scope:
    """A single-bundle server answers under /models/{name}/ and /models/{name}/versions/{version}/ too, as a
    multi-model front does: the scope with the path the bundle's own routes serve. Another name or version is
    left to the 404 answer (after the token check), which names what this server serves (MODEL_MISS_KEY)."""
    model_path = parse_model_path(scope["path"])
    if model_path is None or model_path.upstream is None or model_path.v2:
        return scope
    model = state.model
    if model_path.name != model.name:
        scope[MODEL_MISS_KEY] = f"no model {model_path.name!r}; this server serves {model.name!r}"
        return scope
    if model_path.version is not None and model_path.version != model.version:
        scope[MODEL_MISS_KEY] = f"model {model.name!r} has no version {model_path.version!r}; it has {model.version!r}"
        return scope
    upstream = model_path.upstream
    return {**scope, "path": upstream, "raw_path": upstream.encode()}


class Observe:
    def __init__(self, app: ASGIApp, state: AppState, fast: Mapping[str, FastHandler]) -> None:
        self.app = app
        self.state = state
        self.fast = dict(fast)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, wall = time.perf_counter(), time.time()
        # Waited already: read by the server's protocol while the event loop was busy (a model running inline).
        received = scope.get(RECEIVED_KEY)
        waited = max(0.0, time.monotonic() - received) if received is not None else 0.0
        if received is not None:
            REQUEST_RECEIVED.set(received)  # the request's deadline starts there (see _inference)
        state = self.state
        rid = new_request_id(header(scope, _REQUEST_ID))
        scope[REQUEST_ID_KEY] = rid
        extra = [(_REQUEST_ID, rid.encode())]
        status = 0
        method, path = scope["method"], scope["path"]
        if path.startswith(MODELS_PREFIX):
            scope = _unprefixed(scope, state)
        fast = self.fast.get(scope["path"]) if method == "POST" else None

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                headers.extend(extra)
                if state.draining:  # clients move to another instance instead of reusing this connection
                    headers.append((b"connection", b"close"))
                message["headers"] = headers
            await send(message)

        state.in_flight += 1
        state.metrics.in_flight.inc()
        try:
            if state.in_flight > state.settings.max_in_flight:
                await send_json(send_with_headers, 503, encode_json({"error": (
                    f"the server is overloaded: {state.settings.max_in_flight} requests in flight "
                    "[env var: MLSHIP_MAX_IN_FLIGHT]; retry later")}))
            else:
                try:
                    if fast is not None:
                        await fast(scope, receive, send_with_headers, rid)
                    else:
                        await self.app(scope, receive, send_with_headers)
                except Exception:
                    # A bug outside the model: the client gets a generic 500 (Starlette's error middleware has sent
                    # it already, except on the fast path), the log the traceback with the request ID.
                    logger.exception("request %s failed", rid, extra={"request_id": rid})
                    if not status:
                        body = encode_json({"error": f"internal error (request id {rid})"})
                        await send_json(send_with_headers, 500, body)
        finally:
            # The response has gone out: what follows delays no client (see _logs and AppState.after_response).
            state.in_flight -= 1
            state.metrics.in_flight.dec()
            while state.after_response:
                state.after_response.pop()()
            seconds = time.perf_counter() - started + waited
            route = scope["path"] if fast is not None else getattr(scope.get("route"), "path", None) or "unmatched"
            state.metrics.observe_request(route, method, status or 500, seconds)
            client = scope.get("client")
            state.access_log.log(
                method=method, path=path, status=status or 500, seconds=seconds, request_id=rid,
                client=f"{client[0]}:{client[1]}" if client else "-", when=wall,
            )
