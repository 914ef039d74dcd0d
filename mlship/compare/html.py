"""`mlship compare --html FILE`: one self-contained page a reviewer opens offline: the report's tables and three
plots drawn here as inline SVG (the label transition matrix, the |new - old| histogram, the metric bars); no
script, no stylesheet or font from anywhere else."""

from __future__ import annotations

import math
from html import escape
from typing import Any

from .report import CompareReport
from .stats import MethodStats
from .text import report_rows

STYLE = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:70em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;
vertical-align:top}.pass{color:#1a7f37}.fail{color:#cf222e;font-weight:bold}svg{display:block;margin:.5em 0 1.5em}
h2{margin-top:1.6em}"""


def _svg(width: int, height: int, body: str, title: str) -> str:
    return (f'<svg width="{width}" height="{height}" role="img" '
            f'viewBox="0 0 {width} {height}"><title>{escape(title)}</title>{body}</svg>')


def _text(x: float, y: float, s: Any, size: int = 11, anchor: str = "start", extra: str = "") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" {extra}>'
            f'{escape(str(s))}</text>')


def transition_svg(stats: MethodStats) -> str:
    assert stats.transitions is not None
    labels = sorted({label for pair in stats.transitions for label in pair}, key=lambda v: (str(type(v)), str(v)))
    cell, left, top = 44, 90, 50
    peak = max(stats.transitions.values())
    parts = [_text(left + cell * len(labels) / 2, 14, "NEW", 12, "middle"),
             _text(12, top + cell * len(labels) / 2, "OLD", 12, "middle", 'transform="rotate(-90 12 '
                   f'{top + cell * len(labels) / 2:.1f})"')]
    for j, label in enumerate(labels):
        parts.append(_text(left + cell * j + cell / 2, top - 8, label, 11, "middle"))
        parts.append(_text(left - 8, top + cell * j + cell / 2 + 4, label, 11, "end"))
    for i, old in enumerate(labels):
        for j, new in enumerate(labels):
            n = stats.transitions.get((old, new), 0)
            shade = 0.08 + 0.85 * (n / peak) if n else 0.0
            colour = f"rgba(31,111,235,{shade:.2f})" if old == new else f"rgba(207,34,46,{shade:.2f})"
            x, y = left + cell * j, top + cell * i
            parts.append(f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{colour}" stroke="#ccc"/>')
            parts.append(_text(x + cell / 2, y + cell / 2 + 4, f"{n:,}", 11, "middle"))
    size = left + cell * len(labels) + 10
    return _svg(size, top + cell * len(labels) + 10, "".join(parts), f"{stats.method}: OLD label -> NEW label")


def histogram_svg(stats: MethodStats, bins: int = 20) -> str:
    values = list(stats.diffs)
    high = max(values) or 1.0
    counts = [0] * bins
    for value in values:
        counts[min(bins - 1, int(value / high * bins))] += 1
    width, height, left, bottom = 520, 220, 50, 30
    bar = (width - left - 10) / bins
    peak = max(counts) or 1
    parts = [f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" stroke="#444"/>']
    for i, n in enumerate(counts):
        h = (height - bottom - 20) * n / peak
        parts.append(f'<rect x="{left + i * bar + 1:.1f}" y="{height - bottom - h:.1f}" width="{bar - 2:.1f}" '
                     f'height="{h:.1f}" fill="#1f6feb"><title>{n:,} rows</title></rect>')
    parts += [_text(left, height - 12, "0"), _text(width - 10, height - 12, f"{high:.3g}", anchor="end"),
              _text(left - 6, 24, f"{peak:,}", anchor="end"),
              _text((width + left) / 2, height - 2, "|new - old| per row", anchor="middle")]
    return _svg(width, height, "".join(parts), f"{stats.method}: distribution of |new - old|")


def metric_svg(report: CompareReport) -> str:
    m = report.metric
    assert m is not None
    width, left, bar_h = 520, 60, 28
    scale = max(abs(m.old), abs(m.new)) or 1.0
    parts = []
    for i, (who, value, colour) in enumerate((("OLD", m.old, "#8c959f"), ("NEW", m.new, "#1f6feb"))):
        w = (width - left - 80) * abs(value) / scale if math.isfinite(value) else 0
        y = 10 + i * (bar_h + 10)
        parts += [_text(left - 8, y + bar_h / 2 + 4, who, 12, "end"),
                  f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{colour}"/>',
                  _text(left + w + 6, y + bar_h / 2 + 4, f"{value:.4f}", 12)]
    return _svg(width, 2 * (bar_h + 10) + 20, "".join(parts), f"{m.name}: OLD and NEW")


def _table(rows: list[tuple[str, str]]) -> str:
    cells = []
    for key, value in rows:
        css = ' class="fail"' if value.startswith(("FAIL", "BREAKING")) else (
            ' class="pass"' if value.startswith("pass") else "")
        cells.append(f"<tr><th>{escape(key)}</th><td{css}>{escape(value)}</td></tr>")
    return "<table>" + "".join(cells) + "</table>"


def render_html(report: CompareReport) -> str:
    verdict = "passed" if report.passed else "FAILED"
    title = f"mlship compare: {report.old.name} {report.old.version} -> {report.new.name} {report.new.version}"
    body = [f"<h1>{escape(title)}</h1>",
            f'<p class="{"pass" if report.passed else "fail"}">The comparison {verdict} its gates.</p>',
            _table(report_rows(report))]
    if report.metric is not None:
        body += [f"<h2>{escape(report.metric.name)}</h2>", metric_svg(report)]
    for name in report.methods:
        stats = report.stats[name]
        if stats.kind == "label" and stats.transitions:
            body += [f"<h2>{escape(name)}: label transitions</h2>", transition_svg(stats)]
        elif stats.kind == "number":
            body += [f"<h2>{escape(name)}: |new - old|</h2>", histogram_svg(stats)]
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n")
