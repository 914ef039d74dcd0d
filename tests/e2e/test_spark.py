"""`mlship predict --engine spark` and mlship.runtime.spark on a real Spark (local[2], Java from Debian).

Everything runs in this process, so it all shares one JVM; each CLI job starts and stops its own SparkContext,
with `--env executor`: the executors run this test venv's Python (PYSPARK_PYTHON), which has the bundle's
requirements.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cli
from tests.support.servers import clean_env
from tests.unit.runtime.sample_bundles import edit_golden

pytestmark = [
    pytest.mark.requires_java,
    # py4j's sockets and pyspark's own deprecation notices are not this project's warnings.
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]

COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]


def write_iris_parquet(path: Path, rows: int, *, nulls: tuple[int, ...] = ()) -> Path:
    """`rows` rows: an id column (the row's index), then the 150 iris rows over and over; rows `nulls` lack
    their petal width."""
    import numpy
    import pyarrow
    import pyarrow.parquet as pq
    from sklearn.datasets import load_iris

    data = numpy.resize(load_iris().data, (rows, 4))
    columns: dict[str, Any] = {"id": pyarrow.array(numpy.arange(rows, dtype="int64"))}
    for index, name in enumerate(COLUMNS):
        mask = numpy.zeros(rows, dtype=bool)
        if index == 3:
            mask[list(nulls)] = True
        columns[name] = pyarrow.array(data[:, index], mask=mask)
    pq.write_table(pyarrow.table(columns), path, row_group_size=100_000)
    return path


def read_sorted(path: Path) -> Any:
    import pyarrow.parquet as pq

    return pq.read_table(path).sort_by("id")


@pytest.fixture(scope="module")
def bundle(sample_bundle: Callable[[str], Path]) -> Path:
    return sample_bundle("iris_frame")


def spark_predict(cli: Cli, bundle: Path, source: Path | str, target: Path, *args: str) -> Any:
    return cli("predict", bundle, "--engine", "spark", "--master", "local[2]", "--input", source, "--output", target,
               "--conf", "spark.ui.enabled=false", *args)


def test_golden_cases_that_do_not_replay_on_the_executor_fail_the_job(
    cli: Cli, make_bundle: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = make_bundle("iris_frame")

    def wrong(golden: dict[str, Any]) -> None:
        golden["cases"][0]["expected"] = [2]

    edit_golden(bundle, wrong)
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)  # scikit-learn is there: only the golden case is off
    source = write_iris_parquet(tmp_path / "in.parquet", 10)
    result = spark_predict(cli, bundle, source, tmp_path / "out.parquet", "--env", "executor")
    assert result.exit_code == 1, result.output
    assert "error: golden case predict-0 (predict) does not replay on executor " in result.output
    assert "expected [2], got [0]" in result.output


def test_skip_invalid_gives_null_and_the_error(
    cli: Cli, bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)
    source = write_iris_parquet(tmp_path / "in.parquet", 1000, nulls=(3, 417))
    target = tmp_path / "out.parquet"
    result = spark_predict(cli, bundle, source, target, "--id-column", "id", "--skip-invalid", "--env", "executor")
    assert result.exit_code == 0, result.output
    assert "predict: 1,000 rows in " in result.output and "2 invalid" in result.output
    table = read_sorted(target)
    assert table.column_names == ["id", "prediction", "error"]
    rows = table.to_pylist()
    assert [row["id"] for row in rows] == list(range(1000))
    bad = {row["id"]: row for row in rows if row["error"] is not None}
    assert sorted(bad) == [3, 417]
    assert all(row["prediction"] is None for row in bad.values())
    assert 'column "petal width (cm)"' in bad[3]["error"] and "null" in bad[3]["error"], bad[3]
    assert all(row["prediction"] in (0, 1, 2) for row in rows if row["id"] not in bad)


ROWS = 200_000  # smaller than the million: CI's budget for these tests is ~2 minutes on 2 cores


def test_rows_match_mlship_predict_row_by_row_with_the_executors_python(
    cli: Cli, bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)  # the executors' Python: this venv, scikit-learn and all
    source = write_iris_parquet(tmp_path / "in.parquet", ROWS)
    local = tmp_path / "local.parquet"
    done = subprocess.run([sys.executable, "-m", "mlship", "predict", str(bundle), "-i", str(source), "-o",
                           str(local), "--id-column", "id"], env=clean_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    target = tmp_path / "spark.parquet"
    result = spark_predict(cli, bundle, source, target, "--id-column", "id", "--env", "executor")
    assert result.exit_code == 0, result.output
    assert f"predict: {ROWS:,} rows in " in result.output
    ours, theirs = read_sorted(target), read_sorted(local)
    assert ours.column_names == ["id", "prediction"] == theirs.column_names
    assert str(ours.schema.field("prediction").type) == "int64"
    assert ours.num_rows == ROWS
    assert ours.column("id").equals(theirs.column("id"))
    assert ours.column("prediction").equals(theirs.column("prediction"))
    assert set(ours.column("prediction").to_pylist()) == {0, 1, 2}
