from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlship.runtime._contract import BundleLoadError, InputSchema
from mlship.runtime._schema import InputError, check_request, decode_request

FRAME = {
    "kind": "dataframe",
    "columns": [
        {"name": "age", "dtype": "int64", "type": "integer"},
        {"name": "income", "dtype": "float64", "type": "number"},
        {"name": "city", "dtype": "object", "type": "string"},
        {"name": "member", "dtype": "bool", "type": "boolean"},
    ],
}
ARRAY = {"kind": "ndarray", "dtype": "float64", "type": "number", "shape": [None, 3]}
ROW = {"age": 41, "income": 5200.5, "city": "Lyon", "member": True}


def decode(body: Any, schema: dict[str, Any] = FRAME, **options: Any) -> Any:
    return decode_request(body, InputSchema.from_json(schema), **options)


def error(body: Any, schema: dict[str, Any] = FRAME, **options: Any) -> str:
    with pytest.raises(InputError) as caught:
        decode_request(body, InputSchema.from_json(schema), **options)
    return caught.value.message


# Payload forms: every one of them gives the same DataFrame.

EXPECTED_FRAME = pd.DataFrame(
    {"age": [41, 30], "income": [5200.5, 100.0], "city": ["Lyon", "Oslo"], "member": [True, False]}
).astype({"age": "int64", "income": "float64", "city": "object", "member": "bool"})


@pytest.mark.parametrize(
    "body",
    [
        {"instances": [ROW, {"age": 30, "income": 100, "city": "Oslo", "member": False}]},
        {"instances": [[41, 5200.5, "Lyon", True], [30, 100, "Oslo", False]]},
        {"inputs": [ROW, {"member": False, "city": "Oslo", "income": 100.0, "age": 30}]},
        {
            "inputs": {
                "age": [41, 30],
                "income": [5200.5, 100],
                "city": ["Lyon", "Oslo"],
                "member": [True, False],
            }
        },
        {
            "dataframe_split": {
                "columns": ["city", "age", "income", "member"],
                "data": [["Lyon", 41, 5200.5, True], ["Oslo", 30, 100, False]],
            }
        },
        {
            "dataframe_split": {
                "index": [0, 1],
                "columns": ["age", "income", "city", "member"],
                "data": [[41, 5200.5, "Lyon", True], [30, 100, "Oslo", False]],
            }
        },
        {"dataframe_records": [ROW, {"age": 30, "income": 100, "city": "Oslo", "member": False}]},
    ],
    ids=[
        "instances-dicts",
        "instances-lists",
        "inputs-rows",
        "inputs-columnar",
        "split",
        "split-index",
        "records",
    ],
)
def test_every_payload_form_decodes_to_the_schema_dataframe(body: Any) -> None:
    frame = decode(body)
    pd.testing.assert_frame_equal(frame, EXPECTED_FRAME)


def test_integral_float_is_accepted_as_integer() -> None:
    assert decode({"instances": [{**ROW, "age": 41.0}]})["age"].tolist() == [41]


def test_series_kind() -> None:
    schema = {"kind": "series", "name": "text", "dtype": "object", "type": "string"}
    series = decode({"instances": ["great", "awful"]}, schema)
    assert series.name == "text" and series.dtype == object and series.tolist() == ["great", "awful"]


def test_ndarray_kind() -> None:
    array = decode({"instances": [[1, 2, 3], [4.5, 5, 6]]}, ARRAY)
    assert isinstance(array, np.ndarray) and array.dtype == np.float64 and array.shape == (2, 3)


def test_list_kind_gives_plain_python() -> None:
    assert decode({"inputs": ["a", "b"]}, {"kind": "list", "type": "string"}) == ["a", "b"]


def test_records_kind_gives_dicts_in_schema_order() -> None:
    schema = {
        "kind": "records",
        "columns": [{"name": "b", "type": "integer"}, {"name": "a", "type": "string"}],
    }
    records = decode({"instances": [{"a": "x", "b": 2.0}]}, schema)
    assert records == [{"b": 2, "a": "x"}] and list(records[0]) == ["b", "a"]


def test_columns_kind_gives_numpy_arrays() -> None:
    schema = {"kind": "columns", "columns": [{"name": "a", "type": "number", "dtype": "float32"}]}
    columns = decode({"inputs": {"a": [1, 2]}}, schema)
    assert columns["a"].dtype == np.float32 and columns["a"].tolist() == [1.0, 2.0]


def test_datetime_column_is_parsed_as_iso_8601() -> None:
    schema = {"kind": "dataframe", "columns": [{"name": "at", "type": "datetime", "dtype": "datetime64[ns]"}]}
    frame = decode({"instances": [{"at": "2026-11-27T10:00:00"}, {"at": "2026-11-28"}]}, schema)
    assert str(frame["at"].dtype) == "datetime64[ns]"
    assert frame["at"].iloc[1] == pd.Timestamp("2026-11-28")


def test_null_is_a_missing_value_unless_the_column_says_nullable_false() -> None:
    # The packager writes a sample's NaN as null; pandas turns it back into NaN.
    assert math.isnan(decode({"instances": [{**ROW, "income": None}]})["income"].iloc[0])
    strict = {"kind": "records", "columns": [{"name": "x", "type": "number", "nullable": False}]}
    assert error({"instances": [{"x": None}]}, strict) == 'column "x", row 0: expected a number, got null'


def test_null_in_an_integer_column_fails_conversion_as_a_client_error() -> None:
    assert error({"instances": [{**ROW, "age": None}]}).startswith(
        'column "age": cannot convert the values to int64'
    )


def test_null_in_a_bool_column_is_refused_not_stored_as_false() -> None:
    assert error({"instances": [{**ROW, "member": None}]}) == (
        'column "member": cannot convert the values to bool: row 0 is null, and bool has no missing values'
    )


def test_object_column_of_lists_stays_one_value_per_row() -> None:
    schema = {"kind": "dataframe", "columns": [{"name": "tags", "type": "any", "dtype": "object"}]}
    frame = decode({"instances": [{"tags": ["a", "b"]}, {"tags": []}]}, schema)
    assert frame.shape == (2, 1) and frame["tags"].tolist() == [["a", "b"], []]


@pytest.mark.parametrize("dtype", ["str", "category", "Int64", "float32"])
def test_pandas_and_numpy_dtypes(dtype: str) -> None:
    type_ = "string" if dtype in ("str", "category") else "number"
    value = "x" if type_ == "string" else 3
    schema = {"kind": "dataframe", "columns": [{"name": "c", "type": type_, "dtype": dtype}]}
    assert str(decode({"instances": [{"c": value}]}, schema)["c"].dtype) == dtype


def test_null_in_an_ndarray_becomes_nan() -> None:
    assert np.isnan(decode({"instances": [[1, None, 3]]}, ARRAY)[0, 1])


def test_any_type_accepts_anything() -> None:
    schema = {"kind": "records", "columns": [{"name": "payload", "type": "any"}]}
    assert decode({"instances": [{"payload": {"deep": [1]}}]}, schema) == [{"payload": {"deep": [1]}}]


# Bad requests: each message names the problem precisely.

ACCEPTED = '"instances", "inputs", "dataframe_split", "dataframe_records"'


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([ROW], f"the request body must be a JSON object with one of the keys {ACCEPTED}; got a JSON array"),
        ({"rows": [ROW]}, f'exactly one of the keys {ACCEPTED}; got "rows"'),
        ({}, f"exactly one of the keys {ACCEPTED}; got an empty object"),
        (
            {"instances": [ROW], "inputs": [ROW]},
            f'exactly one of the keys {ACCEPTED}; got "instances", "inputs"',
        ),
    ],
)
def test_wrong_top_level_shape_lists_the_accepted_keys(body: Any, message: str) -> None:
    assert message in error(body)


@pytest.mark.parametrize(
    "body",
    [
        {"instances": []},
        {"inputs": {"age": [], "income": [], "city": [], "member": []}},
        {"dataframe_split": {"columns": ["age", "income", "city", "member"], "data": []}},
    ],
)
def test_no_rows(body: Any) -> None:
    assert error(body) == "no rows: the request holds an empty list of rows"


def test_missing_columns_are_listed() -> None:
    message = error({"instances": [{"age": 41, "city": "Lyon"}]})
    assert message == (
        'row 0: missing columns "income", "member" (expected columns: "age", "income", "city", "member")'
    )


@pytest.mark.parametrize(
    "body",
    [
        {"instances": [ROW, {**ROW, "zip": "69000", "name": "A"}]},
        {"dataframe_records": [{**ROW, "name": "A"}, {**ROW, "zip": None}]},
        {"inputs": {**{k: [v, v] for k, v in ROW.items()}, "zip": ["1", "2"], "name": "not even a list"}},
        {"dataframe_split": {"columns": ["zip", *ROW, "name"], "data": [["1", *ROW.values(), "A"]] * 2}},
    ],
)
def test_extra_columns_are_dropped_and_named(body: dict[str, Any]) -> None:
    checked = check_request(body, InputSchema.from_json(FRAME))
    assert checked.ignored == ("name", "zip") and list(checked.data) == list(ROW)
    frame = checked.build(InputSchema.from_json(FRAME))
    assert list(frame.columns) == list(ROW) and len(frame) == 2


def test_no_extra_columns_ignore_nothing() -> None:
    assert check_request({"instances": [ROW]}, InputSchema.from_json(FRAME)).ignored == ()


def test_strict_mode_refuses_extra_columns() -> None:
    message = error({"instances": [ROW, {**ROW, "zip": "69000", "name": "A"}]}, strict=True)
    assert message.startswith('row 1: unexpected columns "name", "zip" (strict mode: MLSHIP_STRICT_COLUMNS=1)')
    assert "(expected columns:" in message


def test_missing_columns_are_an_error_in_either_mode() -> None:
    body = {"inputs": {"age": [1], "income": [2], "town": ["x"], "member": [True]}}
    assert error(body).startswith('missing columns "city" (expected columns:')
    assert error(body, strict=True).startswith('missing columns "city"; unexpected columns "town"')


def test_string_where_a_number_belongs_names_column_row_and_value() -> None:
    message = error({"instances": [ROW, {**ROW, "income": "5200"}]})
    assert message == 'column "income", row 1: expected a number, got the string "5200"'


def test_several_problems_are_reported_together_up_to_a_limit() -> None:
    rows = [{**ROW, "age": "x"} for _ in range(7)]
    message = error({"instances": rows})
    assert message.count("expected an integer") == 5 and message.endswith("; and more")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({**ROW, "income": True}, 'column "income", row 0: expected a number, got the boolean true'),
        ({**ROW, "age": 41.5}, 'column "age", row 0: expected an integer, got the number 41.5'),
        ({**ROW, "city": 69000}, 'column "city", row 0: expected a string, got the number 69000'),
        ({**ROW, "member": 1}, 'column "member", row 0: expected true or false, got the number 1'),
        ({**ROW, "city": ["Lyon"]}, 'column "city", row 0: expected a string, got a list of 1 values'),
    ],
)
def test_json_types_are_strict(row: dict[str, Any], message: str) -> None:
    assert error({"instances": [row]}) == message


@pytest.mark.parametrize(
    ("token", "shown"), [("NaN", "NaN"), ("Infinity", "Infinity"), ("-Infinity", "-Infinity")]
)
def test_non_finite_numbers_are_rejected(token: str, shown: str) -> None:
    # Python's json accepts these tokens although they are not JSON.
    body = json.loads('{"instances": [{"age": 1, "income": ' + token + ', "city": "x", "member": true}]}')
    assert error(body) == f'column "income", row 0: expected a finite number, got {shown}'


def test_datetime_must_be_iso_8601() -> None:
    schema = {"kind": "records", "columns": [{"name": "at", "type": "datetime"}]}
    assert error({"instances": [{"at": "27/11/2026"}]}, schema) == (
        'column "at", row 0: expected an ISO 8601 date-time string, got the string "27/11/2026"'
    )


def test_list_row_length_is_checked() -> None:
    assert error({"instances": [[41, 5200.5, "Lyon"]]}) == (
        'row 0 has 3 values; expected 4, one per column in this order: "age", "income", "city", "member"'
    )


def test_list_rows_are_only_for_dataframes() -> None:
    schema = {"kind": "records", "columns": [{"name": "a", "type": "number"}]}
    assert error({"instances": [[1]]}, schema) == (
        "row 0: expected an object keyed by column name, got a list of 1 values"
    )


def test_columnar_inputs_must_have_equal_lengths() -> None:
    message = error({"inputs": {"age": [1, 2], "income": [1.0], "city": ["a", "b"], "member": [True, False]}})
    assert message == 'columns differ in length: "age" has 2, "income" has 1, "city" has 2, "member" has 2'


def test_dataframe_split_rows_must_match_columns() -> None:
    message = error({"dataframe_split": {"columns": ["age", "income", "city", "member"], "data": [[1, 2.0]]}})
    assert message.startswith('"dataframe_split" row 0: expected a list of 4 values')


def test_too_many_rows() -> None:
    message = error({"instances": [ROW] * 11}, max_rows=10)
    assert message == (
        "too many rows: 11; this server accepts at most 10 per request [env var: MLSHIP_MAX_ROWS]"
    )


def test_ndarray_shape_is_checked() -> None:
    assert error({"instances": [[1, 2]]}, ARRAY) == (
        "expected an array of shape [null, 3] (null: any size), got [1, 2]"
    )


def test_ndarray_flat_row_gets_a_hint() -> None:
    assert error({"instances": [1, 2, 3]}, ARRAY).endswith(
        "each row must itself be a list (one row is [[...]])"
    )


def test_ndarray_ragged_and_bad_values() -> None:
    assert error({"instances": [[1, 2, 3], [1, 2]]}, ARRAY) == (
        "row 1: expected a list of 3 values (the array must not be ragged), got a list of 2 values"
    )
    assert error({"instances": [[1, 2, 3], [1, "2", math.nan]]}, ARRAY) == (
        'row 1, value [1]: expected a number, got the string "2"; row 1, value [2]: expected a finite number, '
        "got NaN"
    )


def test_columnar_forms_are_refused_for_unnamed_inputs() -> None:
    assert error({"inputs": {"a": [1]}}, ARRAY) == (
        '"inputs" as a JSON object needs a model whose input has named columns; this model takes a ndarray: '
        'send {"instances": [row, ...]}'
    )


def test_conversion_errors_are_input_errors_naming_the_column() -> None:
    assert error({"instances": [{**ROW, "age": 2**70}]}).startswith(
        'column "age": cannot convert the values to int64:'
    )
    schema = {"kind": "dataframe", "columns": [{"name": "at", "type": "datetime", "dtype": "datetime64[ns]"}]}
    assert error({"instances": [{"at": "9999-12-31T00:00:00"}]}, schema).startswith(
        'column "at": cannot convert the values to datetime64[ns]:'
    )


def test_pandas_and_numpy_are_not_needed_for_plain_kinds() -> None:
    # Checked in a clean interpreter by test_imports; here: the plain kinds return plain Python.
    records = decode(
        {"instances": [{"a": 1}]}, {"kind": "records", "columns": [{"name": "a", "type": "integer"}]}
    )
    assert type(records) is list and type(records[0]["a"]) is int


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"kind": "tensor"}, "unknown input kind 'tensor'"),
        ({"kind": "dataframe", "columns": []}, "a dataframe schema needs a non-empty list of 'columns'"),
        ({"kind": "list", "type": "float"}, "unknown type 'float'"),
        ({"kind": "records", "columns": [{"type": "number"}]}, "every column needs a string 'name'"),
        ({"kind": "records", "columns": ["a"]}, "column 0 must be a JSON object, got str"),
    ],
)
def test_a_schema_the_runtime_cannot_decode_for_is_refused(schema: dict[str, Any], message: str) -> None:
    # The contract reads the schema; the runtime decodes requests only for one it accepted.
    with pytest.raises(BundleLoadError, match=message):
        InputSchema.from_json(schema)
