"""MLflow request bodies -> the payload forms `_schema.check_payload` reads, as MLflow 3's scoring server reads them.

MLflow turns every body into a pandas DataFrame, a numpy array or a dict of arrays, then enforces the model's
signature. What that accepts (measured against mlflow 3.17's `scoring_server.invocations`; docs/RUNTIME.md has the
table) and what mlship's payload forms did not:

- a model whose input is a row kind (ndarray, list, series) takes a frame too: `dataframe_split` with or without
  "columns" (a numpy-backed DataFrame has none, or the integers 0..n-1), `dataframe_records`, and CSV. An array
  model ignores the column names and takes the values in column order; a list or series model takes a frame of
  one column (a named series: that name, when the frame names it) and rows of one value (`[["a"], ["b"]]`,
  `[{"text": "a"}]`) wherever it takes scalars;
- a model with named columns takes `{"instances": {column: [values]}}` as `inputs` (MLflow reads both as columns);
- NaN (which Python's json, and so MLflow, reads, and which MLflow's client writes for a DataFrame's missing
  values) is a missing value, as null is.

mlship also takes a few bodies MLflow refuses, where the meaning is plain: `dataframe_split` without "columns" for a
dataframe (the values in schema order, as `instances` rows in column order already are), and CSV for an array model
(MLflow's CSV reader fails on an array signature).
"""

from __future__ import annotations

import csv
import io
from typing import Any

from ._contract import InputSchema
from ._schema import ACCEPTED_KEYS, Checked, check_payload
from ._values import QUOTE_LIMIT, BadValue, InputError, describe, json_type, quote, quote_names

_SPLIT_KEYS = ("columns", "data", "index")


def format_key(body: Any) -> tuple[str, Any]:
    """The body's one format key and its payload; "params" and other keys are ignored, as MLflow does."""
    keys = [key for key in body if key in ACCEPTED_KEYS] if isinstance(body, dict) else []
    if len(keys) != 1:
        accepted = ", ".join(f'"{key}"' for key in ACCEPTED_KEYS)
        if isinstance(body, dict):
            got = quote_names(list(body)) or "an empty object"
        else:
            got = f"a JSON {json_type(body)}"
        raise InputError(f"the input must be a JSON object with exactly one of the keys {accepted}; got {got}")
    return keys[0], body[keys[0]]


def nan_to_null(value: Any) -> Any:
    """`value` with every NaN float, however deep, replaced by None (lists and dicts rebuilt; the rest as is)."""
    if isinstance(value, float):
        return None if value != value else value
    if isinstance(value, list):
        return [nan_to_null(item) for item in value]
    if isinstance(value, dict):
        return {key: nan_to_null(item) for key, item in value.items()}
    return value


def check_mlflow_body(body: Any, schema: InputSchema, *, max_rows: int | None, strict: bool = False) -> Checked:
    """A parsed MLflow JSON body checked against `schema` (InputError naming the field when it does not fit).
    `strict`: columns the schema does not take are an error, not dropped (MLSHIP_STRICT_COLUMNS)."""
    key, payload = format_key(body)
    if schema.has_columns:
        if key == "instances" and isinstance(payload, dict):
            key = "inputs"  # MLflow: a dict under "instances" is columns, as under "inputs"
        elif key == "dataframe_split" and schema.kind == "dataframe" and _split_without_columns(payload):
            key, payload = "instances", _split_rows(payload)
        return check_payload(key, payload, schema, max_rows=max_rows, strict=strict)
    if key == "dataframe_split":
        rows = _split_rows(payload)
        names = payload.get("columns")
        if names is not None:
            _check_frame_names(names, schema, '"dataframe_split": "columns"')
        return _check_frame(rows, schema, key, max_rows)
    if key == "dataframe_records":
        return _check_frame(_records_rows(payload, schema), schema, key, max_rows)
    if isinstance(payload, dict) and schema.kind != "ndarray":
        payload = _one_column(payload, schema, f'"{key}"')
    elif isinstance(payload, list) and schema.kind != "ndarray" and schema.fields[0].type != "any":
        payload = [_single_value(row, schema, f'"{key}" row {index}') for index, row in enumerate(payload)]
    return check_payload(key, payload, schema, max_rows=max_rows)


def check_mlflow_csv(
    raw: bytes, schema: InputSchema, *, max_rows: int | None, max_field: int, strict: bool = False
) -> Checked:
    """A CSV body (a header row, then one line per row, as `DataFrame.to_csv(index=False)` writes it)."""
    header, lines = _read_csv(raw, max_field)
    if schema.has_columns:
        types = {str(column.name): column.type for column in schema.columns}
        nullable = {str(column.name): column.nullable for column in schema.columns}
        data = [
            [
                _csv_value(value, types.get(name, "any"), nullable.get(name, True), name, index)
                for name, value in zip(header, line, strict=False)
            ]
            + line[len(header) :]
            for index, line in enumerate(lines)
        ]
        return check_payload(
            "dataframe_split", {"columns": header, "data": data}, schema, max_rows=max_rows, strict=strict
        )
    _check_frame_names(header, schema, "the CSV header")
    element = schema.fields[0]
    rows = [
        [
            _csv_value(value, element.type, element.nullable, header[col] if col < len(header) else str(col), index)
            for col, value in enumerate(line)
        ]
        for index, line in enumerate(lines)
    ]
    return _check_frame(rows, schema, "CSV", max_rows)


def _split_without_columns(payload: Any) -> bool:
    return isinstance(payload, dict) and "columns" not in payload and isinstance(payload.get("data"), list)


def _split_rows(payload: Any) -> list[Any]:
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        raise InputError(
            '"dataframe_split" must be an object with "data" (a list of rows, each a list of values) and '
            'optionally "columns" (the column names) and "index"'
        )
    extra = [key for key in payload if key not in _SPLIT_KEYS]
    if extra:
        raise InputError(f'"dataframe_split" has unexpected keys {quote_names(extra)}; it takes "columns", '
                         '"data" and "index"')
    names = payload.get("columns")
    rows: list[Any] = payload["data"]
    if names is not None:
        if not isinstance(names, list):
            raise InputError(f'"dataframe_split": "columns" must be a list of column names, got {describe(names)}')
        for index, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != len(names):
                raise InputError(
                    f'"dataframe_split" row {index}: expected a list of {len(names)} values (one per '
                    f'"columns" entry), got {describe(row)}'
                )
    return rows


def _records_rows(payload: Any, schema: InputSchema) -> list[Any]:
    """`dataframe_records` for a row kind: each record's values in the first record's key order, as pandas
    builds the frame (an array model ignores the names, as MLflow does)."""
    if not isinstance(payload, list):
        raise InputError(f'"dataframe_records" must be a list of records, got a JSON {json_type(payload)}')
    if not payload:
        return []
    first = payload[0]
    if not isinstance(first, dict):
        raise InputError(f'"dataframe_records" row 0: expected an object keyed by column name, got {describe(first)}')
    names = list(first)
    _check_frame_names(names, schema, '"dataframe_records" row 0')
    rows = []
    for index, record in enumerate(payload):
        if not isinstance(record, dict) or set(record) != set(names):
            raise InputError(
                f'"dataframe_records" row {index}: expected an object with the keys of row 0 '
                f"({quote_names(names)}), got {describe(record)}"
            )
        rows.append([record[name] for name in names])
    return rows


def _check_frame_names(names: Any, schema: InputSchema, where: str) -> None:
    """A frame's column names for a row kind: an array takes any names (MLflow ignores them); a list or series
    takes one column, named as the series when it has a name."""
    if schema.kind == "ndarray":
        return
    if not isinstance(names, list) or len(names) != 1:
        count = len(names) if isinstance(names, list) else 0
        raise InputError(f"{where}: this model takes one column (a {schema.kind} of {_what(schema)}), got {count}")
    expected = schema.fields[0].name
    if expected is not None and str(names[0]) != expected:
        raise InputError(f"{where}: expected the column {quote(expected)}, got {quote(names[0])}")


def _check_frame(rows: list[Any], schema: InputSchema, where: str, max_rows: int | None) -> Checked:
    """A frame's rows (lists in column order) as `instances` for a row kind."""
    shape = schema.shape
    one_value = schema.kind != "ndarray" or (shape is not None and len(shape) == 1)
    if one_value:
        rows = [_single_value(row, schema, f"{where} row {index}") for index, row in enumerate(rows)]
    return check_payload("instances", rows, schema, max_rows=max_rows)


def _single_value(row: Any, schema: InputSchema, where: str) -> Any:
    """A one-value row (`["a"]`, or `{"text": "a"}` naming the series) as the value; other values as they are."""
    if isinstance(row, list):
        if len(row) != 1:
            raise InputError(f"{where}: expected one value (a {schema.kind} of {_what(schema)}), got {describe(row)}")
        return row[0]
    if isinstance(row, dict):
        _check_frame_names(list(row), schema, where)
        return next(iter(row.values()))
    return row


def _one_column(payload: dict[str, Any], schema: InputSchema, where: str) -> Any:
    """`{"column": [values]}` (columns, for a one-column model) as the values."""
    _check_frame_names(list(payload), schema, where)
    values = next(iter(payload.values()))
    if not isinstance(values, list):
        raise InputError(f"{where}: expected a list of values, got {describe(values)}")
    return values


def _what(schema: InputSchema) -> str:
    type_ = schema.fields[0].type
    return "values" if type_ == "any" else f"{type_}s"


def _read_csv(raw: bytes, max_field: int) -> tuple[list[str], list[list[str]]]:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError("the CSV body is not UTF-8 text") from None
    # The csv module's field limit is process-wide; this worker's settings decide it. Beyond it, csv raises
    # csv.Error ("field larger than field limit"), which was a 500 before.
    if csv.field_size_limit() != max_field:
        csv.field_size_limit(max_field)
    try:
        table = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:
        if "field limit" in str(exc):
            raise CsvFieldTooLong(max_field) from None
        raise InputError(f"the CSV body does not parse: {exc}") from None
    if not table:
        raise InputError("the CSV body is empty; send a header row, then one line per row")
    return table[0], [line for line in table[1:] if line]


class CsvFieldTooLong(InputError):
    """A CSV field beyond MLSHIP_MAX_CSV_FIELD_CHARS: a 413, not a 400."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"a CSV field is longer than {limit} characters [env var: MLSHIP_MAX_CSV_FIELD_CHARS]")


def _csv_value(text: str, type_: str, nullable: bool, column: str, row: int) -> Any:
    """A CSV cell as the JSON value the schema expects. An empty cell is a missing value (null), as pandas reads
    it, but in a string column that takes no null, where it is the empty string."""
    if text == "" and (type_ not in ("string", "any") or nullable and type_ == "string"):
        return None
    if type_ in ("string", "datetime", "any"):
        return text
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
