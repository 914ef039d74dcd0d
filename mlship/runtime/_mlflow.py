"""MLflow's scoring-server protocol: POST /invocations, GET /ping, /health and /version.

Request and response shapes are MLflow's (`mlflow models serve`, MLflow 2 and 3): a JSON object with exactly one
of "dataframe_split", "dataframe_records", "instances", "inputs" (plus "params", which the bundle's methods do not
take and which is ignored, as MLflow ignores params a model's predict does not declare), or a CSV body with a
header row (Content-Type: text/csv), for every input kind, as MLflow reads them (`_mlflow_input`). The answer is
{"predictions": ...}; errors are MLflow's {"error_code": ..., "message": ...}, so MLflow's `ScoringServerClient`
works unchanged (tests/e2e/test_mlflow_client.py drives it).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from ._contract import InputSchema
from ._http import (
    HttpError,
    check_elements,
    encode_json,
    ignored_columns_header,
    json_response,
    parse_json,
    read_body,
)
from ._mlflow_input import CsvFieldTooLong, check_mlflow_body, check_mlflow_csv, nan_to_null
from ._model import ModelHandle
from ._openapi import get_operation, json_content, responses
from ._protocol import Endpoint, Handler, Protocol
from ._schema import Checked
from ._state import AppState

_ERROR_CODES = {
    400: "BAD_REQUEST",
    404: "ENDPOINT_NOT_FOUND",
    413: "BAD_REQUEST",
    415: "BAD_REQUEST",
    422: "BAD_REQUEST",
    500: "INTERNAL_ERROR",
    503: "TEMPORARILY_UNAVAILABLE",
}
_JSON_TYPES = ("application/json", "application/x-www-form-urlencoded")


def model_endpoints(state: AppState, model: ModelHandle) -> list[Endpoint]:
    content = json_content("InvocationsRequest")
    content["text/csv"] = {"schema": {"type": "string"}, "example": f"{_csv_header(model.schema)}\n"}
    operation = {
        "summary": "MLflow scoring protocol (predict)",
        "operationId": "post_invocations",
        "requestBody": {"required": True, "content": content},
        "responses": responses("PredictResponse", 400, 413, 415, 422, 500, 503, error="MlflowError"),
    }
    return [Endpoint("/invocations", "POST", _invocations_endpoint(state, model), operation)]


def service_endpoints(state: AppState) -> list[Endpoint]:
    health = {"200": {"description": "ready"}, "503": {"description": "not ready"}}
    ping = _ping_endpoint(state)
    return [
        Endpoint("/ping", "GET", ping, {"operationId": "ping", "summary": "MLflow health check", "responses": health},
                 access="probe"),
        Endpoint(
            "/health",
            "GET",
            ping,
            {"operationId": "health", "summary": "MLflow health check (same as /ping)", "responses": health},
            access="probe",
        ),
        Endpoint(
            "/version",
            "GET",
            _version_endpoint(state),
            get_operation("version", "MLflow version check: the mlship version", {"text/plain": {"schema": {"type": "string"}}}),
        ),
    ]


def schemas(model: ModelHandle) -> dict[str, Any]:
    return {
        "InvocationsRequest": {
            "type": "object",
            "properties": {"params": {"type": "object"}},
            "description": "One of the PredictRequest forms, plus MLflow's optional params.",
            "example": {"instances": [model.example]},
        },
        "MlflowError": {
            "type": "object",
            "required": ["error_code", "message"],
            "properties": {"error_code": {"type": "string"}, "message": {"type": "string"}},
        },
    }


def _csv_header(schema: InputSchema) -> str:
    """The CSV header a client sends: the column names; for a row kind any names, one per value of a row."""
    if schema.has_columns:
        return ",".join(schema.column_names)
    if schema.kind != "ndarray":
        return schema.fields[0].name or "value"
    width = schema.shape[1] if schema.shape is not None and len(schema.shape) == 2 else None
    return ",".join(f"c{index}" for index in range(width or 1))


def mlflow_error(status_code: int, message: str) -> Response:
    return json_response(
        {"error_code": _ERROR_CODES.get(status_code, "BAD_REQUEST"), "message": message}, status_code
    )


def _invocations_endpoint(state: AppState, model: ModelHandle) -> Handler:
    method = model.default_method

    async def endpoint(request: Request) -> Response:
        try:
            model.loaded_runner()
            media_type = _content_type(request)
            raw = await read_body(request, state.settings.max_body_bytes)
            checked = _check_input(state, model, media_type, raw)
            predictions = await state.predict(request, model, method, checked)
        except HttpError as exc:
            return mlflow_error(exc.status_code, exc.message)
        return Response(encode_json({"predictions": predictions}), media_type="application/json",
                        headers=ignored_columns_header(checked.ignored))

    return endpoint


def _check_input(state: AppState, model: ModelHandle, media_type: str, raw: bytes) -> Checked:
    settings, max_rows = state.settings, model.limits.max_rows
    if media_type == "text/csv":
        check_elements(raw, settings.max_elements)
    else:
        body = parse_json(raw, settings.max_elements)
        if b"NaN" in raw:  # only then can there be one: orjson refuses the token, the standard library reads it
            body = nan_to_null(body)
    strict = model.limits.strict_columns

    def check() -> Checked:
        if media_type != "text/csv":
            return check_mlflow_body(body, model.schema, max_rows=max_rows, strict=strict)
        try:
            return check_mlflow_csv(raw, model.schema, max_rows=max_rows, max_field=settings.max_csv_field_chars,
                                    strict=strict)
        except CsvFieldTooLong as exc:  # an InputError, but too long rather than malformed
            raise HttpError(413, exc.message) from None

    return model.check_with(check)

def _content_type(request: Request) -> str:
    value = request.headers.get("content-type") or "application/json"
    media_type, *parameters = (part.strip() for part in value.split(";"))
    media_type = media_type.lower()
    params = {
        key.strip().lower(): val.strip().strip('"').lower()
        for key, _, val in (p.partition("=") for p in parameters)
    }
    charset = params.get("charset", "utf-8")
    if charset not in ("utf-8", "utf8"):
        raise HttpError(415, f"the scoring server only supports UTF-8, got charset={charset}")
    if media_type in _JSON_TYPES or media_type.endswith("+json") or media_type == "text/csv":
        return media_type
    raise HttpError(415, f"unsupported Content-Type {value!r}; send application/json or text/csv")


def _ping_endpoint(state: AppState) -> Handler:
    async def ping(request: Request) -> Response:
        # MLflow answers "\n"; 200 once the model serves (here: loaded and every golden case replayed).
        return Response(
            "\n", status_code=200 if state.readiness() is None else 503, media_type="application/json"
        )

    return ping


def _version_endpoint(state: AppState) -> Handler:
    version = state.model.mlship_version

    async def endpoint(request: Request) -> Response:
        return PlainTextResponse(version)

    return endpoint


PROTOCOL = Protocol(
    name="mlflow",
    service_endpoints=service_endpoints,
    model_endpoints=model_endpoints,
    schemas=schemas,
    entry_points=lambda model: ["POST /invocations"],
    blurb="/invocations speaks MLflow's scoring protocol (also /ping, /health, /version)",
)
