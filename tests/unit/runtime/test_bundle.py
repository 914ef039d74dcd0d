from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mlship.runtime._bundle import BundleLoadError, load_bundle
from mlship.runtime._contract import FORMAT, READABLE_FORMATS

from .sample_bundles import edit_golden, edit_manifest, rehash

MakeBundle = Callable[[str], Path]


def refusal(path: Path) -> str:
    with pytest.raises(BundleLoadError) as caught:
        load_bundle(path)
    return str(caught.value)


def test_loads_manifest_methods_schema_and_golden(sample_bundle: MakeBundle) -> None:
    bundle = load_bundle(sample_bundle("iris_frame"))
    assert bundle.manifest.name == "iris-frame"
    assert sorted(bundle.methods) == ["predict", "predict_proba"]
    assert bundle.schema.kind == "dataframe"
    assert [case.id for case in bundle.golden.cases][:2] == ["predict-0", "predict-1"]
    assert (bundle.golden.rtol, bundle.golden.atol) == (1e-6, 1e-9)
    frame = pd.DataFrame([bundle.schema.example])
    assert bundle.methods["predict"](frame).tolist() == [0]
    assert "mlship_predictor" in sys.modules


def test_not_a_bundle(tmp_path: Path) -> None:
    assert refusal(tmp_path) == f"{tmp_path} is not a bundle: it has no mlship.json"


def test_manifest_not_json(make_bundle: MakeBundle) -> None:
    bundle = make_bundle("raises")
    (bundle / "mlship.json").write_text("{not json")
    assert refusal(bundle).startswith(
        f"{bundle / 'mlship.json'} cannot be read as JSON: Expecting property name"
    )


def test_newer_format_is_refused_naming_the_mlship_that_wrote_it(make_bundle: MakeBundle) -> None:
    bundle = make_bundle("raises")
    newer = FORMAT + 1
    edit_manifest(bundle, format=newer, mlship_version="0.4.0")
    readable = " and ".join(str(n) for n in READABLE_FORMATS)
    assert refusal(bundle) == (
        f"{bundle / 'mlship.json'} is in bundle format {newer}, written by mlship 0.4.0; this mlship runtime reads "
        f"formats {readable}: use mlship 0.4.0 or newer to serve, verify or build it"
    )


def test_missing_manifest_keys(make_bundle: MakeBundle) -> None:
    bundle = make_bundle("raises")
    manifest = json.loads((bundle / "mlship.json").read_text())
    del manifest["methods"], manifest["input"]
    (bundle / "mlship.json").write_text(json.dumps(manifest))
    assert refusal(bundle) == f"{bundle / 'mlship.json'} lacks 'methods', 'input'"


def test_tampered_artifact_is_refused_naming_file_and_digests(make_bundle: MakeBundle) -> None:
    bundle = make_bundle("iris_frame")
    pickle_file = bundle / "artifacts" / "values.pkl"
    expected = hashlib.sha256(pickle_file.read_bytes()).hexdigest()
    pickle_file.write_bytes(pickle_file.read_bytes() + b"\0")
    actual = hashlib.sha256(pickle_file.read_bytes()).hexdigest()
    assert refusal(bundle) == (
        f"artifact artifacts/values.pkl has sha256 {actual}, but mlship.json expects "
        f"{expected}: the file changed after packaging"
    )


def test_tampered_predictor_is_refused_before_it_runs(make_bundle: MakeBundle) -> None:
    bundle = make_bundle("raises")
    marker = bundle / "ran"
    with (bundle / "predictor.py").open("a") as predictor:
        predictor.write(f"\nopen({str(marker)!r}, 'w').close()\n")
    assert refusal(bundle).startswith("artifact predictor.py has sha256")
    assert not marker.exists()


def test_missing_artifact(make_bundle: MakeBundle) -> None:
    bundle = make_bundle("raises")
    (bundle / "requirements.txt").unlink()
    assert refusal(bundle) == f"artifact requirements.txt is missing from the bundle {bundle}"


def test_unlisted_predictor_is_refused(make_bundle: MakeBundle) -> None:
    bundle = make_bundle("raises")
    artifacts = json.loads((bundle / "mlship.json").read_text())["artifacts"]
    del artifacts["predictor.py"]
    edit_manifest(bundle, artifacts=artifacts)
    assert refusal(bundle) == "mlship.json: 'artifacts' does not list predictor.py"


def test_artifact_paths_stay_inside_the_bundle(make_bundle: MakeBundle) -> None:
    bundle = make_bundle("raises")
    artifacts = json.loads((bundle / "mlship.json").read_text())["artifacts"]
    edit_manifest(bundle, artifacts={**artifacts, "../outside": "0" * 64})
    assert refusal(bundle) == f"{bundle / 'mlship.json'}, artifacts: '../outside' is not a path inside the bundle"


def test_other_python_minor_version_is_refused(make_bundle: MakeBundle) -> None:
    bundle = make_bundle("raises")
    edit_manifest(bundle, python={"version": "3.10.4", "implementation": "CPython"})
    ours = ".".join(map(str, sys.version_info[:3]))
    assert refusal(bundle) == (
        f"the bundle was packaged with Python 3.10.4 and must be served by Python 3.10, "
        f"but this is Python {ours}; its pickled values would not load"
    )


def test_other_python_patch_version_is_fine(make_bundle: MakeBundle) -> None:
    bundle = make_bundle("raises")
    major, minor = sys.version_info[:2]
    edit_manifest(bundle, python={"version": f"{major}.{minor}.99", "implementation": "CPython"})
    load_bundle(bundle)


def test_other_runtime_version_is_refused(make_bundle: MakeBundle) -> None:
    bundle = make_bundle("raises")
    edit_manifest(bundle, runtime_version="2")
    assert refusal(bundle) == (
        "the bundle was made for mlship runtime version '2', but its mlship_runtime is version '1'"
    )


def test_bad_input_schema_is_refused(make_bundle: MakeBundle) -> None:
    bundle = make_bundle("raises")
    edit_manifest(bundle, input={"kind": "tensor"})
    assert refusal(bundle) == (
        f"{bundle / 'mlship.json'}, input: unknown input kind 'tensor'; this runtime knows dataframe, records, "
        "columns, ndarray, series, list"
    )


def test_predictor_import_failure_names_the_line(make_bundle: MakeBundle) -> None:
    bundle = make_bundle("raises")
    source = (bundle / "predictor.py").read_text()
    (bundle / "predictor.py").write_text(
        source.replace("import pickle", "import no_such_module\nimport pickle")
    )
    rehash(bundle)
    assert refusal(bundle) == (
        "predictor.py failed to import (line 8): ModuleNotFoundError: No module named 'no_such_module'"
    )
    assert "mlship_predictor" not in sys.modules


def test_method_missing_from_predictor(make_bundle: MakeBundle) -> None:
    bundle = make_bundle("raises")
    edit_manifest(
        bundle, methods=[{"name": "predict", "expression": "f(X)"}, {"name": "score", "expression": "g"}]
    )
    assert (
        refusal(bundle)
        == "mlship.json lists methods score that predictor.py's METHODS lacks (it has: predict)"
    )


def test_golden_without_cases_is_refused(make_bundle: MakeBundle) -> None:
    bundle = make_bundle("raises")
    edit_golden(bundle, lambda golden: golden.update(cases=[]))
    assert refusal(bundle).endswith("golden.json must be an object with a non-empty list of 'cases'")


def test_golden_case_with_unknown_method_is_refused(make_bundle: MakeBundle) -> None:
    bundle = make_bundle("raises")
    edit_golden(bundle, lambda golden: golden["cases"][0].update(method="explain"))
    assert refusal(bundle).endswith(
        "golden.json: case 'predict-0' uses method 'explain', which mlship.json does not list"
    )


def test_a_format_1_bundle_still_serves_with_the_contracts_defaults(
    make_bundle: MakeBundle, serve: Callable[..., Any]
) -> None:
    bundle = make_bundle("iris_frame")
    manifest = json.loads((bundle / "mlship.json").read_text())
    for key in ("batch_safe", "local_modules", "selection", "source", "mlship_version", "created_at"):
        del manifest[key]  # what format 1 could leave out
    (bundle / "mlship.json").write_text(json.dumps({**manifest, "format": 1}))
    client = serve(bundle)
    assert client.get("/readyz").json() == {"status": "ready"}
    metadata = client.get("/metadata").json()
    assert (metadata["batch_safe"], metadata["source"], metadata["created_at"]) == (True, None, None)
    assert client.get("/version").text == "1"  # no mlship_version: the runtime's version, as before
    assert 'batch_safe="true"' in client.get("/metrics").text
