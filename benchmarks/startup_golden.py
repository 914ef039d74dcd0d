"""What replaying every golden case at start-up costs a server, against replaying only the first (the baseline).

For each bundle, in a fresh interpreter of its own (so that every bundle's first call pays its own lazy imports,
as a starting worker does), it loads the bundle as a worker does, replays the first golden case alone (what
readiness waited for before: the baseline), then the other cases one by one, then the same cases merged into
calls of up to MLSHIP_MAX_BATCH_ROWS rows (what a worker does now when the bundle is batch-safe), and with
--serve also times a real `python -m mlship_runtime serve` from process start to /readyz 200.

    python benchmarks/startup_golden.py BUNDLE...           # bundles made by `mlship package`
    python benchmarks/startup_golden.py --serve BUNDLE...

A bundle with many cases: `mlship package examples/taxi/taxi.ipynb -o /tmp/taxi-1000 --sample-rows 1000`.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

_CHILD = r"""
import json, sys, time
from mlship.runtime._bundle import load_bundle
from mlship.runtime._settings import DEFAULT_MAX_BATCH_ROWS
from mlship.runtime._verify import replay_case, replay_golden

started = time.perf_counter()
bundle = load_bundle(sys.argv[1])
loaded = time.perf_counter()
first, *rest = bundle.golden.cases
ok = [replay_case(bundle, first).ok]
replayed_first = time.perf_counter()
ok += [result.ok for result in replay_golden(bundle, rest)]
one_by_one = time.perf_counter()
batch_rows = DEFAULT_MAX_BATCH_ROWS if bundle.manifest.batch_safe else 1
batched = replay_golden(bundle, rest, batch_rows=batch_rows)
done = time.perf_counter()
print(json.dumps({"cases": len(bundle.golden.cases), "batch_safe": bundle.manifest.batch_safe,
                  "load": loaded - started, "first": replayed_first - loaded, "one_by_one": one_by_one - replayed_first,
                  "batched": done - one_by_one, "all_ok": all(ok) and all(r.ok for r in batched)}))
"""


def replay_figures(bundle: Path) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(bundle)], check=True, capture_output=True, text=True)
    figures: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def time_to_ready(bundle: Path) -> float:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "MLSHIP_ACCESS_LOG": "0"}
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "mlship_runtime", "serve", ".", "--port", str(port),
                                "--workers", "1"], cwd=bundle, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - started < 120:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
                    if answer.status == 200:
                        return time.perf_counter() - started
            except (urllib.error.URLError, OSError):
                pass
            if process.poll() is not None:
                raise SystemExit(f"{bundle}: the server exited with {process.returncode} before it was ready")
            time.sleep(0.01)
        raise SystemExit(f"{bundle}: not ready within 120 s")
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundles", nargs="+", type=Path)
    parser.add_argument("--serve", action="store_true", help="also time a real server's start to /readyz 200")
    args = parser.parse_args()
    header = f"{'bundle':<22}{'cases':>6}{'batch':>6}{'load':>9}{'first':>9}{'rest 1x1':>10}{'rest batched':>13}"
    print(header + ("  ready (s)" if args.serve else ""))
    for bundle in args.bundles:
        f = replay_figures(bundle)
        line = (f"{bundle.name:<22}{f['cases']:>6}{'yes' if f['batch_safe'] else 'no':>6}{f['load']:>8.3f}s"
                f"{f['first']:>8.3f}s{f['one_by_one']:>9.3f}s{f['batched']:>12.3f}s")
        if args.serve:
            line += f"  {time_to_ready(bundle):>8.2f}"
        print(line + ("" if f["all_ok"] else "  (some cases do not match)"))
    print("first: the baseline (readiness replayed only it); rest batched: what a worker adds now "
          "(one by one when the bundle is not batch-safe)")


if __name__ == "__main__":
    main()
