"""The Open Inference Protocol's model endpoints (see _v2, which declares them): metadata, readiness, inference.

An infer request becomes the same checked payload as /predict, so it is validated, batched and counted the
same way; binary tensor data follows Triton's extension (extension_binary_data.md).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from . import _tensors
from ._http import (
    HttpError,
    encode_json,
    error_response,
    ignored_columns_header,
    is_ascii_number,
    json_response,
    parse_json,
    read_body,
)
from ._model import ModelHandle
from ._schema import Checked, InputError, check_payload
from ._settings import Settings
from ._state import AppState
from ._values import quote

BINARY_HEADER = "inference-header-content-length"
PLATFORM = "mlship_python"


@dataclass(frozen=True)
class Inference:
    """An inference request, checked: the payload to predict and the outputs asked for."""

    checked: Checked
    outputs: list[tuple[str, bool]]  # (method, as binary data)
    id: str | None


def output_tensors(model: ModelHandle) -> list[dict[str, Any]]:
    """$metadata_tensor per served method, shaped like its golden output for one row."""
    examples: dict[str, Any] = {}
    for case in model.golden.cases:
        if isinstance(case.expected, list) and case.expected:
            examples.setdefault(case.method, case.expected[0])
    return [_tensors.output_tensor(name, examples.get(name)) for name in model.method_names]


class V2Model:
    """The protocol's model endpoints for one served model: metadata, readiness and inference."""

    def __init__(self, state: AppState, model: ModelHandle) -> None:
        self.state = state
        self.model = model
        self.name = model.name
        self.version = model.version
        self.inputs = _tensors.input_tensors(model.schema)
        self.outputs = output_tensors(model)
        self.declared = {tensor["name"]: tensor["datatype"] for tensor in self.outputs}

    async def model_metadata(self, request: Request) -> Response:
        try:
            self._check_model(request)
        except HttpError as exc:
            return error_response(exc.status_code, exc.message)
        return json_response(
            {
                "name": self.name,
                "versions": [self.version],
                "platform": PLATFORM,
                "inputs": self.inputs,
                "outputs": self.outputs,
            }
        )

    async def model_ready(self, request: Request) -> Response:
        try:
            self._check_model(request)
        except HttpError as exc:
            return error_response(exc.status_code, exc.message)
        ready = self.state.readiness() is None
        return json_response({"name": self.name, "ready": ready}, 200 if ready else 400)

    async def infer(self, request: Request) -> Response:
        try:
            self._check_model(request)
            self.model.loaded_runner()
            body, binary = await self._read(request)
            inference = self._parse(body, binary)
            methods = [method for method, _ in inference.outputs]
            if len(methods) == 1:
                results = [await self.state.predict(request, self.model, methods[0], inference.checked)]
            else:
                results = list(
                    await asyncio.gather(
                        *(self.state.predict(request, self.model, method, inference.checked) for method in methods)
                    )
                )
        except HttpError as exc:
            return error_response(exc.status_code, exc.message)
        return self._response(inference, results)

    def _check_model(self, request: Request) -> None:
        name = request.path_params["name"]
        version = request.path_params.get("version")
        if name != self.name:
            raise HttpError(404, f"unknown model {name!r}; this server serves {self.name!r}")
        if version is not None and version != self.version:
            raise HttpError(404, f"model {name!r} has no version {version!r}; it has {self.version!r}")

    async def _read(self, request: Request) -> tuple[Any, bytes]:
        """The JSON inference request and the binary tensor data after it (Inference-Header-Content-Length)."""
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise HttpError(
                415, f"Content-Encoding {encoding!r} is not supported; send the body uncompressed"
            )
        declared = request.headers.get(BINARY_HEADER)
        media_type = (
            (request.headers.get("content-type") or "application/json").split(";", 1)[0].strip().lower()
        )
        # form-urlencoded: what `curl -d` sends; the body is JSON whatever it says, as on /predict.
        if media_type not in (
            "application/json",
            "application/octet-stream",
            "application/x-www-form-urlencoded",
        ) and not media_type.endswith("+json"):
            raise HttpError(
                415,
                f"unsupported Content-Type {media_type!r}; send application/json, or "
                f"application/octet-stream with {BINARY_HEADER}",
            )
        raw = await read_body(request, self.state.settings.max_body_bytes)
        if declared is None:
            if media_type == "application/octet-stream":
                raise HttpError(400, f"binary tensor data needs the {BINARY_HEADER} header")
            return parse_json(raw, self.state.settings.max_elements), b""
        # ASCII digits only: str.isdigit() is true of "²" too, which int() then refuses (a 500, before).
        if not is_ascii_number(declared.strip()) or int(declared) > len(raw):
            raise HttpError(
                400,
                f"{BINARY_HEADER} must be the length of the JSON part of the body, at most "
                f"{len(raw)}; got {declared!r}",
            )
        return parse_json(raw[: int(declared)], self.state.settings.max_elements), raw[int(declared) :]

    def _parse(self, body: Any, binary: bytes) -> Inference:
        try:
            return self._parse_or_raise(body, binary)
        except InputError as exc:
            raise HttpError(400, exc.message) from None

    def _parse_or_raise(self, body: Any, binary: bytes) -> Inference:
        if not isinstance(body, dict):
            raise InputError('the inference request must be a JSON object with "inputs"')
        request_id = body.get("id")
        if request_id is not None and not isinstance(request_id, str):
            raise InputError('"id" must be a string')
        parameters = _parameters(body, "the inference request")
        names = {t["name"] for t in self.inputs}
        # Extra input tensors of a column model are extra columns: dropped and named, unless strict.
        extras = self.model.schema.has_columns and not self.model.limits.strict_columns
        tensors, ignored = _received_tensors(body.get("inputs"), binary, names, self.state.settings, extras)
        checked = replace(self._checked(tensors), ignored=tuple(sorted(ignored)))
        self.model.note_ignored(checked)
        return Inference(checked, self._requested_outputs(body.get("outputs"), parameters), request_id)

    def _checked(self, tensors: dict[str, tuple[dict[str, Any], list[Any]]]) -> Checked:
        schema = self.model.schema
        kind = schema.kind
        rows: dict[str, list[Any]] = {}
        counts = set()
        for expected, spec in zip(self.inputs, schema.fields, strict=True):
            tensor, flat = tensors[expected["name"]]
            name, shape, datatype = expected["name"], tensor["shape"], tensor["datatype"]
            if datatype not in _tensors.ACCEPTED[spec.type]:
                raise InputError(
                    f'input "{name}": datatype {datatype} does not fit; the model takes '
                    f"{expected['datatype']}"
                )
            if kind == "ndarray":
                fixed = expected["shape"]
                if len(shape) != len(fixed) or any(
                    f != -1 and f != s for f, s in zip(fixed, shape, strict=True)
                ):
                    raise InputError(f'input "{name}": shape {shape} does not match {fixed} (-1: any size)')
                rows[name] = _tensors.nest(name, flat, shape)
            else:
                if not shape or len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
                    raise InputError(f'input "{name}": shape {shape} must be [rows] or [rows, 1]')
                rows[name] = flat
            counts.add(shape[0] if shape else 0)
        if len(counts) > 1:
            raise InputError(f"the inputs differ in their number of rows: {sorted(counts)}")
        max_rows = self.model.limits.max_rows
        if schema.has_columns:
            return check_payload("inputs", rows, schema, max_rows=max_rows)
        return check_payload("instances", rows[self.inputs[0]["name"]], schema, max_rows=max_rows)

    def _requested_outputs(self, outputs: Any, parameters: dict[str, Any]) -> list[tuple[str, bool]]:
        all_binary = parameters.get("binary_data_output") is True
        if outputs is None:
            return [(name, all_binary) for name in self.model.method_names]
        if not isinstance(outputs, list) or not outputs:
            raise InputError('"outputs" must be a non-empty list of {"name": ...} objects')
        requested = []
        for output in outputs:
            if not isinstance(output, dict) or not isinstance(output.get("name"), str):
                raise InputError('every entry of "outputs" must be an object with a string "name"')
            if output["name"] not in self.model.method_names:
                raise InputError(
                    f'unknown output {quote(output["name"])}; this model has '
                    + ", ".join(f'"{name}"' for name in self.model.method_names)
                )
            binary = _parameters(output, f'output "{output["name"]}"').get("binary_data")
            requested.append((output["name"], all_binary if binary is None else binary is True))
        return requested

    def _response(self, inference: Inference, results: list[Any]) -> Response:
        outputs, blobs = [], []
        for (method, binary), predictions in zip(inference.outputs, results, strict=True):
            tensor, flat = _tensors.response_tensor(method, predictions, self.declared.get(method))
            if binary:
                data = _tensors.write_binary(tensor["datatype"], flat)
                tensor["parameters"] = {"binary_data_size": len(data)}
                blobs.append(data)
            else:
                tensor["data"] = flat
            outputs.append(tensor)
        answer: dict[str, Any] = {"model_name": self.name, "model_version": self.version}
        if inference.id is not None:
            answer["id"] = inference.id
        answer["outputs"] = outputs
        header = encode_json(answer)
        named = ignored_columns_header(inference.checked.ignored)
        if not blobs:
            return Response(header, media_type="application/json", headers=named)
        return Response(
            header + b"".join(blobs),
            media_type="application/octet-stream",
            headers={BINARY_HEADER: str(len(header)), **named},
        )


def _parameters(holder: dict[str, Any], what: str) -> dict[str, Any]:
    parameters = holder.get("parameters", {})
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise InputError(f'"parameters" of {what} must be a JSON object')
    return parameters


def element_count(name: str, shape: list[int], limits: Settings) -> int:
    """The elements of a tensor of `shape`, or InputError beyond the limits: at most `max_tensor_dims`
    dimensions, and a product that stops as soon as it passes `max_elements` (a shape of 100,000 dimensions of
    10**9 took the worker half a minute of big-integer multiplication before any check)."""
    if len(shape) > limits.max_tensor_dims:
        raise InputError(
            f'input "{name}": "shape" has {len(shape)} dimensions; at most {limits.max_tensor_dims} '
            "[env var: MLSHIP_MAX_TENSOR_DIMS]"
        )
    if 0 in shape:
        return 0
    count = 1
    for size in shape:
        count *= size
        if count > limits.max_elements:
            raise InputError(
                f'input "{name}": "shape" {shape} has more than {limits.max_elements} elements '
                "[env var: MLSHIP_MAX_ELEMENTS]"
            )
    return count


def _received_tensors(
    inputs: Any, binary: bytes, names: set[str], limits: Settings, extras: bool = False
) -> tuple[dict[str, tuple[dict[str, Any], list[Any]]], list[str]]:
    """{name: (tensor, flat data)} for the request's inputs, with binary data taken in input order, and the
    names of the inputs the model does not take: skipped (with their binary data) when `extras`, else an error."""
    if not isinstance(inputs, list) or not inputs:
        raise InputError('"inputs" must be a non-empty list of tensors')
    received: dict[str, tuple[dict[str, Any], list[Any]]] = {}
    ignored: list[str] = []
    offset = 0
    for tensor in inputs:
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise InputError('every input must be an object with a string "name"')
        name = tensor["name"]
        if name in received or name in ignored:
            raise InputError(f'input "{name}" is given twice')
        if name not in names and extras:
            offset += _skipped_binary(tensor, name, offset, len(binary))
            ignored.append(name)
            continue
        if name not in names:
            raise InputError(
                f"unknown input {quote(name)}; this model takes " + ", ".join(f'"{n}"' for n in sorted(names))
            )
        shape, datatype = tensor.get("shape"), tensor.get("datatype")
        if isinstance(shape, list) and len(shape) > limits.max_tensor_dims:  # before any walk over it
            element_count(name, shape, limits)
        if not isinstance(shape, list) or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape
        ):
            raise InputError(f'input "{name}": "shape" must be a list of non-negative integers')
        if datatype not in _tensors.DATATYPES:
            raise InputError(
                f'input "{name}": unknown datatype {datatype!r}; one of ' + ", ".join(_tensors.DATATYPES)
            )
        count = element_count(name, shape, limits)
        size = _parameters(tensor, f'input "{name}"').get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
                raise InputError(
                    f'input "{name}": binary_data_size {size!r} does not fit the {len(binary)} bytes '
                    "of binary data"
                )
            flat = _tensors.read_binary(name, datatype, count, binary[offset : offset + size])
            offset += size
        else:
            flat = _tensors.flatten(tensor.get("data"), name)
            if len(flat) != count:
                raise InputError(
                    f'input "{name}": {len(flat)} elements in "data" for shape {shape} ({count} elements)'
                )
        received[name] = (tensor, flat)
    if offset != len(binary):
        raise InputError(f"{len(binary) - offset} bytes of binary data belong to no input")
    missing = sorted(names - set(received))
    if missing:
        raise InputError("missing inputs " + ", ".join(f'"{name}"' for name in missing))
    return received, ignored


def _skipped_binary(tensor: dict[str, Any], name: str, offset: int, available: int) -> int:
    """The bytes of binary data an ignored input holds (0 for inline data): skipped unread, but they must fit."""
    size = _parameters(tensor, f'input "{name}"').get("binary_data_size")
    if size is None:
        return 0
    if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > available:
        raise InputError(
            f'input "{name}": binary_data_size {size!r} does not fit the {available} bytes of binary data'
        )
    return size
