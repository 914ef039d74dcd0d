"""Batch jobs as a bundle runs them: `python -m mlship_runtime predict` in the bundle directory, on big files."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from mlship.runtime._bundle import load_bundle
from mlship.runtime._codec import to_jsonable
from mlship.runtime._schema import decode_request
from tests.support.servers import clean_env

pytestmark = pytest.mark.e2e

COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
MiB = 1024 * 1024


def iris_data() -> list[list[float]]:
    from sklearn.datasets import load_iris

    data: list[list[float]] = load_iris().data.tolist()
    return data


def write_iris_csv(path: Path, rows: int) -> Path:
    """`rows` rows: an id column (the row's index), then the 150 iris rows over and over."""
    lines = [",".join(map(repr, row)) for row in iris_data()]
    with path.open("w") as stream:
        stream.write("id," + ",".join(f'"{name}"' for name in COLUMNS) + "\n")
        stream.writelines(f"{index},{lines[index % 150]}\n" for index in range(rows))
    return path


# Starts the job and reports the job's own peak RSS. A child forked from pytest would not do: Linux keeps a
# process's peak RSS across exec, so it would report at least pytest's own size at the fork (over 600 MiB late in
# a full run). This small launcher's child starts from the launcher's few MiB instead.
_LAUNCHER = """
import os, subprocess, sys
process = subprocess.Popen(sys.argv[2:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(process.pid, 0)
with open(sys.argv[1], "w") as report:
    report.write(str(usage.ru_maxrss * 1024))  # Linux reports KiB
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(bundle: Path, *args: str, stderr: Path) -> tuple[int, int]:
    """Run `python -m mlship_runtime predict . ARGS` in the bundle; return its exit code and peak RSS in bytes."""
    peak = stderr.with_name(stderr.name + ".peak")
    with stderr.open("w") as errors:
        code = subprocess.run(
            [sys.executable, "-c", _LAUNCHER, str(peak), sys.executable, "-m", "mlship_runtime", "predict", ".", *args],
            cwd=bundle, env=clean_env(), stdout=subprocess.DEVNULL, stderr=errors, check=False,
        ).returncode
    return code, int(peak.read_text())


def test_a_million_rows_in_bounded_memory_and_in_input_order(
    sample_bundle: Callable[[str], Path], tmp_path: Path
) -> None:
    bundle = sample_bundle("iris_frame")
    loaded = load_bundle(bundle)
    try:
        rows = [dict(zip(COLUMNS, row, strict=True)) for row in iris_data()]
        expected = [
            str(p)
            for p in to_jsonable(
                loaded.methods["predict"](decode_request({"instances": rows}, loaded.schema))
            )
        ]
    finally:
        sys.modules.pop("mlship_predictor", None)

    peaks = {}
    for count in (200_000, 1_000_000):
        source = write_iris_csv(tmp_path / f"in_{count}.csv", count)
        target = tmp_path / f"out_{count}.csv"
        code, peaks[count] = run_measured(
            bundle,
            "--input",
            str(source),
            "--output",
            str(target),
            "--id-column",
            "id",
            stderr=tmp_path / "err",
        )
        summary = (tmp_path / "err").read_text()
        assert code == 0, summary
        # Not a terminal: no progress redraws, one summary line.
        assert summary.startswith(f"predict: {count:,} rows in ") and summary.count("\n") == 1, summary
        with target.open(newline="") as stream:
            reader = csv.reader(stream)
            assert next(reader) == ["id", "prediction"]
            written = 0
            for index, row in enumerate(reader):
                if row != [str(index), expected[index % 150]]:
                    pytest.fail(
                        f"output row {index} is {row}, expected {[str(index), expected[index % 150]]}"
                    )
                written += 1
        assert written == count
        source.unlink()
        target.unlink()
    # The process imports pandas and scikit-learn (about 200 MiB here); the job itself adds a few chunks' worth,
    # whatever the size of the file.
    assert peaks[1_000_000] < 600 * MiB, peaks
    assert peaks[1_000_000] < peaks[200_000] + 32 * MiB, peaks


def test_mlship_predict_runs_the_bundles_runtime(
    sample_bundle: Callable[[str], Path], tmp_path: Path
) -> None:
    bundle = sample_bundle("iris_frame")
    write_iris_csv(tmp_path / "in.csv", 3)
    # Relative paths are the caller's: the command resolves them before it becomes the runtime in the bundle.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlship",
            "predict",
            str(bundle),
            "-i",
            "in.csv",
            "-o",
            "out.jsonl",
            "--id-column",
            "id",
        ],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(
        rf"predict: 3 rows in [\d.]+ s \([\d,]+ rows/s\) -> {re.escape(str(tmp_path))}/out.jsonl\n",
        result.stderr,
    )
    assert (tmp_path / "out.jsonl").read_text().splitlines() == [
        '{"id":"0","prediction":0}',
        '{"id":"1","prediction":0}',
        '{"id":"2","prediction":0}',
    ]
