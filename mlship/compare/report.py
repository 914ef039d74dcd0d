"""The result of `mlship compare`: one typed report, its gates, its JSON document (for CI and for a later
`mlship promote --require-report`, which matches it to the two bundles by their digests)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..bundle.digest import bundle_digest
from ..runtime._contract import Bundle
from .changes import Change, bundle_size
from .stats import MethodStats

REPORT_FORMAT = 1


@dataclass(frozen=True)
class Gates:
    max_disagreement: float | None = None  # of the first method compared (default: predict)
    min_delta: float | None = None  # the metric's improvement, NEW over OLD (negative: how much worse is allowed)
    allow_breaking: bool = False


@dataclass(frozen=True)
class GateResult:
    name: str
    passed: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"gate": self.name, "passed": self.passed, "detail": self.detail}


@dataclass(frozen=True)
class BundleFacts:
    path: str
    name: str
    version: str
    digest: str
    size_bytes: int
    load_seconds: float

    @classmethod
    def of(cls, bundle: Bundle, load_seconds: float) -> BundleFacts:
        return cls(str(bundle.path), bundle.manifest.name, bundle.manifest.version, bundle_digest(bundle.path),
                   bundle_size(bundle.path), load_seconds)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "name": self.name, "version": self.version, "digest": self.digest,
                "size_bytes": self.size_bytes, "load_seconds": round(self.load_seconds, 3)}


@dataclass(frozen=True)
class MetricResult:
    name: str
    method: str
    old: float
    new: float
    higher_is_better: bool

    @property
    def delta(self) -> float:
        return self.new - self.old

    @property
    def improvement(self) -> float:
        """How much better NEW is (negative: worse), whichever way the metric points."""
        return self.delta if self.higher_is_better else -self.delta

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "method": self.method, "old": self.old, "new": self.new, "delta": self.delta,
                "improvement": self.improvement, "higher_is_better": self.higher_is_better}


@dataclass
class CompareReport:
    old: BundleFacts
    new: BundleFacts
    methods: list[str]
    stats: dict[str, MethodStats]
    schema: list[Change]
    requirements: list[dict[str, str | None]]
    metric: MetricResult | None
    gates: Gates
    data: str | None = None
    label: str | None = None
    diff_out: str | None = None
    results: list[GateResult] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.results = self._gate_results()

    @property
    def primary(self) -> MethodStats:
        return self.stats[self.methods[0]]

    @property
    def breaking(self) -> list[Change]:
        return [change for change in self.schema if change.breaking]

    @property
    def passed(self) -> bool:
        return all(result.passed for result in self.results)

    def _gate_results(self) -> list[GateResult]:
        results = []
        breaking = self.breaking
        if breaking:
            detail = "breaking for clients: " + "; ".join(c.what for c in breaking)
            results.append(GateResult("schema", self.gates.allow_breaking,
                                      detail + (" (allowed: --allow-breaking)" if self.gates.allow_breaking else "")))
        else:
            results.append(GateResult("schema", True, "no change breaks a client of OLD"))
        limit = self.gates.max_disagreement
        if limit is not None:
            rate = self.primary.disagreement
            results.append(GateResult("max_disagreement", rate <= limit,
                                      f"{self.primary.method}: {rate:.2%} of rows disagree (at most {limit:.2%})"))
        if self.gates.min_delta is not None and self.metric is not None:
            m = self.metric
            results.append(GateResult("min_delta", m.improvement >= self.gates.min_delta,
                                      f"{m.name}: {m.old:.4g} -> {m.new:.4g}, improvement {m.improvement:+.4g} "
                                      f"(at least {self.gates.min_delta:+.4g})"))
        return results

    def to_json(self) -> dict[str, Any]:
        return {
            "format": REPORT_FORMAT,
            "passed": self.passed,
            "old": self.old.to_json(),
            "new": self.new.to_json(),
            "data": self.data,
            "label": self.label,
            "gates": [result.to_json() for result in self.results],
            "methods": {name: method_json(self.stats[name]) for name in self.methods},
            "metric": None if self.metric is None else self.metric.to_json(),
            "schema_changes": [change.to_json() for change in self.schema],
            "requirement_changes": self.requirements,
            "diff_out": self.diff_out,
        }

    def write_html(self, path: Path) -> None:
        from .html import render_html

        path.write_text(render_html(self), encoding="utf-8")


def method_json(stats: MethodStats) -> dict[str, Any]:
    transitions = None
    if stats.kind == "label" and stats.transitions is not None:
        transitions = [{"old": old, "new": new, "rows": n}
                       for (old, new), n in sorted(stats.transitions.items(), key=lambda kv: -kv[1])]
    return {
        "kind": stats.kind,
        "rows": dict(stats.rows),
        "compared": stats.compared,
        "agreed": stats.agreed,
        "disagreed": stats.disagreed,
        "agreement": 1 - stats.disagreement if stats.compared else None,
        "refused": {"old": stats.old.errors, "new": stats.new.errors, "both": stats.both_refused},
        "tolerance": {"rtol": stats.tolerance.rtol, "atol": stats.tolerance.atol},
        "transitions": transitions,
        "abs_diff": stats.diff_summary(),
        "seconds_per_row": {"old": stats.old.seconds_per_row(), "new": stats.new.seconds_per_row()},
    }
