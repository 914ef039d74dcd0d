"""Which differences between two bundles break OLD's clients, and what the gates make of them."""

from __future__ import annotations

import pytest

from mlship.compare.changes import Change, requirement_changes, schema_changes
from mlship.compare.report import BundleFacts, CompareReport, Gates, MetricResult
from mlship.compare.stats import MethodStats, Tolerance
from mlship.runtime._contract import Column, InputSchema


def frame(*columns: Column) -> InputSchema:
    return InputSchema("dataframe", columns=columns)


def test_a_new_required_column_and_a_changed_type_break_clients_a_dropped_column_does_not() -> None:
    old = frame(Column("a", "number"), Column("b", "number"), Column("c", "string"))
    new = frame(Column("a", "integer"), Column("c", "string"), Column("d", "number"))
    found = [(c.what, c.breaking) for c in schema_changes(old, new)]
    assert found == [
        ("NEW requires the column 'd', which OLD did not", True),
        ("NEW no longer reads the column 'b' (clients may still send it)", False),
        ("column 'a' changes type: number -> integer", True),
    ]


def test_kind_shape_and_nullability_changes() -> None:
    assert schema_changes(frame(Column("a")), InputSchema("ndarray", element=Column(None)))[0].breaking
    old = InputSchema("ndarray", element=Column(None, "number"), shape=(None, 4))
    new = InputSchema("ndarray", element=Column(None, "number", nullable=False), shape=(None, 5))
    assert [c.what for c in schema_changes(old, new)] == [
        "the input's values no longer accepts null", "the input's shape changes: [null, 4] -> [null, 5]"]
    # Widening to `any` refuses nothing OLD accepted.
    assert schema_changes(frame(Column("a", "number")), frame(Column("a", "any"))) == [
        Change("column 'a' changes type: number -> any", False)]


def test_requirement_changes_by_normalised_name() -> None:
    assert requirement_changes(("scikit-learn==1.4.0", "numpy==2.0.0", "six==1"),
                               ("scikit_learn==1.5.0", "numpy==2.0.0", "pandas==2.2.0")) == [
        {"name": "pandas", "old": None, "new": "==2.2.0"},
        {"name": "scikit-learn", "old": "==1.4.0", "new": "==1.5.0"},
        {"name": "six", "old": "==1", "new": None},
    ]


def report(gates: Gates, *, breaking: bool, disagree: int, metric: MetricResult | None = None) -> CompareReport:
    stats = MethodStats("predict", Tolerance(0.0, 0.0))
    for i in range(10):
        stats.add("data", 0, 1 if i < disagree else 0, None, None)
    facts = BundleFacts("p", "m", "1", "sha256:0", 1, 0.0)
    return CompareReport(facts, facts, ["predict"], {"predict": stats}, [Change("x", breaking)], [], metric, gates)


def test_gates() -> None:
    assert report(Gates(), breaking=False, disagree=9).passed
    assert not report(Gates(), breaking=True, disagree=0).passed
    assert report(Gates(allow_breaking=True), breaking=True, disagree=0).passed
    assert report(Gates(max_disagreement=0.2), breaking=False, disagree=2).passed
    assert not report(Gates(max_disagreement=0.2), breaking=False, disagree=3).passed
    worse_rmse = MetricResult("rmse", "predict", 1.0, 1.05, higher_is_better=False)
    assert worse_rmse.improvement == pytest.approx(-0.05)
    assert report(Gates(min_delta=-0.1), breaking=False, disagree=0, metric=worse_rmse).passed
    assert not report(Gates(min_delta=0.0), breaking=False, disagree=0, metric=worse_rmse).passed
    stats = report(Gates(), breaking=False, disagree=3).stats["predict"]
    assert stats.kind == "label" and stats.transitions == {(0, 1): 3, (0, 0): 7}


def test_more_than_50_distinct_values_are_not_labels() -> None:
    stats = MethodStats("predict", Tolerance(0.0, 0.0))
    for i in range(50):
        stats.add("data", i // 2 * 2, i // 2 * 2 + 1, None, None)  # 50 labels: 0..49
    assert stats.kind == "label" and stats.transitions is not None
    stats.add("data", 100, 100, None, None)
    assert stats.transitions is None and stats.kind == "number"
    assert stats.diff_summary() == {"p50": 1.0, "p95": 1.0, "max": 1.0}
