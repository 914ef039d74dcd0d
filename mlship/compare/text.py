"""The report as lines of text: what the terminal (a rich table) and CI logs (plain lines) show."""

from __future__ import annotations

from .report import CompareReport
from .stats import MethodStats


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.3f} ms"


def _size(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def method_rows(stats: MethodStats) -> list[tuple[str, str]]:
    name = stats.method
    rows = [(f"{name}: agreement", f"{stats.agreed:,} of {stats.compared:,} rows agree "
             f"({1 - stats.disagreement:.2%}); " + ", ".join(f"{k} {v:,}" for k, v in stats.rows.items()))]
    refused = stats.old.errors, stats.new.errors, stats.both_refused
    if any(refused):
        rows.append((f"{name}: refused", f"OLD {refused[0]:,}, NEW {refused[1]:,}, both {refused[2]:,} rows"))
    if stats.kind == "label" and stats.transitions is not None:
        moves = sorted(((n, o, w) for (o, w), n in stats.transitions.items() if o != w), key=lambda t: -t[0])
        shown = ", ".join(f"{o!r} -> {w!r}: {n:,}" for n, o, w in moves[:10]) or "none"
        rows.append((f"{name}: label changes", shown))
    summary = stats.diff_summary()
    if summary is not None:
        rows.append((f"{name}: |new - old|", f"p50 {summary['p50']:.4g}, p95 {summary['p95']:.4g}, "
                     f"max {summary['max']:.4g}"))
    rows.append((f"{name}: time per row", f"OLD {_ms(stats.old.seconds_per_row())}, "
                 f"NEW {_ms(stats.new.seconds_per_row())}"))
    return rows


def report_rows(report: CompareReport) -> list[tuple[str, str]]:
    old, new = report.old, report.new
    rows = [("OLD", f"{old.name} {old.version} ({old.path}, {_size(old.size_bytes)}, {old.digest})"),
            ("NEW", f"{new.name} {new.version} ({new.path}, {_size(new.size_bytes)}, {new.digest})")]
    if report.data:
        rows.append(("data", report.data + (f" (label: {report.label})" if report.label else "")))
    for name in report.methods:
        rows += method_rows(report.stats[name])
    if report.metric is not None:
        m = report.metric
        rows.append((f"{m.name} ({m.method})", f"OLD {m.old:.4f}, NEW {m.new:.4f}, delta {m.delta:+.4f}"))
    for change in report.schema:
        rows.append(("schema", ("BREAKING: " if change.breaking else "") + change.what))
    for req in report.requirements:
        rows.append(("requirement", f"{req['name']}: {req['old'] or '(none)'} -> {req['new'] or '(none)'}"))
    if report.diff_out:
        rows.append(("disagreements", report.diff_out))
    for result in report.results:
        rows.append((f"gate {result.name}", ("pass: " if result.passed else "FAIL: ") + result.detail))
    return rows
