"""Open Inference Protocol tensors: datatypes, data layout, binary tensor data (_tensors.py)."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest

from mlship.runtime import _tensors
from mlship.runtime._contract import Column
from mlship.runtime._values import InputError


@pytest.mark.parametrize(
    ("spec", "datatype"),
    [
        ({"type": "number", "dtype": "float64"}, "FP64"),
        ({"type": "number", "dtype": "float32"}, "FP32"),
        ({"type": "number", "dtype": "int64"}, "INT64"),  # an integral dtype for a number column
        ({"type": "number"}, "FP64"),
        ({"type": "integer", "dtype": "int32"}, "INT32"),
        ({"type": "integer", "dtype": "Int64"}, "INT64"),
        ({"type": "boolean", "dtype": "bool"}, "BOOL"),
        ({"type": "string", "dtype": "object"}, "BYTES"),
        ({"type": "datetime", "dtype": "datetime64[ns]"}, "BYTES"),
        ({"type": "any"}, "BYTES"),
    ],
)
def test_datatypes_from_the_schema(spec: dict[str, Any], datatype: str) -> None:
    assert _tensors.datatype_of(Column.from_json(spec, "spec", named=False)) == datatype


@pytest.mark.parametrize(
    ("example", "tensor"),
    [
        (1, {"datatype": "INT64", "shape": [-1]}),
        ([0.1, 0.9], {"datatype": "FP64", "shape": [-1, 2]}),
        ("spam", {"datatype": "BYTES", "shape": [-1]}),
        (True, {"datatype": "BOOL", "shape": [-1]}),
        ({"a": 1}, {"datatype": "BYTES", "shape": [-1]}),
        (None, {"datatype": "FP64", "shape": [-1]}),
    ],
)
def test_output_metadata_from_one_golden_row(example: Any, tensor: dict[str, Any]) -> None:
    assert _tensors.output_tensor("out", example) == {"name": "out", **tensor}


def test_flatten_and_nest_are_row_major() -> None:
    assert _tensors.flatten([[1, 2], [3, 4]], "x") == [1, 2, 3, 4]
    assert _tensors.flatten([[[1], [2]], [[3], [4]]], "x") == [1, 2, 3, 4]
    assert _tensors.nest("x", [1, 2, 3, 4, 5, 6], [3, 2]) == [[1, 2], [3, 4], [5, 6]]
    assert _tensors.nest("x", [1, 2, 3, 4], [1, 2, 2]) == [[[1, 2], [3, 4]]]
    with pytest.raises(InputError, match=r"shape \[2, 0\] has an empty dimension"):
        _tensors.nest("x", [], [2, 0])
    with pytest.raises(InputError, match='"data" must be a JSON array'):
        _tensors.flatten("1,2", "x")


@pytest.mark.parametrize(("datatype", "values"), [
    ("FP32", [1.5, -2.25]), ("FP64", [0.1, 1e300]), ("INT64", [-(2**63), 2**63 - 1]), ("UINT8", [0, 255]),
    ("BOOL", [True, False]), ("INT16", [-3, 7]), ("FP16", [0.5, 2.0]), ("BYTES", ["é", ""]),
])
def test_binary_round_trips(datatype: str, values: list[Any]) -> None:
    raw = _tensors.write_binary(datatype, values)
    assert _tensors.read_binary("x", datatype, len(values), raw) == values


def test_binary_null_floats_are_nan_and_bytes_lengths_are_checked() -> None:
    assert math.isnan(struct.unpack("<d", _tensors.write_binary("FP64", [None]))[0])
    with pytest.raises(InputError, match="BYTES data ends inside an element's 4-byte length"):
        _tensors.read_binary("x", "BYTES", 1, b"\x01\x00")
    with pytest.raises(InputError, match="a BYTES element is longer than the data left"):
        _tensors.read_binary("x", "BYTES", 1, struct.pack("<I", 9) + b"abc")
    with pytest.raises(InputError, match="is not UTF-8 text"):
        _tensors.read_binary("x", "BYTES", 1, struct.pack("<I", 1) + b"\xff")


def test_response_tensors() -> None:
    assert _tensors.response_tensor("p", [[1, 2], [3, 4]], "FP64") == (
        {"name": "p", "datatype": "FP64", "shape": [2, 2]}, [1.0, 2.0, 3.0, 4.0])
    assert _tensors.response_tensor("p", [1, None], "INT64") == (
        {"name": "p", "datatype": "FP64", "shape": [2]}, [1.0, None])
    ragged, data = _tensors.response_tensor("p", [[1], [2, 3]], None)
    assert ragged == {"name": "p", "datatype": "BYTES", "shape": [2]} and data == ["[1]", "[2, 3]"]
    records, data = _tensors.response_tensor("p", [{"a": 1}], None)
    assert records["datatype"] == "BYTES" and data == ['{"a": 1}']
