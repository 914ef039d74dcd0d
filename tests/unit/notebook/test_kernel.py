"""The helpers that run inside the kernel, exercised in-process on a plain namespace."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlship.notebook import _kernel
from mlship.runtime._codec import to_jsonable


@pytest.fixture()
def ns() -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "__main__"}
    _kernel.install(namespace, to_jsonable)
    return namespace


def test_schema_of_a_dataframe_with_mixed_columns(ns: dict[str, Any]) -> None:
    df = pd.DataFrame({"x": [1.5, np.nan], "n": [1, 2], "s": ["a", None], "b": [True, False],
                       "t": pd.to_datetime(["2024-01-01", "2024-01-02"]), "c": pd.Categorical(["u", "v"])})
    schema = _kernel.infer_schema(df)
    assert schema["kind"] == "dataframe"
    assert [(c["name"], c["type"]) for c in schema["columns"]] == [
        ("x", "number"), ("n", "integer"), ("s", "string"), ("b", "boolean"), ("t", "datetime"), ("c", "string")]
    assert [c["name"] for c in schema["columns"] if c["nullable"]] == ["x", "s"]
    rows = _kernel.instances(df, schema)
    assert rows[0] == {"x": 1.5, "n": 1, "s": "a", "b": True, "t": "2024-01-01T00:00:00", "c": "u"}
    assert rows[1]["x"] is None and rows[1]["s"] is None


def test_schema_of_arrays_series_lists_records_and_columns() -> None:
    assert _kernel.infer_schema(np.zeros((3, 4), dtype=np.float32)) == {
        "kind": "ndarray", "dtype": "float32", "type": "number", "shape": [None, 4], "nullable": False}
    with_nan = _kernel.infer_schema(np.array([[1.0, np.nan]]))
    assert with_nan["nullable"] is True
    assert _kernel.infer_schema(pd.Series(["a b", "c"], name="text"))["kind"] == "series"
    assert _kernel.infer_schema(["a", "b"]) == {"kind": "list", "type": "string", "nullable": False}
    assert _kernel.infer_schema(["a", "b"], ["a", None])["nullable"] is True
    records = _kernel.infer_schema([{"a": 1, "b": "x"}, {"a": 2, "c": 1.5}])
    assert [c["name"] for c in records["columns"]] == ["a", "b", "c"]
    cols = _kernel.infer_schema({"x1": np.array([1.0, 2.0])})
    assert cols["kind"] == "columns" and cols["columns"][0]["type"] == "number"


def test_unservable_inputs() -> None:
    assert _kernel.servable_kind(object()) is None
    assert _kernel.servable_kind([]) is None
    assert _kernel.servable_kind({"a": [1, 2], "b": [1]}) is None
    with pytest.raises(TypeError, match="neither all strings nor all integers"):
        _kernel.infer_schema(pd.DataFrame(np.zeros((2, 2)), columns=[0.5, 1.5]))


def test_golden_cases_row_by_row_and_batch_safety(ns: dict[str, Any]) -> None:
    ns["data"] = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]})
    ns["double"] = lambda df: (df["a"] * 2).to_numpy()
    ns["centre"] = lambda df: (df["a"] - df["a"].mean()).to_numpy()  # depends on the batch: not row-wise
    result = _kernel.golden("data", 3, {"predict": "double(X)"}, "X")
    assert [c["expected"] for c in result["cases"]] == [[2.0], [4.0], [6.0]]
    assert result["cases"][0]["instances"] == [{"a": 1.0}]
    assert result["batch_safe"] is True and result["total_rows"] == 6
    assert _kernel.golden("data", 3, {"predict": "centre(X)"}, "X")["batch_safe"] is False


def test_extra_method_that_fails_is_dropped_not_fatal(ns: dict[str, Any]) -> None:
    ns["data"] = [1, 2]
    ns["ok"] = lambda xs: [x + 1 for x in xs]
    ns["bad"] = lambda xs: 1 / 0
    result = _kernel.golden("data", 5, {"predict": "ok(X)", "predict_proba": "bad(X)"}, "X")
    assert list(result["dropped"]) == ["predict_proba"]
    with pytest.raises(ZeroDivisionError):
        _kernel.golden("data", 5, {"predict": "bad(X)"}, "X")


def test_output_that_is_not_one_row_per_input_is_an_error(ns: dict[str, Any]) -> None:
    ns["data"] = [1, 2]
    ns["total"] = lambda xs: sum(xs)
    with pytest.raises(ValueError, match="not one result per row"):
        _kernel.golden("data", 5, {"predict": "total(X)"}, "X")


class Holder:
    def __init__(self) -> None:
        self.inner = {"ok": 1, "lock": threading.Lock()}


def test_serialize_names_the_unpicklable_attribute(ns: dict[str, Any], tmp_path: Path) -> None:
    ns["model"] = Holder()
    result = _kernel.serialize(["model"], str(tmp_path / "v.pkl"))
    assert result["ok"] is False
    assert result["path"] == "model.inner['lock']"
    assert "lock" in result["type"]
    assert not (tmp_path / "v.pkl").exists()


def test_serialize_writes_and_checks(ns: dict[str, Any], tmp_path: Path) -> None:
    ns["w"] = np.arange(3)
    assert _kernel.serialize(["w"], None)["ok"] is True
    assert _kernel.serialize(["w"], str(tmp_path / "v.pkl"))["ok"] is True
    assert (tmp_path / "v.pkl").stat().st_size > 0


def test_fitted_objects_skip_unfitted_estimators_and_ipython_names(ns: dict[str, Any]) -> None:
    from sklearn.linear_model import LinearRegression

    ns["fitted"] = LinearRegression().fit([[0.0], [1.0]], [0.0, 1.0])
    ns["template"] = LinearRegression()
    ns["_private"] = ns["fitted"]
    assert [f["name"] for f in _kernel.fitted_objects()] == ["fitted"]
