"""Run one Python snippet of the model's page as a person would paste it, and write what it printed as JSON.

Run by a test with the python that has the snippet's client (the test venv for `requests` and `tritonclient`, the
MLflow client venv for ScoringServerClient; see tests/e2e/test_browser_page.py), never imported by the tests.
The snippet comes on stdin, exactly as the page shows it, and runs as a script; only its own top-level `print` is
caught (a `print` in its globals, so the libraries' output is left alone), and the last value it printed is
written to stdout as plain JSON: a DataFrame with one column as that column, numpy arrays as lists, bytes as
text.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def plain(value: Any) -> Any:
    if hasattr(value, "columns") and len(value.columns) == 1:  # MLflow's predictions frame of one column
        value = value.iloc[:, 0]
    if hasattr(value, "to_numpy"):
        value = value.to_numpy()
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def main() -> None:
    printed: list[Any] = []
    code = sys.stdin.read()
    namespace = {"__name__": "__main__", "print": lambda *values, **_: printed.append(values[0] if values else None)}
    exec(compile(code, "<the page's snippet>", "exec"), namespace)  # noqa: S102 - running it is the test
    if not printed:
        sys.exit("the snippet printed nothing")
    sys.stdout.write(json.dumps(plain(printed[-1])))


if __name__ == "__main__":
    main()
