"""`[tool.mlship]` in a pyproject.toml beside the notebook: the same keys as the flags and directives."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import NotebookError

if TYPE_CHECKING:
    from ..sbom.licenses import LicensePolicy

CHOICE_KEYS = ("model", "predict", "preprocess", "sample")
OTHER_KEYS = ("name", "version", "requirements", "kernel", "timeout", "sample_rows", "deny_licenses",
              "deny_unknown_licenses")


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
    deny = table.get("deny_licenses", [])
    if not (isinstance(deny, str) or (isinstance(deny, list) and all(isinstance(d, str) for d in deny))):
        raise NotebookError(f"{path}: [tool.mlship] deny_licenses must be a list of SPDX license ids, not {deny!r}",
                            hint='e.g. deny_licenses = ["GPL-3.0-only", "AGPL-3.0-only"]')
    if not isinstance(table.get("deny_unknown_licenses", False), bool):
        raise NotebookError(f"{path}: [tool.mlship] deny_unknown_licenses must be true or false")
    return dict(table)


def license_policy(config: dict[str, Any], deny: list[str], deny_unknown: bool | None) -> LicensePolicy:
    """The license gate's policy: the flags when given, else [tool.mlship]'s deny_licenses / deny_unknown_licenses."""
    from ..sbom.licenses import LicensePolicy

    configured = config.get("deny_licenses", [])
    values = deny or ([configured] if isinstance(configured, str) else list(configured))
    where = "--deny-licenses" if deny else "[tool.mlship] deny_licenses"
    unknown = deny_unknown or bool(config.get("deny_unknown_licenses", False))
    return LicensePolicy.parse(values, fail_unknown=unknown, where=where)
