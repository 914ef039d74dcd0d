"""Read and validate a notebook file with nbformat, and split it into code cells with their directives."""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat

from ..errors import NotebookError

# `# mlship: KEY [VALUE]` on a code cell's first line.
_DIRECTIVE = re.compile(r"^\s*#\s*mlship\s*:\s*(?P<key>[a-z_-]+)\s*(?P<value>.*?)\s*$")
DIRECTIVE_KEYS = ("skip", "model", "predict", "preprocess", "sample")


@dataclass(frozen=True)
class Cell:
    """One code cell. `number` is its 1-based position among all cells, as a user counts them in Jupyter."""

    number: int
    source: str
    directives: dict[str, str] = field(default_factory=dict)

    @property
    def skipped(self) -> bool:
        return "skip" in self.directives

    @property
    def first_line(self) -> str:
        for line in self.source.splitlines():
            if line.strip():
                return line.strip()
        return ""


@dataclass(frozen=True)
class Notebook:
    path: Path
    node: Any  # nbformat.NotebookNode
    cells: tuple[Cell, ...]
    sha256: str

    @property
    def kernel_name(self) -> str | None:
        spec = self.node.get("metadata", {}).get("kernelspec", {})
        name = spec.get("name")
        return name if isinstance(name, str) else None


def read_notebook(path: Path) -> Notebook:
    """Read `path`, validate it as an nbformat-4 notebook, and parse each code cell's directives."""
    path = Path(path)
    if not path.is_file():
        raise NotebookError(f"notebook not found: {path}", hint="check the path; mlship takes a .ipynb file")
    raw = path.read_bytes()
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NotebookError(
            f"{path} is not a notebook: it is not valid JSON ({exc})",
            hint="pass the .ipynb file saved by Jupyter, not a script or an export",
        ) from None
    if not isinstance(data, dict) or "cells" not in data and "worksheets" not in data:
        raise NotebookError(
            f"{path} is JSON but not a Jupyter notebook (no 'cells' list)",
            hint="pass the .ipynb file saved by Jupyter",
        )
    major = data.get("nbformat")
    if not isinstance(major, int) or major < 4:
        raise NotebookError(
            f"{path} uses notebook format {major!r}; mlship reads format 4 (Jupyter 4.0, 2015, and later)",
            hint="open and save it once in a current Jupyter or run `jupyter nbconvert --to notebook --inplace "
            f"{path}` to upgrade it",
        )
    if major > 4:
        raise NotebookError(
            f"{path} uses notebook format {major}, newer than this nbformat understands",
            hint="upgrade nbformat (pip install -U nbformat) or save the notebook as format 4",
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nbformat warns about missing cell ids in older 4.x files
            node = nbformat.reads(raw.decode("utf-8"), as_version=4)
            nbformat.validate(node)
    except nbformat.ValidationError as exc:
        raise NotebookError(
            f"{path} is not a valid notebook: {exc.message}",
            hint="open and save it in Jupyter to repair it",
        ) from None
    except Exception as exc:  # nbformat raises several types for broken structure
        raise NotebookError(f"{path} is not a valid notebook: {exc}", hint="open and save it in Jupyter") from None
    cells = tuple(
        Cell(number=i, source=c.source, directives=parse_directives(c.source, c.get("metadata", {}).get("tags", [])))
        for i, c in enumerate(node.cells, start=1)
        if c.cell_type == "code"
    )
    return Notebook(path=path.resolve(), node=node, cells=cells, sha256=hashlib.sha256(raw).hexdigest())


def parse_directives(source: str, tags: list[str] | None = None) -> dict[str, str]:
    """Directives from the first line comment (`# mlship: model best`) and from cell tags (`mlship:model=best`)."""
    found: dict[str, str] = {}
    for tag in tags or []:
        if not isinstance(tag, str) or not tag.startswith("mlship"):
            continue
        body = tag.split(":", 1)[1] if ":" in tag else tag[len("mlship") :].lstrip("-_")
        key, _, value = body.partition("=")
        if key.strip() in DIRECTIVE_KEYS:
            found[key.strip()] = value.strip()
    first = next((line for line in source.splitlines() if line.strip()), "")
    m = _DIRECTIVE.match(first)
    if m:
        if m.group("key") not in DIRECTIVE_KEYS:
            raise NotebookError(
                f"unknown mlship directive {first.strip()!r}",
                hint="directives are: " + ", ".join(f"# mlship: {k}" for k in DIRECTIVE_KEYS),
            )
        found[m.group("key")] = m.group("value")
    return found
