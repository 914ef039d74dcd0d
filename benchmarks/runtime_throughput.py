#!/usr/bin/env python3
"""Throughput and latency of the mlship runtime against a bare Starlette app, in one run, with wrk.

Trains two iris models (`lr` = StandardScaler + LogisticRegression, `rf` = a 100-tree random
forest), packages each with `mlship package`, then for each model starts in turn

  bare            a minimal Starlette + orjson app under `uvicorn --workers N`, predict called inline
  mlship          `python -m mlship_runtime serve BUNDLE --workers N` (micro-batching on: the bundles are batch-safe)
  mlship-nobatch  the same with MLSHIP_MAX_BATCH_ROWS=1 (one request per model call)

and measures its cold start (process start to first correct prediction), warms it up, and load-tests it with
`wrk -t1` (single-row JSON POSTs) at each concurrency, in rounds that take the servers in turn (medians are
reported: other work on the machine then weighs on every server alike). Prints a table, mlship's ratios to the bare baseline, the
mean micro-batch size (from /metrics) and how the requests spread over the workers (from the access log).

    python benchmarks/runtime_throughput.py                                     # 3 rounds x 15 s, ~12 min
    python benchmarks/runtime_throughput.py --duration 3 --warmup 1 --rounds 1  # a quick look

Every request goes to 127.0.0.1; every server runs in its own process group, killed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests/support, shared with the tests
from tests.support.servers import free_port  # noqa: E402

HOST = "127.0.0.1"
ROW = [5.1, 3.5, 1.4, 0.2]  # iris row 0, class 0
BODY = json.dumps({"instances": [ROW]}, separators=(",", ":"))

BARE_APP = '''\
import os, pickle
import numpy as np, orjson
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

with open(os.environ["BENCH_MODEL"], "rb") as f:
    model = pickle.load(f)

async def predict(request):
    body = orjson.loads(await request.body())
    rows = np.asarray(body["instances"], dtype=np.float64)
    return Response(orjson.dumps({"predictions": model.predict(rows).tolist()}), media_type="application/json")

app = Starlette(routes=[Route("/predict", predict, methods=["POST"])])
'''

NOTEBOOK_CELLS = [
    "import pickle\nfrom sklearn.datasets import load_iris",
    "X, y = load_iris(return_X_y=True)\nwith open('model.pkl', 'rb') as f:\n    model = pickle.load(f)",
    "model.predict(X)",
]

WRK_SCRIPT = """\
wrk.method = "POST"
wrk.body = %s
wrk.headers["Content-Type"] = "application/json"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) bad = 0 end
function response(status, headers, body) if status ~= 200 then bad = bad + 1 end end
function done(summary, latency, requests)
  local n = 0
  for _, t in ipairs(threads) do n = n + t:get("bad") end
  local e = summary.errors
  io.write(string.format('RESULT {"requests": %%d, "duration_us": %%d, "non200": %%d, "socket_errors": %%d, ' ..
    '"timeouts": %%d, "p50_us": %%d, "p99_us": %%d}\\n', summary.requests, summary.duration, n,
    e.connect + e.read + e.write, e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    wrk = shutil.which("wrk")
    if wrk is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="mlship-rt-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    models = args.models.split(",")
    connections = [int(c) for c in args.connections.split(",")]
    variants = args.servers.split(",")
    print(f"work dir {work}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}", flush=True)
    bundles = package(models, work)
    script = work / "wrk.lua"
    script.write_text(WRK_SCRIPT % json.dumps(BODY))
    (work / "bare_app.py").write_text(BARE_APP)
    results: dict[str, dict[str, Any]] = {}
    for model in models:
        print(f"\n{model}: in-process predict {inprocess_rates(work / f'{model}.pkl')}", flush=True)
        servers = {variant: Server(variant, model, bundles[model], work, args.workers) for variant in variants}
        try:
            for server in servers.values():  # one at a time: cold starts are measured on an idle machine
                server.start()
            for server in servers.values():
                if args.warmup:
                    _wrk(wrk, script, server.port, max(connections), args.warmup)
            # Rounds, each server in turn: a machine whose load drifts affects every server alike.
            for _ in range(args.rounds):
                for conns in connections:
                    for server in servers.values():
                        server.runs.setdefault(str(conns), []).append(
                            _wrk(wrk, script, server.port, conns, args.duration))
        finally:
            for variant, server in servers.items():
                results[f"{model}/{variant}"] = server.stop()
        for variant in variants:
            print(f"  {variant:<15} {_line(results[f'{model}/{variant}'], connections)}", flush=True)
    print()
    print(report(results, models, variants, connections, args))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=15, help="seconds per load level (default: 15)")
    parser.add_argument("--warmup", type=float, default=3, help="seconds of warm-up at the highest level")
    parser.add_argument("--models", default="lr,rf")
    parser.add_argument("--connections", default="1,32", help="concurrency levels (default: 1,32)")
    parser.add_argument("--servers", default="bare,mlship,mlship-nobatch")
    parser.add_argument("--workers", type=int, default=2, help="worker processes per server (default: 2)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="measure each server this many times, in turn, and report medians (default: 3)")
    parser.add_argument("--work", help="keep bundles and logs in this directory (bundles are reused while their "
                        "runtime matches this checkout's)")
    parser.add_argument("--json", help="also write the raw figures to this file")
    return parser


def package(models: list[str], work: Path) -> dict[str, Path]:
    """Fit each model on numpy iris (as the bare app and benchmarks/serving.py do), `mlship package` it."""
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    features, target = load_iris(return_X_y=True)
    estimators = {"lr": Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression())]),
                  "rf": RandomForestClassifier(n_estimators=100, random_state=0)}
    jobs = {}
    for name in models:
        bundle = work / f"bundle-{name}"
        if (bundle / "mlship.json").exists() and not _stale_runtime(bundle):
            continue
        folder = work / f"notebook-{name}"
        folder.mkdir(exist_ok=True)
        pickled = pickle.dumps(estimators[name].fit(features, target))
        (work / f"{name}.pkl").write_bytes(pickled)
        (folder / "model.pkl").write_bytes(pickled)
        cells = [{"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {}, "outputs": [],
                  "source": source} for i, source in enumerate(NOTEBOOK_CELLS)]
        notebook = {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                "language": "python"}},
                    "nbformat": 4, "nbformat_minor": 5}
        (folder / f"{name}.ipynb").write_text(json.dumps(notebook))
        argv = [sys.executable, "-m", "mlship", "package", str(folder / f"{name}.ipynb"), "-o", str(bundle),
                "--force"]
        jobs[name] = subprocess.Popen(argv, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      env=os.environ | {"MLSHIP_PLAIN": "1"})
    for name, proc in jobs.items():
        out = proc.communicate(timeout=600)[0].decode(errors="replace")
        if proc.returncode:
            raise SystemExit(f"mlship package failed for {name}:\n{out}")
        batch_safe = json.loads((work / f"bundle-{name}" / "mlship.json").read_text())["batch_safe"]
        print(f"packaged {name} (batch_safe={batch_safe})", flush=True)
    return {name: work / f"bundle-{name}" for name in models}


def _stale_runtime(bundle: Path) -> bool:
    """Whether the bundle's copy of the runtime differs from this checkout's (then it is packaged again)."""
    from mlship._paths import RUNTIME_DIR

    return any(not (bundle / "mlship_runtime" / source.name).exists()
               or (bundle / "mlship_runtime" / source.name).read_bytes() != source.read_bytes()
               for source in RUNTIME_DIR.glob("*.py"))


def inprocess_rates(path: Path, seconds: float = 1.0) -> str:
    import numpy as np

    model = pickle.loads(path.read_bytes())
    one, batch = np.asarray([ROW]), np.asarray([ROW] * 32)

    def rate(rows: Any) -> float:
        model.predict(rows)
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds and calls < 100_000:
            model.predict(rows)
            calls += 1
        return calls / (time.perf_counter() - start)

    return f"1 row: {rate(one):,.0f} calls/s; 32-row batches: {32 * rate(batch):,.0f} rows/s"


class Server:
    """One server under test, in its own process group."""

    def __init__(self, variant: str, model: str, bundle: Path, work: Path, workers: int) -> None:
        self.variant, self.port = variant, free_port(HOST)
        self.env = dict(os.environ)
        self.env.pop("PYTHONPATH", None)
        if variant == "bare":
            self.argv = [sys.executable, "-m", "uvicorn", "bare_app:app", "--host", HOST, "--port", str(self.port),
                         "--workers", str(workers), "--no-access-log", "--log-level", "warning"]
            self.cwd, self.env["BENCH_MODEL"] = work, str(work / f"{model}.pkl")
        else:
            self.argv = [sys.executable, "-m", "mlship_runtime", "serve", ".", "--host", HOST, "--port",
                         str(self.port), "--workers", str(workers)]
            self.cwd = bundle
            if variant == "mlship-nobatch":
                self.env["MLSHIP_MAX_BATCH_ROWS"] = "1"
        self.log = work / f"server-{model}-{variant}.log"
        self.runs: dict[str, list[dict[str, Any]]] = {}
        self.result: dict[str, Any] = {}

    def start(self) -> None:
        started = time.monotonic()
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self.result["cold_start_s"] = _first_prediction(self.port, self.proc, started)

    def stop(self) -> dict[str, Any]:
        result = self.result
        result["runs"] = {conns: _median_run(runs) for conns, runs in self.runs.items()}
        result["all_runs"] = self.runs
        if self.variant != "bare" and hasattr(self, "proc") and self.proc.poll() is None:
            result["mean_batch"] = _mean_batch(self.port)
        if hasattr(self, "proc"):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                result["exit_code"] = self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                result["exit_code"] = self.proc.wait()
        if self.variant != "bare":
            pids = Counter(re.findall(rb'"logger":"mlship.access".*?"pid":(\d+)', self.log.read_bytes()))
            result["requests_per_worker"] = sorted(pids.values(), reverse=True)
        return result


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each figure over the rounds; errors summed."""
    def median(key: str) -> float:
        values = sorted(run[key] for run in runs)
        return values[len(values) // 2]

    return {"req_per_s": median("req_per_s"), "p50_ms": median("p50_ms"), "p99_ms": median("p99_ms"),
            "errors": sum(run["errors"] for run in runs)}


def _first_prediction(port: int, proc: subprocess.Popen[bytes], started: float) -> float:
    deadline = started + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            conn = HTTPConnection(HOST, port, timeout=5)
            try:
                conn.request("POST", "/predict", body=BODY, headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                if response.status == 200 and json.loads(response.read())["predictions"] == [0]:
                    return time.monotonic() - started
            finally:
                conn.close()
        time.sleep(0.01)
    raise RuntimeError("no correct prediction within 120 s")


def _wrk(wrk: str, script: Path, port: int, connections: int, seconds: float,
         path: str = "/predict") -> dict[str, Any]:
    argv = [wrk, "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "5s", "-s", str(script),
            f"http://{HOST}:{port}{path}"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {proc.stderr or proc.stdout}")
    raw = json.loads(line.removeprefix("RESULT "))
    return {"req_per_s": raw["requests"] / (raw["duration_us"] / 1e6), "p50_ms": raw["p50_us"] / 1000,
            "p99_ms": raw["p99_us"] / 1000, "errors": raw["non200"] + raw["socket_errors"] + raw["timeouts"]}


def _mean_batch(port: int) -> float | None:
    conn = HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    total = re.search(r'^mlship_batch_requests_sum\{method="predict"\} (\S+)', text, re.M)
    count = re.search(r'^mlship_batch_requests_count\{method="predict"\} (\S+)', text, re.M)
    return float(total.group(1)) / float(count.group(1)) if total and count and float(count.group(1)) else None


def _line(result: dict[str, Any], connections: list[int]) -> str:
    parts = [f"cold start {result.get('cold_start_s', float('nan')):.2f} s"]
    for conns in connections:
        run = result["runs"].get(str(conns))
        if run:
            parts.append(f"c{conns}: {run['req_per_s']:,.0f} req/s p50 {run['p50_ms']:.2f} ms "
                         f"p99 {run['p99_ms']:.2f} ms errors {run['errors']}")
    if result.get("mean_batch"):
        parts.append(f"mean batch {result['mean_batch']:.1f}")
    if result.get("requests_per_worker"):
        parts.append(f"per worker {result['requests_per_worker']}")
    return "; ".join(parts)


def report(results: dict[str, dict[str, Any]], models: list[str], variants: list[str], connections: list[int],
           args: argparse.Namespace) -> str:
    head = ["model", "server", "cold s"]
    for conns in connections:
        head += [f"c{conns} req/s", f"c{conns} p50 ms", f"c{conns} p99 ms"]
    head += ["errors", "exit"]
    rows = []
    for model in models:
        for variant in variants:
            result = results[f"{model}/{variant}"]
            row = [model, variant, f"{result.get('cold_start_s', float('nan')):.2f}"]
            errors = 0
            for conns in connections:
                run = result["runs"].get(str(conns), {})
                errors += run.get("errors", 0)
                row += [f"{run.get('req_per_s', 0):,.0f}", f"{run.get('p50_ms', 0):.2f}", f"{run.get('p99_ms', 0):.2f}"]
            rows.append(row + [str(errors), str(result.get("exit_code"))])
    ratio_head = ["model", "server vs bare", "cold start diff s"]
    for conns in connections:
        ratio_head += [f"c{conns} req/s", f"c{conns} p50", f"c{conns} p99"]
    ratio_rows = []
    for model in models:
        bare = results.get(f"{model}/bare")
        for variant in variants:
            if variant == "bare" or bare is None:
                continue
            mine = results[f"{model}/{variant}"]
            row = [model, variant, f"{mine['cold_start_s'] - bare['cold_start_s']:+.2f}"]
            for conns in connections:
                a, b = mine["runs"][str(conns)], bare["runs"][str(conns)]
                row += [f"{a['req_per_s'] / b['req_per_s']:.2f}x", f"{a['p50_ms'] / b['p50_ms']:.2f}x",
                        f"{a['p99_ms'] / b['p99_ms']:.2f}x"]
            ratio_rows.append(row)
    title = (f"median of {args.rounds} rounds of {args.duration:g} s per level (servers in turn), after "
             f"{args.warmup:g} s warm-up; wrk -t1, {args.workers} workers, single-row JSON POST /predict")
    return "\n".join([title, _table(head, rows), "", "ratios to the bare baseline (req/s: higher is better; "
                      "p50, p99: lower is better)", _table(ratio_head, ratio_rows)])


def _table(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(head, *rows, strict=True)]
    lines = ["| " + " | ".join(cell.ljust(width) for cell, width in zip(head, widths, strict=True)) + " |",
             "|" + "|".join("-" * (width + 2) for width in widths) + "|"]
    lines += ["| " + " | ".join(cell.rjust(width) if index > 1 else cell.ljust(width)
                                for index, (cell, width) in enumerate(zip(row, widths, strict=True))) + " |"
              for row in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
