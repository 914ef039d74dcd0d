"""A plain-text progress line for long jobs (the runtime imports nothing heavy, so no rich).

On a terminal the line is redrawn in place, at most every `interval` seconds, however often it is updated. When
the stream is not a terminal (a log file, CI, `docker logs`) nothing is drawn and only the final summary is
written: a log of carriage-return redraws helps no one.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from typing import TextIO


class ProgressLine:
    def __init__(
        self,
        stream: TextIO,
        label: str,
        *,
        interval: float = 0.25,
        live: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.label = label
        self.interval = interval
        self.live = stream.isatty() if live is None else live
        self.clock = clock
        self.start = clock()
        self._drawn_at: float | None = None
        self._width = 0

    def update(self, rows: int, fraction: float | None) -> None:
        """Report `rows` done so far and the fraction of the input read (None when unknown)."""
        if not self.live:
            return
        now = self.clock()
        if self._drawn_at is not None and now - self._drawn_at < self.interval:
            return
        self._drawn_at = now
        self._draw(render_progress(self.label, rows, fraction, now - self.start))

    def finish(self, summary: str) -> None:
        """Clear the progress line (on a terminal) and write the summary line."""
        if self.live and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
        self.stream.write(summary + "\n")
        self.stream.flush()

    def _draw(self, text: str) -> None:
        text = text[: max(20, shutil.get_terminal_size().columns - 1)]
        self.stream.write("\r" + text + " " * max(0, self._width - len(text)))
        self.stream.flush()
        self._width = len(text)


def render_progress(label: str, rows: int, fraction: float | None, elapsed: float, width: int = 24) -> str:
    """`label [#######.......]  31%  310,000 rows  152,000 rows/s  ETA 4 s`; no bar when the size is unknown."""
    rate = rows / elapsed if elapsed > 0 else 0.0
    parts = [label]
    if fraction is not None:
        filled = int(width * min(max(fraction, 0.0), 1.0))
        parts.append(f"[{'#' * filled}{'.' * (width - filled)}] {fraction:4.0%}")
    parts.append(f"{rows:,} rows")
    if rate:
        parts.append(f"{rate:,.0f} rows/s")
    if fraction and 0 < fraction < 1 and elapsed > 0:
        parts.append(f"ETA {format_seconds(elapsed * (1 - fraction) / fraction)}")
    return "  ".join(parts)


def format_seconds(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"
    hours, rest = divmod(round(seconds), 3600)
    return f"{hours} h {rest // 60:02d} min"
