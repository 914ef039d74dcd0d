"""How long `mlship package` takes per example, and how much of it is the notebook's own execution.

Baseline named in the output: the notebook alone, executed by `jupyter nbconvert --execute` in a fresh kernel
(the time any tool must spend just to run it). Usage: python benchmarks/package_examples.py [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ["iris/iris.ipynb", "reviews/reviews.ipynb", "churn/churn.ipynb", "taxi/taxi.ipynb"]


def run(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"{'example':10} {'package s':>10} {'notebook s':>11} {'mlship s':>9} {'nbconvert s':>12} "
          f"{'ratio':>6} {'bundle KB':>10} {'values.pkl KB':>14}")
    with tempfile.TemporaryDirectory() as tmp:
        for rel in EXAMPLES:
            nb = ROOT / "examples" / rel
            totals, notebooks, baselines = [], [], []
            out = Path(tmp) / nb.stem
            for _ in range(args.repeat):
                proc = subprocess.run([sys.executable, "-m", "mlship", "package", str(nb), "-o", str(out), "--force",
                                       "--json"], cwd=nb.parent, check=True, capture_output=True, text=True)
                timings = json.loads(proc.stdout)["timings"]
                totals.append(timings["total"])
                notebooks.append(timings["notebook"])
                baselines.append(run(["jupyter", "nbconvert", "--to", "notebook", "--execute", "--stdout", nb.name],
                                     nb.parent))
            total, notebook, base = (statistics.median(v) for v in (totals, notebooks, baselines))
            size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1024
            pkl = out / "artifacts" / "values.pkl"
            print(f"{nb.stem:10} {total:10.2f} {notebook:11.2f} {total - notebook:9.2f} {base:12.2f} "
                  f"{total / base:6.2f} {size:10.0f} {pkl.stat().st_size / 1024 if pkl.exists() else 0:14.0f}")
    print("package s: wall time of `mlship package` (median); notebook s: executing the cells in the kernel; "
          "mlship s: the rest (kernel start, analysis, capture, dependency probe, fresh-process verification); "
          "nbconvert s: baseline, the notebook run alone by nbconvert; ratio = package / nbconvert.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
