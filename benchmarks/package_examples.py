"""How long `mlship package` takes per example, and how much of it is mlship's overhead beyond the notebook's run.

For each example: `notebook s` is the cells executing in the kernel, `total s` the whole packaging (the `timings`
of `mlship package --json`, median of --repeat runs), `overhead s` = total - notebook: kernel start, capture,
dependency probe, fresh-process verification, kernel stop. The phases of the overhead are printed below the table,
when the mlship measured reports them. Baseline named in the output: the notebook alone, executed by
`jupyter nbconvert --execute` in a fresh kernel (the time any tool must spend just to run it; --no-nbconvert skips it).

--checkout DIR measures another source tree of mlship (e.g. an older commit, `git archive REV | tar -x -C DIR`)
with the same Python. Given several times (`.` is this tree), the trees take turns run by run, so before and after
are measured in one run under the same load; each gets its own table.

Usage: python benchmarks/package_examples.py [--repeat N] [--checkout DIR ...] [--no-nbconvert]
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
    parser.add_argument("--checkout", type=Path, action="append",
                        help="mlship source tree to measure (repeatable; default: this one)")
    parser.add_argument("--no-nbconvert", action="store_true", help="skip the nbconvert baseline")
    args = parser.parse_args()
    trees = [None if p.resolve() == ROOT else p.resolve() for p in args.checkout or [ROOT]]
    runs: dict[tuple[int, str], list[dict[str, float]]] = {}
    baselines: dict[str, float] = {}
    sizes: dict[tuple[int, str], tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rel in EXAMPLES:
            nb = ROOT / "examples" / rel
            times = []
            for _ in range(args.repeat):
                for i, tree in enumerate(trees):
                    out = Path(tmp) / f"{nb.stem}-{i}"
                    runs.setdefault((i, nb.stem), []).append(package(nb, out, tree))
                    pkl = out / "artifacts" / "values.pkl"
                    sizes[i, nb.stem] = (sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1024,
                                         pkl.stat().st_size / 1024 if pkl.exists() else 0)
                if not args.no_nbconvert:
                    times.append(run(["jupyter", "nbconvert", "--to", "notebook", "--execute", "--stdout", nb.name],
                                     nb.parent))
            baselines[nb.stem] = statistics.median(times) if times else float("nan")
    for i, tree in enumerate(trees):
        report(tree or ROOT, args.repeat, {stem: r for (j, stem), r in runs.items() if j == i}, baselines,
               {stem: size for (j, stem), size in sizes.items() if j == i})
    print("notebook s: executing the cells in the kernel; total s: wall time of packaging (`timings.total`); "
          "overhead s = total - notebook (kernel start, capture, dependency probe and fresh-process verification, "
          "kernel stop); nbconvert s: baseline, the notebook run alone by nbconvert; ratio = total / nbconvert.")
    return 0


def report(tree: Path, repeat: int, runs: dict[str, list[dict[str, float]]], baselines: dict[str, float],
           sizes: dict[str, tuple[float, float]]) -> None:
    print(f"\nmlship from {tree}; median of {repeat} runs")
    print(f"{'example':10} {'notebook s':>11} {'total s':>8} {'overhead s':>11} {'nbconvert s':>12} "
          f"{'ratio':>6} {'bundle KB':>10} {'values.pkl KB':>14}")
    phases = []
    for stem, results in runs.items():
        median = {k: statistics.median(r.get(k, 0.0) for r in results) for k in results[0]}
        overhead = statistics.median(r["total"] - r["notebook"] for r in results)
        size, pkl = sizes[stem]
        print(f"{stem:10} {median['notebook']:11.2f} {median['total']:8.2f} {overhead:11.2f} "
              f"{baselines[stem]:12.2f} {median['total'] / baselines[stem]:6.2f} {size:10.0f} {pkl:14.0f}")
        extra = {k: v for k, v in median.items() if k not in ("total", "notebook")}
        if extra:
            phases.append(f"{stem}: " + ", ".join(f"{k} {v:.2f}" for k, v in extra.items()))
    if phases:
        print("overhead by phase (median s): " + "; ".join(phases))


if __name__ == "__main__":
    raise SystemExit(main())
