"""The metrics `mlship compare --label` reports, computed as the rows stream past (nothing kept per row but what
roc_auc must sort). Plain Python: scikit-learn is not a dependency of mlship, and these are a few lines each.

Definitions follow scikit-learn's defaults: precision, recall and f1 are binary when the labels seen (true and
predicted) are exactly two, for the positive label (1, True, or else the larger of the two), and macro-averaged
over every label seen otherwise; a ratio with nothing to divide is 0 (sklearn's zero_division=0 without its
warning). r2 of a constant target is, as in scikit-learn, 1.0 when the predictions are exact and 0.0 otherwise.
roc_auc is the binary area under the ROC curve (Mann-Whitney, ties counted half).
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

# name -> (higher is better, what it needs: "label" predictions, "number" predictions or "score"s)
METRICS: dict[str, tuple[bool, str]] = {
    "accuracy": (True, "label"),
    "f1": (True, "label"),
    "precision": (True, "label"),
    "recall": (True, "label"),
    "roc_auc": (True, "score"),
    "rmse": (False, "number"),
    "mae": (False, "number"),
    "r2": (True, "number"),
}


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


@dataclass
class Confusion:
    """Counts of (true, predicted) label pairs."""

    counts: Counter[tuple[Hashable, Hashable]] = field(default_factory=Counter)

    def add(self, true: Hashable, pred: Hashable) -> None:
        self.counts[(true, pred)] += 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def labels(self) -> list[Hashable]:
        seen = {label for pair in self.counts for label in pair}
        return sorted(seen, key=lambda label: (str(type(label)), label))

    def accuracy(self) -> float:
        return _ratio(sum(n for (t, p), n in self.counts.items() if t == p), self.total)

    def positive(self) -> Hashable | None:
        """The positive label of a binary problem, or None (macro average)."""
        labels = self.labels()
        if len(labels) != 2:
            return None
        for candidate in (True, 1):
            for label in labels:
                if label == candidate and type(label) is type(candidate):
                    return label
        return labels[-1]

    def _per_label(self, label: Hashable) -> tuple[float, float, float]:
        tp = self.counts.get((label, label), 0)
        predicted = sum(n for (_, p), n in self.counts.items() if p == label)
        actual = sum(n for (t, _), n in self.counts.items() if t == label)
        precision, recall = _ratio(tp, predicted), _ratio(tp, actual)
        return precision, recall, _ratio(2 * precision * recall, precision + recall)

    def _average(self, index: int) -> float:
        positive = self.positive()
        if positive is not None:
            return self._per_label(positive)[index]
        labels = self.labels()
        return _ratio(sum(self._per_label(label)[index] for label in labels), len(labels))

    def precision(self) -> float:
        return self._average(0)

    def recall(self) -> float:
        return self._average(1)

    def f1(self) -> float:
        return self._average(2)


@dataclass
class Errors:
    """Running sums for the regression metrics."""

    n: int = 0
    squared: float = 0.0
    absolute: float = 0.0
    total: float = 0.0
    total_squared: float = 0.0

    def add(self, true: float, pred: float) -> None:
        error = pred - true
        self.n += 1
        self.squared += error * error
        self.absolute += abs(error)
        self.total += true
        self.total_squared += true * true

    def rmse(self) -> float:
        return math.sqrt(_ratio(self.squared, self.n))

    def mae(self) -> float:
        return _ratio(self.absolute, self.n)

    def r2(self) -> float:
        spread = self.total_squared - self.total * self.total / self.n if self.n else 0.0
        if spread <= 1e-12 * max(1.0, self.total_squared):
            return 1.0 if self.squared == 0 else 0.0
        return 1.0 - self.squared / spread


def roc_auc(positives: Sequence[bool], scores: Sequence[float]) -> float | None:
    """Area under the ROC curve; None when only one class is present (it is undefined)."""
    order = sorted(range(len(scores)), key=scores.__getitem__)
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):  # average ranks over ties
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    n_pos = sum(1 for p in positives if p)
    n_neg = len(positives) - n_pos
    if not n_pos or not n_neg:
        return None
    rank_sum = sum(rank for rank, p in zip(ranks, positives, strict=True) if p)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


@dataclass
class Scores:
    """Labels and scores kept for roc_auc (8 bytes a row for the score)."""

    labels: list[Hashable] = field(default_factory=list)
    scores: array[float] = field(default_factory=lambda: array("d"))

    def add(self, true: Hashable, score: float) -> None:
        self.labels.append(true)
        self.scores.append(score)

    def auc(self) -> float | None:
        seen = Confusion(Counter({(label, label): 1 for label in set(self.labels)}))
        positive = seen.positive()
        if positive is None:
            return None
        return roc_auc([label == positive for label in self.labels], self.scores)


def metric_value(name: str, confusion: Confusion, errors: Errors, scores: Scores) -> float | None:
    """The metric `name` from whichever accumulator it reads; None when it has nothing to go on."""
    kind = METRICS[name][1]
    if kind == "label":
        return getattr(confusion, name)() if confusion.total else None
    if kind == "number":
        return getattr(errors, name)() if errors.n else None
    return scores.auc()


def as_label(value: Any) -> Any:
    """A label as read from a CSV field (text) made comparable with a model's output: "1" -> 1, "0.5" -> 0.5."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text == "":
        return None
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), value)
