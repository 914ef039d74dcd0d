#!/usr/bin/env python3
"""Memory (PSS) of the mlship runtime with 1 and 2 workers serving a ~500 MB model, and of a bare baseline.

The runtime loads the model once and forks its workers, so the model's arrays are shared copy-on-write; issue 5
asks that 2 workers use at most 1.3x the memory of 1. PSS (proportional set size, /proc/PID/smaps_rollup)
charges each shared page to its sharers in proportion, so the PSS of a process tree is what it really costs.

The model is a KNeighborsClassifier (brute force) fitted on N random 4-feature rows: it keeps X (32 bytes a row)
and its labels (8 bytes a row), so --mb 500 fits about 13 million rows. It is packaged with `mlship package`
from a small notebook, then served; each server answers a few requests (spread over its workers) before its
memory is read, so that the workers have touched the model.

    python benchmarks/runtime_memory.py              # ~500 MB model, about 2 minutes
    python benchmarks/runtime_memory.py --mb 100     # quicker
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests/support, shared with the tests
from tests.support.servers import free_port  # noqa: E402

HOST = "127.0.0.1"
BODY = json.dumps({"instances": [[0.5, 0.5, 0.5, 0.5]]})
BYTES_PER_ROW = 4 * 8 + 8  # X as float64, the encoded labels as int64

NOTEBOOK = [
    "import numpy as np\nfrom sklearn.neighbors import KNeighborsClassifier",
    "rng = np.random.default_rng(0)\nX = rng.random((ROWS, 4))\ny = (X[:, 0] > 0.5).astype(np.int8)",
    "model = KNeighborsClassifier(n_neighbors=3, algorithm='brute').fit(X, y)",
    "model.predict(X[:5])",
]

BARE_APP = '''\
import os, pickle
import numpy as np, orjson
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

with open(os.environ["BENCH_VALUES"], "rb") as f:
    model = pickle.load(f)["model"]

async def predict(request):
    rows = np.asarray(orjson.loads(await request.body())["instances"], dtype=np.float64)
    return Response(orjson.dumps({"predictions": model.predict(rows).tolist()}), media_type="application/json")

app = Starlette(routes=[Route("/predict", predict, methods=["POST"])])
'''


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=500, help="model size in MB (default: 500)")
    parser.add_argument("--work", help="keep the bundle and logs here (reused when it has the bundle)")
    parser.add_argument("--requests", type=int, default=8, help="requests per server before measuring")
    args = parser.parse_args(argv)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="mlship-mem-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    bundle = package(work, args.mb)
    values = bundle / "artifacts" / "values.pkl"
    print(f"bundle {bundle}: values.pkl {values.stat().st_size / 2**20:,.0f} MiB", flush=True)
    (work / "bare_app.py").write_text(BARE_APP)
    rows = []
    for name, argv_, cwd, env in [
        ("mlship, 1 worker", runtime_argv(1), bundle, {}),
        ("mlship, 2 workers", runtime_argv(2), bundle, {}),
        ("bare uvicorn, 2 workers", [sys.executable, "-m", "uvicorn", "bare_app:app", "--workers", "2",
                                     "--no-access-log", "--log-level", "warning"], work, {"BENCH_VALUES": str(values)}),
    ]:
        pss, rss, processes, seconds = measure(argv_, cwd, env, work / f"{name.replace(' ', '_')}.log", args.requests)
        rows.append((name, pss, rss, processes, seconds))
        print(f"  {name:<24} PSS {pss / 2**20:8,.0f} MiB  RSS {rss / 2**20:8,.0f} MiB  {processes} processes, "
              f"first prediction after {seconds:.1f} s", flush=True)
    one = rows[0][1]
    print(f"\nPSS of the whole process tree after {args.requests} requests; ratio to mlship with 1 worker")
    print("| server | PSS MiB | RSS MiB (sum) | processes | ratio |\n|---|--:|--:|--:|--:|")
    for name, pss, rss, processes, _ in rows:
        print(f"| {name} | {pss / 2**20:,.0f} | {rss / 2**20:,.0f} | {processes} | {pss / one:.2f}x |")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def runtime_argv(workers: int) -> list[str]:
    return [sys.executable, "-m", "mlship_runtime", "serve", ".", "--workers", str(workers)]


def package(work: Path, mb: int) -> Path:
    bundle = work / f"bundle-knn-{mb}mb"
    if (bundle / "mlship.json").exists():
        return bundle
    folder = work / "notebook"
    folder.mkdir(exist_ok=True)
    rows = mb * 2**20 // BYTES_PER_ROW
    cells = [{"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {}, "outputs": [],
              "source": source.replace("ROWS", str(rows))} for i, source in enumerate(NOTEBOOK)]
    notebook = {"cells": cells, "nbformat": 4, "nbformat_minor": 5,
                "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}}
    (folder / "knn.ipynb").write_text(json.dumps(notebook))
    print(f"packaging a KNN model on {rows:,} rows ...", flush=True)
    subprocess.run([sys.executable, "-m", "mlship", "package", str(folder / "knn.ipynb"), "-o", str(bundle), "--force"],
                   cwd=folder, check=True, env=os.environ | {"MLSHIP_PLAIN": "1"}, timeout=1800)
    return bundle


def measure(argv: list[str], cwd: Path, env: dict[str, str], log: Path, requests: int) -> tuple[int, int, int, float]:
    port = free_port(HOST)
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | env
    started = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen([*argv, "--host", HOST, "--port", str(port)], cwd=cwd, env=environment, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        first = None
        deadline = time.monotonic() + 600
        done = 0
        while done < requests and time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"{argv} exited with {proc.returncode}; see {log}")
            try:
                conn = http.client.HTTPConnection(HOST, port, timeout=120)  # a new connection each time
                conn.request("POST", "/predict", body=BODY, headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                conn.close()
                if response.status == 200:
                    first = first or time.monotonic() - started
                    done += 1
                    continue
            except OSError:
                pass
            time.sleep(0.1)
        time.sleep(1.0)
        pids = tree(proc.pid)
        pss = sum(smaps_rollup(pid).get("Pss", 0) for pid in pids)
        rss = sum(smaps_rollup(pid).get("Rss", 0) for pid in pids)
        return pss, rss, len(pids), first or float("nan")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def tree(pid: int) -> list[int]:
    pids, pending = [], [pid]
    while pending:
        current = pending.pop()
        pids.append(current)
        with contextlib.suppress(OSError):
            pending += [int(child) for child in Path(f"/proc/{current}/task/{current}/children").read_text().split()]
    return pids


def smaps_rollup(pid: int) -> dict[str, int]:
    """Bytes per field of /proc/PID/smaps_rollup (Rss, Pss, Shared_Clean, ...)."""
    values = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            key, _, rest = line.partition(":")
            values[key] = int(rest.split()[0]) * 1024
    return values


if __name__ == "__main__":
    sys.exit(main())
