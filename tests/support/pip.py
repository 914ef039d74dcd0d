"""`pip list` of an environment that has no pip (mlship's images and installs remove it): the test's own pip,
copied as a bare package (no .dist-info, so it lists nothing of itself) into a folder put first on sys.path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pip

PIP_LIST = ("import sys; sys.path.insert(0, sys.argv[1]); from pip._internal.cli.main import main; "
            "sys.exit(main(['list', '--format', 'json', '--disable-pip-version-check', '--no-cache-dir']))")


def pip_folder(dest: Path) -> Path:
    """`dest` holding a copy of pip (readable by anyone: a container's user may read it)."""
    shutil.copytree(Path(pip.__file__).parent, dest / "pip", ignore=shutil.ignore_patterns("__pycache__"))
    for path in [dest, *dest.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return dest


def pip_list_command(python: str, folder: str) -> list[str]:
    """The command that prints `pip list --format json` of `python`'s environment, pip taken from `folder`."""
    return [python, "-I", "-c", PIP_LIST, folder]


def distributions(pip_list_json: str) -> set[tuple[str, str]]:
    """{(canonical name, version)} from pip list's JSON output (the last line: pip may warn before it)."""
    rows = json.loads(pip_list_json.strip().splitlines()[-1])
    return {(row["name"].lower().replace("_", "-").replace(".", "-"), row["version"]) for row in rows}


def sbom_distributions(cyclonedx: bytes | str) -> set[tuple[str, str]]:
    """{(canonical name, version)} of the Python packages (purl type pypi) a CycloneDX SBOM lists."""
    data = json.loads(cyclonedx)
    return {(c["purl"].split("/", 1)[1].split("@")[0], c["version"]) for c in data["components"]
            if c.get("purl", "").startswith("pkg:pypi/")}
