"""GET /openapi.json: an OpenAPI 3.0 document assembled from the protocols' endpoints, with the model's real schema.

Each protocol declares its operations beside its routes (see _protocol); this module puts them together and holds
the pieces they share. Request bodies name the bundle's columns, their JSON types and nullability, and carry an
example row (synthetic unless MLSHIP_PUBLISH_EXAMPLE=1: see _example), so the document alone is enough to call
the model (and to fuzz the server: tests run schemathesis against it). With authentication on, the operations
that require a token say so (bearer security schemes, and a 401 answer).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ._contract import Column, InputSchema
from ._http import json_response
from ._model import ModelHandle
from ._protocol import Endpoint

REF = "#/components/schemas/"
_TYPES: dict[str, dict[str, Any]] = {
    "number": {"type": "number"},
    "integer": {"type": "integer"},
    "boolean": {"type": "boolean"},
    "string": {"type": "string"},
    "datetime": {"type": "string", "format": "date-time"},
    "any": {},
}
_REASONS = {
    200: "OK",
    400: "bad request",
    401: "no bearer token, or a wrong one",
    404: "no such model or version",
    413: "body too large",
    415: "unsupported content type",
    422: "the model's own input validation refused the input (the library's message)",
    500: "the model failed (details in the server log)",
    503: "not ready, timed out, overloaded or shutting down",
}
ANY_JSON = {"application/json": {"schema": {"type": "object"}}}


# The bearer schemes, by the access they grant (see _auth); declared only for those that require a token.
_SECURITY_SCHEMES = {
    "api": ("apiToken", "the API token [env var: MLSHIP_API_TOKEN_FILE or MLSHIP_API_TOKEN]"),
    "metrics": ("metricsToken", "the /metrics token [env var: MLSHIP_METRICS_TOKEN_FILE or MLSHIP_METRICS_TOKEN]"),
}


def openapi_document(
    model: ModelHandle,
    endpoints: list[Endpoint],
    schemas: dict[str, Any],
    blurbs: list[str],
    protected: set[str] | frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """The document of `endpoints` (their aliases left out), whose operations reference `schemas`.

    `protected` names the kinds of access that require a bearer token ("api", "metrics"): their operations
    carry a `security` requirement and a 401 answer, and the document declares the schemes.
    """
    paths: dict[str, Any] = {}
    for endpoint in endpoints:
        operation = endpoint.operation
        if endpoint.access in protected:
            scheme = _SECURITY_SCHEMES[endpoint.access][0]
            unauthorized = {"description": _REASONS[401], "content": json_content("Error")}
            operation = {**operation, "security": [{scheme: []}],
                         "responses": {**operation["responses"], "401": unauthorized}}
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = operation
    components: dict[str, Any] = {"schemas": schemas}
    if protected:
        components["securitySchemes"] = {
            name: {"type": "http", "scheme": "bearer", "description": description}
            for access, (name, description) in _SECURITY_SCHEMES.items() if access in protected
        }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": f"{model.name} {model.version}",
            "version": model.version,
            "description": f"Model {model.name} {model.version} served by the mlship runtime: "
            + "; ".join(blurbs)
            + ".",
        },
        "paths": paths,
        "components": components,
    }


def openapi_endpoint(document: Mapping[str, Any]) -> Endpoint:
    """GET /openapi.json serving `document` (filled in by the caller once every endpoint is known)."""

    async def openapi(request: Request) -> Response:
        return json_response(document)

    return Endpoint("/openapi.json", "GET", openapi, get_operation("openapi", "this document", ANY_JSON))


def row_schema(schema: InputSchema, *, extra_columns: bool = False) -> dict[str, Any]:
    """JSON schema of one input row: an object keyed by column, an array (ndarray), or a scalar.

    `extra_columns`: other keys are allowed (the server drops them; not in strict mode, MLSHIP_STRICT_COLUMNS)."""
    if schema.has_columns:
        return {
            "type": "object",
            "properties": {str(column.name): value_schema(column) for column in schema.columns},
            "required": schema.column_names,
            "additionalProperties": extra_columns,
        }
    item = value_schema(schema.fields[0])
    if schema.kind == "ndarray":
        for size in reversed((schema.shape or (None,))[1:]):
            item = {"type": "array", "items": item, **({"minItems": size, "maxItems": size} if size else {})}
    return item


def value_schema(column: Column) -> dict[str, Any]:
    """JSON schema of one value of a column (or of a row-kind input)."""
    value = dict(_TYPES.get(column.type, {}))
    if value and column.nullable:
        value["nullable"] = True
    return value


def one_key(key: str, value: dict[str, Any]) -> dict[str, Any]:
    """An object with exactly the one property `key`."""
    return {"type": "object", "required": [key], "properties": {key: value}, "additionalProperties": False}


def json_content(ref: str) -> dict[str, Any]:
    """A JSON body of the component schema `ref`."""
    return {"application/json": {"schema": {"$ref": REF + ref}}}


def responses(
    ok: str | None, *codes: int, error: str = "Error", ok_content: dict[str, Any] | None = None
) -> dict[str, Any]:
    """200 with the component `ok` (or `ok_content`), then each error code with the component `error`."""
    content = ok_content if ok_content is not None else json_content(ok) if ok is not None else None
    result: dict[str, Any] = {"200": {"description": "OK", "content": content} if content else {"description": "OK"}}
    for code in codes:
        result[str(code)] = {"description": _REASONS[code], "content": json_content(error)}
    return result


def get_operation(op_id: str, summary: str, ok_content: dict[str, Any], *codes: int) -> dict[str, Any]:
    """A GET operation answering `ok_content`, and `codes` with an Error."""
    return {"operationId": op_id, "summary": summary, "responses": responses(None, *codes, ok_content=ok_content)}
