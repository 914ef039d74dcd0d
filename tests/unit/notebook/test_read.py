from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from mlship.errors import NotebookError
from mlship.notebook.read import parse_directives, read_notebook


def write(tmp_path: Path, *cells: object) -> Path:
    path = tmp_path / "nb.ipynb"
    nbformat.write(new_notebook(cells=list(cells)), path)
    return path


def test_cells_are_numbered_as_jupyter_shows_them(tmp_path: Path) -> None:
    path = write(tmp_path, new_markdown_cell("# title"), new_code_cell("x = 1"), new_code_cell("y = 2"))
    nb = read_notebook(path)
    assert [(c.number, c.source) for c in nb.cells] == [(2, "x = 1"), (3, "y = 2")]
    assert len(nb.sha256) == 64


def test_directive_on_first_line_and_in_tags() -> None:
    assert parse_directives("# mlship: skip\nslow()") == {"skip": ""}
    assert parse_directives("#mlship:model  grid.best_estimator_\n") == {"model": "grid.best_estimator_"}
    assert parse_directives("\n\n# mlship: sample X_test.head(3)") == {"sample": "X_test.head(3)"}
    assert parse_directives("x = 1  # mlship: skip") == {}
    assert parse_directives("x = 1", ["mlship:skip", "other"]) == {"skip": ""}
    assert parse_directives("x = 1", ["mlship:predict=m.predict(X)"]) == {"predict": "m.predict(X)"}


def test_unknown_directive_is_an_error_naming_it() -> None:
    with pytest.raises(NotebookError, match="unknown mlship directive '# mlship: modle best'") as info:
        parse_directives("# mlship: modle best\n")
    assert "# mlship: model" in (info.value.hint or "")


def test_not_json(tmp_path: Path) -> None:
    path = tmp_path / "x.ipynb"
    path.write_text("print('hello')")
    with pytest.raises(NotebookError, match="not valid JSON"):
        read_notebook(path)


def test_json_but_not_a_notebook(tmp_path: Path) -> None:
    path = tmp_path / "x.ipynb"
    path.write_text(json.dumps({"hello": 1}))
    with pytest.raises(NotebookError, match="not a Jupyter notebook"):
        read_notebook(path)


@pytest.mark.parametrize("version, message", [(3, "format 3"), (5, "format 5")])
def test_wrong_nbformat_version(tmp_path: Path, version: int, message: str) -> None:
    path = tmp_path / "x.ipynb"
    path.write_text(json.dumps({"nbformat": version, "nbformat_minor": 0, "cells": [], "metadata": {}}))
    with pytest.raises(NotebookError, match=message):
        read_notebook(path)


def test_invalid_structure(tmp_path: Path) -> None:
    path = tmp_path / "x.ipynb"
    path.write_text(json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {},
                                "cells": [{"cell_type": "code", "source": 3}]}))
    with pytest.raises(NotebookError, match="not a valid notebook"):
        read_notebook(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NotebookError, match="notebook not found"):
        read_notebook(tmp_path / "nope.ipynb")
