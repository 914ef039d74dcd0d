"""Open Inference Protocol tensors: datatypes from the bundle's schema, request inputs to the runtime's payload
forms, model outputs to response tensors, and Triton's binary tensor data extension (extension_binary_data.md).

Pure standard library: binary tensors are read and written with `struct` (little-endian, row-major), BYTES
elements as a 4-byte little-endian length followed by the bytes.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from ._contract import Column, InputSchema
from ._values import InputError, describe

# datatype -> struct format character (little-endian), for the fixed-size types.
STRUCT_FORMATS = {
    "BOOL": "?",
    "UINT8": "B",
    "UINT16": "H",
    "UINT32": "I",
    "UINT64": "Q",
    "INT8": "b",
    "INT16": "h",
    "INT32": "i",
    "INT64": "q",
    "FP16": "e",
    "FP32": "f",
    "FP64": "d",
}
DATATYPES = (*STRUCT_FORMATS, "BYTES")
_INTEGERS = {"UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"}
_FLOATS = {"FP16", "FP32", "FP64"}
# Which request datatypes each schema `type` accepts (the runtime converts to the schema's dtype afterwards).
ACCEPTED = {
    "number": _INTEGERS | _FLOATS,
    "integer": _INTEGERS,
    "boolean": {"BOOL"},
    "string": {"BYTES"},
    "datetime": {"BYTES"},
    "any": set(DATATYPES),
}
_NUMPY_TO_DATATYPE = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
}
DEFAULT_INPUT = "input-0"


def datatype_of(spec: Column) -> str:
    """The datatype a schema column (or the element of a series/list/ndarray input) is declared with."""
    type_ = spec.type
    dtype = str(spec.dtype or "").lower()
    if type_ in ("number", "integer", "boolean"):
        declared = _NUMPY_TO_DATATYPE.get(dtype)
        if declared is not None and declared in ACCEPTED[type_]:
            return declared
        return {"number": "FP64", "integer": "INT64", "boolean": "BOOL"}[type_]
    return "BYTES"


def input_tensors(schema: InputSchema) -> list[dict[str, Any]]:
    """$metadata_tensor for each input: one per column for the column kinds, one tensor otherwise."""
    if schema.has_columns:
        return [{"name": column.name, "datatype": datatype_of(column), "shape": [-1]} for column in schema.columns]
    element = schema.fields[0]
    if schema.kind == "ndarray":
        shape = schema.shape or (None,)
        return [
            {
                "name": DEFAULT_INPUT,
                "datatype": datatype_of(element),
                "shape": [-1 if size is None else int(size) for size in shape],
            }
        ]
    name = element.name if schema.kind == "series" and element.name is not None else DEFAULT_INPUT
    return [{"name": name, "datatype": datatype_of(element), "shape": [-1]}]


def output_tensor(name: str, example_row: Any) -> dict[str, Any]:
    """$metadata_tensor for a method's output, from one golden row of it (expected output for one input row)."""
    shape, leaves = _shape_and_leaves(example_row)
    if shape is None:
        return {"name": name, "datatype": "BYTES", "shape": [-1]}
    return {"name": name, "datatype": _datatype_of_values(leaves), "shape": [-1, *shape]}


def nest(name: str, flat: list[Any], shape: list[int]) -> list[Any]:
    """Row-major flat data -> nested lists of `shape`, shape[0] of them (the rows)."""
    if 0 in shape[1:]:
        raise InputError(f'input "{name}": shape {shape} has an empty dimension')
    nested = flat
    for size in reversed(shape[1:]):
        nested = [nested[start : start + size] for start in range(0, len(nested), size)]
    return nested


def flatten(data: Any, name: str) -> list[Any]:
    """The tensor's elements in row-major order: "data" may be nested (natural form) or already flat."""
    if not isinstance(data, list):
        raise InputError(f'input "{name}": "data" must be a JSON array, got {describe(data)}')
    if not any(isinstance(item, list) for item in data):
        return data
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def read_binary(name: str, datatype: str, count: int, raw: bytes) -> list[Any]:
    """Decode `count` elements of `datatype` from binary tensor data (little-endian, row-major)."""
    if datatype == "BYTES":
        values: list[Any] = []
        offset = 0
        while offset < len(raw):
            if offset + 4 > len(raw):
                raise InputError(f'input "{name}": BYTES data ends inside an element\'s 4-byte length')
            (size,) = struct.unpack_from("<I", raw, offset)
            offset += 4
            if offset + size > len(raw):
                raise InputError(f'input "{name}": a BYTES element is longer than the data left')
            try:
                values.append(raw[offset : offset + size].decode("utf-8"))
            except UnicodeDecodeError:
                raise InputError(f'input "{name}": a BYTES element is not UTF-8 text') from None
            offset += size
        if len(values) != count:
            raise InputError(f'input "{name}": {len(values)} BYTES elements for a shape of {count} elements')
        return values
    code = STRUCT_FORMATS[datatype]
    if len(raw) != count * struct.calcsize(code):
        raise InputError(
            f'input "{name}": binary_data_size is {len(raw)} bytes; a {datatype} tensor of {count} elements '
            f"takes {count * struct.calcsize(code)}"
        )
    return list(struct.unpack(f"<{count}{code}", raw))


def response_tensor(name: str, predictions: Any, declared: str | None) -> tuple[dict[str, Any], list[Any]]:
    """($response_output without "data", flat data) for one method's JSON-able predictions.

    Predictions with one entry per row become a tensor of shape [rows, ...]; entries that are not
    rectangular numbers, booleans or strings (dicts, ragged lists) become one BYTES element per row, holding
    the entry as JSON text.
    """
    rows = predictions if isinstance(predictions, list) else [predictions]
    shape, flat = _shape_and_leaves(rows)
    if shape is None or any(isinstance(value, dict) for value in flat):
        texts = [value if isinstance(value, str) else json.dumps(value) for value in rows]
        return {"name": name, "datatype": "BYTES", "shape": [len(rows)]}, texts
    datatype = _datatype_of_values(flat)
    if declared in _FLOATS and datatype in _INTEGERS | _FLOATS:
        datatype = declared  # integral values from a float model (1.0 sent as 1) keep the declared type
    if datatype in _FLOATS:
        flat = [None if value is None else float(value) for value in flat]
    elif datatype == "BYTES":  # mixed leaves: each one as its JSON text
        flat = [value if isinstance(value, str) else json.dumps(value) for value in flat]
    return {"name": name, "datatype": datatype, "shape": shape}, flat


def write_binary(datatype: str, flat: list[Any]) -> bytes:
    if datatype == "BYTES":
        parts = []
        for value in flat:
            data = value.encode("utf-8") if isinstance(value, str) else json.dumps(value).encode("utf-8")
            parts.append(struct.pack("<I", len(data)) + data)
        return b"".join(parts)
    code = STRUCT_FORMATS[datatype]
    if code in "efd":  # null is a NaN that JSON could not carry
        flat = [float("nan") if value is None else value for value in flat]
    return struct.pack(f"<{len(flat)}{code}", *flat)


def _shape_and_leaves(value: Any) -> tuple[list[int] | None, list[Any]]:
    """([dims], leaves) of a rectangular nested list; (None, []) when ragged. A scalar has shape []."""
    if not isinstance(value, list):
        return [], [value]
    if not value:
        return [0], []
    shapes, leaves = [], []
    for item in value:
        shape, items = _shape_and_leaves(item)
        if shape is None:
            return None, []
        shapes.append(shape)
        leaves.extend(items)
    if any(shape != shapes[0] for shape in shapes):
        return None, []
    return [len(value), *shapes[0]], leaves


def _datatype_of_values(values: list[Any]) -> str:
    if values and all(isinstance(value, bool) for value in values):
        return "BOOL"
    if values and all(isinstance(value, int) and not isinstance(value, bool) for value in values):
        return "INT64"
    # null is a NaN (the runtime writes non-finite floats as null): numbers with nulls are floats.
    if all(
        value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)) for value in values
    ):
        return "FP64"
    return "BYTES"
