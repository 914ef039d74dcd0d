"""The example row a server publishes (/metadata, /openapi.json): synthetic, built from the input schema.

The bundle's example is the first golden input row: a real record from the notebook's data (a customer's, in
the churn example). It stays in the bundle, where golden.json and `verify` use it, and is published only when
the operator asks (MLSHIP_PUBLISH_EXAMPLE=1). Otherwise every value is replaced by a stand-in of the column's
type: the example keeps its shape (columns, array sizes) and tells nothing about the data.
"""

from __future__ import annotations

from typing import Any

from ._contract import Column, InputSchema

# One stand-in per schema type. A made-up string may be a category the model never saw: the synthetic example
# shows how to call the model, not necessarily a request it accepts (docs/RUNTIME.md, "What a server publishes").
_STAND_INS: dict[str, Any] = {
    "number": 1.0,
    "integer": 1,
    "boolean": True,
    "string": "text",
    "datetime": "2026-01-01T00:00:00",
}


def synthetic_example(schema: InputSchema) -> Any:
    """The schema's example with every value replaced by a stand-in of its column's type."""
    real = schema.example
    if schema.has_columns:
        row = real if isinstance(real, dict) else {}
        return {str(column.name): _stand_in(column, row.get(str(column.name), 0)) for column in schema.columns}
    return _replace(real, schema.fields[0])


def _replace(value: Any, column: Column) -> Any:
    if isinstance(value, list):
        return [_replace(item, column) for item in value]
    if isinstance(value, dict):
        return {str(key): _replace(item, column) for key, item in value.items()}
    return _stand_in(column, value)


def _stand_in(column: Column, value: Any) -> Any:
    """A value of the column's type; for "any", of the real value's JSON type (null stays null there)."""
    if column.type in _STAND_INS:
        return _STAND_INS[column.type]
    if isinstance(value, bool):
        return True
    if isinstance(value, int):
        return 1
    if isinstance(value, float):
        return 1.0
    if isinstance(value, str):
        return "text"
    return None
