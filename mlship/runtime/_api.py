"""mlship's own endpoints: POST /<method> per served method and /metadata (the model's); /livez, /readyz and
/metrics (the service's). Its component schemas (Row, PredictRequest, PredictResponse, Error) are shared by the
other protocols' operations."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ._http import (
    HttpError,
    check_media_type,
    encode_json,
    error_response,
    header,
    ignored_columns_header,
    json_response,
    parse_json,
    receive_body,
    send_json,
)
from ._model import ModelHandle
from ._openapi import ANY_JSON, REF, get_operation, json_content, one_key, responses, row_schema, value_schema
from ._protocol import Endpoint, FastHandler, Handler, Protocol
from ._state import AppState

_STATUS = {"application/json": {"schema": {"type": "object", "properties": {"status": {"type": "string"}}}}}
_TEXT = {"text/plain": {"schema": {"type": "string"}}}


def model_endpoints(state: AppState, model: ModelHandle) -> list[Endpoint]:
    methods = [
        Endpoint(
            f"/{name}",
            "POST",
            _method_endpoint(state, model, name),
            {
                "summary": f"{name} for each input row",
                "operationId": f"post_{name}",
                "requestBody": {"required": True, "content": json_content("PredictRequest")},
                "responses": responses("PredictResponse", 400, 413, 415, 422, 500, 503),
            },
            fast=fast_method(state, model, name),
        )
        for name in model.method_names
    ]
    metadata = Endpoint(
        "/metadata",
        "GET",
        _metadata_endpoint(model),
        get_operation("metadata", "name, version, methods, input schema", ANY_JSON),
    )
    return [*methods, metadata]


def service_endpoints(state: AppState) -> list[Endpoint]:
    return [
        Endpoint("/livez", "GET", _livez, get_operation("livez", "liveness: the process serves", _STATUS),
                 access="probe"),
        Endpoint(
            "/readyz",
            "GET",
            _readyz_endpoint(state),
            get_operation("readyz", "readiness: model loaded, every golden case replayed, not draining", _STATUS, 503),
            access="probe",
        ),
        Endpoint(
            "/metrics",
            "GET",
            _metrics_endpoint(state),
            get_operation("metrics", "Prometheus metrics, summed over the worker processes", _TEXT),
            access="metrics",
        ),
    ]


def schemas(model: ModelHandle) -> dict[str, Any]:
    schema = model.schema
    extra_columns = not model.limits.strict_columns  # dropped and named by the server, unless strict
    rows = {"type": "array", "items": {"$ref": REF + "Row"}, "minItems": 1}
    forms: list[dict[str, Any]] = [one_key("instances", rows), one_key("inputs", rows)]
    if schema.has_columns:
        columns = {
            "type": "object",
            "properties": {
                str(column.name): {"type": "array", "items": value_schema(column), "minItems": 1}
                for column in schema.columns
            },
            "required": schema.column_names,
            "additionalProperties": extra_columns,
        }
        split = {
            "type": "object",
            "required": ["columns", "data"],
            "additionalProperties": False,
            "properties": {
                "columns": {"type": "array", "items": {"type": "string"}},
                "data": {"type": "array", "items": {"type": "array"}, "minItems": 1},
                "index": {"type": "array"},
            },
        }
        forms += [one_key("inputs", columns), one_key("dataframe_split", split), one_key("dataframe_records", rows)]
    return {
        "Row": {**row_schema(schema, extra_columns=extra_columns), "example": model.example},
        "PredictRequest": {"oneOf": forms, "example": {"instances": [model.example]}},
        "PredictResponse": {"type": "object", "required": ["predictions"], "properties": {"predictions": {}}},
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    }


def _method_endpoint(state: AppState, model: ModelHandle, name: str) -> Handler:
    async def endpoint(request: Request) -> Response:
        # POST requests take the plain-ASGI path below (see fast_method); this one serves tests that call the
        # Starlette app without the Observe layer, and stays the route that answers 405 to other methods.
        try:
            model.loaded_runner()
            checked = model.check_body(await state.read_json(request))
            predictions = await state.predict(request, model, name, checked)
        except HttpError as exc:
            return error_response(exc.status_code, exc.message)
        return Response(encode_json({"predictions": predictions}), media_type="application/json",
                        headers=ignored_columns_header(checked.ignored))

    return endpoint


def fast_method(state: AppState, model: ModelHandle, name: str) -> FastHandler:
    """POST /<method> as a plain ASGI handler, for the Observe layer to call directly.

    The hot path skips Starlette's middleware, routing and Request/Response objects: about a tenth of a
    millisecond less per request, which at concurrency 1 is what keeps mlship's latency at the bare baseline's
    (docs/RUNTIME.md). Behaviour is the same as the route's: same checks, same errors.
    """
    limit, max_elements = state.settings.max_body_bytes, state.settings.max_elements

    async def handle(scope: Scope, receive: Receive, send: Send, rid: str) -> None:
        try:
            model.loaded_runner()
            check_media_type(header(scope, b"content-type"))
            body = await receive_body(receive, header(scope, b"content-length"), limit)
            checked = model.check_body(parse_json(body, max_elements))
            predictions = await state.predict_checked(model, name, checked, rid)
        except HttpError as exc:
            await send_json(send, exc.status_code, encode_json({"error": exc.message}))
            return
        extra = [(k.lower().encode(), v.encode()) for k, v in ignored_columns_header(checked.ignored).items()]
        await send_json(send, 200, encode_json({"predictions": predictions}), extra)

    return handle


async def _livez(request: Request) -> Response:
    return json_response({"status": "alive"})


def _readyz_endpoint(state: AppState) -> Handler:
    async def readyz(request: Request) -> Response:
        reason = state.readiness()
        if reason is None:
            return json_response({"status": "ready"})
        return error_response(503, reason)

    return readyz


def _metadata_endpoint(model: ModelHandle) -> Handler:
    metadata = model.metadata()

    async def endpoint(request: Request) -> Response:
        # The golden cases' start-up results are read per request: the lifespan replays them after routing.
        return json_response({**metadata, "example_published": model.limits.publish_example,
                              "golden": model.golden_status()})

    return endpoint


def _metrics_endpoint(state: AppState) -> Handler:
    async def endpoint(request: Request) -> Response:
        content, content_type = state.metrics.exposition(request.headers.get("accept"))
        return Response(content, headers={"content-type": content_type})

    return endpoint


PROTOCOL = Protocol(
    name="mlship",
    service_endpoints=service_endpoints,
    model_endpoints=model_endpoints,
    schemas=schemas,
    entry_points=lambda model: [f"POST /{name}" for name in model.method_names],
    blurb="POST /predict (and /<method>) takes rows as `instances`, with /livez, /readyz, /metadata, /metrics",
)
