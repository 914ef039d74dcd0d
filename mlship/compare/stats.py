"""What one method's answers from OLD and NEW add up to, a row at a time: agreement, the label transitions, the
distribution of |new - old|, and, given the true label, each bundle's metrics."""

from __future__ import annotations

import math
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .metrics import METRICS, Confusion, Errors, Scores, as_label, metric_value

MAX_LABELS = 50  # more distinct values than this is not a classifier's labels: no transition table


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float

    def close(self, old: Any, new: Any) -> bool:
        if _number(old) and _number(new):
            return bool(abs(new - old) <= self.atol + self.rtol * abs(old)) or (math.isnan(old) and math.isnan(new))
        if isinstance(old, list) and isinstance(new, list):
            return len(old) == len(new) and all(self.close(a, b) for a, b in zip(old, new, strict=True))
        if isinstance(old, dict) and isinstance(new, dict):
            return old.keys() == new.keys() and all(self.close(old[k], new[k]) for k in old)
        return bool(old == new) and type(old) is type(new)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _label(value: Any) -> bool:
    return value is None or isinstance(value, (str, bool, int))


def abs_diff(old: Any, new: Any) -> float | None:
    """|new - old|, the largest over a row's values; None when they are not numbers of the same shape."""
    if _number(old) and _number(new):
        return float(abs(new - old))
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new) and old:
        parts = [abs_diff(a, b) for a, b in zip(old, new, strict=True)]
        return None if any(p is None for p in parts) else max(p for p in parts if p is not None)
    if isinstance(old, dict) and isinstance(new, dict) and old.keys() == new.keys() and old:
        return abs_diff(list(old.values()), list(new.values()))
    return None


def score_of(value: Any) -> float | None:
    """The positive class's score in one row: predict_proba's last column, or a decision_function value."""
    if isinstance(value, list) and value and _number(value[-1]):
        return float(value[-1])
    return float(value) if _number(value) else None


@dataclass
class Side:
    """One bundle's answers to one method."""

    rows: int = 0
    seconds: float = 0.0
    errors: int = 0
    confusion: Confusion = field(default_factory=Confusion)
    regression: Errors = field(default_factory=Errors)
    scores: Scores = field(default_factory=Scores)

    def add_truth(self, truth: Any, value: Any, score_method: bool) -> None:
        if score_method:
            score = score_of(value)
            if score is not None and _label(truth):
                self.scores.add(truth, score)
            return
        if _label(value) and not isinstance(value, float) and _label(truth):
            self.confusion.add(truth, value)
        if _number(value) and _number(truth):
            self.regression.add(float(truth), float(value))

    def metric(self, name: str) -> float | None:
        return metric_value(name, self.confusion, self.regression, self.scores)

    def seconds_per_row(self) -> float | None:
        return self.seconds / self.rows if self.rows else None


@dataclass
class MethodStats:
    method: str
    tolerance: Tolerance
    rows: Counter[str] = field(default_factory=Counter)  # input set -> rows compared
    agreed: int = 0
    disagreed: int = 0
    both_refused: int = 0
    transitions: Counter[tuple[Any, Any]] | None = field(default_factory=Counter)
    diffs: array[float] = field(default_factory=lambda: array("d"))
    _labels: set[Any] = field(default_factory=set, repr=False)
    old: Side = field(default_factory=Side)
    new: Side = field(default_factory=Side)

    def add(self, where: str, old: Any, new: Any, old_error: str | None, new_error: str | None) -> bool:
        """Count one row; True when the two disagree (a refusal by one side only is a disagreement)."""
        if old_error is not None and new_error is not None:
            self.both_refused += 1
            return False
        self.rows[where] += 1
        self.old.errors += old_error is not None
        self.new.errors += new_error is not None
        if old_error is not None or new_error is not None:
            self.disagreed += 1
            return True
        agree = self.tolerance.close(old, new)
        self.agreed += agree
        self.disagreed += not agree
        if self.transitions is not None:
            if _label(old) and _label(new) and not isinstance(old, float) and not isinstance(new, float):
                self.transitions[(old, new)] += 1
                self._labels.update((old, new))
                if len(self._labels) > MAX_LABELS:
                    self.transitions = None
            else:
                self.transitions = None
        diff = abs_diff(old, new)
        if diff is not None:
            self.diffs.append(diff)
        return not agree

    @property
    def kind(self) -> str:
        """"label" (a classifier's labels: transition table), "number" (|new - old|), or "other"."""
        if self.transitions is not None and self.transitions:
            return "label"
        return "number" if len(self.diffs) else "other"

    @property
    def compared(self) -> int:
        return self.agreed + self.disagreed

    @property
    def disagreement(self) -> float:
        return self.disagreed / self.compared if self.compared else 0.0

    def diff_summary(self) -> dict[str, float] | None:
        if self.kind != "number":
            return None
        ordered = sorted(self.diffs)
        return {"p50": _quantile(ordered, 0.5), "p95": _quantile(ordered, 0.95), "max": ordered[-1]}

    def add_truth(self, truth: Any, old: Any, new: Any, old_error: str | None, new_error: str | None) -> None:
        truth = as_label(truth)
        if truth is None:
            return
        score_method = self.method in ("predict_proba", "decision_function")
        if old_error is None:
            self.old.add_truth(truth, old, score_method)
        if new_error is None:
            self.new.add_truth(truth, new, score_method)


def _quantile(ordered: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def metric_kind(name: str) -> str:
    return METRICS[name][1]
