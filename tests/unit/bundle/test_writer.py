"""The writer (a Capture -> a bundle directory) and the fresh interpreter that probes and verifies, with a fake
capture: no kernel is started."""

from __future__ import annotations

import pickle
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlship.bundle import writer as writer_module
from mlship.bundle.capture import Capture
from mlship.bundle.fresh import Dependencies, FreshInterpreter, notebook_search_path
from mlship.bundle.writer import BundleWriter
from mlship.errors import BundleError
from mlship.notebook.analyze import index_cells
from mlship.notebook.extract import CodePlan, ServePlan
from mlship.notebook.inspector import GoldenRecord, KernelPython
from mlship.notebook.read import Cell
from mlship.runtime import _contract as contract
from mlship.runtime._contract import Column, GoldenCase, InputSchema, PythonInfo, Source

HELPERS = "def double(xs):\n    return [2 * x for x in xs]\n"
CELLS = (
    "import math\nfrom helpers import double",
    "def served(xs):\n    return [round(math.sqrt(y), 6) + OFFSET for y in double(xs)]",
)
SCHEMA = InputSchema("list", element=Column(None, "number"), example=2.0)


def fake_capture(notebook_dir: Path, values: Path | None = None, *, with_local_import: bool = True) -> Capture:
    index = index_cells(tuple(Cell(i, s) for i, s in enumerate(CELLS, start=1)))
    imports = [index.definitions["math"]] + ([index.definitions["double"]] if with_local_import else [])
    code = CodePlan(imports, [index.definitions["served"]], ["OFFSET", "TWICE"] if values else [],
                    {"OFFSET": "int", "TWICE": "function"} if values else {})
    plan = ServePlan({"predict": "served(X)"}, "X_test", "X", "auto", "last prediction call in the notebook (cell 9)",
                     cell=9)
    offset = 1 if values else 0
    cases = tuple(GoldenCase(f"predict-{i}", "predict", [x], [round((2 * x) ** 0.5, 6) + offset])
                  for i, x in enumerate([2.0, 8.0]))
    return Capture(
        name="fake", version="1.2.3", source=Source("fake.ipynb", "ab" * 32), notebook_dir=notebook_dir,
        plan=plan, code=code, golden=GoldenRecord(SCHEMA, cases, batch_safe=False, dropped={}),
        python=KernelPython(PythonInfo("3.11.7"), sys.executable), values=values, requirements=("numpy>=2",),
    )


@pytest.fixture()
def notebook_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "notebook"
    folder.mkdir()
    (folder / "helpers.py").write_text(HELPERS)
    return folder


@pytest.fixture()
def values(tmp_path: Path, notebook_dir: Path) -> Iterator[Path]:
    """Captured values, one of them a function of helpers.py (pickled by reference: unpickling imports helpers)."""
    path = tmp_path / "values.pkl"
    sys.path.insert(0, str(notebook_dir))
    try:
        import helpers  # type: ignore[import-not-found]

        path.write_bytes(pickle.dumps({"OFFSET": 1, "TWICE": helpers.double}))
    finally:
        sys.path.remove(str(notebook_dir))
        sys.modules.pop("helpers", None)
    yield path


@pytest.fixture()
def staging(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "bundle"
    folder.mkdir()
    yield folder
    sys.modules.pop("mlship_predictor", None)


def test_the_written_bundle_reads_back_through_the_contract(notebook_dir: Path, values: Path,
                                                             staging: Path) -> None:
    capture = fake_capture(notebook_dir, values)
    written = BundleWriter(capture, staging).write(Dependencies({"numpy": "2.4.6"}, {"helpers": str(
        notebook_dir / "helpers.py")}))
    bundle = contract.read(staging)
    assert bundle.manifest == written
    manifest = bundle.manifest
    assert (manifest.name, manifest.version, manifest.batch_safe) == ("fake", "1.2.3", False)
    assert manifest.method_names == ["predict"] and manifest.method("predict").expression == "served(X)"
    assert manifest.input == SCHEMA
    assert manifest.source == capture.source and manifest.python == PythonInfo("3.11.7")
    assert manifest.selection == contract.Selection("auto", capture.plan.reason, 9, "X_test")
    assert manifest.local_modules == ("helpers",)
    assert bundle.golden.cases == capture.golden.cases
    assert {"predictor.py", "golden.json", "requirements.txt", "artifacts/values.pkl", "code/helpers.py",
            "mlship_runtime/__init__.py"} <= set(manifest.artifacts)
    # The requested pin wins over the probed version; the runtime's own dependencies are pinned too.
    assert "numpy>=2" in manifest.requirements and "numpy==2.4.6" not in manifest.requirements
    assert any(r.startswith("starlette==") for r in manifest.requirements)
    assert (staging / "requirements.txt").read_text().splitlines() == list(manifest.requirements)


def test_predictor_is_rendered_once_and_knows_about_code(notebook_dir: Path, values: Path, staging: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    rendered: list[str] = []
    real_render = writer_module.render

    def spy(template: str, context: object) -> str:
        rendered.append(template)
        return real_render(template, context)  # type: ignore[arg-type]

    monkeypatch.setattr(writer_module, "render", spy)
    BundleWriter(fake_capture(notebook_dir, values), staging).write(
        Dependencies({}, {"helpers": str(notebook_dir / "helpers.py")}))
    assert rendered == ["predictor.py.jinja"]
    predictor = (staging / "predictor.py").read_text()
    assert '/ "code"' in predictor and "from helpers import double" in predictor
    assert 'OFFSET = _mlship_values["OFFSET"]  # int' in predictor


def test_without_captured_values_or_local_modules(notebook_dir: Path, staging: Path) -> None:
    capture = fake_capture(notebook_dir, with_local_import=False)
    manifest = BundleWriter(capture, staging).write(Dependencies({}, {}))
    assert not (staging / "artifacts" / "values.pkl").exists() and not (staging / "code").exists()
    assert "artifacts/values.pkl" not in manifest.artifacts and manifest.local_modules == ()
    assert "_mlship_sys.path" not in (staging / "predictor.py").read_text()


def test_a_module_from_outside_the_notebook_folder_is_refused(notebook_dir: Path, values: Path, staging: Path,
                                                             tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.py"
    elsewhere.write_text(HELPERS)
    with pytest.raises(BundleError, match="neither an installed package nor a file beside the notebook"):
        BundleWriter(fake_capture(notebook_dir, values), staging).write(
            Dependencies({}, {"elsewhere": str(elsewhere)}))


def test_probe_modules_are_the_served_imports_and_the_schemas(notebook_dir: Path, staging: Path) -> None:
    writer = BundleWriter(fake_capture(notebook_dir), staging)
    assert writer.probe_modules() == ["helpers", "math"]
    frame = InputSchema("dataframe", columns=(Column("a", "number"),))
    capture = fake_capture(notebook_dir)
    framed = Capture(**{**capture.__dict__, "golden": GoldenRecord(frame, capture.golden.cases, True, {})})
    assert BundleWriter(framed, staging).probe_modules() == ["helpers", "math", "numpy", "pandas"]


def test_one_fresh_interpreter_probes_then_verifies_from_the_bundles_own_code(
        notebook_dir: Path, values: Path, staging: Path) -> None:
    capture = fake_capture(notebook_dir, values)
    writer = BundleWriter(capture, staging)
    with FreshInterpreter(sys.executable, staging, cwd=notebook_dir,
                          search_path=notebook_search_path(notebook_dir)) as child:
        writer.stage()
        dependencies = child.probe(writer.probe_modules())
        assert dependencies.local == {"helpers": str(notebook_dir / "helpers.py")}
        manifest = writer.finish(dependencies)
        # helpers.py now lives in code/ only: a bundle that still needed the notebook's folder would fail here.
        (notebook_dir / "helpers.py").unlink()
        cases = child.verify(manifest.name)
    assert [(c.id, c.ok) for c in cases] == [("predict-0", True), ("predict-1", True)]


def test_verification_forgets_the_notebooks_folder_and_modules(notebook_dir: Path, values: Path,
                                                                staging: Path) -> None:
    writer = BundleWriter(fake_capture(notebook_dir, values), staging)
    with FreshInterpreter(sys.executable, staging, cwd=notebook_dir,
                          search_path=notebook_search_path(notebook_dir)) as child:
        writer.stage()
        # The probe imported helpers from the notebook's folder (to unpickle TWICE); a bundle that does not carry
        # it in code/ must fail to load, not borrow the probe's module.
        assert "helpers" in child.probe(writer.probe_modules()).local
        manifest = writer.finish(Dependencies({}, {}))
        with pytest.raises(BundleError, match="cannot verify fake: .*No module named 'helpers'"):
            child.verify(manifest.name)


def test_values_that_do_not_unpickle_fail_the_probe(notebook_dir: Path, staging: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.pkl"
    broken.write_bytes(b"\x80\x05not a pickle")
    writer = BundleWriter(fake_capture(notebook_dir, broken), staging)
    with FreshInterpreter(sys.executable, staging, cwd=notebook_dir, search_path=[]) as child:
        writer.stage()
        with pytest.raises(BundleError, match="the captured objects do not load in a fresh Python") as error:
            child.probe(writer.probe_modules())
    assert error.value.hint and "pickle" in error.value.hint
