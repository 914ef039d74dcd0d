"""The Open Inference Protocol (KServe V2) REST API, with Triton's binary tensor data extension: its endpoints,
their OpenAPI operations and schemas (the model endpoints' handlers are in _v2_handlers).

Inputs and outputs are derived from the bundle: one input tensor per column for the column kinds (shape [-1],
or [-1, 1] as pandas codecs send it), one tensor for ndarray/series/list inputs; one output per served method,
its datatype and shape taken from the golden cases.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from . import _tensors
from ._contract import InputSchema
from ._http import json_response
from ._model import ModelHandle
from ._openapi import get_operation, json_content, responses
from ._protocol import Endpoint, Protocol
from ._state import AppState
from ._v2_handlers import V2Model, output_tensors

EXTENSIONS = ["binary_tensor_data"]

_MODEL = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
_METADATA = {
    "application/json": {"schema": {"type": "object", "required": ["name", "platform", "inputs", "outputs"]}}
}
_MODEL_READY = {
    "application/json": {
        "schema": {
            "type": "object",
            "required": ["name", "ready"],
            "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}},
        }
    }
}


def model_endpoints(state: AppState, model: ModelHandle) -> list[Endpoint]:
    v2 = V2Model(state, model)
    result = []
    for suffix, params in (("", [_MODEL]), ("/versions/{version}", [_MODEL, _VERSION])):
        params = [_enum(param, model.name if param is _MODEL else model.version) for param in params]
        base, tag = f"/v2/models/{{name}}{suffix}", "_versioned" if suffix else ""
        result += [
            Endpoint(base, "GET", v2.model_metadata, {
                "operationId": f"v2_model_metadata{tag}",
                "summary": "model metadata",
                "parameters": params,
                "responses": responses(None, 404, ok_content=_METADATA),
            }),
            Endpoint(f"{base}/ready", "GET", v2.model_ready, {
                "operationId": f"v2_model_ready{tag}",
                "summary": "model ready (400 when not)",
                "parameters": params,
                "responses": {
                    "200": {"description": "ready", "content": _MODEL_READY},
                    "400": {"description": "not ready", "content": _MODEL_READY},
                    "404": {"description": "no such model or version", "content": json_content("Error")},
                },
            }),
            Endpoint(f"{base}/infer", "POST", v2.infer, {
                "operationId": f"v2_infer{tag}",
                "summary": "inference (JSON, or binary tensor data)",
                "parameters": params,
                "requestBody": {"required": True, "content": json_content("InferenceRequest")},
                "responses": responses("InferenceResponse", 400, 404, 413, 415, 422, 500, 503),
            }),
        ]
    return result


def service_endpoints(state: AppState) -> list[Endpoint]:
    async def server_metadata(request: Request) -> Response:
        return json_response({"name": "mlship", "version": state.model.mlship_version, "extensions": EXTENSIONS})

    async def live(request: Request) -> Response:
        return json_response({"live": True})

    async def ready(request: Request) -> Response:
        # The protocol's health answers: 200 is true, a 4xx false (k8s probes treat both correctly).
        ready = state.readiness() is None
        return json_response({"ready": ready}, 200 if ready else 400)

    server = {"application/json": {"schema": {"type": "object", "required": ["name", "version", "extensions"]}}}
    return [
        Endpoint("/v2", "GET", server_metadata,
                 get_operation("v2_server_metadata", "Open Inference Protocol: server metadata", server),
                 aliases=("/v2/",)),
        Endpoint("/v2/health/live", "GET", live, get_operation("v2_live", "server live", _boolean("live")),
                 access="probe"),
        Endpoint("/v2/health/ready", "GET", ready, {
            "operationId": "v2_ready",
            "summary": "server ready (400 when not)",
            "responses": {
                "200": {"description": "ready", "content": _boolean("ready")},
                "400": {"description": "not ready", "content": _boolean("ready")},
            },
        }, access="probe"),
    ]


def _enum(parameter: dict[str, Any], value: str) -> dict[str, Any]:
    """A path parameter that takes the one value this server serves."""
    return {**parameter, "schema": {"type": "string", "enum": [value]}}


def _boolean(key: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"type": "object", "properties": {key: {"type": "boolean"}}}}}


_TENSOR_DATA = {"type": "array", "items": {}}
_SHAPE = {"type": "array", "items": {"type": "integer"}}


def schemas(model: ModelHandle) -> dict[str, Any]:
    return {
        "MetadataTensor": {
            "type": "object",
            "required": ["name", "datatype", "shape"],
            "properties": {"name": {"type": "string"}, "datatype": {"type": "string"}, "shape": _SHAPE},
        },
        "InferenceRequest": _inference_request(model),
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
                        "properties": {"name": {"type": "string"}, "shape": _SHAPE, "datatype": {"type": "string"},
                                       "parameters": {"type": "object"}, "data": _TENSOR_DATA},
                    },
                },
            },
        },
    }


def _inference_request(model: ModelHandle) -> dict[str, Any]:
    """The request schema, its input and output names those of this model, with an example for its example row."""
    inputs = _tensors.input_tensors(model.schema)
    tensor = {
        "type": "object",
        "required": ["name", "shape", "datatype"],
        "properties": {
            "name": {"type": "string", "enum": [t["name"] for t in inputs]},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "datatype": {"type": "string", "enum": list(_tensors.DATATYPES)},
            "parameters": {"type": "object"},
            "data": _TENSOR_DATA,
        },
    }
    output = {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "enum": [t["name"] for t in output_tensors(model)]},
            "parameters": {"type": "object"},
        },
    }
    return {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {"type": "object"},
            "inputs": {"type": "array", "minItems": 1, "items": tensor},
            "outputs": {"type": "array", "items": output},
        },
        "example": _example(model.schema, inputs, model.example),
    }


def _example(schema: InputSchema, inputs: list[dict[str, Any]], example: Any) -> dict[str, Any]:
    """An inference request for the example row (the model's published one: see ModelHandle.example)."""
    tensors = []
    for tensor in inputs:
        if schema.has_columns and isinstance(example, dict):
            data: Any = [example.get(tensor["name"])]
        else:
            data = [example]
        shape = [1, *[abs(size) for size in tensor["shape"][1:]]]
        tensors.append({"name": tensor["name"], "shape": shape, "datatype": tensor["datatype"], "data": data})
    return {"inputs": tensors}


PROTOCOL = Protocol(
    name="v2",
    service_endpoints=service_endpoints,
    model_endpoints=model_endpoints,
    schemas=schemas,
    entry_points=lambda model: ["POST /v2/..."],
    blurb="/v2 the Open Inference Protocol (KServe V2)",
)
