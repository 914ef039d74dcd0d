"""One JSON value against one schema `type`: accept (possibly normalised) or say precisely what is wrong."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
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


# What a log line or a JSON encoder must never receive raw from a client: C0 and C1 control characters (a
# newline forges a log line), line and paragraph separators, bidirectional overrides and other invisible format
# characters (they reorder what a terminal shows), and lone surrogates (not UTF-8: orjson refuses them, and a
# 400 would become a 500).
UNSAFE_CHARS = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u00ad\u061c\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ud800-\udfff]"
)
# How much of one client-supplied name or string a message quotes.
QUOTE_LIMIT = 60


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_text(text: str) -> str:
    """`text` with every UNSAFE_CHARS character written as a \\xNN or \\uNNNN escape; the rest as it is."""
    return UNSAFE_CHARS.sub(_escape, text) if UNSAFE_CHARS.search(text) else text


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """A client-supplied name or string for an error message: double-quoted and JSON-escaped (quotes,
    backslashes, control and invisible characters, lone surrogates), its first `limit` characters then "…",
    so that whatever a client sends, the message stays one short, printable line."""
    text = value if isinstance(value, str) else str(value)
    shown = json.dumps(text[:limit], ensure_ascii=False)
    return escape_text(shown if len(text) <= limit else shown[:-1] + '…"')


def quote_names(names: Sequence[object], limit: int = 20) -> str:
    """Names for a message, each quoted by `quote`, at most `limit` of them then "and N more"."""
    shown = ", ".join(quote(name) for name in names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"


class InputError(ValueError):
    """The request does not fit the input schema; the message is safe to send back to the client (and to log:
    `escape_text` is applied to it, whatever built it)."""

    def __init__(self, message: str) -> None:
        message = escape_text(message)
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
        return f"the string {quote(value)}"
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
