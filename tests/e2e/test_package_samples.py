"""Realistic notebooks packaged in auto mode: what is served, and that the bundle verifies in a fresh process."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

EXPECTED = {
    "several_models_last_wins": "rf.predict(X)",
    "proba_subscript": "clf.predict_proba(X)[:, 1]",
    "keyword_data": "clf.predict(X=X)",
    "decision_function": "svm.decision_function(X)",
    "nested_in_metric": "knn.predict(X)",
    "gridsearch": "grid.best_estimator_.predict(X)",
    "plot_helper_after": "clf.predict(X)",
    "preprocess_wrap": "model.predict(clean(X))",
    "function_defined_model": "score(X, model)",
    "numpy_input": "model.predict(X)",
    "regression": "reg.predict(X)",
    "plots_and_exploration": "clf.predict(X)",
    "magics": "model.predict(X)",
    "timed_predict": "model.predict(X)",
    "directives": "best.predict(X)",
    "main_class": "pipe.predict(X)",
    "lambda_transformer": "reg.predict(X)",
    "relative_data": "clf.predict(X)",
}


@pytest.mark.parametrize("sample", sorted(EXPECTED))
def test_auto_mode(cli: Any, samples: Path, tmp_path: Path, sample: str) -> None:
    out = tmp_path / sample
    result = cli("package", samples / f"{sample}.ipynb", "-o", out)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "mlship.json").read_text())
    assert manifest["methods"][0] == {"name": "predict", "expression": EXPECTED[sample]}
    assert cli("verify", out).exit_code == 0


def test_skip_directive_cell_is_not_executed(cli: Any, samples: Path) -> None:
    # directives.ipynb has a cell that raises if run; packaging succeeds only because it is skipped.
    result = cli("inspect", samples / "directives.ipynb")
    assert result.exit_code == 0, result.output
    assert "skipped: # mlship: skip" in result.output
    assert "`# mlship: model` directive" in result.output


def test_flags_beat_directives_beat_config(cli: Any, samples: Path, tmp_path: Path) -> None:
    folder = tmp_path / "proj"
    folder.mkdir()
    shutil.copy(samples / "directives.ipynb", folder / "nb.ipynb")
    (folder / "pyproject.toml").write_text('[tool.mlship]\nmodel = "lr"\nname = "flowers"\nsample = "X_test.head(3)"\n')
    result = cli("package", folder / "nb.ipynb", "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["methods"]["predict"] == "best.predict(X)"  # the directive beats the config's model
    assert data["sample"] == "X_test.head(3)"  # the config gives the sample
    assert data["name"] == "flowers"
    data = json.loads(cli("package", folder / "nb.ipynb", "--dry-run", "--json", "--model", "rf").stdout)
    assert data["methods"]["predict"] == "rf.predict(X)"  # the flag beats both


def test_bad_config_is_a_clear_error(cli: Any, samples: Path, tmp_path: Path) -> None:
    folder = tmp_path / "proj"
    folder.mkdir()
    shutil.copy(samples / "regression.ipynb", folder / "nb.ipynb")
    (folder / "pyproject.toml").write_text('[tool.mlship]\nmodle = "lr"\n')
    result = cli("package", folder / "nb.ipynb", "--dry-run")
    assert result.exit_code == 1 and "unknown key(s) in [tool.mlship]: modle" in result.output


def test_predict_and_sample_flags(cli: Any, samples: Path, tmp_path: Path) -> None:
    out = tmp_path / "b"
    result = cli("package", samples / "score_only.ipynb", "-o", out, "--sample", "X_test",
                 "--predict", "clf.predict_proba(X)[:, 0] > 0.5")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "mlship.json").read_text())
    assert manifest["methods"] == [{"name": "predict", "expression": "clf.predict_proba(X)[:, 0] > 0.5"}]
    assert manifest["selection"]["source"] == "--predict"


def test_json_output_for_ci(cli: Any, samples: Path, tmp_path: Path) -> None:
    result = cli("package", samples / "regression.ipynb", "-o", tmp_path / "b", "--json", "--name", "diab",
                 "--version", "2.0.1", "-r", "scikit-learn>=1.4")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["name"] == "diab" and data["golden"]["cases"] == data["golden"]["passed"] > 0
    assert "scikit-learn>=1.4" in data["requirements"]
    assert json.loads((tmp_path / "b" / "mlship.json").read_text())["version"] == "2.0.1"


def test_module_beside_the_notebook_travels_in_the_bundle(cli: Any, samples: Path, tmp_path: Path) -> None:
    out = tmp_path / "b"
    result = cli("package", samples / "local_module" / "local.ipynb", "-o", out)
    assert result.exit_code == 0, result.output
    assert (out / "code" / "helpers.py").is_file()
    manifest = json.loads((out / "mlship.json").read_text())
    assert manifest["local_modules"] == ["helpers"]
    assert any(r.startswith("numpy==") for r in manifest["requirements"])  # helpers imports numpy
    assert cli("verify", out).exit_code == 0


def test_named_kernel(cli: Any, samples: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    spec = tmp_path / "jupyter" / "kernels" / "ml-env"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "ML env", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    result = cli("package", samples / "regression.ipynb", "-o", tmp_path / "b", "--kernel", "ml-env")
    assert result.exit_code == 0, result.output
