"""A list of strings in, a number and a string out per row: BYTES tensors, CSV-free kinds, string outputs."""

from __future__ import annotations

from typing import Any

INPUT = {"kind": "list", "type": "string", "nullable": False, "example": "great film"}
METHODS = [
    {"name": "predict", "expression": "length(X)"},
    {"name": "label", "expression": "label(X)"},
]
BATCH_SAFE = True


def make_values() -> dict[str, Any]:
    return {"threshold": 5}


def golden_inputs() -> list[tuple[str, Any, Any]]:
    texts = ["great film", "bad"]
    return [(method, text, [text]) for method in ("predict", "label") for text in texts]
