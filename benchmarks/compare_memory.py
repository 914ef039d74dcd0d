#!/usr/bin/env python3
"""`mlship compare` over a big labelled CSV: time, and the comparing process's peak memory, at N and 10 x N rows.

Packages tests/samples/notebooks/regularised.ipynb twice (C = 1.0 and C = 0.01), writes CSVs of N and 10 x N
rows (the 171 test rows over and over, with their label), runs `mlship compare OLD NEW --data F --label label
--method predict --method predict_proba` for each, and prints per run: the rows compared, the wall time, rows/s
end to end (both bundles' start-up included), and the peak RSS (os.wait4: on Linux the largest of the mlship
process and the bundles' processes it waited for; those hold pandas and scikit-learn). The baseline is the N-row
run, measured in the same run: what memory grows by at 10 x the rows is what the comparison keeps per row (8
bytes for |new - old|, a count per label pair); the bundles read and predict in chunks.

Measured on 2 shared cores (N = 20,000): 20,000 rows 30.8 s, 649 rows/s, 206.9 MiB; 200,000 rows 60.3 s,
3,315 rows/s, 207.7 MiB (x1.00).

    python benchmarks/compare_memory.py                  # N = 30,000 (about 1-2 minutes on 2 cores)
    python benchmarks/compare_memory.py --rows 100000
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "tests" / "samples" / "notebooks" / "regularised.ipynb"
FEATURES = ["mean radius", "mean texture", "mean smoothness", "mean concavity"]


def mlship(*args: str | Path, cwd: Path) -> tuple[int, float, int, str]:
    """Exit code, wall seconds, peak RSS in bytes of the mlship process, stderr."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, "-m", "mlship", *map(str, args)], cwd=cwd, stderr=err,
                                stdout=subprocess.DEVNULL, env={**os.environ, "MLSHIP_PLAIN": "1"})
        _, status, usage = os.wait4(proc.pid, 0)
        err.seek(0)
        return (os.waitstatus_to_exitcode(status), time.perf_counter() - start, usage.ru_maxrss * 1024,
                err.read().decode())


def write_csv(path: Path, rows: int) -> None:
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    data = load_breast_cancer(as_frame=True)
    _, x_test, _, y_test = train_test_split(data.data[FEATURES], data.target, test_size=0.3, random_state=0)
    body = [[*map(repr, row), str(label)] for row, label in zip(x_test.values.tolist(), y_test, strict=True)]
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow([*FEATURES, "label"])
        writer.writerows(body[i % len(body)] for i in range(rows))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=30_000, help="N (default %(default)s)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlship-bench-compare-") as tmp:
        work = Path(tmp)
        for name, c in (("old", "1.0"), ("new", "0.01")):
            notebook = work / f"{name}.ipynb"
            notebook.write_text(NOTEBOOK.read_text().replace("C = 1.0", f"C = {c}"))
            code, seconds, _, err = mlship("package", notebook, "-o", work / name, cwd=work)
            if code:
                print(err, file=sys.stderr)
                return 1
        print(f"{'rows':>10}  {'wall s':>7}  {'rows/s':>9}  {'peak RSS':>17}")
        base = None
        for rows in (args.rows, 10 * args.rows):
            data = work / f"rows-{rows}.csv"
            write_csv(data, rows)
            code, seconds, rss, err = mlship("compare", "old", "new", "--data", data, "--label", "label",
                                             "--method", "predict", "--method", "predict_proba", cwd=work)
            if code not in (0, 1):
                print(err, file=sys.stderr)
                return 1
            base = base or rss
            print(f"{rows:>10,}  {seconds:>7.1f}  {rows / seconds:>9,.0f}  {rss / 2**20:>12.1f} MiB"
                  f"  (x{rss / base:.2f} the {args.rows:,}-row run)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
