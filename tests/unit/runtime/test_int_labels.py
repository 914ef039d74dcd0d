"""A dataframe whose labels were integers in the notebook (`read_csv(header=None)`): the schema says so, requests
name the columns "0", "1", ..., and the served function gets a frame labelled 0, 1, ... again."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from mlship.runtime._contract import BundleLoadError, InputSchema
from mlship.runtime._schema import InputError, decode_request

SCHEMA = {
    "kind": "dataframe",
    "column_labels": "int",
    "columns": [{"name": "0", "dtype": "float64", "type": "number"}, {"name": "1", "dtype": "float64", "type": "number"},
                {"name": "60", "dtype": "int64", "type": "integer"}],
}
EXPECTED = pd.DataFrame({0: [0.5, 1.5], 1: [2.0, 3.0], 60: [7, 8]})


def decode(body: Any, strict: bool = False) -> Any:
    return decode_request(body, InputSchema.from_json(SCHEMA), strict=strict)


@pytest.mark.parametrize("body", [
    {"instances": [{"0": 0.5, "1": 2.0, "60": 7}, {"0": 1.5, "1": 3.0, "60": 8}]},
    {"instances": [[0.5, 2.0, 7], [1.5, 3.0, 8]]},
    {"inputs": {"0": [0.5, 1.5], "1": [2.0, 3.0], "60": [7, 8]}},
    {"dataframe_records": [{"0": 0.5, "1": 2.0, "60": 7}, {"0": 1.5, "1": 3.0, "60": 8}]},
    # pandas' to_json(orient="split") of such a frame (what MLflow's client sends) names the columns by integers
    {"dataframe_split": {"columns": [0, 1, 60], "data": [[0.5, 2.0, 7], [1.5, 3.0, 8]]}},
    {"dataframe_split": {"columns": ["60", "0", "1"], "index": [4, 9], "data": [[7, 0.5, 2.0], [8, 1.5, 3.0]]}},
])
def test_every_payload_form_gives_the_frame_with_integer_labels(body: Any) -> None:
    frame = decode(body)
    pd.testing.assert_frame_equal(frame, EXPECTED)
    assert all(type(label) is int for label in frame.columns)


def test_requests_still_name_the_columns_the_schema_has() -> None:
    with pytest.raises(InputError, match='missing columns "60"'):
        decode({"instances": [{"0": 0.5, "1": 2.0}]})
    extra = {"dataframe_split": {"columns": [0, 1, 60, 61], "data": [[0.5, 2.0, 7, 9]]}}
    assert list(decode(extra).columns) == [0, 1, 60]  # an extra integer label is an extra column: dropped
    with pytest.raises(InputError, match='missing columns "60"'):
        decode({"dataframe_split": {"columns": [0, 1, 61], "data": [[0.5, 2.0, 7]]}})
    with pytest.raises(InputError, match='unexpected columns "61"'):
        decode(extra, strict=True)


def test_string_labels_are_the_default_and_old_schemas_read_unchanged() -> None:
    old = {"kind": "dataframe", "columns": [{"name": "0", "dtype": "float64", "type": "number"}]}
    schema = InputSchema.from_json(old)
    assert schema.column_labels == "str" and "column_labels" not in schema.to_json()
    assert list(decode_request({"instances": [{"0": 1.0}]}, schema).columns) == ["0"]
    labelled = InputSchema.from_json(SCHEMA)
    assert labelled.to_json()["column_labels"] == "int"
    assert InputSchema.from_json(labelled.to_json()) == labelled


@pytest.mark.parametrize(("change", "message"), [
    ({"column_labels": "float"}, "'column_labels' must be \"str\" or \"int\""),
    ({"columns": [{"name": "a", "type": "number"}]}, "integer column labels must be written as integers"),
    ({"columns": [{"name": "01", "type": "number"}]}, "integer column labels must be written as integers"),
    ({"kind": "records"}, "applies to a dataframe, not a records"),
])
def test_bad_column_labels_are_refused_naming_the_field(change: dict[str, Any], message: str) -> None:
    with pytest.raises(BundleLoadError, match=message):
        InputSchema.from_json({**SCHEMA, **change}, "mlship.json, input")
