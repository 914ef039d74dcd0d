#!/usr/bin/env python3
"""Spark scoring (`mlship predict --engine spark`) next to `mlship predict` in one process and MLflow's spark_udf.

One model, one file, one run. It trains `lr` (StandardScaler + LogisticRegression, as batch_predict.py) on iris as
a DataFrame, pickles it once, packages it with `mlship package` (a notebook that loads the pickle) and saves the
same pickle as an MLflow model; writes a parquet file of N rows (an id column, then the 150 iris rows over and
over); then, each in a process (and a JVM) of its own, on the same master (default local[2]):

- `mlship predict BUNDLE --engine spark` with the shipped environment (the default), and with `--env executor`
  (the executors' Python is this one, which has scikit-learn): what shipping the environment costs per job;
- `mlship predict BUNDLE` (one process, no Spark): the baseline;
- MLflow's `mlflow.pyfunc.spark_udf(env_manager="local")` (benchmarks/_mlflow_spark.py, in MLflow's own venv,
  made on first use under the cache folder: mlflow-skinny at requirements/mlflow-client.in's pin, with this
  environment's pyspark, scikit-learn, numpy, pandas and pyarrow);

and checks that all of them give the same prediction for every id. Before that, the environment's ship time:
the archive made with an empty wheel cache (wheels downloaded), made again from cached wheels, and taken from
the cache (what every later job pays), and its size.

`job rows/s` = rows / the job's own time (read, score, write, as each prints it); `end-to-end` = rows / the
process's wall time (Python, JVM, session and the environment's archive included).

    python benchmarks/spark_batch.py                       # 1,000,000 rows; about 5 minutes (more on first run)
    python benchmarks/spark_batch.py --rows 200000 --no-mlflow
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from batch_predict import package, train

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
CELLS = [
    "import pickle\n\nfrom sklearn.datasets import load_iris",
    "X, y = load_iris(return_X_y=True, as_frame=True)\nwith open('model.pkl', 'rb') as f:\n    model = pickle.load(f)",
    "predictions = model.predict(X)\n(predictions == y).mean()",
]
SUMMARY = re.compile(r"predict: ([\d,]+) rows in .*?\(([\d,]+) rows/s\)")
SAME_VERSIONS = ("pyspark", "scikit-learn", "numpy", "pandas", "pyarrow", "scipy")


def train_frame() -> Any:
    """batch_predict's lr, fitted on the iris DataFrame (named columns, as the parquet file has them)."""
    from sklearn.datasets import load_iris

    estimator = train("lr")
    features, target = load_iris(return_X_y=True, as_frame=True)
    return estimator.fit(features, target)


def write_parquet(path: Path, rows: int) -> None:
    import numpy
    import pyarrow
    import pyarrow.parquet as pq
    from sklearn.datasets import load_iris

    data = numpy.resize(load_iris().data, (rows, 4))
    table = {"id": numpy.arange(rows, dtype="int64"), **{name: data[:, i] for i, name in enumerate(COLUMNS)}}
    pq.write_table(pyarrow.table(table), path, row_group_size=100_000)


def run(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, str, str]:
    """Wall seconds, stdout, stderr of one child; exits the benchmark when it fails."""
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **(env or {})},
                          stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(argv)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return wall, done.stdout, done.stderr


def job_seconds(text: str) -> float:
    """The job's own seconds, from the summary line `predict: N rows in T (R rows/s)` (rows / rate)."""
    match = SUMMARY.search(text)
    if match is None:
        sys.exit(f"no summary line in:\n{text[-3000:]}")
    return int(match.group(1).replace(",", "")) / float(match.group(2).replace(",", ""))


def ship_times(bundle: Path, cache: Path) -> dict[str, float]:
    from mlship.spark_env import environment_archive

    figures: dict[str, float] = {}
    for label in ("cold", "wheels cached", "archive cached"):
        if label == "wheels cached":
            for archive in (cache / "spark-env").glob("*.tar.gz"):
                archive.unlink()
        started = time.perf_counter()
        environment = environment_archive(bundle, cache_dir=cache)
        figures[label] = time.perf_counter() - started
        figures["size"] = environment.size
    return figures


def mlflow_python(cache: Path) -> Path:
    """MLflow's venv for this benchmark: made once per set of versions (about 2 minutes, from PyPI)."""
    pin = next(line for line in (ROOT / "requirements" / "mlflow-client.in").read_text().splitlines()
               if line.startswith("mlflow-skinny=="))
    specs = [pin, *(f"{name}=={importlib.metadata.version(name)}" for name in SAME_VERSIONS)]
    key = hashlib.sha256("\n".join([platform.python_version(), *specs]).encode()).hexdigest()[:12]
    venv = cache / f"mlflow-spark-{key}"
    python = venv / "bin" / "python"
    if not (venv / ".complete").exists():
        shutil.rmtree(venv, ignore_errors=True)
        print(f"making MLflow's venv {venv}: {', '.join(specs)}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *specs])
        (venv / ".complete").write_text("\n".join(specs))
    return python


def predictions(path: Path) -> Any:
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["id", "prediction"]).sort_by("id")
    return table.column("prediction")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--no-mlflow", action="store_true", help="leave out MLflow's spark_udf")
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("MLSHIP_BENCH_CACHE")
                                                           or Path.home() / ".cache" / "mlship-bench"),
                        help="where MLflow's venv is kept [env var: MLSHIP_BENCH_CACHE]")
    args = parser.parse_args()
    plain = {"MLSHIP_PLAIN": "1", "COLUMNS": "400"}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="mlship-spark-bench-") as tmp:
        work = Path(tmp)
        source = work / "data" / "iris.parquet"
        source.parent.mkdir()
        write_parquet(source, args.rows)
        estimator = train_frame()
        bundle = package("lr", estimator, work, CELLS)
        print(f"input: {args.rows:,} rows, {source.stat().st_size / 1e6:.0f} MB of parquet; {os.cpu_count()} cores; "
              f"load average {load_before[0]:.1f}", flush=True)

        wheels = work / "wheel-cache"  # empty: the first archive downloads its wheels, as on a new machine
        ship = ship_times(bundle, wheels)
        print(f"environment: {ship['size'] / 2**20:.0f} MiB; cold {ship['cold']:.1f} s, from cached wheels "
              f"{ship['wheels cached']:.1f} s, cached {ship['archive cached']:.2f} s", flush=True)

        results: dict[str, tuple[float, float]] = {}  # name -> (job seconds, wall seconds)
        outputs: dict[str, Path] = {}
        spark = [sys.executable, "-m", "mlship", "predict", str(bundle), "--engine", "spark", "--master", args.master,
                 "--input", str(source), "--id-column", "id", "--conf", "spark.ui.enabled=false",
                 "--wheel-cache", str(wheels)]
        for name, extra in (("mlship spark (shipped env)", []), ("mlship spark (--env executor)", ["--env", "executor"])):
            target = work / f"out-{len(outputs)}.parquet"
            wall, out, err = run([*spark, "--output", str(target), *extra], {**plain, "PYSPARK_PYTHON": sys.executable})
            results[name] = (job_seconds(out + err), wall)
            outputs[name] = target
            print(f"  {name}: {wall:.1f} s wall", flush=True)

        target = work / "out-local.parquet"
        wall, out, err = run([sys.executable, "-m", "mlship", "predict", str(bundle), "-i", str(source), "-o",
                              str(target), "--id-column", "id"], plain)
        results["mlship predict (1 process)"] = (job_seconds(out + err), wall)
        outputs["mlship predict (1 process)"] = target
        print(f"  mlship predict: {wall:.1f} s wall", flush=True)

        if not args.no_mlflow:
            python = mlflow_python(args.cache)
            (work / "model.pkl").write_bytes((work / "notebook-lr" / "model.pkl").read_bytes())
            target = work / "out-mlflow.parquet"
            plan = {"pickle": str(work / "model.pkl"), "model_dir": str(work / "mlflow-model"), "source": str(source),
                    "target": str(target), "columns": COLUMNS, "master": args.master}
            wall, out, _ = run([str(python), str(Path(__file__).with_name("_mlflow_spark.py")), json.dumps(plan)])
            figures = json.loads(out.strip().splitlines()[-1])
            assert figures["rows"] == args.rows, figures
            results[f"MLflow {figures['mlflow']} spark_udf"] = (figures["seconds"], wall)
            outputs[f"MLflow {figures['mlflow']} spark_udf"] = target
            print(f"  MLflow spark_udf: {wall:.1f} s wall", flush=True)

        reference = predictions(outputs["mlship predict (1 process)"])
        agree = {name: predictions(path).equals(reference) for name, path in outputs.items()}
    load_after = os.getloadavg()

    base = results["mlship predict (1 process)"][0]
    peer = next((seconds for name, (seconds, _) in results.items() if name.startswith("MLflow")), None)
    print()
    print(f"{'run':32} {'job s':>7} {'job rows/s':>11} {'wall s':>7} {'end-to-end rows/s':>18} "
          f"{'job vs 1 process':>17} {'job vs MLflow':>14} {'same output':>12}")
    for name, (seconds, wall) in results.items():
        versus_peer = f"{peer / seconds:14.2f}" if peer else f"{'n/a':>14}"
        print(f"{name:32} {seconds:7.1f} {args.rows / seconds:11,.0f} {wall:7.1f} {args.rows / wall:18,.0f} "
              f"{base / seconds:17.2f} {versus_peer} {'yes' if agree[name] else 'NO':>12}")
    print(f"environment archive: {ship['size'] / 2**20:.0f} MiB; made cold (wheels downloaded) {ship['cold']:.1f} s, "
          f"again from cached wheels {ship['wheels cached']:.1f} s, from the archive cache {ship['archive cached']:.2f} s")
    print(f"ratios: higher is faster (the other's seconds / this run's); load average {load_before[0]:.1f} before, "
          f"{load_after[0]:.1f} after, on {os.cpu_count()} cores")
    if max(load_before[0], load_after[0]) > (os.cpu_count() or 1):
        print("warning: the machine was busy with other work; run again on a quiet machine for figures to compare")
    return 0 if all(agree.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
