from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlship.bundle import manifest as mf
from mlship.errors import BundleError


def test_requirements_are_pinned_sorted_and_exclude_notebook_tooling() -> None:
    reqs = mf.build_requirements({"scikit-learn": "1.9.1", "ipykernel": "7.0", "numpy": "2.4.6",
                                  "matplotlib-inline": "0.2"})
    names = [r.split("==")[0] for r in reqs]
    assert names == sorted(names, key=mf.canonical)
    assert "scikit-learn==1.9.1" in reqs and "numpy==2.4.6" in reqs
    assert not any(r.startswith(("ipykernel", "matplotlib-inline")) for r in reqs)
    assert any(r.startswith("starlette==") for r in reqs) and any(r.startswith("uvicorn==") for r in reqs)


def test_requirement_overrides_replace_by_normalized_name() -> None:
    reqs = mf.build_requirements({"scikit-learn": "1.9.1"}, ["Scikit_Learn>=1.4", "xgboost==2.1.0"])
    assert "Scikit_Learn>=1.4" in reqs and "scikit-learn==1.9.1" not in reqs
    assert "xgboost==2.1.0" in reqs
    with pytest.raises(BundleError, match="is not a requirement"):
        mf.build_requirements({}, ["==1.0"])


def test_created_at_honours_source_date_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    assert mf.created_at() == "1970-01-01T00:00:00Z"


def _tiny_bundle(root: Path) -> Path:
    from mlship.runtime import _contract as contract

    root.mkdir()
    (root / "predictor.py").write_text("METHODS = {'predict': lambda X: X}\n")
    manifest = contract.Manifest(
        name="tiny", version="0.1.0", runtime_version="1", python=contract.PythonInfo("3.11.7"),
        methods=(contract.Method("predict", "X"),), input=contract.InputSchema("list", element=contract.Column(None)),
    )
    golden = contract.Golden((contract.GoldenCase("predict-0", "predict", [1], [1]),))
    contract.write(root, manifest, golden)
    return root


def test_open_bundle_reads_through_the_contract(tmp_path: Path) -> None:
    bundle = mf.open_bundle(_tiny_bundle(tmp_path / "b"))
    assert bundle.manifest.name == "tiny" and bundle.golden.cases[0].id == "predict-0"
    assert mf.open_manifest(tmp_path / "b").method_names == ["predict"]


def test_open_bundle_errors_name_the_problem_and_hint(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="is not an mlship bundle: mlship.json is missing") as missing:
        mf.open_bundle(tmp_path)
    assert missing.value.hint and "mlship package" in missing.value.hint
    root = _tiny_bundle(tmp_path / "b")
    (root / "predictor.py").write_text("changed\n")
    with pytest.raises(BundleError, match="predictor.py has sha256") as tampered:
        mf.open_bundle(root)
    assert tampered.value.hint and "package the notebook again" in tampered.value.hint
    assert mf.open_bundle(root, check_digests=False).manifest.name == "tiny"
    (root / "mlship.json").write_text(json.dumps({"format": 99, "mlship_version": "9.0"}))
    with pytest.raises(BundleError, match="bundle format 99, written by mlship 9.0"):
        mf.open_manifest(root)
    (root / "mlship.json").write_text("{broken")
    with pytest.raises(BundleError, match="cannot be read as JSON"):
        mf.open_manifest(root)
