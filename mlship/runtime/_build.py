"""Checked JSON values -> the Python value of a schema kind (pandas/numpy imported here, lazily, when needed).

By the time values get here their JSON types are checked; conversion can still fail on the client's values
(an integer too large for int64, a date pandas cannot place), and such a failure is the client's, so every
conversion error becomes an InputError naming the column and the dtype, never a 500.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ._values import InputError


def build_value(kind: str, schema: Mapping[str, Any], data: Any) -> Any:
    """`data` is {column: values} for the column kinds, a list of rows for the others."""
    if kind == "list":
        return data
    if kind == "records":
        names = [spec["name"] for spec in schema["columns"]]
        count = len(data[names[0]])
        return [{name: data[name][index] for name in names} for index in range(count)]
    if kind == "columns":
        return {
            spec["name"]: _convert(
                f'column "{spec["name"]}"', spec.get("dtype"), _to_array, data[spec["name"]]
            )
            for spec in schema["columns"]
        }
    if kind == "ndarray":
        return _convert("the array", schema.get("dtype"), _to_array, data)
    if kind == "series":
        return _convert("the series", schema.get("dtype"), _series_builder(schema), data)
    return _to_dataframe(schema["columns"], data)


def _convert(what: str, dtype: str | None, build: Callable[[Any, str | None], Any], values: Any) -> Any:
    try:
        return build(values, dtype)
    except Exception as exc:  # pandas and numpy raise many types here; all of them mean "bad input values"
        raise InputError(f"{what}: cannot convert the values to {dtype or 'an array'}: {exc}") from exc


def _to_array(values: Any, dtype: str | None) -> Any:
    import numpy

    return numpy.asarray(values, dtype=dtype)


def _series_builder(schema: Mapping[str, Any]) -> Callable[[Any, str | None], Any]:
    def build(values: Any, dtype: str | None) -> Any:
        import pandas  # type: ignore[import-untyped, unused-ignore]

        if schema.get("type") == "datetime":
            return _datetimes(pandas.Series(values, name=schema.get("name")), dtype)
        return pandas.Series(values, name=schema.get("name"), dtype=dtype)

    return build


def _to_dataframe(specs: list[Mapping[str, Any]], data: dict[str, list[Any]]) -> Any:
    import pandas  # type: ignore[import-untyped, unused-ignore]

    names = [spec["name"] for spec in specs]
    frame = pandas.DataFrame(data, columns=names)
    plain = {
        spec["name"]: spec["dtype"] for spec in specs if spec.get("dtype") and spec.get("type") != "datetime"
    }
    try:
        # One astype for all columns is much cheaper than one per column on the usual one-row request.
        frame = frame.astype(plain)
    except Exception as exc:
        for name, dtype in plain.items():  # find the column to blame, so the message can name it
            _convert(f'column "{name}"', dtype, lambda values, dt: values.astype(dt), frame[name])
        raise InputError(f"cannot convert the columns to their dtypes: {exc}") from exc
    for spec in specs:
        if spec.get("type") == "datetime":
            name = spec["name"]
            frame[name] = _convert(f'column "{name}"', spec.get("dtype"), _datetimes, frame[name])
    return frame


def _datetimes(values: Any, dtype: str | None) -> Any:
    import pandas  # type: ignore[import-untyped, unused-ignore]

    # astype() from strings guesses per value; ISO 8601 is what the schema promises and the one format to
    # accept.
    parsed = pandas.to_datetime(values, format="ISO8601")
    return parsed.astype(dtype) if dtype and str(parsed.dtype) != dtype else parsed


def split_rows(kind: str, value: Any) -> list[Any]:
    """Cut a decoded value into one-row values of the same kind, each indexed as if it had been sent alone.

    For a bundle whose manifest says `batch_safe: false` (predicting rows together differs from one by one),
    the app calls the model once per row, so each row gets the output the notebook gave it.
    """
    if kind in ("dataframe", "series"):
        return [value.iloc[index : index + 1].reset_index(drop=True) for index in range(len(value))]
    if kind == "ndarray":
        return [value[index : index + 1] for index in range(len(value))]
    if kind in ("list", "records"):
        return [[item] for item in value]
    count = len(next(iter(value.values())))
    return [{name: array[index : index + 1] for name, array in value.items()} for index in range(count)]
