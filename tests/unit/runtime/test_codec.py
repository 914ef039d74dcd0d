from __future__ import annotations

import datetime
import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlship.runtime._codec import encode_json, outputs_match, replace_non_finite, to_jsonable


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (np.array([[1.5, 2.0], [3.0, 4.0]]), [[1.5, 2.0], [3.0, 4.0]]),
        (np.array([1, 2], dtype=np.int64), [1, 2]),
        (np.float32(0.5), 0.5),
        (np.int64(7), 7),
        (np.bool_(True), True),
        (np.array(["a", "b"], dtype=object), ["a", "b"]),
        (pd.Series([1.0, 2.0], name="y"), [1.0, 2.0]),
        (pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}), [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]),
        ((1, (2.5, "x")), [1, [2.5, "x"]]),
        ({"label": np.int64(1), 2: np.array([0.1])}, {"label": 1, "2": [0.1]}),
        (datetime.date(2026, 11, 27), "2026-11-27"),
        (pd.Timestamp("2026-11-27T10:00:00"), "2026-11-27T10:00:00"),
        (None, None),
    ],
)
def test_to_jsonable_converts_numpy_pandas_and_containers(value: Any, expected: Any) -> None:
    converted = to_jsonable(value)
    assert converted == expected
    json.dumps(converted)  # plain Python all the way down


def test_to_jsonable_gives_plain_python_types() -> None:
    converted = to_jsonable([np.float64(1.5), np.int32(2), np.bool_(False)])
    assert [type(item) for item in converted] == [float, int, bool]


def test_to_jsonable_keeps_nan_as_a_float() -> None:
    converted = to_jsonable(np.array([np.nan, np.inf]))
    assert math.isnan(converted[0]) and converted[1] == math.inf


def test_to_jsonable_turns_pandas_missing_markers_into_none() -> None:
    assert to_jsonable([pd.NA, pd.NaT]) == [None, None]


def test_to_jsonable_names_the_type_it_cannot_encode() -> None:
    with pytest.raises(TypeError, match="cannot encode a builtins.object as JSON"):
        to_jsonable(object())


def test_encode_json_writes_non_finite_floats_as_null() -> None:
    assert encode_json({"predictions": [1.0, math.nan, -math.inf]}) == b'{"predictions":[1.0,null,null]}'
    assert encode_json({"predictions": ["é"]}) == '{"predictions":["é"]}'.encode()


def test_replace_non_finite_leaves_finite_values_alone() -> None:
    assert replace_non_finite({"a": [1, 2.5, math.nan], "b": "x"}) == {"a": [1, 2.5, None], "b": "x"}


@pytest.mark.parametrize(
    ("actual", "expected"),
    [
        ([1, 2], [1, 2]),
        ([0.1 + 1e-8], [0.1]),  # within rtol
        ([1e-10], [0.0]),  # within atol
        ([math.nan], [math.nan]),
        ([math.inf], [math.inf]),
        (["setosa", None, True], ["setosa", None, True]),
        ({"a": [1.0]}, {"a": [1.0]}),
        (1.0, 1),  # int against float compares as numbers
    ],
)
def test_outputs_match(actual: Any, expected: Any) -> None:
    assert outputs_match(actual, expected, rtol=1e-6, atol=1e-9) == (True, "")


@pytest.mark.parametrize(
    ("actual", "expected", "detail"),
    [
        ([1, 2], [1, 3], "at [1]: expected 3, got 2"),
        ([[0.5, 0.25]], [[0.5, 0.2]], "at [0][1]: expected 0.2, got 0.25 (rtol=1e-06, atol=1e-09)"),
        ([1, 2], [1, 2, 3], "at top level: expected 3 items, got 2"),
        ([math.nan], [1.0], "at [0]: expected 1.0, got nan (rtol=1e-06, atol=1e-09)"),
        ([1.0], [math.nan], "at [0]: expected nan, got 1.0 (rtol=1e-06, atol=1e-09)"),
        ([True], [1], "at [0]: expected 1, got true"),
        (["1"], [1], 'at [0]: expected 1, got "1"'),
        ([None], [0.0], "at [0]: expected 0.0, got null"),
        ({"a": 1}, {"b": 1}, "at top level: expected keys ['b'], got ['a']"),
    ],
)
def test_outputs_mismatch_says_where(actual: Any, expected: Any, detail: str) -> None:
    assert outputs_match(actual, expected, rtol=1e-6, atol=1e-9) == (False, detail)
