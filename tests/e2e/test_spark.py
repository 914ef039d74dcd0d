"""`mlship predict --engine spark` and mlship.runtime.spark on a real Spark (local[2] and a standalone cluster).

The local jobs run in this process, so they all share one JVM. The CLI's jobs (first in this file) start and
stop their own SparkContext each, with `--env executor` (no environment to unpack: quick); then one session with
the shipped environment serves the next tests. The executors' own Python is a venv without scikit-learn: the
shipped environment must make the jobs work, and `--env executor` must say why it cannot. Last, a standalone
master and worker on 127.0.0.1 (tests/support/spark_cluster.py) run the CLI's job with its driver in a process
of its own, as a user runs it.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cli
from tests.support.servers import clean_env
from tests.support.spark_cluster import Cluster, standalone_cluster
from tests.unit.runtime.sample_bundles import edit_golden

pytestmark = [
    pytest.mark.requires_java,
    # py4j's sockets and pyspark's own deprecation notices are not this project's warnings.
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]

COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
MILLION = 1_000_000


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


@pytest.fixture(scope="module")
def environment(bundle: Path, wheel_cache: Path) -> Any:
    from mlship.spark_env import environment_archive

    return environment_archive(bundle, cache_dir=wheel_cache)


@pytest.fixture(scope="module")
def no_sklearn(environment: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Python for the executors without scikit-learn: the shipped environment itself (pandas, pyarrow,
    numpy: what a pandas UDF needs), unpacked, with scikit-learn taken out."""
    root = tmp_path_factory.mktemp("executor-python") / "venv"
    with tarfile.open(environment.archive) as tar:
        tar.extractall(root, filter="tar")
    site = next((root / "lib").glob("python3.*/site-packages"))
    for path in [*site.glob("sklearn"), *site.glob("scikit_learn-*")]:
        shutil.rmtree(path)
    python = root / "bin" / "python"
    check = subprocess.run([python, "-c", "import pandas, pyarrow; import sklearn"], capture_output=True, text=True)
    assert "No module named 'sklearn'" in check.stderr, check.stderr
    return python


def spark_predict(cli: Cli, bundle: Path, source: Path | str, target: Path, *args: str) -> Any:
    return cli("predict", bundle, "--engine", "spark", "--master", "local[2]", "--input", source, "--output", target,
               "--conf", "spark.ui.enabled=false", *args)


# -- the CLI, each job in its own context (before the module's session starts: getOrCreate would return it) -----


def test_the_executors_own_python_without_scikit_learn_is_refused_by_name(
    cli: Cli, bundle: Path, no_sklearn: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYSPARK_PYTHON", str(no_sklearn))
    source = write_iris_parquet(tmp_path / "in.parquet", 300)
    result = spark_predict(cli, bundle, source, tmp_path / "out.parquet", "--env", "executor")
    assert result.exit_code == 1, result.output
    assert f"(Python {'.'.join(map(str, sys.version_info[:2]))}" in result.output
    assert f"at {no_sklearn}) cannot load the bundle: predictor.py failed to import" in result.output
    assert "No module named 'sklearn'" in result.output
    assert "leave out --env executor" in result.output
    assert not (tmp_path / "out.parquet").exists()


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


def local_predict(bundle: Path, source: Path, target: Path, *args: str) -> None:
    """`mlship predict` on this machine, in a process of its own: what Spark must match."""
    done = subprocess.run([sys.executable, "-m", "mlship", "predict", str(bundle), "-i", str(source), "-o",
                           str(target), *args], env=clean_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def write_iris_jsonl(path: Path, rows: int, *, broken: tuple[int, ...] = ()) -> Path:
    """One JSON object per line (an id, then the iris columns); the lines `broken` are not JSON."""
    from sklearn.datasets import load_iris

    data = load_iris().data.tolist()
    with path.open("w") as stream:
        for index in range(rows):
            row = {"id": index, **dict(zip(COLUMNS, data[index % 150], strict=True))}
            stream.write("{not json\n" if index in broken else json.dumps(row) + "\n")
    return path


def test_an_object_per_row_becomes_its_keys_columns(
    cli: Cli, sample_bundle: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow.parquet as pq

    bundle = sample_bundle("iris_objects")
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)
    source = write_iris_jsonl(tmp_path / "in.jsonl", 150)
    result = spark_predict(cli, bundle, source, tmp_path / "out.parquet", "--id-column", "id", "--method", "explain",
                           "--env", "executor")
    assert result.exit_code == 0, result.output
    local_predict(bundle, source, tmp_path / "local.parquet", "--id-column", "id", "--method", "explain")
    ours = read_sorted(tmp_path / "out.parquet")
    theirs = pq.read_table(tmp_path / "local.parquet")
    assert ours.column_names == ["id", "label", "name", "confidence", "proba", "top"] == theirs.column_names
    assert [str(ours.schema.field(name).type) for name in ours.column_names] == [
        "int64", "int64", "string", "double", "list<element: double>", "string"]
    for name in ["id", "label", "name", "confidence", "proba"]:
        assert ours.column(name).to_pylist() == theirs.column(name).to_pylist(), name
    # A nested object has no one Spark type: JSON text
    assert [json.loads(text) for text in ours.column("top").to_pylist()] == theirs.column("top").to_pylist()


# -- one session with the shipped environment, on executors whose own Python lacks scikit-learn -----------------


@pytest.fixture(scope="module")
def shipped(environment: Any, no_sklearn: Path) -> Iterator[Any]:
    from mlship.spark_env import start_session

    old = os.environ.get("PYSPARK_PYTHON")
    os.environ["PYSPARK_PYTHON"] = str(no_sklearn)
    try:
        spark = start_session(environment, master="local[2]", conf={"spark.ui.enabled": "false"})
    finally:
        if old is None:
            os.environ.pop("PYSPARK_PYTHON", None)
        else:
            os.environ["PYSPARK_PYTHON"] = old
    assert spark.sparkContext.pythonExec.endswith("/mlship_env/bin/python")
    yield spark
    spark.stop()


@pytest.fixture(scope="module")
def million(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_iris_parquet(tmp_path_factory.mktemp("data") / "iris.parquet", MILLION)


def test_a_million_rows_match_mlship_predict_row_by_row(
    shipped: Any, bundle: Path, million: Path, tmp_path: Path
) -> None:
    from mlship.runtime.spark import predict_files

    local = tmp_path / "local.parquet"
    done = subprocess.run([sys.executable, "-m", "mlship", "predict", str(bundle), "-i", str(million), "-o",
                           str(local), "--id-column", "id"], env=clean_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

    result = predict_files(shipped, bundle, str(million.parent / "*.parquet"), str(tmp_path / "spark.parquet"),
                             id_columns=["id"])
    assert result.rows == MILLION
    ours, theirs = read_sorted(tmp_path / "spark.parquet"), read_sorted(local)
    assert ours.column_names == ["id", "prediction"] == theirs.column_names
    assert str(ours.schema.field("prediction").type) == "int64"
    assert ours.num_rows == MILLION
    assert ours.column("id").equals(theirs.column("id"))
    assert ours.column("prediction").equals(theirs.column("prediction"))


def test_a_bad_row_fails_the_job_naming_it(shipped: Any, bundle: Path, tmp_path: Path) -> None:
    from mlship.runtime._batch_input import BatchError
    from mlship.runtime.spark import predict_files

    source = write_iris_parquet(tmp_path / "in.parquet", 1000, nulls=(417,))
    with pytest.raises(BatchError) as caught:
        predict_files(shipped, bundle, str(source), str(tmp_path / "out.parquet"), id_columns=["id"])
    message = caught.value.message
    assert message.startswith("executor "), message
    assert 'column "petal width (cm)"' in message and "null" in message, message
    assert '"id": 417' in message, message
    assert caught.value.hint is None
    assert not (tmp_path / "out.parquet").exists()


def test_bundle_udf_returns_probabilities_as_arrays(shipped: Any, bundle: Path, tmp_path: Path) -> None:
    from mlship.runtime._bundle import load_bundle
    from mlship.runtime._codec import to_jsonable
    from mlship.runtime._schema import decode_request
    from mlship.runtime.spark import bundle_udf

    source = write_iris_parquet(tmp_path / "in.parquet", 150)
    frame = shipped.read.parquet(str(source))
    udf = bundle_udf(shipped, bundle, method="predict_proba")
    scored = frame.withColumn("proba", udf(*[frame[name] for name in COLUMNS]))
    assert scored.schema["proba"].dataType.simpleString() == "array<double>"
    got = {row["id"]: row["proba"] for row in scored.select("id", "proba").collect()}
    loaded = load_bundle(bundle)
    try:
        rows = [{name: row[name] for name in COLUMNS} for row in frame.orderBy("id").collect()]
        expected = to_jsonable(loaded.methods["predict_proba"](decode_request({"instances": rows}, loaded.schema)))
    finally:
        sys.modules.pop("mlship_predictor", None)
    assert [got[index] for index in range(150)] == expected


def test_csv_and_jsonl_in_and_out_as_mlship_predict_reads_and_writes_them(
    shipped: Any, bundle: Path, tmp_path: Path
) -> None:
    from mlship.runtime.spark import predict_files

    source = tmp_path / "in.csv"
    lines = ["id," + ",".join(f'"{name}"' for name in COLUMNS)]
    lines += [f"{index},5.1,3.5,1.4,{0.2 + index / 1000}" for index in range(300)]
    lines[8] = "7,5.1,3.5,1.4,"  # an empty cell: a missing value
    lines[10] = "9,5.1,3.5,1.4,five"  # not a number: stays text for the validator to name
    lines[13] = "12,5.1"  # fewer fields than the header
    source.write_text("\n".join(lines) + "\n")
    result = predict_files(shipped, bundle, str(source), str(tmp_path / "out.csv"), id_columns=["id"],
                           method="predict_proba", skip_invalid=True)
    assert (result.rows, result.rejected) == (300, 3)
    local_predict(bundle, source, tmp_path / "local.csv", "--id-column", "id", "--method", "predict_proba",
                  "--skip-invalid")
    ours = [row for part in sorted((tmp_path / "out.csv").glob("part-*.csv"))
            for row in csv.DictReader(part.open())]
    theirs = {row["id"]: row for row in csv.DictReader((tmp_path / "local.csv").open())}
    assert list(ours[0]) == ["id", "predict_proba_0", "predict_proba_1", "predict_proba_2", "error"]
    bad = {row["id"]: row["error"] for row in ours if row["error"]}
    assert sorted(bad) == ["12", "7", "9"] and sorted(theirs) == sorted(row["id"] for row in ours if not row["error"])
    assert "null" in bad["7"] and '"five"' in bad["9"] and bad["12"] == "has 2 fields, unlike the header"
    for row in ours:
        if not row["error"]:
            assert [float(row[f"predict_proba_{i}"]) for i in range(3)] == [
                float(theirs[row["id"]][f"predict_proba_{i}"]) for i in range(3)]

    source = write_iris_jsonl(tmp_path / "in.jsonl", 300, broken=(5,))
    result = predict_files(shipped, bundle, str(source), str(tmp_path / "out.jsonl"), id_columns=["id"],
                           skip_invalid=True)
    assert (result.rows, result.rejected) == (300, 1)
    local_predict(bundle, source, tmp_path / "local.jsonl", "--id-column", "id", "--skip-invalid")
    ours = [json.loads(line) for part in sorted((tmp_path / "out.jsonl").glob("part-*.json"))
            for line in part.read_text().splitlines()]
    theirs = {row["id"]: row for row in map(json.loads, (tmp_path / "local.jsonl").read_text().splitlines())}
    [broken] = [row for row in ours if row["error"]]
    assert broken["id"] is None and broken["prediction"] is None and broken["error"].startswith("not valid JSON")
    assert {row["id"]: row["prediction"] for row in ours if not row["error"]} == {
        key: row["prediction"] for key, row in theirs.items()}


# -- a standalone cluster (master and worker on 127.0.0.1): the driver in its own process, as a user runs it ------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with standalone_cluster(tmp_path_factory.mktemp("spark-cluster")) as started:
        yield started


def cluster_predict(cluster: Cluster, bundle: Path, source: Path, target: Path, python: Path, *args: str) -> Any:
    command = [sys.executable, "-m", "mlship", "predict", str(bundle), "--engine", "spark", "--master", cluster.url,
               "--input", str(source), "--output", str(target), "--id-column", "id", "--conf", "spark.ui.enabled=false",
               *args]
    env = clean_env(PYSPARK_PYTHON=str(python), SPARK_LOCAL_IP="127.0.0.1", MLSHIP_PLAIN="1")
    return subprocess.run(command, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=900)


def test_a_standalone_cluster_scores_with_the_shipped_environment(
    cluster: Cluster, bundle: Path, environment: Any, wheel_cache: Path, no_sklearn: Path, tmp_path: Path
) -> None:
    source = write_iris_parquet(tmp_path / "in.parquet", 2000)
    done = cluster_predict(cluster, bundle, source, tmp_path / "out.parquet", no_sklearn, "--wheel-cache",
                           str(wheel_cache))
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"environment from the cache ({environment.archive})" in done.stderr
    assert f"scoring {source} on {cluster.url}" in done.stderr
    local_predict(bundle, source, tmp_path / "local.parquet", "--id-column", "id")
    ours, theirs = read_sorted(tmp_path / "out.parquet"), read_sorted(tmp_path / "local.parquet")
    assert ours.num_rows == 2000 and ours.equals(theirs)
    # The executor ran in the worker's folder, where Spark unpacked the environment it was sent (the executors'
    # own Python, no_sklearn, cannot load the bundle: test_the_executors_own_python_without_scikit_learn_...).
    assert list(cluster.work_dir.glob("app-*/*/mlship_env/bin/python"))
