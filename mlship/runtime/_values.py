"""One JSON value against one schema `type`: accept (possibly normalised) or say precisely what is wrong."""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

TYPES = ("number", "integer", "boolean", "string", "datetime", "any")

_EXPECTED = {
    "number": "a number",
    "integer": "an integer",
    "boolean": "true or false",
    "string": "a string",
    "datetime": "an ISO 8601 date-time string",
    "any": "any value",
}


class InputError(ValueError):
    """The request does not fit the input schema; the message is safe to send back to the client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadValue(Exception):
    """Raised by `check_value`; the message completes "<where>: …"."""


def check_value(value: Any, type_: str, nullable: bool = True) -> Any:
    """Return `value` as the served function should see it, or raise BadValue.

    Deliberately strict, because a silently coerced value gives a wrong prediction rather than an error: bools
    are not numbers, numbers are not strings, and NaN and Infinity (which Python's json accepts, though they
    are not JSON) are refused. Integers are fine where a number belongs, and a float with an integral value
    (3.0) where an integer does. null is a missing value (the packager writes a sample's NaN as null), refused
    only where the schema says `"nullable": false`.
    """
    if type_ == "any":
        return value
    if value is None:
        if nullable:
            return None
        raise BadValue(f"expected {_EXPECTED[type_]}, got null")
    if type_ == "number":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, float) and not math.isfinite(value):
                raise BadValue(f"expected a finite number, got {describe(value)}")
            return value
    elif type_ == "integer":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif type_ == "boolean":
        if isinstance(value, bool):
            return value
    elif type_ == "string":
        if isinstance(value, str):
            return value
    elif type_ == "datetime" and isinstance(value, str):
        try:
            datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return value
    raise BadValue(f"expected {_EXPECTED[type_]}, got {describe(value)}")


def describe(value: Any) -> str:
    """A short, JSON-spelled description of a request value for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {json.dumps(value)}"
    if isinstance(value, str):
        shown = json.dumps(value, ensure_ascii=False)
        return f"the string {shown if len(shown) <= 60 else shown[:58] + '…'}"
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, float) and math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, list):
        return f"a list of {len(value)} values"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type: object, array, string, number, boolean or null."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
