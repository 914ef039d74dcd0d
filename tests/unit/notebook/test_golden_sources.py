"""Golden rows beyond a one-row inference call (another value of the sample's schema), and integer column
labels: the kernel-side helpers of _kernel.py, run in-process on a plain namespace."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlship.notebook import _kernel
from mlship.runtime._codec import to_jsonable

COLUMNS = ["a", "b", "c"]


@pytest.fixture()
def ns() -> dict[str, Any]:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(40, 3)), columns=COLUMNS)
    namespace: dict[str, Any] = {
        "__name__": "__main__",
        "X": frame,
        "X_train": frame[:30],
        "X_test": frame[30:],
        "y_test": frame["a"][30:] > 0,
        "new_row": pd.DataFrame([{"a": 0.5, "b": -1.0, "c": 2.0}]),
        "score": lambda df: (df["a"] + 2 * df["b"] - df["c"]).to_numpy(),
    }
    _kernel.install(namespace, to_jsonable)
    return namespace


def names(raw: Any, ns: dict[str, Any], exclude: str = "new_row") -> list[str]:
    schema = _kernel.infer_schema(raw)
    return [found["name"] for found in _kernel.matching_values(raw, schema, exclude=exclude)]


def test_a_test_split_is_preferred_then_size_and_training_data_comes_last(ns: dict[str, Any]) -> None:
    assert names(ns["new_row"], ns) == ["X_test", "X", "X_train"]


def test_frames_must_have_the_same_columns_and_dtypes_and_are_reordered(ns: dict[str, Any]) -> None:
    ns["X_val"] = ns["X"][["c", "a", "b"]]  # the same columns in another order: fine, reordered
    ns["X_more"] = ns["X"].assign(d=1.0)  # another column
    ns["X_fewer"] = ns["X"][["a", "b"]]
    ns["X_ints"] = ns["X"].astype({"a": "int64"})  # another dtype
    ns["labels"] = ns["X"]  # named like labels: never taken, whatever it holds
    found = _kernel.matching_values(ns["new_row"], _kernel.infer_schema(ns["new_row"]), exclude="new_row")
    assert [f["name"] for f in found] == ["X_val", "X_test", "X", "X_train"]  # both test-like: the bigger first
    assert list(found[0]["value"].columns) == COLUMNS
    assert found[0]["reason"] == "same columns and dtypes as the sample; named like a test split"


def test_arrays_match_on_row_shape_and_dtype() -> None:
    ns: dict[str, Any] = {"x_val": np.zeros((9, 4)), "x_wide": np.zeros((9, 5)), "x_int": np.zeros((9, 4), int),
                          "x_3d": np.zeros((9, 4, 1)), "Y_val": np.zeros((9, 4))}
    _kernel.install(ns, to_jsonable)
    assert names(np.array([[5.1, 3.5, 1.4, 0.2]]), ns) == ["x_val"]


def test_texts_match_lists_and_series_of_strings_but_never_labels() -> None:
    texts = [f"review number {i} says something" for i in range(12)]
    ns: dict[str, Any] = {
        "test_texts": pd.Series(texts[8:], index=range(8, 12)),  # train_test_split of a Series keeps a Series
        "texts": texts,
        "test_labels": ["pos", "neg", "pos", "neg"],  # a label by name
        "sentiment": ["pos", "neg", "pos", "neg", "pos", "neg"],  # a label by its values: a few repeated strings
        "numbers": [1.0, 2.0, 3.0],
    }
    _kernel.install(ns, to_jsonable)
    sample = ["the food was great"]
    found = _kernel.matching_values(sample, _kernel.infer_schema(sample))
    assert [f["name"] for f in found] == ["test_texts", "texts"]
    assert found[0]["value"] == texts[8:]


def test_golden_takes_the_remaining_rows_from_the_test_split(ns: dict[str, Any]) -> None:
    result = _kernel.golden("new_row", 5, {"predict": "score(X)"}, "X")
    assert [c["source"] for c in result["cases"]] == ["new_row"] + ["X_test"] * 4
    assert [c["id"] for c in result["cases"]] == [f"predict-{i}" for i in range(5)]
    assert result["sources"][1] == {"expr": "X_test", "rows": 4,
                                    "reason": "same columns and dtypes as the sample; named like a test split"}
    expected = ns["score"](ns["X_test"][:4]).tolist()
    assert [c["expected"][0] for c in result["cases"][1:]] == pytest.approx(expected)
    assert result["cases"][1]["instances"] == [ns["X_test"].iloc[0].to_dict()]
    assert result["schema"]["example"] == {"a": 0.5, "b": -1.0, "c": 2.0}  # the notebook's own row, still
    assert result["rows"] == 1


def test_a_named_sample_or_a_big_enough_one_takes_nothing_else(ns: dict[str, Any]) -> None:
    assert len(_kernel.golden("new_row", 5, {"predict": "score(X)"}, "X", False)["cases"]) == 1
    result = _kernel.golden("X_train", 5, {"predict": "score(X)"}, "X")
    assert len(result["sources"]) == 1 and len(result["cases"]) == 5


def test_a_value_the_served_path_fails_on_is_skipped_for_the_next(ns: dict[str, Any]) -> None:
    ns["X_test"] = ns["X_test"].assign(a=np.inf)
    ns["finite"] = lambda df: np.sqrt(df["a"] ** 2).to_numpy() if np.isfinite(df["a"]).all() else 1 / 0
    result = _kernel.golden("new_row", 3, {"predict": "finite(X)"}, "X")
    assert [s["expr"] for s in result["sources"]] == ["new_row", "X"]
    assert [s["expr"] for s in result["skipped_sources"]] == ["X_test"]
    assert result["skipped_sources"][0]["reason"] == "the served path failed on it: division by zero"


def test_rows_with_missing_values_the_schema_refuses_are_left_out(ns: dict[str, Any]) -> None:
    ns["X_test"] = ns["X_test"].copy()
    ns["X_test"].iloc[0, 0] = np.nan  # the sample has no NaN, so the schema says a is not nullable
    result = _kernel.golden("new_row", 3, {"predict": "score(X)"}, "X")
    assert result["schema"]["columns"][0]["nullable"] is False
    assert [c["instances"][0]["a"] for c in result["cases"][1:]] == ns["X_test"]["a"][1:3].tolist()


def test_object_columns_of_other_json_types_are_not_taken() -> None:
    ns: dict[str, Any] = {"one": pd.DataFrame({"city": ["Oslo"]}, dtype=object), "X_test": pd.DataFrame({"city": [1, 2, 3]},
                                                                                          dtype=object)}
    ns["first"] = lambda df: df["city"].astype(str).to_numpy()
    _kernel.install(ns, to_jsonable)
    result = _kernel.golden("one", 3, {"predict": "first(X)"}, "X")
    assert len(result["cases"]) == 1
    assert result["skipped_sources"] == [{"expr": "X_test", "reason": "its values have other JSON types than the "
                                                                       "sample's"}]


def test_integer_column_labels_are_recorded_and_named_by_their_digits() -> None:
    frame = pd.read_csv(__import__("io").StringIO("0.1,0.2,R\n0.3,0.4,M\n"), header=None)
    features = frame.drop(2, axis=1)
    assert _kernel.column_labels(features.columns) == "int"
    assert _kernel.column_labels(pd.Index(["a", "b"])) == "str"
    with pytest.raises(TypeError, match="neither all strings nor all integers"):
        _kernel.column_labels(pd.Index(["a", 1], dtype=object))
    with pytest.raises(TypeError, match="neither all strings nor all integers"):
        _kernel.column_labels([True, False])
    schema = _kernel.infer_schema(features)
    assert schema["column_labels"] == "int"
    assert [c["name"] for c in schema["columns"]] == ["0", "1"]
    assert _kernel.instances(features, schema)[0] == {"0": 0.1, "1": 0.2}
    assert "column_labels" not in _kernel.infer_schema(pd.DataFrame({"a": [1]}))
