"""The compare metrics against known values: hand-worked examples and scikit-learn (a test dependency only)."""

from __future__ import annotations

import math
import random

import pytest

from mlship.compare.metrics import Confusion, Errors, Scores, as_label, roc_auc


def confusion(true: list[object], pred: list[object]) -> Confusion:
    c = Confusion()
    for t, p in zip(true, pred, strict=True):
        c.add(t, p)  # type: ignore[arg-type]
    return c


def test_binary_label_metrics_by_hand() -> None:
    # tp=2 (rows 0, 1), fn=1 (row 2), fp=1 (row 3), tn=1 (row 4)
    c = confusion([1, 1, 1, 0, 0], [1, 1, 0, 1, 0])
    assert c.accuracy() == pytest.approx(3 / 5)
    assert c.precision() == pytest.approx(2 / 3)
    assert c.recall() == pytest.approx(2 / 3)
    assert c.f1() == pytest.approx(2 / 3)


def test_nothing_predicted_positive_is_zero_not_an_error() -> None:
    c = confusion([1, 0, 0], [0, 0, 0])
    assert (c.precision(), c.recall(), c.f1()) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("classes", [2, 3])
def test_label_metrics_match_scikit_learn(classes: int) -> None:
    from sklearn import metrics

    rng = random.Random(classes)
    labels = ["neg", "pos", "mid"][:classes]
    true = [rng.choice(labels) for _ in range(300)]
    pred = [t if rng.random() < 0.7 else rng.choice(labels) for t in true]
    c = confusion(true, pred)
    average = {"average": "binary", "pos_label": "pos"} if classes == 2 else {"average": "macro"}
    assert c.accuracy() == pytest.approx(metrics.accuracy_score(true, pred))
    assert c.precision() == pytest.approx(metrics.precision_score(true, pred, **average))  # type: ignore[arg-type]
    assert c.recall() == pytest.approx(metrics.recall_score(true, pred, **average))  # type: ignore[arg-type]
    assert c.f1() == pytest.approx(metrics.f1_score(true, pred, **average))  # type: ignore[arg-type]


def test_regression_metrics_by_hand_and_against_scikit_learn() -> None:
    from sklearn import metrics

    e = Errors()
    for t, p in ((3.0, 2.5), (-0.5, 0.0), (2.0, 2.0), (7.0, 8.0)):
        e.add(t, p)
    assert e.mae() == pytest.approx(0.5)
    assert e.rmse() == pytest.approx(math.sqrt(0.375))
    assert e.r2() == pytest.approx(0.9486081370449679)  # scikit-learn's r2_score example
    rng = random.Random(0)
    true = [rng.gauss(10, 3) for _ in range(500)]
    pred = [t + rng.gauss(0, 1) for t in true]
    e = Errors()
    for t, p in zip(true, pred, strict=True):
        e.add(t, p)
    assert e.r2() == pytest.approx(metrics.r2_score(true, pred))
    assert e.rmse() == pytest.approx(math.sqrt(metrics.mean_squared_error(true, pred)))
    assert e.mae() == pytest.approx(metrics.mean_absolute_error(true, pred))


def test_r2_of_a_constant_target() -> None:
    exact, off = Errors(), Errors()
    for _ in range(3):
        exact.add(1.0, 1.0)
        off.add(1.0, 2.0)
    assert (exact.r2(), off.r2()) == (1.0, 0.0)


def test_roc_auc_by_hand_with_ties_and_against_scikit_learn() -> None:
    from sklearn.metrics import roc_auc_score

    assert roc_auc([False, False, True, True], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert roc_auc([False, True], [0.5, 0.5]) == pytest.approx(0.5)
    assert roc_auc([True, True], [0.1, 0.2]) is None
    rng = random.Random(1)
    labels = [rng.random() < 0.4 for _ in range(400)]
    scores = [round(rng.random() * 0.6 + 0.4 * y, 2) for y in labels]  # rounded: many ties
    assert roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))
    s = Scores()
    for y, score in zip(labels, scores, strict=True):
        s.add(int(y), score)
    assert s.auc() == pytest.approx(roc_auc_score(labels, scores))


def test_labels_read_from_csv_text() -> None:
    assert [as_label(v) for v in ("1", "0.5", "pos", "", "True", 3)] == [1, 0.5, "pos", None, True, 3]
