"""Client columns by elimination: the search (_kernel_columns, on fake run functions) and golden()'s use of it
(_kernel.golden on plain frames and functions, in-process)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlship.notebook import _kernel, _kernel_columns
from mlship.notebook._kernel_columns import find_required
from mlship.runtime._codec import to_jsonable


def _needs(*required: str) -> Any:
    """A fake served path that reads exactly `required` (and raises without one of them)."""
    calls: list[list[str]] = []

    def run(kept: list[str]) -> Any:
        calls.append(kept)
        missing = [name for name in required if name not in kept]
        if missing:
            raise KeyError(missing[0])
        return [len(required)]

    run.calls = calls  # type: ignore[attr-defined]
    return run


def _eq(a: Any, b: Any) -> bool:
    return bool(a == b)


def test_columns_never_read_are_ignored_one_call_per_column() -> None:
    run = _needs("a", "c")
    found = find_required(["id", "a", "b", "c", "label"], run, _eq)
    assert found == {"required": ["a", "c"], "ignored": ["id", "b", "label"], "untried": [], "calls": 6}
    assert run.calls[0] == ["id", "a", "b", "c", "label"]  # the reference, with every column


def test_a_column_that_changes_the_output_is_required() -> None:
    def run(kept: list[str]) -> Any:
        return [3 if "weight" in kept else 1]  # no error, just another answer

    assert find_required(["x", "weight"], run, _eq)["required"] == ["weight"]


def test_of_two_redundant_copies_one_stays() -> None:
    # Either column alone is enough (a feature and its copy): elimination from the kept set never drops both.
    def run(kept: list[str]) -> Any:
        if "a" not in kept and "a_copy" not in kept:
            raise KeyError("a")
        return [1]

    found = find_required(["a", "a_copy"], run, _eq)
    assert found["required"] == ["a_copy"] and found["ignored"] == ["a"]


def test_at_least_one_column_stays() -> None:
    found = find_required(["a", "b"], lambda kept: [0], _eq)
    assert found["required"] == ["b"] and found["calls"] == 2


def test_a_wide_frame_is_tried_in_blocks_first() -> None:
    names = [f"c{i}" for i in range(1000)]
    run = _needs("c5", "c900")
    found = find_required(names, run, _eq)
    assert found["required"] == ["c5", "c900"] and not found["untried"]
    # blocks of 8: 125 block trials, the 2 blocks that hold a required column then tried column by column
    assert found["calls"] == 1 + 125 + 16 < len(names)


def test_the_budget_keeps_the_untried_columns_and_says_so() -> None:
    # 4 calls: the reference, then c0 (required), c1 and c2 (dropped); c3 to c9 are never tried.
    found = find_required([f"c{i}" for i in range(10)], _needs("c0"), _eq, max_calls=4)
    assert found["required"] == ["c0", "c3", "c4", "c5", "c6", "c7", "c8", "c9"]
    assert found["untried"] == ["c3", "c4", "c5", "c6", "c7", "c8", "c9"] and found["calls"] == 4
    clock = iter(range(100))
    timed = find_required(["a", "b", "c"], _needs("a"), _eq, max_seconds=1.5, clock=lambda: next(clock))
    assert timed["untried"] and "a" in timed["required"]


def test_limits_are_named_constants() -> None:
    assert _kernel_columns.SINGLE_LIMIT == 256 and _kernel_columns.MAX_CALLS >= _kernel_columns.SINGLE_LIMIT


# -- golden() on real frames -------------------------------------------------------------------------------------


@pytest.fixture()
def ns() -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "__main__"}
    _kernel.install(namespace, to_jsonable)
    return namespace


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"customer_id": [f"C{i}" for i in range(8)], "tenure": rng.uniform(1, 60, 8),
                         "charges": rng.uniform(10, 90, 8), "churn": rng.integers(0, 2, 8)})


def test_golden_rows_hold_only_the_client_columns(ns: dict[str, Any]) -> None:
    ns["df_test"] = _frame()
    ns["score"] = lambda df: (df["charges"] / df["tenure"]).to_numpy()
    result = _kernel.golden("df_test", 4, {"predict": "score(X)"}, "X")
    assert [c["name"] for c in result["schema"]["columns"]] == ["tenure", "charges"]
    assert result["schema"]["ignored"] == ["customer_id", "churn"]
    assert set(result["schema"]["example"]) == {"tenure", "charges"}
    assert all(set(case["instances"][0]) == {"tenure", "charges"} for case in result["cases"])
    assert result["columns"]["proof"] == "ok" and result["columns"]["calls"] == 5
    frame = ns["df_test"]
    assert result["cases"][1]["expected"] == [frame.charges[1] / frame.tenure[1]]


def test_a_column_derived_in_place_by_the_served_path_is_not_required(ns: dict[str, Any]) -> None:
    def transform(df: pd.DataFrame) -> Any:
        df["ratio"] = df["charges"] / df["tenure"]  # writes into its input, as real transformers do
        df["band"] = pd.cut(df["tenure"], [0, 12, 24, 100], labels=False)
        return (df["ratio"] + df["band"]).to_numpy()

    ns["transform"] = transform
    ns["df_test"] = _frame()
    transform(ns["df_test"])  # the notebook predicted once: its frame now holds the derived columns
    before = ns["df_test"].copy()
    result = _kernel.golden("df_test", 5, {"predict": "transform(X)"}, "X")
    assert [c["name"] for c in result["schema"]["columns"]] == ["tenure", "charges"]
    assert result["schema"]["ignored"] == ["customer_id", "churn", "ratio", "band"]
    pd.testing.assert_frame_equal(ns["df_test"], before)  # trials ran on copies


def test_every_method_is_compared(ns: dict[str, Any]) -> None:
    ns["df_test"] = _frame()
    ns["a"] = lambda df: df["tenure"].to_numpy()
    ns["b"] = lambda df: df["charges"].to_numpy()
    result = _kernel.golden("df_test", 3, {"predict": "a(X)", "predict_proba": "b(X)"}, "X")
    assert [c["name"] for c in result["schema"]["columns"]] == ["tenure", "charges"]


def test_a_failed_proof_keeps_every_column(ns: dict[str, Any]) -> None:
    # The batch trial hides that a lone row needs `scale`: row by row, the client-only frame differs.
    def odd(df: pd.DataFrame) -> Any:
        if len(df) == 1 and "scale" not in df:
            return df["tenure"].to_numpy() * 0
        return df["tenure"].to_numpy()

    ns["odd"] = odd
    ns["df_test"] = _frame().assign(scale=1.0)
    result = _kernel.golden("df_test", 3, {"predict": "odd(X)"}, "X")
    assert "ignored" not in result["schema"]
    assert len(result["schema"]["columns"]) == 5
    assert result["columns"]["ignored"] == [] and result["columns"]["proof"].startswith("golden case predict-0")


def test_an_estimator_with_feature_names_keeps_exactly_its_columns(ns: dict[str, Any]) -> None:
    from sklearn.linear_model import LinearRegression

    frame = _frame()
    model = LinearRegression().fit(frame[["tenure", "charges"]], frame["churn"])
    ns["model"], ns["X_test"] = model, frame[["tenure", "charges"]]
    result = _kernel.golden("X_test", 3, {"predict": "model.predict(X)"}, "X")
    assert [c["name"] for c in result["schema"]["columns"]] == ["tenure", "charges"]
    assert "ignored" not in result["schema"] and result["columns"]["ignored"] == []


def test_other_input_kinds_choose_nothing(ns: dict[str, Any]) -> None:
    ns["data"] = np.ones((3, 2))
    ns["f"] = lambda df: df.sum(axis=1)
    assert _kernel.golden("data", 3, {"predict": "f(X)"}, "X")["columns"] is None
