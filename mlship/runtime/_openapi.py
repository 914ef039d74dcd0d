"""GET /openapi.json: an OpenAPI 3.0 document of every endpoint, with the bundle's real input schema.

Request bodies name the bundle's columns, their JSON types and nullability, and carry the golden example row, so
the document alone is enough to call the model (and to fuzz the server: tests run schemathesis against it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import _tensors
from ._schema import COLUMN_KINDS

_REF = "#/components/schemas/"
_TYPES: dict[str, dict[str, Any]] = {
    "number": {"type": "number"},
    "integer": {"type": "integer"},
    "boolean": {"type": "boolean"},
    "string": {"type": "string"},
    "datetime": {"type": "string", "format": "date-time"},
    "any": {},
}


def openapi_document(
    manifest: Mapping[str, Any], methods: list[str], v2_outputs: list[dict[str, Any]]
) -> dict[str, Any]:
    name, version = str(manifest["name"]), str(manifest["version"])
    schema = manifest["input"]
    paths: dict[str, Any] = {}
    for method in methods:
        paths[f"/{method}"] = {"post": _predict_operation(method, schema)}
    paths["/invocations"] = {"post": _invocations_operation(schema)}
    paths.update(_probe_paths())
    paths.update(_v2_paths(name, version))
    return {
        "openapi": "3.0.3",
        "info": {
            "title": f"{name} {version}",
            "version": version,
            "description": f"Model {name} {version} served by the mlship runtime. POST /{methods[0]} takes "
            "rows as `instances`; /invocations speaks MLflow's protocol and /v2 the Open "
            "Inference Protocol (KServe V2).",
        },
        "paths": paths,
        "components": {"schemas": _components(schema, v2_outputs)},
    }


def row_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """JSON schema of one input row: an object keyed by column, an array (ndarray), or a scalar."""
    kind = schema["kind"]
    if kind in COLUMN_KINDS:
        return {
            "type": "object",
            "properties": {spec["name"]: _value(spec) for spec in schema["columns"]},
            "required": [spec["name"] for spec in schema["columns"]],
            "additionalProperties": False,
        }
    if kind == "ndarray":
        shape = list(schema.get("shape") or [None])
        item = _value(schema)
        for size in reversed(shape[1:]):
            item = {"type": "array", "items": item, **({"minItems": size, "maxItems": size} if size else {})}
        return item
    return _value(schema)


def _value(spec: Mapping[str, Any]) -> dict[str, Any]:
    value = dict(_TYPES.get(spec.get("type", "any"), {}))
    if value and spec.get("nullable", True):
        value["nullable"] = True
    return value


def _components(schema: Mapping[str, Any], v2_outputs: list[dict[str, Any]]) -> dict[str, Any]:
    rows = {"type": "array", "items": {"$ref": _REF + "Row"}, "minItems": 1}
    forms: list[dict[str, Any]] = [_one_key("instances", rows), _one_key("inputs", rows)]
    if schema["kind"] in COLUMN_KINDS:
        columns = {
            "type": "object",
            "properties": {
                spec["name"]: {"type": "array", "items": _value(spec), "minItems": 1}
                for spec in schema["columns"]
            },
            "required": [spec["name"] for spec in schema["columns"]],
            "additionalProperties": False,
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
        forms += [
            _one_key("inputs", columns),
            _one_key("dataframe_split", split),
            _one_key("dataframe_records", rows),
        ]
    error = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
    tensor_data = {"type": "array", "items": {}}
    return {
        "Row": {**row_schema(schema), "example": schema.get("example")},
        "PredictRequest": {"oneOf": forms, "example": {"instances": [schema.get("example")]}},
        "InvocationsRequest": {
            "type": "object",
            "properties": {"params": {"type": "object"}},
            "description": "One of the PredictRequest forms, plus MLflow's optional params.",
            "example": {"instances": [schema.get("example")]},
        },
        "PredictResponse": {"type": "object", "required": ["predictions"], "properties": {"predictions": {}}},
        "Error": error,
        "MlflowError": {
            "type": "object",
            "required": ["error_code", "message"],
            "properties": {"error_code": {"type": "string"}, "message": {"type": "string"}},
        },
        "MetadataTensor": {
            "type": "object",
            "required": ["name", "datatype", "shape"],
            "properties": {
                "name": {"type": "string"},
                "datatype": {"type": "string"},
                "shape": {"type": "array", "items": {"type": "integer"}},
            },
        },
        "InferenceRequest": {
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "id": {"type": "string"},
                "parameters": {"type": "object"},
                "inputs": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["name", "shape", "datatype"],
                        "properties": {
                            "name": {
                                "type": "string",
                                "enum": [t["name"] for t in _tensors.input_tensors(schema)],
                            },
                            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                            "datatype": {"type": "string", "enum": list(_tensors.DATATYPES)},
                            "parameters": {"type": "object"},
                            "data": tensor_data,
                        },
                    },
                },
                "outputs": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            "name": {"type": "string", "enum": [t["name"] for t in v2_outputs]},
                            "parameters": {"type": "object"},
                        },
                    },
                },
            },
            "example": _v2_example(schema),
        },
        "InferenceResponse": {
            "type": "object",
            "required": ["model_name", "outputs"],
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "parameters": {"type": "object"},
                "outputs": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "shape", "datatype"],
                        "properties": {
                            "name": {"type": "string"},
                            "shape": {"type": "array", "items": {"type": "integer"}},
                            "datatype": {"type": "string"},
                            "parameters": {"type": "object"},
                            "data": tensor_data,
                        },
                    },
                },
            },
        },
    }


def _one_key(key: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": [key], "properties": {key: value}, "additionalProperties": False}


def _v2_example(schema: Mapping[str, Any]) -> dict[str, Any]:
    example = schema.get("example")
    inputs = []
    for tensor in _tensors.input_tensors(schema):
        if schema["kind"] in COLUMN_KINDS and isinstance(example, dict):
            data: Any = [example.get(tensor["name"])]
        else:
            data = [example]
        shape = [1, *[abs(size) for size in tensor["shape"][1:]]]
        inputs.append({"name": tensor["name"], "shape": shape, "datatype": tensor["datatype"], "data": data})
    return {"inputs": inputs}


def _json(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": _REF + ref}}}


def _responses(
    ok: str | None, *codes: int, error: str = "Error", ok_content: dict[str, Any] | None = None
) -> dict[str, Any]:
    reasons = {
        200: "OK",
        400: "bad request",
        404: "no such model or version",
        413: "body too large",
        415: "unsupported content type",
        500: "the model failed (details in the server log)",
        503: "not ready, timed out, overloaded or shutting down",
    }
    content = ok_content if ok_content is not None else _json(ok) if ok is not None else None
    result: dict[str, Any] = {"200": {"description": "OK", "content": content} if content else {"description": "OK"}}
    for code in codes:
        result[str(code)] = {"description": reasons[code], "content": _json(error)}
    return result


def _predict_operation(method: str, schema: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "summary": f"{method} for each input row",
        "operationId": f"post_{method}",
        "requestBody": {"required": True, "content": _json("PredictRequest")},
        "responses": _responses("PredictResponse", 400, 413, 415, 500, 503),
    }


def _invocations_operation(schema: Mapping[str, Any]) -> dict[str, Any]:
    content = _json("InvocationsRequest")
    if schema["kind"] in COLUMN_KINDS:
        names = ",".join(spec["name"] for spec in schema["columns"])
        content["text/csv"] = {"schema": {"type": "string"}, "example": f"{names}\n"}
    return {
        "summary": "MLflow scoring protocol (predict)",
        "operationId": "post_invocations",
        "requestBody": {"required": True, "content": content},
        "responses": _responses("PredictResponse", 400, 413, 415, 500, 503, error="MlflowError"),
    }


def _probe_paths() -> dict[str, Any]:
    plain = {"text/plain": {"schema": {"type": "string"}}}
    status = {
        "application/json": {"schema": {"type": "object", "properties": {"status": {"type": "string"}}}}
    }
    anything = {"application/json": {"schema": {"type": "object"}}}

    def get(op_id: str, summary: str, responses: dict[str, Any]) -> dict[str, Any]:
        return {"get": {"operationId": op_id, "summary": summary, "responses": responses}}

    return {
        "/livez": get("livez", "liveness: the process serves", _responses(None, ok_content=status)),
        "/readyz": get(
            "readyz",
            "readiness: model loaded, a golden case replayed, not draining",
            _responses(None, 503, ok_content=status),
        ),
        "/metadata": get(
            "metadata", "name, version, methods, input schema", _responses(None, ok_content=anything)
        ),
        "/metrics": get(
            "metrics",
            "Prometheus metrics, summed over the worker processes",
            _responses(None, ok_content=plain),
        ),
        "/openapi.json": get("openapi", "this document", _responses(None, ok_content=anything)),
        "/ping": get(
            "ping",
            "MLflow health check",
            {"200": {"description": "ready"}, "503": {"description": "not ready"}},
        ),
        "/health": get(
            "health",
            "MLflow health check (same as /ping)",
            {"200": {"description": "ready"}, "503": {"description": "not ready"}},
        ),
        "/version": get(
            "version", "MLflow version check: the mlship version", _responses(None, ok_content=plain)
        ),
    }


def _v2_paths(name: str, version: str) -> dict[str, Any]:
    model = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "enum": [name]}}
    model_version = {
        "name": "version",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": [version]},
    }
    live = {"application/json": {"schema": {"type": "object", "properties": {"live": {"type": "boolean"}}}}}
    ready = {"application/json": {"schema": {"type": "object", "properties": {"ready": {"type": "boolean"}}}}}
    model_ready = {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["name", "ready"],
                "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}},
            }
        }
    }
    server = {
        "application/json": {"schema": {"type": "object", "required": ["name", "version", "extensions"]}}
    }
    metadata = {
        "application/json": {
            "schema": {"type": "object", "required": ["name", "platform", "inputs", "outputs"]}
        }
    }
    paths: dict[str, Any] = {
        "/v2": {
            "get": {
                "operationId": "v2_server_metadata",
                "summary": "Open Inference Protocol: server metadata",
                "responses": _responses(None, ok_content=server),
            }
        },
        "/v2/health/live": {
            "get": {
                "operationId": "v2_live",
                "summary": "server live",
                "responses": _responses(None, ok_content=live),
            }
        },
        "/v2/health/ready": {
            "get": {
                "operationId": "v2_ready",
                "summary": "server ready (400 when not)",
                "responses": {
                    "200": {"description": "ready", "content": ready},
                    "400": {"description": "not ready", "content": ready},
                },
            }
        },
    }
    for suffix, params in (("", [model]), ("/versions/{version}", [model, model_version])):
        base = f"/v2/models/{{name}}{suffix}"
        tag = "_versioned" if suffix else ""
        paths[base] = {
            "get": {
                "operationId": f"v2_model_metadata{tag}",
                "summary": "model metadata",
                "parameters": params,
                "responses": _responses(None, 404, ok_content=metadata),
            }
        }
        paths[f"{base}/ready"] = {
            "get": {
                "operationId": f"v2_model_ready{tag}",
                "summary": "model ready (400 when not)",
                "parameters": params,
                "responses": {
                    "200": {"description": "ready", "content": model_ready},
                    "400": {"description": "not ready", "content": model_ready},
                    "404": {"description": "no such model or version", "content": _json("Error")},
                },
            }
        }
        paths[f"{base}/infer"] = {
            "post": {
                "operationId": f"v2_infer{tag}",
                "summary": "inference (JSON, or binary tensor data)",
                "parameters": params,
                "requestBody": {"required": True, "content": _json("InferenceRequest")},
                "responses": _responses("InferenceResponse", 400, 404, 413, 415, 500, 503),
            }
        }
    return paths
