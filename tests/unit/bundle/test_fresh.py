"""The fresh interpreter's snapshots (mlship/bundle/_fresh.py): which packages may be pre-imported, which snapshot a
bundle may use, the pickle scan, and that every process started is gone afterwards. No kernel is started: the
bundles are staged from fake captures, with small installed packages (packaging, idna) as the "libraries"."""

from __future__ import annotations

import collections
import decimal
import fractions
import os
import pathlib
import pickle
import sys
from pathlib import Path

import packaging.version
import pytest

from mlship.bundle import _fresh
from mlship.bundle.capture import Capture
from mlship.bundle.fresh import FreshInterpreter, notebook_search_path, preload_order
from mlship.bundle.writer import BundleWriter
from mlship.errors import BundleError
from mlship.notebook.analyze import index_cells
from mlship.notebook.extract import CodePlan
from mlship.notebook.inspector import GoldenRecord
from mlship.notebook.read import Cell
from mlship.runtime._contract import GoldenCase

from .test_writer import HELPERS, fake_capture

snapshots_work = pytest.mark.skipif(not _fresh.can_snapshot(), reason="snapshots are Linux-only")


# -- the pickle scan -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_the_scan_finds_the_modules_unpickling_imports(tmp_path: Path, protocol: int) -> None:
    value = {"d": decimal.Decimal("1.5"), "f": [fractions.Fraction(1, 3), fractions.Fraction(2, 3)],
             "o": collections.OrderedDict(a=pathlib.PurePosixPath("x")), "v": packaging.version.Version("1.0"),
             "again": [decimal.Decimal("2"), packaging.version.Version("2.0")]}  # memoized globals: GET opcodes
    path = tmp_path / "values.pkl"
    path.write_bytes(pickle.dumps(value, protocol=protocol))
    scanned = _fresh.scan_pickle_modules(path)
    assert scanned == _fresh.pickle_modules(path)  # the unpickler's own record: the scan neither misses nor invents
    assert {"decimal", "fractions", "collections", "packaging.version"} <= scanned
    assert _fresh.scan_pickle_modules(tmp_path / "none.pkl") == set()


def test_strings_in_the_data_are_not_taken_for_modules(tmp_path: Path) -> None:
    path = tmp_path / "values.pkl"
    path.write_bytes(pickle.dumps(["matplotlib", "pyplot", {"sklearn": "svm"}, decimal.Decimal(1)]))
    assert _fresh.scan_pickle_modules(path) == {"decimal"}


# -- which snapshot ---------------------------------------------------------------------------------------------


def test_the_deepest_snapshot_whose_packages_are_all_needed() -> None:
    chain = ["numpy", "pandas", "sklearn", "matplotlib"]
    assert _fresh.usable_depth(chain, {"numpy", "pandas", "sklearn", "scipy"}) == 3
    assert _fresh.usable_depth(chain, {"numpy", "sklearn"}) == 1  # pandas is not needed: nor anything after it
    assert _fresh.usable_depth(chain, {"sklearn"}) == 0
    assert _fresh.usable_depth([], {"numpy"}) == 0


def test_the_chain_holds_only_installed_third_party_packages(tmp_path: Path) -> None:
    (tmp_path / "helpers.py").write_text("X = 1\n")
    sys.path.insert(0, str(tmp_path))
    try:
        chain = _fresh.snapshot_chain(
            ["packaging.version", "json", "helpers", "packaging", "no_such_package_xyz", "mlship.runtime", "idna"],
            [str(tmp_path)])
    finally:
        sys.path.remove(str(tmp_path))
    # standard library, a module beside the notebook, a missing one, mlship itself and duplicates are left out
    assert chain == ["packaging", "idna"]
    assert len(_fresh.snapshot_chain(["packaging"] * 20, [])) == 1


def test_preload_order_puts_what_builds_the_model_first() -> None:
    cells = (
        "import numpy as np\nimport matplotlib.pyplot as plt\nfrom sklearn.linear_model import LinearRegression\n"
        "import pandas as pd\nimport os",
        "df = pd.read_csv('x.csv')\nX = df[['a']].to_numpy()\nmodel = LinearRegression().fit(X, df['y'])",
        "plt.plot(np.arange(3))",
        "model.predict(X)",
    )
    index = index_cells(tuple(Cell(i, s) for i, s in enumerate(cells, start=1)))
    order = preload_order(index)
    assert order[:2] == ["sklearn", "pandas"]  # reached from model.predict(X), in notebook order
    assert set(order[2:]) == {"numpy", "matplotlib", "os"}  # the rest (the child leaves out the stdlib)
    assert preload_order(index_cells((Cell(1, "import numpy\nimport idna"),))) == ["numpy", "idna"]


# -- the processes ------------------------------------------------------------------------------------------------


def _group_is_gone(child: FreshInterpreter) -> bool:
    try:
        os.killpg(child._proc.pid, 0)
    except ProcessLookupError:
        return True
    return False


def _versions_capture(notebook_dir: Path, values: Path, served: str) -> Capture:
    """The fake capture, serving `served` (cell 2 of the cells below) with VERSION captured."""
    cells = ("import sys", served)
    index = index_cells(tuple(Cell(i, s) for i, s in enumerate(cells, start=1)))
    base = fake_capture(notebook_dir, values)
    code = CodePlan([index.definitions["sys"]], [index.definitions["served"]], ["VERSION"], {"VERSION": "Version"})
    cases = tuple(GoldenCase(f"predict-{i}", "predict", [x], [x + 1.0]) for i, x in enumerate([1.0, 2.0]))
    return Capture(**{**base.__dict__, "code": code,
                      "golden": GoldenRecord(base.golden.schema, cases, batch_safe=False, dropped={})})


@pytest.fixture()
def notebook_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "notebook"
    folder.mkdir()
    (folder / "helpers.py").write_text(HELPERS)
    return folder


@pytest.fixture()
def version_values(tmp_path: Path) -> Path:
    path = tmp_path / "values.pkl"
    path.write_bytes(pickle.dumps({"VERSION": packaging.version.Version("1.0")}))
    return path


def _package(notebook_dir: Path, staging: Path, capture: Capture,
             preload: list[str]) -> tuple[tuple[str, ...], list[bool], FreshInterpreter]:
    writer = BundleWriter(capture, staging)
    with FreshInterpreter(sys.executable, staging, cwd=notebook_dir, search_path=notebook_search_path(notebook_dir),
                          preload=preload) as child:
        writer.stage()
        dependencies = child.probe(writer.probe_modules())
        manifest = writer.finish(dependencies)
        cases = child.verify(manifest.name)
    return dependencies.preloaded, [c.ok for c in cases], child


SERVED = "def served(xs):\n    return [x + VERSION.major for x in xs]"
# Works only where idna was imported (by the notebook, say): the bundle never imports it.
SERVED_BORROWING = "def served(xs):\n    return [x + VERSION.major + 0 * len(sys.modules['idna'].__name__) for x in xs]"


@snapshots_work
def test_a_snapshot_with_only_needed_packages_probes_and_verifies(
        notebook_dir: Path, version_values: Path, tmp_path: Path) -> None:
    capture = _versions_capture(notebook_dir, version_values, SERVED)
    preloaded, oks, child = _package(notebook_dir, tmp_path / "a", capture, ["packaging", "idna"])
    assert preloaded == ("packaging",)  # idna is not needed: the snapshot holding it is never used
    assert oks == [True, True]
    assert _group_is_gone(child)
    # the order matters only for speed: an unneeded package first means a cold interpreter
    preloaded, oks, child = _package(notebook_dir, tmp_path / "b", capture, ["idna", "packaging"])
    assert (preloaded, oks) == ((), [True, True])
    assert _group_is_gone(child)


@snapshots_work
def test_code_that_borrows_a_notebook_only_import_still_fails(
        notebook_dir: Path, version_values: Path, tmp_path: Path) -> None:
    capture = _versions_capture(notebook_dir, version_values, SERVED_BORROWING)
    staging = tmp_path / "bundle"
    writer = BundleWriter(capture, staging)
    with FreshInterpreter(sys.executable, staging, cwd=notebook_dir, search_path=notebook_search_path(notebook_dir),
                          preload=["packaging", "idna"]) as child:
        writer.stage()
        dependencies = child.probe(writer.probe_modules())
        assert dependencies.preloaded == ("packaging",)
        manifest = writer.finish(dependencies)
        cases = child.verify(manifest.name)
    # redone cold after the snapshot's failure: idna is in neither
    assert [c.ok for c in cases] == [False, False]
    assert "KeyError: 'idna'" in cases[0].detail
    assert _group_is_gone(child)


@snapshots_work
def test_no_process_is_left_when_the_host_gives_up_early(notebook_dir: Path, tmp_path: Path) -> None:
    # e.g. a cell raised: the host closes the child before any request, while it may still be importing
    with FreshInterpreter(sys.executable, tmp_path, cwd=notebook_dir, search_path=[],
                          preload=["packaging", "idna"]) as child:
        pass
    assert _group_is_gone(child)


@snapshots_work
def test_no_process_is_left_after_a_failed_probe(notebook_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.pkl"
    broken.write_bytes(b"\x80\x05not a pickle")
    staging = tmp_path / "bundle"
    writer = BundleWriter(fake_capture(notebook_dir, broken), staging)
    with FreshInterpreter(sys.executable, staging, cwd=notebook_dir, search_path=[],
                          preload=["packaging"]) as child:
        writer.stage()
        with pytest.raises(BundleError, match="the captured objects do not load in a fresh Python"):
            child.probe(writer.probe_modules())
    assert _group_is_gone(child)
