"""HTTP plumbing that knows nothing of models: request IDs, JSON errors, content type, body size, parsing."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ._codec import encode_json as _encode_json_stdlib
from ._settings import DEFAULT_MAX_ELEMENTS

_random = random.Random()
# Workers fork from one process: each must draw its own IDs (the global `random` does this too, but a notebook's
# code may seed that one).
os.register_at_fork(after_in_child=_random.seed)
REQUEST_ID_HEADER = "x-request-id"
REQUEST_ID_KEY = "mlship.request_id"
# time.monotonic() when the request's first byte was read (set by the server's protocol, _server)
RECEIVED_KEY = "mlship.received"
# Why a /models/{name}/... path names no model this server serves (set by _observe, said by the 404 answer)
MODEL_MISS_KEY = "mlship.model_miss"

# `curl -d` sends application/x-www-form-urlencoded unless told otherwise; refusing it would fail the first
# request nearly everyone tries, and the body is parsed as JSON whatever the type says.
_JSON_MEDIA_TYPES = ("application/json", "application/x-www-form-urlencoded")


class HttpError(Exception):
    """A request problem with its status code; the message goes back to the client as {"error": message}."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


def encode_json(content: Any) -> bytes:
    """JSON bytes for a response: orjson, which writes NaN and Infinity as null like `_codec.encode_json`; the
    standard library for what orjson refuses (integers beyond 64 bits)."""
    try:
        return orjson.dumps(content)
    except TypeError:
        return _encode_json_stdlib(content)


def json_response(content: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        encode_json(content), status_code=status_code, headers=headers, media_type="application/json"
    )


def error_response(status_code: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response({"error": message}, status_code, headers)


def request_id(request: Request) -> str:
    return str(request.scope.get(REQUEST_ID_KEY, "-"))


def new_request_id(header: str | None) -> str:
    """The client's X-Request-ID when usable, else a fresh random one (32 hex digits, like a uuid4's)."""
    # Not uuid4: its getrandom() system call costs more than the rest of this; these IDs need not be secret.
    return _usable_id(header) or f"{_random.getrandbits(128):032x}"


def _usable_id(value: str | None) -> str | None:
    # The ID ends up in logs and a response header: only short, visible ASCII is echoed.
    if value and len(value) <= 200 and all("!" <= char <= "~" for char in value):
        return value
    return None


def check_content_type(request: Request) -> None:
    check_media_type(request.headers.get("content-type"))


def check_media_type(value: str | None) -> None:
    """Accept no Content-Type, application/json, any +json, and form-urlencoded (see _JSON_MEDIA_TYPES)."""
    if value is None:
        return
    media_type = value.split(";", 1)[0].strip().lower()
    if media_type in _JSON_MEDIA_TYPES or media_type.endswith("+json"):
        return
    raise HttpError(415, f"unsupported Content-Type {value!r}; send JSON with Content-Type: application/json")


async def read_body(request: Request, limit: int) -> bytes:
    return await receive_body(request.receive, request.headers.get("content-length"), limit)


def is_ascii_number(text: str) -> bool:
    """Whether `text` is a non-negative whole number in ASCII digits (str.isdigit() also accepts "²", "١")."""
    return text.isascii() and text.isdigit()


class BodyBudget:
    """Bytes of request bodies this worker holds while they are still arriving, across all its requests.

    One per process (each worker is one): 40 clients sending 18 MiB bodies slowly held 661 MB of one worker
    before. A request that would take the total past the limit is answered 503 and its bytes are released.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, size: int) -> None:
        if self.held + size > self.limit:
            raise HttpError(
                503,
                f"the server is holding {self.held} bytes of unfinished request bodies, at most {self.limit} "
                "[env var: MLSHIP_MAX_PENDING_BYTES]; retry later",
            )
        self.held += size

    def give_back(self, size: int) -> None:
        self.held -= size


BODY_BUDGET = BodyBudget(60 * 1024 * 1024)  # the server sets the limit from its settings (see _server)


def set_pending_limit(limit: int) -> None:
    BODY_BUDGET.limit = limit


async def receive_body(receive: Receive, declared: str | None, limit: int) -> bytes:
    """The request body, or 413: before reading when Content-Length exceeds `limit`, and while streaming
    when a chunked or lying client sends more than that; 503 when the worker already holds too many bytes of
    unfinished bodies (BODY_BUDGET).
    """
    too_large = HttpError(
        413,
        f"the request body is larger than {limit} bytes; send fewer rows per request "
        "[env var: MLSHIP_MAX_BODY_BYTES]",
    )
    if declared and is_ascii_number(declared) and int(declared) > limit:
        raise too_large
    message = await receive()
    if message["type"] != "http.request":
        raise HttpError(400, "the client disconnected before sending the whole body")
    first = message.get("body", b"")
    if not message.get("more_body", False):  # the usual case: the whole body in one message, nothing held
        if len(first) > limit:
            raise too_large
        return bytes(first)
    chunks: list[bytes] = []
    size = 0
    budget = BODY_BUDGET
    try:
        while True:
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise too_large
            budget.take(len(chunk))
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
            message = await receive()
            if message["type"] != "http.request":
                raise HttpError(400, "the client disconnected before sending the whole body")
    finally:
        budget.give_back(sum(len(chunk) for chunk in chunks))


def header(scope: Scope, name: bytes) -> str | None:
    """One header of a raw ASGI scope (names are lower case there), without building a Headers object."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def send_json(send: Send, status_code: int, body: bytes, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    await send({"type": "http.response.start", "status": status_code,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


IGNORED_COLUMNS_HEADER = "Mlship-Ignored-Columns"
_MAX_IGNORED_NAMED = 64


def ignored_columns_header(names: Sequence[str]) -> dict[str, str]:
    """The response header naming the request's columns that were dropped (none: no header).

    A JSON array of the names (ASCII, so any name survives a header), at most 64 of them, then "… N more"."""
    if not names:
        return {}
    shown = list(names[:_MAX_IGNORED_NAMED])
    if len(names) > _MAX_IGNORED_NAMED:
        shown.append(f"… {len(names) - _MAX_IGNORED_NAMED} more")
    return {IGNORED_COLUMNS_HEADER: json.dumps([name[:200] for name in shown])}


# The deepest body the runtime reads. orjson 3.13 and later refuse deeper ones themselves (and the standard
# library, which parse_json then tries, runs out of stack first); older orjson releases read any depth, so for
# them the runtime counts: the answer to a too-deep body is the same whatever orjson is installed.
MAX_JSON_DEPTH = 1024
_TOO_DEEP = "the request body is nested too deeply"


def _orjson_reads_any_depth() -> bool:
    deep = b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1)
    try:
        orjson.loads(deep)
    except orjson.JSONDecodeError:
        return False
    return True


_CHECK_DEPTH = _orjson_reads_any_depth()


def _checked_depth(value: Any, body: bytes) -> Any:
    """The parsed value, or a 400 when its arrays and objects nest deeper than MAX_JSON_DEPTH (no recursion)."""
    # Fewer brackets than the limit cannot nest deeper than it: most bodies are not walked.
    if not _CHECK_DEPTH or body.count(b"[") + body.count(b"{") <= MAX_JSON_DEPTH:
        return value
    stack = [(value, 1)] if isinstance(value, (dict, list)) else []
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise HttpError(400, _TOO_DEEP)
        stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item)
                     if isinstance(child, (dict, list)))
    return value


def check_elements(body: bytes, limit: int) -> None:
    """413 when the JSON text holds more than `limit` values, counted before parsing (commas and opening
    brackets: an upper bound, since each value but the first of an array or object follows a comma). A body
    of 20 MiB of `{},` became 6.7 million dicts and 778 MB in one worker."""
    if len(body) <= limit:  # every value takes at least one byte
        return
    if body.count(b",") + body.count(b"[") + body.count(b"{") > limit:
        raise HttpError(
            413,
            f"the request body holds more than {limit} values; send fewer rows per request "
            "[env var: MLSHIP_MAX_ELEMENTS]",
        )


def parse_json(body: bytes, max_elements: int = DEFAULT_MAX_ELEMENTS) -> Any:
    check_elements(body, max_elements)
    try:
        return _checked_depth(orjson.loads(body), body)
    except orjson.JSONDecodeError:
        # NaN and Infinity tokens, integers beyond 64 bits, lone surrogates: the standard library reads them
        # (so that the schema check can name the value) and words the errors of what is really not JSON.
        pass
    if not body.strip():
        raise HttpError(400, 'the request body is empty; send a JSON object such as {"instances": [...]}')
    try:
        return json.loads(body)
    except RecursionError:
        raise HttpError(400, _TOO_DEEP) from None
    except ValueError as exc:  # JSONDecodeError, and UnicodeDecodeError for bytes that are not UTF-8
        raise HttpError(400, f"the request body is not valid JSON: {exc}") from None
