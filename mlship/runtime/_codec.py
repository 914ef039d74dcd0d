"""Model outputs to JSON, and the golden comparison rule.

This module imports nothing outside the standard library, not even lazily: mlship sends its source into the
notebook's Jupyter kernel to record golden outputs there, and the kernel may lack starlette or uvicorn. So
numpy and pandas objects are recognised by duck typing (`.tolist()`, `.item()`, `.to_dict()`), never by
isinstance.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

# Compact separators and raw UTF-8: smaller responses, and what clients and `json.loads` expect anyway.
_DUMP_OPTIONS: dict[str, Any] = {"ensure_ascii": False, "separators": (",", ":")}


def to_jsonable(obj: Any) -> Any:
    """Convert a model output into plain JSON-able Python: dict, list, str, int, float, bool, None.

    numpy arrays and scalars become lists and numbers, a pandas Series a list of its values, a DataFrame a
    list of records (one dict per row), tuples lists, datetimes ISO 8601 strings. Non-finite floats stay
    floats: golden comparison needs NaN to stay NaN, and `encode_json` decides how to write them. Raises
    TypeError for anything else, naming the type.
    """
    # bool before int (bool is an int); exact builtins first, since they are by far the most common.
    if obj is None or isinstance(obj, bool):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        # numpy.float64 subclasses float; float() drops the numpy type so json and `==` behave plainly.
        return float(obj)
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, Mapping):
        return {str(key): to_jsonable(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(item) for item in obj]
    if _is_missing_marker(obj):
        return None
    if hasattr(obj, "to_dict") and hasattr(obj, "columns"):
        # A pandas DataFrame: one record per row, like `orient="records"`.
        return to_jsonable(obj.to_dict(orient="records"))
    if hasattr(obj, "tolist"):
        # numpy arrays and scalars, pandas Series and Index: tolist() yields Python scalars (recursed anyway,
        # because object arrays keep their elements as they are).
        return to_jsonable(obj.tolist())
    if hasattr(obj, "item"):
        return to_jsonable(obj.item())
    if hasattr(obj, "isoformat"):
        # datetime, date, pandas Timestamp.
        return str(obj.isoformat())
    raise TypeError(f"cannot encode a {type(obj).__module__}.{type(obj).__qualname__} as JSON")


def _is_missing_marker(obj: Any) -> bool:
    # pandas.NA and pandas.NaT: NaT has isoformat() and would otherwise be written as the string "NaT".
    return type(obj).__name__ in ("NAType", "NaTType")


def encode_json(obj: Any) -> bytes:
    """Encode a JSON-able value for an HTTP response, writing non-finite floats as null.

    NaN and Infinity are not JSON; most clients reject them. The fast path is one C-encoder pass; only a
    response that holds a non-finite float pays for the second, replacing pass.
    """
    try:
        return json.dumps(obj, allow_nan=False, **_DUMP_OPTIONS).encode("utf-8")
    except ValueError:
        return json.dumps(replace_non_finite(obj), allow_nan=False, **_DUMP_OPTIONS).encode("utf-8")


def replace_non_finite(obj: Any) -> Any:
    """NaN and ±Infinity -> None, throughout a JSON-able value: what `encode_json` sends over HTTP."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {key: replace_non_finite(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [replace_non_finite(item) for item in obj]
    return obj


def outputs_match(actual: Any, expected: Any, rtol: float, atol: float) -> tuple[bool, str]:
    """Compare a JSON-able output with a golden one, per BUNDLE.md.

    ints, bools, strings and None compare exactly; floats with `abs(a - b) <= atol + rtol * abs(b)` where b is
    the expected value (an int on one side and a float on the other compare as floats); NaN equals NaN; lists
    elementwise with equal lengths; dicts key by key. Returns (True, "") or (False, where and how they
    differ).
    """
    problem = _first_difference(actual, expected, rtol, atol, "")
    return (problem is None, problem or "")


def _first_difference(actual: Any, expected: Any, rtol: float, atol: float, where: str) -> str | None:
    at = where or "top level"
    if isinstance(expected, list) and isinstance(actual, list):
        if len(actual) != len(expected):
            return f"at {at}: expected {len(expected)} items, got {len(actual)}"
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            problem = _first_difference(a, e, rtol, atol, f"{where}[{index}]")
            if problem is not None:
                return problem
        return None
    if isinstance(expected, dict) and isinstance(actual, dict):
        if set(actual) != set(expected):
            return f"at {at}: expected keys {sorted(expected)}, got {sorted(actual)}"
        for key, e in expected.items():
            problem = _first_difference(actual[key], e, rtol, atol, f"{where}[{key!r}]")
            if problem is not None:
                return problem
        return None
    if (
        _is_number(actual)
        and _is_number(expected)
        and (isinstance(actual, float) or isinstance(expected, float))
    ):
        if _floats_close(float(actual), float(expected), rtol, atol):
            return None
        return f"at {at}: expected {expected!r}, got {actual!r} (rtol={rtol:g}, atol={atol:g})"
    # Everything else exactly, and of the same JSON type: True == 1 in Python, but not here.
    if type(actual) is type(expected) and actual == expected:
        return None
    return f"at {at}: expected {_short(expected)}, got {_short(actual)}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _floats_close(a: float, b: float, rtol: float, atol: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if a == b:  # also covers equal infinities, where a - b would be NaN
        return True
    return abs(a - b) <= atol + rtol * abs(b)


def _short(value: Any, limit: int = 80) -> str:
    try:
        text = json.dumps(value)  # JSON spelling (true, null), since that is what the client sent and sees
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
