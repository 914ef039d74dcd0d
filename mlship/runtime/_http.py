"""HTTP plumbing that knows nothing of models: request IDs, JSON errors, content type, body size, parsing."""

from __future__ import annotations

import json
import uuid
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._codec import encode_json

REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID_KEY = "mlship.request_id"

# `curl -d` sends application/x-www-form-urlencoded unless told otherwise; refusing it would fail the first
# request nearly everyone tries, and the body is parsed as JSON whatever the type says.
_JSON_MEDIA_TYPES = ("application/json", "application/x-www-form-urlencoded")


class HttpError(Exception):
    """A request problem with its status code; the message goes back to the client as {"error": message}."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


def json_response(content: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        encode_json(content), status_code=status_code, headers=headers, media_type="application/json"
    )


def error_response(status_code: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response({"error": message}, status_code, headers)


class RequestIdMiddleware:
    """Give every request an ID (the client's X-Request-ID when usable) and echo it as a response header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _usable_id(Headers(scope=scope).get(REQUEST_ID_HEADER)) or uuid.uuid4().hex
        scope[_REQUEST_ID_KEY] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        await self.app(scope, receive, send_with_id)


def request_id(request: Request) -> str:
    return str(request.scope.get(_REQUEST_ID_KEY, "-"))


def _usable_id(value: str | None) -> str | None:
    # The ID ends up in logs and a response header: only short, visible ASCII is echoed.
    if value and len(value) <= 200 and all("!" <= char <= "~" for char in value):
        return value
    return None


def check_content_type(request: Request) -> None:
    """Accept no Content-Type, application/json, any +json, and form-urlencoded (see _JSON_MEDIA_TYPES)."""
    value = request.headers.get("content-type")
    if value is None:
        return
    media_type = value.split(";", 1)[0].strip().lower()
    if media_type in _JSON_MEDIA_TYPES or media_type.endswith("+json"):
        return
    raise HttpError(415, f"unsupported Content-Type {value!r}; send JSON with Content-Type: application/json")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or 413: before reading when Content-Length exceeds `limit`, and while streaming
    when a chunked or lying client sends more than that.
    """
    too_large = HttpError(
        413,
        f"the request body is larger than {limit} bytes; send fewer rows per request "
        "[env var: MLSHIP_MAX_BODY_BYTES]",
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
    except ClientDisconnect:
        raise HttpError(400, "the client disconnected before sending the whole body") from None
    return b"".join(chunks)


def parse_json(body: bytes) -> Any:
    if not body.strip():
        raise HttpError(400, 'the request body is empty; send a JSON object such as {"instances": [...]}')
    try:
        return json.loads(body)
    except RecursionError:
        raise HttpError(400, "the request body is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and UnicodeDecodeError for bytes that are not UTF-8
        raise HttpError(400, f"the request body is not valid JSON: {exc}") from None
