"""The bundle contract (mlship/runtime/_contract.py): round trips, every invalid field, formats old and new."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from mlship.runtime import _contract as contract
from mlship.runtime._contract import (
    BundleLoadError,
    CaseResult,
    Column,
    Golden,
    GoldenCase,
    GoldenSource,
    InputSchema,
    Manifest,
    Method,
    PythonInfo,
    Selection,
    Source,
)

STORED = Path(__file__).resolve().parents[2] / "samples" / "manifests"


def _manifest(**changes: Any) -> Manifest:
    fields: dict[str, Any] = {
        "name": "iris",
        "version": "1.2.0",
        "runtime_version": "1",
        "python": PythonInfo("3.11.7", "CPython"),
        "methods": (Method("predict", "pipe.predict(X)"), Method("predict_proba", "pipe.predict_proba(X)")),
        "input": InputSchema(
            "dataframe",
            columns=(Column("a", "number", "float64", False), Column("b", "string", "object", True)),
            example={"a": 1.5, "b": "x"},
            ignored=("customer_id", "churn"),
        ),
        "requirements": ("numpy==2.4.6", "scikit-learn==1.9.1"),
        "batch_safe": False,
        "mlship_version": "0.1.0",
        "created_at": "2026-12-01T00:00:00Z",
        "source": Source("iris.ipynb", "0" * 64),
        "local_modules": ("helpers",),
        "selection": Selection("auto", "last prediction call", 7, "X_test"),
    }
    fields.update(changes)
    return Manifest(**fields)


def _golden() -> Golden:
    return Golden(
        (
            GoldenCase("predict-0", "predict", [{"a": 1.5, "b": "x"}], [1]),
            GoldenCase("predict_proba-0", "predict_proba", [{"a": 1.5, "b": "x"}], [[0.25, 0.75]]),
        ),
        rtol=1e-5,
        atol=1e-8,
    )


def _write_bundle(root: Path, manifest: Manifest | None = None) -> Manifest:
    root.mkdir(parents=True, exist_ok=True)
    (root / "predictor.py").write_text("METHODS = {}\n")
    (root / "artifacts").mkdir(exist_ok=True)
    (root / "artifacts" / "values.pkl").write_bytes(b"\x80\x05N.")
    (root / "__pycache__").mkdir(exist_ok=True)
    (root / "__pycache__" / "x.pyc").write_bytes(b"ignored")
    return contract.write(root, manifest or _manifest(), _golden())


# -- round trips ------------------------------------------------------------------------------------------------


def test_manifest_round_trips_through_json() -> None:
    manifest = _manifest(artifacts={"predictor.py": "a" * 64})
    data = json.loads(json.dumps(manifest.to_json()))
    assert Manifest.from_json(data) == manifest
    assert data["format"] == contract.FORMAT


@pytest.mark.parametrize(
    "schema",
    [
        InputSchema("dataframe", columns=(Column("x", "number", "float64", False),), example={"x": 1.0}),
        InputSchema("records", columns=(Column("age", "integer", "object"),), example={"age": 3}),
        InputSchema("columns", columns=(Column("c", "any", "int64"),), example={"c": 1}),
        InputSchema("series", element=Column("text", "string", "object", False), example="hi"),
        InputSchema("series", element=Column(None, "number", "float64"), example=1.0),
        InputSchema("ndarray", element=Column(None, "number", "float64"), shape=(None, 4), example=[1, 2, 3, 4]),
        InputSchema("list", element=Column(None, "string"), example="a review"),
    ],
    ids=lambda schema: schema.kind,
)
def test_every_schema_kind_round_trips(schema: InputSchema) -> None:
    assert InputSchema.from_json(json.loads(json.dumps(schema.to_json()))) == schema


def test_schema_helpers() -> None:
    frame = _manifest().input
    assert frame.has_columns and frame.column_names == ["a", "b"]
    assert frame.fields == frame.columns and frame.column("b").type == "string"
    assert frame.modules == ("pandas", "numpy")
    listed = InputSchema.from_json({"kind": "list", "type": "string"})
    assert not listed.has_columns and listed.fields == (Column(None, "string"),) and listed.modules == ()
    assert InputSchema.from_json({"kind": "ndarray", "dtype": "int64", "type": "integer"}).modules == ("numpy",)


def test_golden_and_case_results_round_trip() -> None:
    golden = _golden()
    assert Golden.from_json(json.loads(json.dumps(golden.to_json()))) == golden
    assert [case.id for case in golden.for_method("predict_proba")] == ["predict_proba-0"]
    result = CaseResult("predict-0", "predict", False, "expected 1, got 2", [1], [2])
    assert CaseResult.from_json(json.loads(json.dumps(result.to_json()))) == result


def test_golden_sources_round_trip_and_older_golden_files_have_none() -> None:
    golden = Golden(
        (GoldenCase("predict-0", "predict", [1], [1], "new_row"), GoldenCase("predict-1", "predict", [2], [1], "X_test")),
        sources=(GoldenSource("new_row", 1, "the inference call's data"),
                 GoldenSource("X_test", 1, "same columns and dtypes as the sample; named like a test split")),
    )
    data = json.loads(json.dumps(golden.to_json()))
    assert data["sources"][1] == {"expr": "X_test", "rows": 1,
                                  "reason": "same columns and dtypes as the sample; named like a test split"}
    assert data["cases"][1]["source"] == "X_test"
    assert Golden.from_json(data) == golden
    older = _golden().to_json()
    assert "sources" not in older and "source" not in older["cases"][0]
    assert Golden.from_json(older).sources == () and Golden.from_json(older).cases[0].source is None


def test_write_then_read(tmp_path: Path) -> None:
    written = _write_bundle(tmp_path / "b")
    # Every file but the manifest is digested; __pycache__ never is.
    assert sorted(written.artifacts) == ["artifacts/values.pkl", "golden.json", "predictor.py"]
    bundle = contract.read(tmp_path / "b")
    assert bundle.manifest == written and bundle.golden == _golden()
    assert bundle.file("artifacts/values.pkl").read_bytes() == b"\x80\x05N."
    assert json.loads((tmp_path / "b" / "mlship.json").read_text())["format"] == contract.FORMAT


def test_write_refuses_cases_of_unknown_methods(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="predict_proba"):
        _write_bundle(tmp_path / "b", _manifest(methods=(Method("predict"),)))


# -- formats ----------------------------------------------------------------------------------------------------


def test_a_stored_format_1_manifest_still_loads(tmp_path: Path) -> None:
    data = json.loads((STORED / "format1_iris.json").read_text())
    assert data["format"] == 1
    manifest = Manifest.from_json(data)
    assert manifest.format == 1 and manifest.name == "iris"
    assert manifest.method_names == ["predict", "predict_proba", "predict_log_proba", "decision_function"]
    assert manifest.input.column_names[0] == "sepal length (cm)" and manifest.batch_safe is True
    # The whole directory reads too, digests and golden cases checked.
    root = tmp_path / "old"
    root.mkdir()
    (root / "predictor.py").write_text("METHODS = {}\n")
    (root / "golden.json").write_text((STORED / "format1_iris_golden.json").read_text())
    data["artifacts"] = {name: contract.sha256_file(root / name) for name in ("predictor.py", "golden.json")}
    (root / "mlship.json").write_text(json.dumps(data))
    bundle = contract.read(root)
    assert bundle.manifest.format == 1 and bundle.golden.cases[0].method == "predict"


def test_format_1_may_omit_what_format_2_requires() -> None:
    optional = ("batch_safe", "local_modules", "selection", "source", "mlship_version", "created_at")
    data = _manifest().to_json()
    old = Manifest.from_json({key: value for key, value in data.items() if key not in optional} | {"format": 1})
    assert old.batch_safe is True and old.local_modules == () and old.selection is None and old.source is None
    for key in optional:
        with pytest.raises(BundleLoadError, match=f"lacks '{key}'"):
            Manifest.from_json({name: value for name, value in data.items() if name != key})


def test_the_ignored_columns_round_trip_and_older_formats_have_none() -> None:
    data = _manifest().to_json()
    assert data["input"]["ignored"] == ["customer_id", "churn"]
    assert Manifest.from_json(data).input.ignored == ("customer_id", "churn")
    for fmt in (1, 2):  # written before the client columns: every column was required
        old = {**data, "format": fmt, "input": {k: v for k, v in data["input"].items() if k != "ignored"}}
        assert Manifest.from_json(old).input.ignored == ()
    stored = Manifest.from_json(json.loads((STORED / "format1_iris.json").read_text()))
    assert stored.input.ignored == () and len(stored.input.columns) == 4


@pytest.mark.parametrize(
    ("ignored", "message"),
    [("churn", "'ignored' must be a list, got 'churn'"), ([3], "'ignored' must be a list of strings"),
     (["a"], r"\['a'\] are both columns and 'ignored'")],
)
def test_bad_ignored_columns_are_refused(ignored: Any, message: str) -> None:
    data = _manifest().to_json()
    data["input"]["ignored"] = ignored
    with pytest.raises(BundleLoadError, match=message):
        Manifest.from_json(data)


def test_a_newer_format_names_the_mlship_version_it_needs() -> None:
    data = {**_manifest().to_json(), "format": contract.FORMAT + 1, "mlship_version": "0.7.0"}
    with pytest.raises(BundleLoadError) as raised:
        Manifest.from_json(data, "dist/iris/mlship.json")
    message = str(raised.value)
    assert f"bundle format {contract.FORMAT + 1}" in message and "mlship 0.7.0 or newer" in message
    assert "dist/iris/mlship.json" in message


# -- every invalid field ----------------------------------------------------------------------------------------


def _set(path: str, value: Any) -> Any:
    def edit(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = data
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        if value is _DELETE:
            del target[last]
        elif isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value

    return edit


_DELETE = object()

INVALID = [
    ("format", "two", "'format' must be an integer"),
    ("format", 0, "bundle format 0, which this mlship runtime does not read"),
    ("name", "", "'name' must be a non-empty string"),
    ("name", _DELETE, "lacks 'name'"),
    ("version", 3, "'version' must be a non-empty string"),
    ("runtime_version", _DELETE, "lacks 'runtime_version'"),
    ("python", "3.11", "python must be a JSON object"),
    ("python.version", "eleven", "'version' must look like '3.11.7'"),
    ("methods", [], "'methods' must list at least one method"),
    ("methods", "predict", "'methods' must be a list"),
    ("methods.0", "predict", "methods[0] must be a JSON object"),
    ("methods.0.name", "no such", "'name' must be a Python identifier"),
    ("methods.1.name", "predict", "a method name appears twice"),
    ("methods.0.expression", 1, "'expression' must be a string"),
    ("input", [], "input must be a JSON object"),
    ("input.kind", "tensor", "unknown input kind 'tensor'"),
    ("input.columns", [], "needs a non-empty list of 'columns'"),
    ("input.columns.0.name", 7, "column 0: every column needs a string 'name'"),
    ("input.columns.1.name", "a", "a column name appears twice"),
    ("input.columns.0.type", "float", "unknown type 'float'"),
    ("input.columns.0.dtype", 64, "'dtype' must be a string"),
    ("input.columns.0.nullable", "no", "'nullable' must be true or false"),
    ("requirements", "numpy", "'requirements' must be a list"),
    ("requirements", [1], "'requirements' must be a list of strings"),
    ("artifacts", [], "artifacts must be a JSON object"),
    ("artifacts", {"../etc/passwd": "a" * 64}, "'../etc/passwd' is not a path inside the bundle"),
    ("artifacts", {"predictor.py": "not-a-digest"}, "must map to a sha256 hex digest"),
    ("batch_safe", "yes", "'batch_safe' must be true or false"),
    ("golden", "/abs/golden.json", "is not a path inside the bundle"),
    ("local_modules", _DELETE, "lacks 'local_modules'"),
    ("source", _DELETE, "lacks 'source'"),
    ("source.sha256", None, "'sha256' must be a string"),
    ("selection.cell", "7", "'cell' must be a cell number or null"),
    ("selection.sample", 1, "'sample' must be an expression or null"),
]


@pytest.mark.parametrize(("path", "value", "message"), INVALID, ids=[f"{p}={v!r}" for p, v, _ in INVALID])
def test_every_invalid_field_is_named(path: str, value: Any, message: str) -> None:
    data = copy.deepcopy(_manifest(artifacts={"predictor.py": "a" * 64}).to_json())
    _set(path, value)(data)
    with pytest.raises(BundleLoadError) as raised:
        Manifest.from_json(data, "dist/iris/mlship.json")
    assert message in str(raised.value)
    assert str(raised.value).startswith("dist/iris/mlship.json")


def test_a_row_kind_schema_checks_its_shape() -> None:
    with pytest.raises(BundleLoadError, match="'shape' must be a list of sizes"):
        InputSchema.from_json({"kind": "ndarray", "type": "number", "shape": [None, -1]})


@pytest.mark.parametrize(
    ("golden", "message"),
    [
        ([], "must be a JSON object"),
        ({"cases": []}, "non-empty list of 'cases'"),
        ({"cases": [{"id": "x"}]}, "every case needs id, method, instances and expected"),
        ({"cases": [{"id": "x", "method": "predict", "instances": [], "expected": 1}]}, "'instances' must be"),
        ({"cases": [{"id": "x", "method": "score", "instances": [1], "expected": 1}]}, "uses method 'score'"),
        ({"rtol": -1, "cases": [{"id": "x", "method": "predict", "instances": [1], "expected": 1}]}, "'rtol'"),
        ({"cases": [{"id": "x", "method": "predict", "instances": [1], "expected": 1, "source": 3}]},
         "'source' must be a string"),
        ({"sources": {}, "cases": [{"id": "x", "method": "predict", "instances": [1], "expected": 1}]},
         "'sources' must be a list"),
        ({"sources": [{"expr": "X", "rows": -1}], "cases": [{"id": "x", "method": "predict", "instances": [1],
                                                              "expected": 1}]}, r"sources\[0\]: 'rows' must be"),
    ],
)
def test_invalid_golden_files(golden: Any, message: str) -> None:
    with pytest.raises(BundleLoadError, match=message):
        Golden.from_json(golden, "golden.json", ["predict"])


# -- the directory: required files and digests ------------------------------------------------------------------


def test_a_missing_folder_and_a_folder_without_manifest(tmp_path: Path) -> None:
    with pytest.raises(BundleLoadError, match="does not exist"):
        contract.read(tmp_path / "nope")
    with pytest.raises(BundleLoadError, match="is not a bundle: it has no mlship.json"):
        contract.read(tmp_path)


def test_a_damaged_manifest(tmp_path: Path) -> None:
    (tmp_path / "mlship.json").write_text("{not json")
    with pytest.raises(BundleLoadError, match="cannot be read as JSON"):
        contract.read(tmp_path)


def test_a_changed_file_is_refused(tmp_path: Path) -> None:
    _write_bundle(tmp_path)
    (tmp_path / "predictor.py").write_text("METHODS = {'predict': print}\n")
    with pytest.raises(BundleLoadError, match="artifact predictor.py has sha256 .* the file changed after packaging"):
        contract.read(tmp_path)
    # Without the digest check the manifest still reads (verify --url reads only the manifest and cases).
    assert contract.read(tmp_path, check_digests=False).manifest.name == "iris"


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    _write_bundle(tmp_path)
    (tmp_path / "artifacts" / "values.pkl").unlink()
    with pytest.raises(BundleLoadError, match="artifact artifacts/values.pkl is missing"):
        contract.read(tmp_path)


@pytest.mark.parametrize("unlisted", ["predictor.py", "golden.json"])
def test_predictor_and_golden_must_be_listed(tmp_path: Path, unlisted: str) -> None:
    manifest = _write_bundle(tmp_path)
    data = manifest.to_json()
    del data["artifacts"][unlisted]
    (tmp_path / "mlship.json").write_text(json.dumps(data))
    with pytest.raises(BundleLoadError, match=f"'artifacts' does not list {unlisted}"):
        contract.read(tmp_path)


def test_a_case_of_an_unlisted_method_is_refused(tmp_path: Path) -> None:
    manifest = _write_bundle(tmp_path)
    golden = json.loads((tmp_path / "golden.json").read_text())
    golden["cases"][0]["method"] = "explain"
    (tmp_path / "golden.json").write_text(json.dumps(golden))
    data = manifest.to_json()
    data["artifacts"]["golden.json"] = contract.sha256_file(tmp_path / "golden.json")
    (tmp_path / "mlship.json").write_text(json.dumps(data))
    with pytest.raises(BundleLoadError, match="uses method 'explain', which mlship.json does not list"):
        contract.read(tmp_path)


def test_the_contract_imports_only_the_standard_library_and_the_runtime() -> None:
    import ast

    tree = ast.parse(Path(contract.__file__).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert all(alias.name in {"hashlib", "json", "os", "re", "shutil"} for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            assert node.module in {"__future__", "collections.abc", "dataclasses", "pathlib", "typing"}
