"""Bad input to `mlship package`: a clear message naming the thing, a non-zero exit, nothing half-written."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
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


def _processes_with(marker: str) -> list[str]:
    """Live processes whose environment holds `marker` (every process mlship starts inherits it)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if marker.encode() in (proc / "environ").read_bytes():
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return found


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc")
@pytest.mark.parametrize("sample, code, fragments", [
    ("numpy_input", 0, []),
    # The served function reaches matplotlib through sys.modules; only the notebook imported it (for a plot).
    # The fresh interpreter's snapshots pre-import the notebook's packages, yet never one the bundle does not
    # import itself: the check must still fail.
    ("notebook_only_import", 1, ["does not reproduce the notebook", "KeyError: 'matplotlib.colors'"]),
    ("cell_raises", 1, ["cell 3", "ValueError: boom"]),
])
def test_no_process_outlives_package(samples: Path, tmp_path: Path, sample: str, code: int,
                                     fragments: list[str]) -> None:
    marker = f"MLSHIP_TEST_RUN={uuid.uuid4().hex}"
    key, value = marker.split("=")
    proc = subprocess.run([sys.executable, "-m", "mlship", "package", str(samples / f"{sample}.ipynb"),
                           "-o", str(tmp_path / "b")], cwd=samples, capture_output=True, text=True,
                          env={**os.environ, key: value}, timeout=300)
    assert proc.returncode == code, proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr
    assert "Traceback" not in proc.stderr
    assert _processes_with(marker) == []
