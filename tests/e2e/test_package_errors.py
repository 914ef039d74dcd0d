"""Bad input to `mlship package`: a clear message naming the thing, a non-zero exit, nothing half-written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e


def package(cli: Any, nb: Path, out: Path, *args: str) -> Any:
    result = cli("package", nb, "-o", out, *args)
    leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
    assert leftovers == [], f"half-written files left behind: {leftovers}"
    return result


def assert_error(result: Any, *fragments: str) -> None:
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert "error:" in result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


@pytest.mark.parametrize("sample, fragments", [
    ("not_json", ["not valid JSON"]),
    ("not_a_notebook", ["not a Jupyter notebook"]),
    ("old_format", ["format 3", "nbconvert"]),
    ("future_format", ["format 5"]),
    ("cell_raises", ["cell 3", "ValueError: boom", "hint:"]),
    ("no_model", ["no model found", "--model"]),
    ("empty", ["no model found"]),
    ("two_models", ["several fitted models", "lr (", "rf (", "--model NAME"]),
    ("score_only", ["no sample input", "--sample"]),
    ("rebound_name", ["binds `model` to something else afterwards"]),
    ("unpicklable_model", ["cannot capture `model`", "model._lock", "lock"]),
    ("uncapturable_preprocess", ["cannot capture `log`", "preprocess (cell", "TextIOWrapper"]),
])
def test_bad_notebooks(cli: Any, samples: Path, tmp_path: Path, sample: str, fragments: list[str]) -> None:
    out = tmp_path / "bundle"
    result = package(cli, samples / f"{sample}.ipynb", out)
    assert_error(result, *fragments)
    assert not out.exists()


@pytest.mark.parametrize("args, fragments", [
    (["--predict", "clf.predict(X"], ["is not a Python expression"]),
    (["--predict", "nope.predict(X)"], ["uses `nope`, which is not defined"]),
    (["--model", "clff"], ["--model clff", "NameError", "fitted models in the notebook: knn ("]),
    (["--model", "X_test"], ["has no predict method"]),
    (["--kernel", "no-such-kernel"], ["no Jupyter kernel named 'no-such-kernel'"]),
    (["--preprocess", "nothing_here"], ["--preprocess function nothing_here"]),
])
def test_bad_flags(cli: Any, samples: Path, tmp_path: Path, args: list[str], fragments: list[str]) -> None:
    out = tmp_path / "bundle"
    assert_error(package(cli, samples / "nested_in_metric.ipynb", out, *args), *fragments)
    assert not out.exists()


def test_existing_output_is_refused_without_force(cli: Any, samples: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert_error(package(cli, samples / "regression.ipynb", out), "already exists", "--force")
    assert (out / "keep.txt").read_text() == "mine"
    result = package(cli, samples / "regression.ipynb", out, "--force")
    assert result.exit_code == 0, result.output
    assert not (out / "keep.txt").exists() and (out / "mlship.json").exists()


def test_missing_notebook(cli: Any, tmp_path: Path) -> None:
    assert_error(cli("package", tmp_path / "nope.ipynb"), "notebook not found")


def test_verify_on_a_folder_that_is_not_a_bundle(cli: Any, tmp_path: Path) -> None:
    assert_error(cli("verify", tmp_path), "not an mlship bundle")
    assert_error(cli("serve", tmp_path), "not an mlship bundle")


def test_tampered_bundle_fails_verify(cli: Any, samples: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    assert package(cli, samples / "regression.ipynb", out).exit_code == 0
    with (out / "artifacts" / "values.pkl").open("ab") as fh:
        fh.write(b"x")
    assert_error(cli("verify", out), "values.pkl")


def test_cell_timeout(cli: Any, tmp_path: Path) -> None:
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nb = tmp_path / "slow.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell("import time"), new_code_cell("time.sleep(30)")]), nb)
    result = package(cli, nb, tmp_path / "out", "--timeout", "2")
    assert_error(result, "cell 2 ('time.sleep(30)') did not finish within 2 s", "--timeout", "# mlship: skip")
