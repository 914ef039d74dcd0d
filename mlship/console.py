"""The one rich Console mlship prints through, and the few ways it prints."""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.text import Text


def _plain() -> bool:
    # MLSHIP_PLAIN=1 (tests, log collectors) or a non-TTY stream (CI) gets plain lines, no live displays.
    return os.environ.get("MLSHIP_PLAIN") == "1" or not sys.stdout.isatty()


def _make(stderr: bool) -> Console:
    # Markup and highlighting off: paths and notebook text are printed literally (hatch does the same).
    plain = os.environ.get("MLSHIP_PLAIN") == "1"
    return Console(
        stderr=stderr,
        markup=False,
        highlight=False,
        emoji=False,
        no_color=plain or None,
        soft_wrap=True,
    )


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
