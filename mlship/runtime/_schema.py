"""Decode a request body into the value the served function receives, per the bundle's input schema.

The payload forms and schema kinds are those of BUNDLE.md ("Input schema"). Every problem with the request
becomes an InputError whose message names it precisely (which column, which row, what value), because the
client reading that message usually cannot see the notebook the schema came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._build import build_value
from ._contract import COLUMN_KINDS, Column, InputSchema
from ._values import BadValue, InputError, check_value, describe, json_type, quote_names

ACCEPTED_KEYS = ("instances", "inputs", "dataframe_split", "dataframe_records")

__all__ = [
    "ACCEPTED_KEYS",
    "COLUMN_KINDS",
    "Checked",
    "InputError",
    "check_payload",
    "check_request",
    "decode_request",
]

# More than a few problems in one message stops being readable; the first ones are enough to fix the client.
_MAX_REPORTED = 5


def decode_request(body: Any, schema: InputSchema, *, max_rows: int | None = None, strict: bool = False) -> Any:
    """Turn a parsed JSON request body into the input value for `schema`, or raise InputError.

    dataframe -> pandas.DataFrame (schema column order, each column `astype(dtype)`); series -> pandas.Series;
    ndarray -> numpy array with its shape checked; list -> list of scalars; records -> list of dicts in schema
    column order; columns -> dict of numpy arrays. pandas and numpy are imported only for the kinds that need
    them.
    """
    return check_request(body, schema, max_rows=max_rows, strict=strict).build(schema)


@dataclass(frozen=True)
class Checked:
    """A request checked against the schema but not yet converted: what micro-batching merges.

    `data` is {column: values} in schema order for the column kinds, the list of rows for the others.
    `ignored` names the columns the request sent that the schema does not take (sorted): they were dropped.
    """

    kind: str
    data: Any
    rows: int
    ignored: tuple[str, ...] = ()

    def build(self, schema: InputSchema) -> Any:
        """The value the served function receives (may raise InputError for values that do not convert)."""
        return build_value(schema, self.data)


def check_request(
    body: Any, schema: InputSchema, *, max_rows: int | None = None, strict: bool = False
) -> Checked:
    """Check a parsed JSON request body against `schema` (every problem is an InputError), without the
    numpy/pandas conversion that `Checked.build` does. Columns the schema does not take are dropped and named
    in `Checked.ignored`; with `strict` they are an InputError instead (MLSHIP_STRICT_COLUMNS)."""
    key, payload = _split_body(body)
    return check_payload(key, payload, schema, max_rows=max_rows, strict=strict)


def check_payload(
    key: str, payload: Any, schema: InputSchema, *, max_rows: int | None = None, strict: bool = False
) -> Checked:
    """`check_request` for a payload already taken out of its body: `key` is one of ACCEPTED_KEYS."""
    kind = schema.kind
    if schema.column_labels == "int":
        payload = _int_labels_as_names(key, payload)
    if schema.has_columns:
        names = schema.column_names
        extra: set[str] = set()
        data = _gather_columns(key, payload, names, kind, max_rows, _Extras(extra, strict))
        checked = _check_columns(data, schema.columns)
        return Checked(kind, checked, len(data[names[0]]), tuple(sorted(extra)))
    if not isinstance(payload, list) or key not in ("instances", "inputs"):
        raise InputError(
            f'"{key}" as a JSON {json_type(payload)} needs a model whose input has named columns; this model '
            f'takes a {kind}: send {{"instances": [row, ...]}}'
        )
    _check_row_count(len(payload), max_rows)
    if kind == "ndarray":
        _check_ndarray(payload, schema.shape, schema.fields[0])
        return Checked(kind, payload, len(payload))
    return Checked(kind, _check_scalars(payload, schema.fields[0]), len(payload))


def _int_labels_as_names(key: str, payload: Any) -> Any:
    """A frame with integer labels, as pandas writes it (`to_json(orient="split")`, what MLflow's client sends),
    names its columns by JSON integers: they are the schema's names "0", "1", .... Object keys are strings
    in JSON anyway, so only a split payload's "columns" list can hold them."""
    if key != "dataframe_split" or not isinstance(payload, dict) or not isinstance(payload.get("columns"), list):
        return payload
    columns = [str(name) if type(name) is int else name for name in payload["columns"]]
    return {**payload, "columns": columns}


def _split_body(body: Any) -> tuple[str, Any]:
    if isinstance(body, dict) and len(body) == 1:
        for key, payload in body.items():
            if key in ACCEPTED_KEYS:
                return key, payload
    accepted = ", ".join(f'"{key}"' for key in ACCEPTED_KEYS)
    if not isinstance(body, dict):
        raise InputError(
            f"the request body must be a JSON object with one of the keys {accepted}; "
            f"got a JSON {json_type(body)}"
        )
    got = ", ".join(f'"{key}"' for key in body) or "an empty object"
    raise InputError(
        f"the request body must be a JSON object with exactly one of the keys {accepted}; got {got}"
    )


def _check_row_count(count: int, max_rows: int | None) -> None:
    if count == 0:
        raise InputError("no rows: the request holds an empty list of rows")
    if max_rows is not None and count > max_rows:
        raise InputError(
            f"too many rows: {count}; this server accepts at most {max_rows} per request "
            "[env var: MLSHIP_MAX_ROWS]"
        )


@dataclass(frozen=True)
class _Extras:
    """Where the names of extra columns are gathered, and whether they are refused instead (strict mode)."""

    found: set[str]
    strict: bool


def _gather_columns(
    key: str, payload: Any, names: list[str], kind: str, max_rows: int | None, extras: _Extras
) -> dict[str, list[Any]]:
    """Any column-shaped payload -> {column: values} in schema order, with column names checked."""
    if key == "inputs" and isinstance(payload, dict):
        _check_names(set(payload), names, "", extras)
        # Only the schema's columns count: an ignored column's values are never read.
        lengths = {name: len(payload[name]) for name in names if isinstance(payload[name], list)}
        for name in names:
            if name not in lengths:
                raise InputError(f'column "{name}": expected a list of values, got {describe(payload[name])}')
        if len(set(lengths.values())) > 1:
            raise InputError(
                "columns differ in length: " + ", ".join(f'"{n}" has {c}' for n, c in lengths.items())
            )
        _check_row_count(lengths[names[0]], max_rows)
        return {name: payload[name] for name in names}
    if key == "dataframe_split":
        return _gather_split(payload, names, max_rows, extras)
    if not isinstance(payload, list):
        raise InputError(f'"{key}" must be a list of rows, got a JSON {json_type(payload)}')
    _check_row_count(len(payload), max_rows)
    # Lists in column order are a dataframe convenience (BUNDLE.md); records and columns rows must name
    # columns.
    lists_ok = kind == "dataframe" and key != "dataframe_records"
    columns: dict[str, list[Any]] = {name: [] for name in names}
    expected = set(names)
    for index, row in enumerate(payload):
        if isinstance(row, dict):
            if row.keys() != expected:
                _check_names(set(row), names, f"row {index}: ", extras)
            for name in names:
                columns[name].append(row[name])
        elif isinstance(row, list) and lists_ok:
            if len(row) != len(names):
                raise InputError(
                    f"row {index} has {len(row)} values; expected {len(names)}, one per column in "
                    f"this order: {_quoted(names)}"
                )
            for name, value in zip(names, row, strict=True):
                columns[name].append(value)
        else:
            wanted = "an object keyed by column name" + (" or a list in column order" if lists_ok else "")
            raise InputError(f"row {index}: expected {wanted}, got {describe(row)}")
    return columns


def _gather_split(payload: Any, names: list[str], max_rows: int | None, extras: _Extras) -> dict[str, list[Any]]:
    if (
        not isinstance(payload, dict)
        or not isinstance(payload.get("columns"), list)
        or not isinstance(payload.get("data"), list)
    ):
        raise InputError(
            '"dataframe_split" must be an object with "columns" (a list of names) and "data" '
            "(a list of rows, each a list in that column order)"
        )
    extra = set(payload) - {"columns", "data", "index"}
    if extra:
        raise InputError(f'"dataframe_split" has unexpected keys {_quoted(sorted(extra))}')
    given, rows = payload["columns"], payload["data"]
    if not all(isinstance(name, str) for name in given):
        raise InputError('"dataframe_split": "columns" must be a list of column names (strings)')
    if len(set(given)) != len(given):
        raise InputError(f'"dataframe_split" names a column twice: {_quoted(given)}')
    _check_names(set(given), names, "", extras)
    _check_row_count(len(rows), max_rows)
    position = {name: given.index(name) for name in names}
    for index, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != len(given):
            raise InputError(
                f'"dataframe_split" row {index}: expected a list of {len(given)} values (one per '
                f'"columns" entry), got {describe(row)}'
            )
    return {name: [row[position[name]] for row in rows] for name in names}


def _check_names(given: set[Any], names: Sequence[str], where: str, extras: _Extras) -> None:
    """Missing columns are an error; extra ones are gathered into `extras` (an error too in strict mode)."""
    missing = [name for name in names if name not in given]
    unexpected = sorted(str(name) for name in given - set(names))
    problems = []
    if missing:
        problems.append(f"missing columns {_quoted(missing)}")
    if unexpected and extras.strict:
        problems.append(f"unexpected columns {_quoted(unexpected)} (strict mode: MLSHIP_STRICT_COLUMNS=1)")
    if problems:
        raise InputError(f"{where}{'; '.join(problems)} (expected columns: {_quoted(names)})")
    extras.found.update(unexpected)


def _check_columns(data: dict[str, list[Any]], columns: Sequence[Column]) -> dict[str, list[Any]]:
    problems: list[str] = []
    checked: dict[str, list[Any]] = {}
    for column in columns:
        name, type_, nullable = str(column.name), column.type, column.nullable
        values = data[name]
        if _all_plain(values, type_, nullable):
            checked[name] = values
            continue
        out = []
        for index, value in enumerate(values):
            try:
                out.append(check_value(value, type_, nullable))
            except BadValue as exc:
                problems.append(f'column "{name}", row {index}: {exc}')
        checked[name] = out
    _raise_problems(problems)
    return checked


def _check_scalars(rows: list[Any], element: Column) -> list[Any]:
    type_, nullable = element.type, element.nullable
    if _all_plain(rows, type_, nullable):
        return rows
    problems: list[str] = []
    out = []
    for index, value in enumerate(rows):
        try:
            out.append(check_value(value, type_, nullable))
        except BadValue as exc:
            problems.append(f"row {index}: {exc}")
    _raise_problems(problems)
    return out


def _check_ndarray(rows: list[Any], expected: Sequence[int | None] | None, element: Column) -> None:
    shape = [len(rows)]
    probe: Any = rows[0]
    while isinstance(probe, list):
        shape.append(len(probe))
        probe = probe[0] if probe else None
    if expected is not None and (
        len(expected) != len(shape)
        or any(e is not None and e != g for e, g in zip(expected, shape, strict=True))
    ):
        hint = ""
        if len(shape) == len(expected) - 1:
            hint = "; each row must itself be a list (one row is [[...]])"
        raise InputError(
            f"expected an array of shape {_shape(expected)} (null: any size), got {_shape(shape)}{hint}"
        )
    type_, nullable = element.type, element.nullable
    if len(shape) == 2 and all(
        type(row) is list and len(row) == shape[1] and _all_plain(row, type_, nullable) for row in rows
    ):
        return  # the usual table of numbers, checked without the walk that names where a problem is
    problems: list[str] = []
    _walk_ndarray(rows, shape, 0, [], type_, nullable, problems)
    _raise_problems(problems)


_PLAIN_TYPES: dict[str, tuple[type, ...]] = {
    "number": (float, int),
    "integer": (int,),
    "boolean": (bool,),
    "string": (str,),
}


def _all_plain(values: list[Any], type_: str, nullable: bool) -> bool:
    """True when every value is already what check_value would return: the common case, checked fast (about
    ten times faster than calling check_value per value); False sends the values through check_value."""
    if type_ == "any":
        return True
    types = _PLAIN_TYPES.get(type_)
    if types is None:
        return False
    for value in values:
        kind = type(value)
        if kind in types:
            if kind is float and value - value != 0.0:  # NaN and ±Infinity are refused by check_value
                return False
        elif value is not None or not nullable:
            return False
    return True


def _walk_ndarray(
    value: Any,
    shape: list[int],
    depth: int,
    where: list[int],
    type_: str,
    nullable: bool,
    problems: list[str],
) -> None:
    # Stops after a few problems: a wrong 10,000-row array would otherwise build a message per value.
    if len(problems) > _MAX_REPORTED:
        return
    if depth == len(shape):
        try:
            check_value(value, type_, nullable)
        except BadValue as exc:
            problems.append(f"{_position(where)}: {exc}")
        return
    if not isinstance(value, list) or len(value) != shape[depth]:
        problems.append(
            f"{_position(where)}: expected a list of {shape[depth]} values (the array must not be "
            f"ragged), got {describe(value)}"
        )
        return
    for index, item in enumerate(value):
        _walk_ndarray(item, shape, depth + 1, [*where, index], type_, nullable, problems)


def _position(where: list[int]) -> str:
    inner = "".join(f"[{index}]" for index in where[1:])
    return f"row {where[0]}" + (f", value {inner}" if inner else "")


def _raise_problems(problems: list[str]) -> None:
    if not problems:
        return
    shown = "; ".join(problems[:_MAX_REPORTED])
    raise InputError(shown + ("; and more" if len(problems) > _MAX_REPORTED else ""))


def _quoted(names: Sequence[Any]) -> str:
    # The schema's column names and a client's alike: quoted safely, and bounded (see _values.quote).
    return quote_names(names)


def _shape(shape: Sequence[int | None]) -> str:
    return "[" + ", ".join("null" if size is None else str(size) for size in shape) + "]"
