"""MLflow's scoring-server protocol: POST /invocations, GET /ping, /health and /version.

Request and response shapes are MLflow's (`mlflow models serve`, MLflow 2 and 3): a JSON object with exactly one
of "dataframe_split", "dataframe_records", "instances", "inputs" (plus "params", which the bundle's methods do not
take and which is ignored, as MLflow ignores params a model's predict does not declare), or a CSV body with a
header row (Content-Type: text/csv). The answer is {"predictions": ...}; errors are MLflow's
{"error_code": ..., "message": ...}, so `ScoringServerClient` and `mlflow.deployments` clients work unchanged.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from ._http import HttpError, check_elements, encode_json, json_response, parse_json, read_body
from ._model import ModelHandle
from ._openapi import get_operation, json_content, responses
from ._protocol import Endpoint, Handler, Protocol
from ._schema import ACCEPTED_KEYS, InputError, check_payload
from ._state import AppState
from ._values import QUOTE_LIMIT, BadValue, quote_names

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
    if model.schema.has_columns:
        names = ",".join(model.schema.column_names)
        content["text/csv"] = {"schema": {"type": "string"}, "example": f"{names}\n"}
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
            if media_type == "text/csv":
                check_elements(raw, state.settings.max_elements)
                checked = _check_csv(model, raw, state.settings.max_csv_field_chars)
            else:
                checked = model.check_body(_unwrap(parse_json(raw, state.settings.max_elements)))
            predictions = await state.predict(request, model, method, checked)
        except HttpError as exc:
            return mlflow_error(exc.status_code, exc.message)
        return Response(encode_json({"predictions": predictions}), media_type="application/json")

    return endpoint


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


def _unwrap(body: Any) -> Any:
    """MLflow's body -> ours: exactly one format key; "params" and other keys are ignored, as MLflow does."""
    if not isinstance(body, dict):
        return body  # check_body words the error
    keys = [key for key in body if key in ACCEPTED_KEYS]
    if len(keys) != 1:
        accepted = ", ".join(f'"{key}"' for key in ACCEPTED_KEYS)
        got = quote_names(list(body)) or "an empty object"
        raise HttpError(
            400, f"the input must be a JSON object with exactly one of the keys {accepted}; got {got}"
        )
    return {keys[0]: body[keys[0]]}


def _check_csv(model: ModelHandle, raw: bytes, max_field: int) -> Any:
    schema = model.schema
    if not schema.has_columns:
        raise HttpError(
            415, f'this model takes a {schema.kind}, not a table: send JSON {{"instances": [...]}}'
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise HttpError(400, "the CSV body is not UTF-8 text") from None
    # The csv module's field limit is process-wide; this worker's settings decide it. Beyond it, csv raises
    # csv.Error ("field larger than field limit"), which was a 500 before.
    if csv.field_size_limit() != max_field:
        csv.field_size_limit(max_field)
    try:
        table = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:
        if "field limit" in str(exc):
            message = f"a CSV field is longer than {max_field} characters [env var: MLSHIP_MAX_CSV_FIELD_CHARS]"
            raise HttpError(413, message) from None
        raise HttpError(400, f"the CSV body does not parse: {exc}") from None
    if not table:
        raise HttpError(400, "the CSV body is empty; send a header row, then one line per row")
    header, lines = table[0], [line for line in table[1:] if line]
    types = {str(column.name): column.type for column in schema.columns}
    try:
        data = [
            [
                _csv_value(value, types.get(name, "any"), name, index)
                for name, value in zip(header, line, strict=False)
            ]
            + line[len(header) :]
            for index, line in enumerate(lines)
        ]
        return check_payload(
            "dataframe_split", {"columns": header, "data": data}, schema, max_rows=model.limits.max_rows
        )
    except InputError as exc:
        raise HttpError(400, exc.message) from None


def _csv_value(text: str, type_: str, column: str, row: int) -> Any:
    """A CSV cell as the JSON value the schema expects; an empty cell is null (a missing value)."""
    if type_ in ("string", "datetime", "any"):
        return text
    if text == "":
        return None
    try:
        if type_ == "number":
            return float(text)
        if type_ == "integer":
            return int(text) if text.lstrip("+-").isdigit() else float(text)
        if text.lower() in ("true", "false", "1", "0"):
            return text.lower() in ("true", "1")
        raise BadValue
    except (ValueError, BadValue):
        # repr-style, bounded: a field can be 128 KiB of anything (InputError escapes what repr leaves)
        shown = repr(text[:QUOTE_LIMIT]) + ("…" if len(text) > QUOTE_LIMIT else "")
        raise InputError(f'column "{column}", row {row}: {shown} is not a CSV {type_}') from None


def _ping_endpoint(state: AppState) -> Handler:
    async def ping(request: Request) -> Response:
        # MLflow answers "\n"; 200 once the model serves (here: loaded and a golden case replayed).
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
