"""`mlship compare OLD NEW` on real bundles: one notebook (tests/samples/notebooks/regularised.ipynb) packaged with
two regularisation strengths, which disagree on known rows, and once with an extra input column (breaking for
clients). Each comparison is a real `mlship` process that runs both bundles in processes of their own."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cli

FEATURES = ["mean radius", "mean texture", "mean smoothness", "mean concavity"]


def variant(samples: Path, out: Path, cli: Cli, name: str, c: float, extra: list[str]) -> Path:
    source = (samples / "regularised.ipynb").read_text()
    source = source.replace("C = 1.0", f"C = {c}")
    if extra:
        source = source.replace('\\"mean concavity\\"]', '\\"mean concavity\\", ' +
                                ", ".join(f'\\"{e}\\"' for e in extra) + "]")
    notebook = out / f"{name}.ipynb"
    notebook.write_text(source)
    result = cli("package", notebook, "-o", out / name, "--name", "cancer", "--version", name)
    assert result.exit_code == 0, result.output
    return out / name


@pytest.fixture(scope="module")
def bundles(samples: Path, cli: Cli, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("compare")
    return {"old": variant(samples, out, cli, "1.0.0", 1.0, []),
            "new": variant(samples, out, cli, "2.0.0", 0.01, []),
            "wide": variant(samples, out, cli, "3.0.0", 1.0, ["mean area"])}


def expected() -> tuple[Any, Any, Any, Any]:
    """The test rows, their labels and both versions' predictions, computed here as the notebook does."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_breast_cancer(as_frame=True)
    x_train, x_test, y_train, y_test = train_test_split(data.data[FEATURES], data.target, test_size=0.3,
                                                        random_state=0)
    preds = [make_pipeline(StandardScaler(), LogisticRegression(C=c)).fit(x_train, y_train).predict(x_test)
             for c in (1.0, 0.01)]
    return x_test, y_test, preds[0], preds[1]


def mlship(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mlship", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "MLSHIP_PLAIN": "1"}, check=False)


def test_compare_over_labelled_data_passes_its_gates_and_reports_metrics(bundles: dict[str, Path],
                                                                          tmp_path: Path) -> None:
    from sklearn.metrics import accuracy_score, f1_score

    x_test, y_test, old_pred, new_pred = expected()
    frame = x_test.copy()
    frame["label"] = y_test
    frame.to_csv(tmp_path / "holdout.csv", index=False)
    result = mlship("compare", bundles["old"], bundles["new"], "--data", "holdout.csv", "--label", "label",
                    "--metric", "f1", "--max-disagreement", "0.5", "--min-delta", "-0.2", "--method", "predict",
                    "--method", "predict_proba", "--diff-out", "diffs.jsonl", "--html", "report.html", "--json",
                    cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["passed"] is True
    for role in ("old", "new"):
        manifest = (bundles[role] / "mlship.json").read_bytes()
        assert report[role]["digest"] == "sha256:" + hashlib.sha256(manifest).hexdigest()
        assert report[role]["size_bytes"] > 0
    metric = report["metric"]
    assert metric["name"] == "f1" and metric["method"] == "predict"
    assert metric["old"] == pytest.approx(f1_score(y_test, old_pred))
    assert metric["new"] == pytest.approx(f1_score(y_test, new_pred))
    assert metric["delta"] == pytest.approx(metric["new"] - metric["old"])
    assert accuracy_score(y_test, old_pred) != accuracy_score(y_test, new_pred)

    predict = report["methods"]["predict"]
    disagree = [i for i, (a, b) in enumerate(zip(old_pred, new_pred, strict=True)) if a != b]
    assert disagree, "the two regularisation strengths must disagree on some rows"
    assert predict["kind"] == "label" and predict["rows"] == {"golden": 5, "data": len(y_test)}
    assert predict["disagreed"] == len(disagree)
    moved = {(t["old"], t["new"]): t["rows"] for t in predict["transitions"]}
    assert sum(moved.values()) == len(y_test) + 5
    assert moved.get((0, 1), 0) + moved.get((1, 0), 0) == len(disagree)
    proba = report["methods"]["predict_proba"]
    assert proba["kind"] == "number" and 0 < proba["abs_diff"]["p50"] <= proba["abs_diff"]["p95"] <= \
        proba["abs_diff"]["max"] < 1
    assert all(v > 0 for v in predict["seconds_per_row"].values())
    assert [g["gate"] for g in report["gates"]] == ["schema", "max_disagreement", "min_delta"]

    # --diff-out: every disagreeing row of --data (CSV line = index + 2), with its input and both answers.
    rows = [json.loads(line) for line in (tmp_path / "diffs.jsonl").read_text().splitlines()]
    data_predict = [r for r in rows if r["method"] == "predict" and r["input_set"] == "data"]
    assert [r["row"] - 2 for r in data_predict] == disagree
    first = data_predict[0]
    assert float(first["input"]["mean radius"]) == pytest.approx(x_test.iloc[disagree[0]]["mean radius"])
    assert (first["old"], first["new"]) == (int(old_pred[disagree[0]]), int(new_pred[disagree[0]]))

    page = (tmp_path / "report.html").read_text()
    assert "<svg" in page and "label transitions" in page and "|new - old|" in page and "f1" in page
    assert not re.search(r"https?://", page) and "<script" not in page


def test_compare_fails_a_tight_gate_with_exit_1(bundles: dict[str, Path], tmp_path: Path) -> None:
    x_test, _, old_pred, new_pred = expected()
    x_test.to_parquet(tmp_path / "rows.parquet", index=False)  # parquet, read by both bundles and the host
    result = mlship("compare", bundles["old"], bundles["new"], "--data", "rows.parquet", "--method", "predict",
                    "--max-disagreement", "0", "--diff-out", "diffs.jsonl", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(r"^gate max_disagreement: FAIL: predict: \d+\.\d\d% of rows disagree", result.stdout, re.M)
    disagree = [i + 1 for i, (a, b) in enumerate(zip(old_pred, new_pred, strict=True)) if a != b]
    rows = [json.loads(line) for line in (tmp_path / "diffs.jsonl").read_text().splitlines()]
    assert [r["row"] for r in rows if r["input_set"] == "data"] == disagree  # parquet rows count from 1
    assert "fails the comparison gates: max_disagreement" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_new_required_column_is_breaking(bundles: dict[str, Path], tmp_path: Path) -> None:
    result = mlship("compare", bundles["old"], bundles["wide"], "--method", "predict", "--json", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["schema_changes"] == [
        {"change": "NEW requires the column 'mean area', which OLD did not", "breaking": True}]
    gate = report["gates"][0]
    assert gate["gate"] == "schema" and gate["passed"] is False and "breaking for clients" in gate["detail"]
    # NEW refuses OLD's golden rows (they lack the column); OLD takes NEW's (it ignores the extra one).
    refused = report["methods"]["predict"]["refused"]
    assert refused["old"] == 0 and refused["new"] > 0


def test_compare_cannot_run_exits_2(bundles: dict[str, Path], tmp_path: Path) -> None:
    result = mlship("compare", bundles["old"], tmp_path, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: NEW: ") and "hint: " in result.stderr
    result = mlship("compare", bundles["old"], bundles["new"], "--min-delta", "0", cwd=tmp_path)
    assert result.returncode == 2 and "--min-delta needs the true labels" in result.stderr
