"""A list of strings (like the reviews example): the served function returns each text's length in words."""

from __future__ import annotations

from typing import Any

# nullable: false, as the packager writes it for texts without a missing value (count_words fails on None).
INPUT = {"kind": "list", "type": "string", "nullable": False, "example": "a fine day"}
METHODS = [{"name": "predict", "expression": "count_words(X)"}]
BATCH_SAFE = True


def make_values() -> dict[str, Any]:
    return {"separator": " "}


def golden_inputs() -> list[tuple[str, Any, Any]]:
    return [("predict", text, [text]) for text in ("a fine day", "hello")]
