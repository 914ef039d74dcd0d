"""The one rich Console mlship prints through, and the few ways it prints."""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.text import Text


def _plain() -> bool:
    # MLSHIP_PLAIN=1 (tests, log collectors) or a non-TTY stream (CI) gets plain lines, no live displays.
    return os.environ.get("MLSHIP_PLAIN") == "1" or not sys.stdout.isatty()


# The width when not writing to a terminal (CI logs, pipes, files), where rich would assume 80 columns and cut
# tables (the golden cases') to fit: wide enough that nothing mlship prints is cut; a table is only as wide as its
# content. COLUMNS, when set, still wins.
UNBOUNDED_WIDTH = 1000


def _make(stderr: bool) -> Console:
    # Markup and highlighting off: paths and notebook text are printed literally (hatch does the same).
    plain = os.environ.get("MLSHIP_PLAIN") == "1"
    stream = sys.stderr if stderr else sys.stdout
    wide = "COLUMNS" not in os.environ and not _isatty(stream)
    return Console(
        stderr=stderr,
        markup=False,
        highlight=False,
        emoji=False,
        no_color=plain or None,
        soft_wrap=True,
        width=UNBOUNDED_WIDTH if wide else None,
    )


def _isatty(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


console = _make(stderr=False)
err_console = _make(stderr=True)


def is_interactive() -> bool:
    """True when a live progress display makes sense."""
    return not _plain() and console.is_terminal


def display_error(message: str, hint: str | None = None) -> None:
    err_console.print(Text("error: ", style="bold red") + Text(message))
    if hint:
        err_console.print(Text("hint: ", style="dim") + Text(hint, style="dim"))


def display_warning(message: str) -> None:
    err_console.print(Text("warning: ", style="yellow") + Text(message))


def display_success(message: str) -> None:
    console.print(Text("✓ ", style="green") + Text(message))


def display_info(message: str) -> None:
    console.print(Text(message))
