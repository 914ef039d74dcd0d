"""`[tool.mlship]` in a pyproject.toml beside the notebook: the same keys as the flags and directives."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from ..errors import NotebookError

CHOICE_KEYS = ("model", "predict", "preprocess", "sample")
OTHER_KEYS = ("name", "version", "requirements", "kernel", "timeout", "sample_rows")


def read_config(notebook_dir: Path) -> dict[str, Any]:
    path = notebook_dir / "pyproject.toml"
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise NotebookError(f"{path} is not valid TOML: {exc}", hint="fix the file or remove [tool.mlship]") from None
    table = data.get("tool", {}).get("mlship", {})
    if not isinstance(table, dict):
        raise NotebookError(f"{path}: [tool.mlship] must be a table")
    unknown = sorted(set(table) - set(CHOICE_KEYS) - set(OTHER_KEYS))
    if unknown:
        raise NotebookError(
            f"{path}: unknown key(s) in [tool.mlship]: {', '.join(unknown)}",
            hint="known keys: " + ", ".join(CHOICE_KEYS + OTHER_KEYS),
        )
    for key in CHOICE_KEYS + ("name", "version", "kernel"):
        if key in table and not isinstance(table[key], str):
            raise NotebookError(f"{path}: [tool.mlship] {key} must be a string, not {table[key]!r}")
    if "requirements" in table and not (
        isinstance(table["requirements"], list) and all(isinstance(r, str) for r in table["requirements"])
    ):
        raise NotebookError(f"{path}: [tool.mlship] requirements must be a list of strings")
    return dict(table)
