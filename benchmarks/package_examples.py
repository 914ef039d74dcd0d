"""How long `mlship package` takes per example, and how much of it is mlship's overhead beyond the notebook's run.

For each example: `notebook s` is the cells executing in the kernel, `total s` the whole packaging (the `timings`
of `mlship package --json`, median of --repeat runs), `overhead s` = total - notebook: kernel start, capture,
dependency probe, fresh-process verification, kernel stop. The phases of the overhead are printed below the table,
when the mlship measured reports them. Baseline named in the output: the notebook alone, executed by
`jupyter nbconvert --execute` in a fresh kernel (the time any tool must spend just to run it; --no-nbconvert skips it).

--checkout DIR measures another source tree of mlship (e.g. an older commit, `git archive REV | tar -x -C DIR`)
with the same Python, so before and after can be measured in one run, under the same load.

Usage: python benchmarks/package_examples.py [--repeat N] [--checkout DIR] [--no-nbconvert]
"""

from __future__ import annotations

import argparse
import json
import os
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


def package(nb: Path, out: Path, checkout: Path | None) -> dict[str, float]:
    env = dict(os.environ)
    if checkout is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(checkout), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run([sys.executable, "-m", "mlship", "package", str(nb), "-o", str(out), "--force", "--json"],
                          cwd=nb.parent, check=True, capture_output=True, text=True, env=env)
    return {k: float(v) for k, v in json.loads(proc.stdout)["timings"].items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--checkout", type=Path, help="mlship source tree to measure (default: this one)")
    parser.add_argument("--no-nbconvert", action="store_true", help="skip the nbconvert baseline")
    args = parser.parse_args()
    checkout = args.checkout.resolve() if args.checkout else None
    print(f"mlship from {checkout or ROOT}; median of {args.repeat} runs")
    print(f"{'example':10} {'notebook s':>11} {'total s':>8} {'overhead s':>11} {'nbconvert s':>12} "
          f"{'ratio':>6} {'bundle KB':>10} {'values.pkl KB':>14}")
    phases: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rel in EXAMPLES:
            nb = ROOT / "examples" / rel
            runs, baselines = [], []
            out = Path(tmp) / nb.stem
            for _ in range(args.repeat):
                runs.append(package(nb, out, checkout))
                if not args.no_nbconvert:
                    baselines.append(run(["jupyter", "nbconvert", "--to", "notebook", "--execute", "--stdout",
                                          nb.name], nb.parent))
            median = {k: statistics.median(r.get(k, 0.0) for r in runs) for k in runs[0]}
            overhead = statistics.median(r["total"] - r["notebook"] for r in runs)
            phases[nb.stem] = {k: v for k, v in median.items() if k not in ("total", "notebook")}
            base = statistics.median(baselines) if baselines else float("nan")
            size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1024
            pkl = out / "artifacts" / "values.pkl"
            print(f"{nb.stem:10} {median['notebook']:11.2f} {median['total']:8.2f} {overhead:11.2f} {base:12.2f} "
                  f"{median['total'] / base:6.2f} {size:10.0f} {pkl.stat().st_size / 1024 if pkl.exists() else 0:14.0f}")
    if any(phases.values()):
        print("overhead by phase (median s): " + "; ".join(
            f"{name}: " + ", ".join(f"{k} {v:.2f}" for k, v in values.items()) for name, values in phases.items()))
    print("notebook s: executing the cells in the kernel; total s: wall time of packaging (`timings.total`); "
          "overhead s = total - notebook (kernel start, capture, dependency probe and fresh-process verification, "
          "kernel stop); nbconvert s: baseline, the notebook run alone by nbconvert; ratio = total / nbconvert.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
