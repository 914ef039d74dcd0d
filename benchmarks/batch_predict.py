#!/usr/bin/env python3
"""Batch jobs (`python -m mlship_runtime predict`) over a big CSV, next to in-process predict in 32-row batches.

For each iris model of the serving benchmark (`lr` = StandardScaler + LogisticRegression, `rf` = a 100-tree random
forest, trained the same way), this packages a tiny notebook with `mlship package`, writes a CSV of N rows (the
150 iris rows over and over, with an id column), runs the batch job in the bundle directory as a container or
the on-prem install would, and prints:

- job rows/s: rows / the job's own time (reading, validating, predicting, writing; as its summary line says);
- end-to-end rows/s: rows / the process's wall time, start-up and model loading included;
- peak RSS of the job, and of the same bundle only loaded (`verify`): the difference is what the job holds;
- the baseline: `estimator.predict` on 32-row numpy batches in this interpreter, in rows/s (the figure issue 5
  and benchmarks/serving.py call "in-process predict, 32-row batch"), measured in the same run.

    python benchmarks/batch_predict.py                     # 1,000,000 rows, lr and rf (about 1-2 minutes)
    python benchmarks/batch_predict.py --rows 200000 --models lr
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MODELS = ("lr", "rf")
NOTEBOOK_CELLS = [
    "import pickle\n\nfrom sklearn.datasets import load_iris",
    "X, y = load_iris(return_X_y=True)\nwith open('model.pkl', 'rb') as f:\n    model = pickle.load(f)",
    "predictions = model.predict(X)\n(predictions == y).mean()",
]
SUMMARY = re.compile(r"predict: ([\d,]+) rows in .* \(([\d,]+) rows/s\)")


def train(name: str) -> Any:
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    features, target = load_iris(return_X_y=True)
    if name == "lr":
        return Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression())]).fit(features, target)
    return RandomForestClassifier(n_estimators=100, random_state=0).fit(features, target)


def package(name: str, estimator: Any, workdir: Path, sources: list[str] = NOTEBOOK_CELLS) -> Path:
    """A bundle of a notebook of the cells `sources` that loads `estimator` from model.pkl."""
    folder = workdir / f"notebook-{name}"
    folder.mkdir()
    (folder / "model.pkl").write_bytes(pickle.dumps(estimator))
    cells = [
        {
            "cell_type": "code",
            "execution_count": None,
            "id": f"c{i}",
            "metadata": {},
            "outputs": [],
            "source": src,
        }
        for i, src in enumerate(sources)
    ]
    notebook = {
        "cells": cells,
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    (folder / f"iris_{name}.ipynb").write_text(json.dumps(notebook))
    out = workdir / f"bundle-{name}"
    subprocess.run(
        [sys.executable, "-m", "mlship", "package", f"iris_{name}.ipynb", "-o", str(out), "--model", "model"],
        cwd=folder,
        env=os.environ | {"MLSHIP_PLAIN": "1"},
        check=True,
        capture_output=True,
    )
    return out


def write_csv(path: Path, rows: int) -> None:
    from sklearn.datasets import load_iris

    lines = [",".join(map(repr, row)) for row in load_iris().data.tolist()]
    with path.open("w") as stream:
        stream.write("id,sepal_length,sepal_width,petal_length,petal_width\n")
        stream.writelines(f"{index},{lines[index % 150]}\n" for index in range(rows))


def run_measured(argv: list[str], cwd: Path) -> tuple[int, float, int, str]:
    """Exit code, wall seconds, peak RSS (bytes) of this one child, and its stderr."""
    with tempfile.TemporaryFile("w+") as errors:
        start = time.perf_counter()
        process = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        errors.seek(0)
        return process.returncode, seconds, usage.ru_maxrss * 1024, errors.read()


def rows_per_second_32(estimator: Any, seconds: float) -> float:
    """estimator.predict on 32-row numpy batches, in this interpreter: rows/s (bounded by count and time)."""
    import numpy as np
    from sklearn.datasets import load_iris

    batch = np.asarray(load_iris().data[:32], dtype=np.float64)
    for _ in range(3):
        estimator.predict(batch)
    calls, start = 0, time.perf_counter()
    while calls < 1_000_000:
        estimator.predict(batch)
        calls += 1
        if calls % 8 == 0 and time.perf_counter() - start >= seconds:
            break
    return 32 * calls / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated: lr, rf")
    parser.add_argument("--chunk-rows", type=int, default=None, help="passed to the job (default: its own)")
    parser.add_argument("--seconds", type=float, default=5.0, help="per in-process measurement")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="mlship-batch-bench-") as tmp:
        workdir = Path(tmp)
        source = workdir / "in.csv"
        write_csv(source, args.rows)
        print(
            f"input: {args.rows:,} rows, {source.stat().st_size / 1e6:.0f} MB of CSV; {os.cpu_count()} cores"
        )
        for name in args.models.split(","):
            estimator = train(name)
            bundle = package(name, estimator, workdir)
            runtime = [sys.executable, "-m", "mlship_runtime"]
            code, _, load_rss, err = run_measured([*runtime, "verify", "."], bundle)
            assert code == 0, err
            job = [*runtime, "predict", ".", "--input", str(source), "--output", str(workdir / "out.csv")]
            job += ["--id-column", "id"] + (["--chunk-rows", str(args.chunk_rows)] if args.chunk_rows else [])
            code, wall, peak, err = run_measured(job, bundle)
            assert code == 0, err
            match = SUMMARY.search(err)
            assert match, err
            with (workdir / "out.csv").open() as stream:
                assert sum(1 for _ in stream) == args.rows + 1
            baseline = rows_per_second_32(estimator, args.seconds)
            job_rate = float(match.group(2).replace(",", ""))
            results.append((name, job_rate, args.rows / wall, wall, peak, load_rss, baseline))
            print(f"  {name}: {err.strip()}", flush=True)
    header = (
        f"{'model':6} {'job rows/s':>11} {'end-to-end rows/s':>18} {'wall s':>7} {'peak RSS MB':>12} "
        f"{'loaded only MB':>15} {'in-process 32-row rows/s':>25} {'job / 32-row':>13}"
    )
    print(header)
    for name, job_rate, e2e, wall, peak, load_rss, baseline in results:
        print(
            f"{name:6} {job_rate:11,.0f} {e2e:18,.0f} {wall:7.1f} {peak / 1e6:12.0f} {load_rss / 1e6:15.0f} "
            f"{baseline:25,.0f} {job_rate / baseline:13.2f}"
        )
    print(
        "job rows/s: the job's own rate (read, validate, predict, write); end-to-end: including process start and "
        "model load; peak RSS: the job process; loaded only: the same bundle just loaded and verified; in-process "
        "32-row: estimator.predict on 32-row numpy batches in this interpreter (no validation, no I/O)."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
