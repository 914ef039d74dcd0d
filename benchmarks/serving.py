#!/usr/bin/env python3
"""Serving benchmark: mlship's runtime against a bare Starlette app, MLflow and BentoML, in one run.

Trains two iris models (`lr` = StandardScaler + LogisticRegression, `rf` = a 100-tree random forest), then for
each model starts every server in turn on 127.0.0.1, measures its cold start (process start to first correct
prediction), warms it up and load-tests it with `wrk -t1` (single-row JSON POSTs) at each concurrency. Prints a
table, the ratios of mlship to the others, and PASS/FAIL for the speed targets of issue 5. See README.md here.

    python benchmarks/serving.py                       # everything, 15 s per load level (about 10 minutes)
    python benchmarks/serving.py --servers bare,mlship --models lr --duration 2 --connections 1   # < 1 minute

Every request goes to a server on the loopback interface; every loop is bounded in count and time; every server
runs in its own process group and the whole group is killed at the end, also on Ctrl-C, SIGTERM or an error.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import pickle
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests/support, shared with the tests
from tests.support.servers import free_port  # noqa: E402

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"  # the only address this script ever sends a request to
DEFAULT_VENV = os.environ.get("MLSHIP_BENCH_VENV", "/opt/mlship-bench/venv")
MODELS = ("lr", "rf")
SERVERS = ("bare", "mlship", "mlflow", "bentoml", "bentoml-nobatch")
DEFAULT_SERVERS = ("bare", "mlship", "mlflow", "bentoml")
# One iris row (the first of the data set, class 0): every server gets the same body, in the same shape.
ROW = [5.1, 3.5, 1.4, 0.2]
BODY = json.dumps({"instances": [ROW]}, separators=(",", ":"))

COLD_START_LIMIT_S = 90.0  # a server that has not answered correctly by then counts as failed
POLL_INTERVAL_S = 0.02
STOP_GRACE_S = 10.0
WRK_TIMEOUT = "5s"  # a request slower than this counts as a wrk timeout error


# --------------------------------------------------------------------------------------------------------------
# Processes: each server in its own session (process group), all killed on the way out.


class ProcessGroups:
    """Servers started with start_new_session=True, so that one killpg reaches every worker they spawned."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(
        self, argv: Sequence[str], *, cwd: Path, env: dict[str, str], log: Path
    ) -> subprocess.Popen[bytes]:
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                list(argv), cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM the group, wait (bounded) for every member to go, then SIGKILL whatever is left.

        Descendants that moved to a session of their own (BentoML's circus does that to its workers) are
        collected first, and each of their groups is treated the same way.
        """
        groups = {proc.pid} | {_pgid(pid) for pid in _descendants(proc.pid)}
        groups -= {0, os.getpgrp()}  # never our own group (nor "no group": a process that has just gone)
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline and any(_group_alive(pgid) for pgid in groups):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.1)
            time.sleep(0.05)
        for pgid in groups:
            if _group_alive(pgid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        if proc in self._procs:
            self._procs.remove(proc)

    def stop_all(self) -> None:
        for proc in list(self._procs):
            self.stop(proc)


def _descendants(root: int) -> set[int]:
    """Every live process below `root`, from the parent links in /proc (bounded: one pass per level, 20 levels)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            # Field 4 of /proc/PID/stat is the parent pid; the command name before it may hold spaces.
            stat = (entry / "stat").read_text()
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    level = {root}
    for _ in range(20):
        level = {pid for pid, parent in parents.items() if parent in level} - found
        if not level:
            break
        found |= level
    return found


def _pgid(pid: int) -> int:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return 0


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _raise_system_exit(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


# --------------------------------------------------------------------------------------------------------------
# Models and in-process rates.


@dataclass
class Model:
    name: str
    path: Path  # the pickled estimator, shared by every server
    expected: int  # its prediction for ROW
    description: str


def train_models(names: Sequence[str], workdir: Path) -> dict[str, Model]:
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    features, target = load_iris(return_X_y=True)
    estimators: dict[str, tuple[Any, str]] = {
        "lr": (
            Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression())]),
            "Pipeline(StandardScaler, LogisticRegression)",
        ),
        "rf": (
            RandomForestClassifier(n_estimators=100, random_state=0),
            "RandomForestClassifier(n_estimators=100, random_state=0)",
        ),
    }
    models = {}
    for name in names:
        estimator, description = estimators[name]
        estimator.fit(features, target)
        path = workdir / f"{name}.pkl"
        path.write_bytes(pickle.dumps(estimator))
        expected = int(estimator.predict([ROW])[0])
        models[name] = Model(name, path, expected, description)
    return models


def in_process_rates(model: Model, seconds: float) -> dict[str, float]:
    """Calls/s of predict on 1 row and rows/s in 32-row batches, in this interpreter (the main environment)."""
    import numpy as np
    from sklearn.datasets import load_iris

    estimator = pickle.loads(model.path.read_bytes())
    features = np.asarray(load_iris(return_X_y=True)[0], dtype=np.float64)
    one, batch = features[:1], features[:32]

    def calls_per_second(rows: Any) -> float:
        for _ in range(3):
            estimator.predict(rows)
        calls, start = 0, time.perf_counter()
        while calls < 1_000_000:  # bounded by count as well as time
            estimator.predict(rows)
            calls += 1
            if calls % 8 == 0 and time.perf_counter() - start >= seconds:
                break
        return calls / (time.perf_counter() - start)

    return {
        "predict_1_row_per_s": calls_per_second(one),
        "predict_32_rows_rows_per_s": 32 * calls_per_second(batch),
    }


# --------------------------------------------------------------------------------------------------------------
# Servers.


@dataclass
class Server:
    name: str
    argv: list[str]
    cwd: Path
    env: dict[str, str]
    path: str  # the URL path single-row requests go to
    port: int
    notes: str = ""


@dataclass
class Context:
    args: argparse.Namespace
    workdir: Path
    venv_python: Path
    groups: ProcessGroups
    bundles: dict[str, Path | str] = field(default_factory=dict)  # model -> bundle dir, or why there is none
    mlflow_models: dict[str, Path | str] = field(default_factory=dict)
    serve_options: list[str] = field(default_factory=list)


class Skip(Exception):
    """This server cannot be measured in this run; the message says why."""


def base_env(venv_bin: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if venv_bin is not None:
        # `mlflow models serve` runs `exec uvicorn ...` through the shell: the venv's uvicorn must come first.
        env["PATH"] = f"{venv_bin}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(venv_bin.parent)
    env.update(
        PYTHONUNBUFFERED="1",
        # No phoning home from the peers (there is no network here anyway, so it would only cost time).
        BENTOML_DO_NOT_TRACK="True",
        DO_NOT_TRACK="1",
        MLFLOW_DISABLE_TELEMETRY="true",
    )
    return env


def bare_server(ctx: Context, model: Model) -> Server:
    missing = _missing_modules(
        sys.executable, ["starlette", "uvicorn", "orjson", "uvloop", "httptools", "numpy"]
    )
    if missing:
        raise Skip(f"the main environment lacks {', '.join(missing)} (pip install {' '.join(missing)})")
    port = free_port(HOST)
    env = base_env() | {"BENCH_MODEL": str(model.path)}
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "_bare_app:app",
        "--app-dir",
        str(HERE),
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        str(ctx.args.workers),
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    return Server("bare", argv, HERE, env, "/predict", port, "main env, uvicorn --workers, no access log")


def mlship_server(ctx: Context, model: Model) -> Server:
    bundle = ctx.bundles.get(model.name)
    if not isinstance(bundle, Path):
        raise Skip(f"no bundle: {bundle}")
    port = free_port(HOST)
    argv = [sys.executable, "-m", "mlship_runtime", "serve", str(bundle), "--host", HOST, "--port", str(port)]
    if "--workers" in ctx.serve_options:
        argv += ["--workers", str(ctx.args.workers)]
    return Server("mlship", argv, bundle, base_env(), "/predict", port, "main env, runtime defaults")


def mlflow_server(ctx: Context, model: Model) -> Server:
    mlflow_bin = ctx.venv_python.parent / "mlflow"
    saved = ctx.mlflow_models.get(model.name)
    if not isinstance(saved, Path):
        raise Skip(str(saved))
    port = free_port(HOST)
    argv = [
        str(mlflow_bin),
        "models",
        "serve",
        "-m",
        str(saved),
        "--env-manager",
        "local",
        "-h",
        HOST,
        "-p",
        str(port),
        "-w",
        str(ctx.args.workers),
    ]
    env = base_env(ctx.venv_python.parent)
    return Server("mlflow", argv, ctx.workdir, env, "/invocations", port, "peers venv")


def bentoml_server(ctx: Context, model: Model, *, batchable: bool) -> Server:
    bentoml_bin = ctx.venv_python.parent / "bentoml"
    if not bentoml_bin.exists():
        raise Skip(
            f"bentoml is not installed in {ctx.venv_python.parent.parent} (bash benchmarks/setup_peers.sh)"
        )
    service_dir = ctx.workdir / "bento"
    service_dir.mkdir(exist_ok=True)
    (service_dir / "service.py").write_text(BENTO_SERVICE)
    port = free_port(HOST)
    env = base_env(ctx.venv_python.parent) | {
        "BENCH_MODEL": str(model.path),
        "BENCH_WORKERS": str(ctx.args.workers),
        "BENCH_BATCHABLE": "1" if batchable else "0",
        "BENTOML_HOME": str(ctx.workdir / "bentoml-home"),
    }
    argv = [
        str(bentoml_bin),
        "serve",
        "service:IrisModel",
        "--working-dir",
        str(service_dir),
        "--host",
        HOST,
        "-p",
        str(port),
    ]
    name = "bentoml" if batchable else "bentoml-nobatch"
    notes = "peers venv, adaptive batching on" if batchable else "peers venv, batching off"
    return Server(name, argv, service_dir, env, "/predict", port, notes)


BENTO_SERVICE = '''\
"""BentoML service for benchmarks/serving.py: BENCH_MODEL is a pickled estimator."""
import os
import pickle

import bentoml
import numpy as np

BATCHABLE = os.environ.get("BENCH_BATCHABLE", "1") == "1"


@bentoml.service(workers=int(os.environ.get("BENCH_WORKERS", "2")))
class IrisModel:
    def __init__(self) -> None:
        with open(os.environ["BENCH_MODEL"], "rb") as file:
            self.model = pickle.load(file)

    # Adaptive batching (default max batch size and latency): concurrent requests are merged along axis 0.
    @bentoml.api(batchable=BATCHABLE)
    def predict(self, instances: np.ndarray) -> np.ndarray:
        return self.model.predict(instances)
'''

MLFLOW_SAVE = """\
import json, pickle, sys
import numpy as np
import mlflow.sklearn
from mlflow.models import infer_signature
with open(sys.argv[1], "rb") as file:
    model = pickle.load(file)
rows = np.asarray([json.loads(sys.argv[3])], dtype=np.float64)
# A tensor signature, so {"instances": [[...]]} reaches predict as a float64 array, as it does everywhere else.
# cloudpickle, the format every other server here loads too: MLflow 3's default (skops) refuses a random forest's
# tree objects unless each type is listed as trusted.
mlflow.sklearn.save_model(model, sys.argv[2], signature=infer_signature(rows, model.predict(rows)),
                          serialization_format="cloudpickle", pip_requirements=["scikit-learn"])
"""

BUILDERS: dict[str, Callable[[Context, Model], Server]] = {
    "bare": bare_server,
    "mlship": mlship_server,
    "mlflow": mlflow_server,
    "bentoml": lambda ctx, model: bentoml_server(ctx, model, batchable=True),
    "bentoml-nobatch": lambda ctx, model: bentoml_server(ctx, model, batchable=False),
}


def _missing_modules(python: str, modules: list[str]) -> list[str]:
    code = "import importlib.util, sys; print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))"
    out = subprocess.run([python, "-c", code, *modules], capture_output=True, text=True, timeout=60)
    return out.stdout.split()


# --------------------------------------------------------------------------------------------------------------
# Preparation: bundles for mlship, saved models for MLflow.


NOTEBOOK_CELLS = [
    "import pickle\n\nfrom sklearn.datasets import load_iris",
    "X, y = load_iris(return_X_y=True)\nwith open('model.pkl', 'rb') as f:\n    model = pickle.load(f)",
    "predictions = model.predict(X)\n(predictions == y).mean()",
]


def write_notebook(path: Path) -> None:
    cells: list[dict[str, Any]] = [
        {
            "cell_type": "code",
            "execution_count": None,
            "id": f"cell{i}",
            "metadata": {},
            "outputs": [],
            "source": source,
        }
        for i, source in enumerate(NOTEBOOK_CELLS)
    ]
    notebook = {
        "cells": cells,
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(notebook, indent=1))


def package_bundles(ctx: Context, models: dict[str, Model]) -> None:
    """`mlship package` one tiny notebook per model (the notebook loads the pickle every server shares)."""
    if _missing_modules(sys.executable, ["mlship"]):
        for name in models:
            ctx.bundles[name] = (
                "mlship is not importable in this Python (pip install -e . from the repository)"
            )
        return
    jobs: dict[str, tuple[subprocess.Popen[bytes], Path, Path]] = {}
    for name, model in models.items():
        folder = ctx.workdir / f"notebook-{name}"
        folder.mkdir()
        shutil.copyfile(model.path, folder / "model.pkl")
        write_notebook(folder / f"iris_{name}.ipynb")
        out = ctx.workdir / f"bundle-{name}"
        log = ctx.workdir / f"package-{name}.log"
        argv = [
            sys.executable,
            "-m",
            "mlship",
            "package",
            str(folder / f"iris_{name}.ipynb"),
            "-o",
            str(out),
            "--model",
            "model",
        ]
        # Both at once: nothing is being measured yet, and packaging is most of a short run's time.
        jobs[name] = (
            ctx.groups.start(argv, cwd=folder, env=base_env() | {"MLSHIP_PLAIN": "1"}, log=log),
            out,
            log,
        )
    for name, (proc, out, log) in jobs.items():
        try:
            code = proc.wait(timeout=600)
        except subprocess.TimeoutExpired:
            code = None
        ctx.groups.stop(proc)
        if code == 0 and (out / "mlship.json").exists():
            ctx.bundles[name] = out
            manifest = json.loads((out / "mlship.json").read_text())
            say(f"  packaged {name}: {out.name}, batch_safe={manifest.get('batch_safe')}")
        else:
            ctx.bundles[name] = f"mlship package failed (exit {code}); log: {_tail(log)}"
            say(f"  mlship package failed for {name}:\n{_indent(_tail(log, 20))}")


def save_mlflow_models(ctx: Context, models: dict[str, Model]) -> None:
    if not (ctx.venv_python.parent / "mlflow").exists():
        for name in models:
            ctx.mlflow_models[name] = (
                f"mlflow is not installed in {ctx.venv_python.parent.parent} (bash benchmarks/setup_peers.sh)"
            )
        return
    for name, model in models.items():
        out = ctx.workdir / f"mlflow-{name}"
        try:
            proc = subprocess.run(
                [str(ctx.venv_python), "-c", MLFLOW_SAVE, str(model.path), str(out), json.dumps(ROW)],
                capture_output=True,
                text=True,
                timeout=300,
                env=base_env(ctx.venv_python.parent),
            )
        except subprocess.TimeoutExpired:
            ctx.mlflow_models[name] = "mlflow.sklearn.save_model timed out"
            continue
        if proc.returncode == 0:
            ctx.mlflow_models[name] = out
        else:
            ctx.mlflow_models[name] = f"mlflow.sklearn.save_model failed: {proc.stderr.strip()[-500:]}"


def mlship_serve_options(bundle: Path) -> tuple[list[str], str]:
    """The options `python -m mlship_runtime serve --help` offers (read at run time: the runtime is evolving)."""
    proc = subprocess.run(
        [sys.executable, "-m", "mlship_runtime", "serve", "--help"],
        cwd=bundle,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return sorted(set(re.findall(r"(--[a-z][a-z0-9-]*)", proc.stdout))), proc.stdout


# --------------------------------------------------------------------------------------------------------------
# Measuring: cold start, warm-up, wrk.


def post_once(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("POST", path, body=BODY, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def first_prediction(body: bytes) -> Any:
    """The first prediction in any of the servers' answers: {"predictions": [0]} or a bare [0]."""
    value: Any = json.loads(body)
    if isinstance(value, dict):
        value = value.get("predictions", value.get("outputs"))
    while isinstance(value, list) and value:
        value = value[0]
    return value


def wait_for_first_prediction(
    server: Server, proc: subprocess.Popen[bytes], started: float, expected: int
) -> float:
    """Seconds from process start to the first 2xx answer that carries the right prediction."""
    last = "no answer yet"
    deadline = started + COLD_START_LIMIT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with status {proc.returncode} before answering ({last})")
        try:
            status, body = post_once(server.port, server.path)
        except OSError as exc:  # refused while it starts, reset while workers come up
            last = f"{type(exc).__name__}: {exc}"
        else:
            if 200 <= status < 300:
                try:
                    got = first_prediction(body)
                except ValueError:
                    got = body[:200]
                if got == expected:
                    return time.monotonic() - started
                last = f"HTTP {status} with prediction {got!r}, expected {expected}"
            else:
                last = f"HTTP {status}: {body[:200]!r}"
        time.sleep(POLL_INTERVAL_S)
    raise RuntimeError(f"no correct prediction within {COLD_START_LIMIT_S:.0f} s ({last})")


WRK_SCRIPT = """\
-- Generated by benchmarks/serving.py: single-row JSON POSTs; counts non-2xx answers per thread.
wrk.method = "POST"
wrk.body = @BODY@
wrk.headers["Content-Type"] = "application/json"

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  non2xx = 0
  first_bad = 0
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    if first_bad == 0 then first_bad = status end
  end
end

function done(summary, latency, requests)
  local bad, first = 0, 0
  for _, t in ipairs(threads) do
    bad = bad + t:get("non2xx")
    if first == 0 then first = t:get("first_bad") end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "non2xx": %d, "first_non2xx_status": %d, ' ..
    '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "status_errors": %d, "timeouts": %d, ' ..
    '"mean_us": %.1f, "p50_us": %.1f, "p90_us": %.1f, "p99_us": %.1f, "max_us": %.1f}\\n',
    summary.requests, summary.duration, summary.bytes, bad, first,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


_HZ = os.sysconf("SC_CLK_TCK")


def _busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores; idle and iowait excluded)."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / _HZ


def _tree_cpu_s(pids: set[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(rest[11]) + int(rest[12])  # utime, stime: fields 14 and 15
    return total / _HZ


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class OthersCpu:
    """CPU that neither the server under test nor wrk used during a load run: someone else's work.

    Cores' worth, averaged over the run: 0 on a quiet machine; 1.0 means a whole core of the two went elsewhere.
    """

    def __init__(self, leader: int) -> None:
        self.leader = leader
        self.cores = 0.0

    def __enter__(self) -> OthersCpu:
        self.pids = {self.leader} | _descendants(self.leader)
        self.start = (time.monotonic(), _busy_cpu_s(), _tree_cpu_s(self.pids), _children_cpu_s())
        return self

    def __exit__(self, *exc: object) -> None:
        t0, busy0, server0, wrk0 = self.start
        elapsed = time.monotonic() - t0
        ours = (_tree_cpu_s(self.pids) - server0) + (_children_cpu_s() - wrk0)
        self.cores = max(0.0, (_busy_cpu_s() - busy0 - ours) / elapsed) if elapsed > 0 else 0.0


def run_wrk(wrk: str, script: Path, server: Server, connections: int, seconds: float) -> dict[str, Any]:
    url = f"http://{HOST}:{server.port}{server.path}"
    argv = [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--timeout",
        WRK_TIMEOUT,
        "-s",
        str(script),
        url,
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(
            f"wrk failed (exit {proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}"
        )
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    seconds_run = raw["duration_us"] / 1e6
    errors = (
        raw["non2xx"] + raw["connect_errors"] + raw["read_errors"] + raw["write_errors"] + raw["timeouts"]
    )
    return {
        "connections": connections,
        "requests": raw["requests"],
        "req_per_s": raw["requests"] / seconds_run if seconds_run else 0.0,
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "mean_ms": raw["mean_us"] / 1000,
        "errors": errors,
        "raw": raw,
    }


def measure_server(ctx: Context, model: Model, name: str, wrk: str) -> dict[str, Any]:
    try:
        server = BUILDERS[name](ctx, model)
    except Skip as exc:
        say(f"  {name:<16} skipped: {exc}")
        return {"skipped": str(exc)}
    log = ctx.workdir / f"server-{model.name}-{name}.log"
    script = ctx.workdir / "wrk.lua"
    script.write_text(WRK_SCRIPT.replace("@BODY@", json.dumps(BODY)))  # a JSON string is a valid Lua string
    result: dict[str, Any] = {
        "command": server.argv,
        "cwd": str(server.cwd),
        "notes": server.notes,
    }
    started = time.monotonic()
    proc = ctx.groups.start(server.argv, cwd=server.cwd, env=server.env, log=log)
    try:
        try:
            result["cold_start_s"] = wait_for_first_prediction(server, proc, started, model.expected)
        except RuntimeError as exc:
            say(f"  {name:<16} FAILED to start: {exc}\n{_indent(_tail(log, 15))}")
            return result | {"failed": f"start: {exc}", "log_tail": _tail(log, 40)}
        warmup = min(ctx.args.warmup, ctx.args.duration) if ctx.args.warmup > 0 else 0
        if warmup:
            run_wrk(wrk, script, server, max(ctx.args.connections), warmup)
        runs = {}
        for connections in ctx.args.connections:
            with OthersCpu(proc.pid) as others:
                runs[str(connections)] = run_wrk(wrk, script, server, connections, ctx.args.duration)
            runs[str(connections)]["others_cpu_cores"] = others.cores
        result["runs"] = runs
        result["errors"] = sum(run["errors"] for run in runs.values())
        if proc.poll() is not None:
            result["failed"] = f"exited with status {proc.returncode} during the load test"
        say(f"  {name:<16} " + _summary_line(result))
        return result
    except RuntimeError as exc:
        say(f"  {name:<16} FAILED: {exc}")
        return result | {"failed": str(exc), "log_tail": _tail(log, 40)}
    finally:
        ctx.groups.stop(proc)
        _wait_port_closed(server.port)


def _wait_port_closed(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((HOST, port)) != 0:
                return
        time.sleep(0.1)


# --------------------------------------------------------------------------------------------------------------
# Report.


def say(text: str) -> None:
    print(text, flush=True)


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _indent(text: str) -> str:
    return textwrap.indent(text, "      | ")


def _summary_line(result: dict[str, Any]) -> str:
    parts = [f"cold start {result['cold_start_s']:.2f} s"]
    for c, run in result.get("runs", {}).items():
        parts.append(
            f"c{c}: {run['req_per_s']:,.0f} req/s p50 {run['p50_ms']:.2f} ms p99 {run['p99_ms']:.2f} ms"
        )
    parts.append(f"errors {result.get('errors', 0)}")
    parts.append(f"others' CPU {_others(result):.2f} cores")
    return "; ".join(parts)


def _others(entry: dict[str, Any]) -> float:
    """The most CPU other processes took during any of this server's load runs, in cores."""
    return max((run.get("others_cpu_cores", 0.0) for run in entry.get("runs", {}).values()), default=0.0)


def _run(results: dict[str, Any], model: str, server: str, connections: int) -> dict[str, Any] | None:
    entry = results.get(model, {}).get(server, {})
    if "failed" in entry or "skipped" in entry:
        return None
    run: dict[str, Any] | None = entry.get("runs", {}).get(str(connections))
    return run


def _cold(results: dict[str, Any], model: str, server: str) -> float | None:
    entry = results.get(model, {}).get(server, {})
    value: float | None = entry.get("cold_start_s")
    return value


def render_table(results: dict[str, Any], connections: list[int]) -> str:
    low, others = connections[0], connections[1:]
    headers = ["model", "server", f"c{low} req/s", f"c{low} p50 ms"]
    for c in others:
        headers += [f"c{c} req/s", f"c{c} p99 ms"]
    headers += ["errors", "cold start s", "others' CPU"]
    rows = []
    for model, servers in results.items():
        for server, entry in servers.items():
            row = [model, server]
            if "skipped" in entry or ("failed" in entry and "runs" not in entry):
                note = "skipped" if "skipped" in entry else "FAILED"
                row += [note] + [""] * (len(headers) - 3)
                if "cold_start_s" in entry:
                    row[-2] = f"{entry['cold_start_s']:.2f}"
                rows.append(row)
                continue
            runs = entry["runs"]
            row += [f"{runs[str(low)]['req_per_s']:,.0f}", f"{runs[str(low)]['p50_ms']:.2f}"]
            for c in others:
                row += [f"{runs[str(c)]['req_per_s']:,.0f}", f"{runs[str(c)]['p99_ms']:.2f}"]
            row += [str(entry["errors"]), f"{entry['cold_start_s']:.2f}", f"{_others(entry):.2f}"]
            rows.append(row)
    return _format(headers, rows)


def _format(headers: list[str], rows: list[list[str]], left: int = 2) -> str:
    """A Markdown table: the first `left` columns aligned left, the figures right."""
    widths = [
        max(len(headers[i]), *(len(row[i]) for row in rows)) if rows else len(headers[i])
        for i in range(len(headers))
    ]

    def line(cells: list[str]) -> str:
        out = []
        for i, cell in enumerate(cells):
            out.append(cell.ljust(widths[i]) if i < left else cell.rjust(widths[i]))
        return "| " + " | ".join(out) + " |"

    sep = (
        "|" + "|".join("-" * (w + 2) if i < left else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|"
    )
    return "\n".join([line(headers), sep, *(line(row) for row in rows)])


def render_ratios(results: dict[str, Any], connections: list[int]) -> tuple[str, dict[str, Any]]:
    headers = ["model", "mlship vs"]
    for c in connections:
        headers += [f"c{c} req/s", f"c{c} p50", f"c{c} p99"]
    headers += ["cold start diff s"]
    rows, data = [], {}
    for model, servers in results.items():
        if "runs" not in servers.get("mlship", {}):
            continue
        for other in servers:
            if other == "mlship":
                continue
            row = [model, other]
            entry: dict[str, Any] = {}
            for c in connections:
                mine, theirs = _run(results, model, "mlship", c), _run(results, model, other, c)
                if mine and theirs and theirs["req_per_s"] and theirs["p50_ms"] and theirs["p99_ms"]:
                    ratio = {
                        "req_per_s": mine["req_per_s"] / theirs["req_per_s"],
                        "p50": mine["p50_ms"] / theirs["p50_ms"],
                        "p99": mine["p99_ms"] / theirs["p99_ms"],
                    }
                    entry[f"c{c}"] = ratio
                    row += [f"{ratio['req_per_s']:.2f}x", f"{ratio['p50']:.2f}x", f"{ratio['p99']:.2f}x"]
                else:
                    row += ["n/a"] * 3
            mine_cold, their_cold = _cold(results, model, "mlship"), _cold(results, model, other)
            if mine_cold is not None and their_cold is not None:
                entry["cold_start_diff_s"] = mine_cold - their_cold
                row.append(f"{mine_cold - their_cold:+.2f}")
            else:
                row.append("n/a")
            rows.append(row)
            data[f"{model}/{other}"] = entry
    return _format(headers, rows), data


@dataclass
class Target:
    text: str
    model: str
    other: str
    check: Callable[[dict[str, Any]], tuple[bool, str] | None]  # None: not measured in this run


def _throughput(model: str, other: str, factor: float, conns: int = 32) -> Target:
    label = {"bare": "the bare baseline", "mlflow": "MLflow", "bentoml": "BentoML (batched)"}[other]

    def check(results: dict[str, Any]) -> tuple[bool, str] | None:
        mine, theirs = _run(results, model, "mlship", conns), _run(results, model, other, conns)
        if not mine or not theirs or not theirs["req_per_s"]:
            return None
        ratio = mine["req_per_s"] / theirs["req_per_s"]
        return ratio >= factor, f"{ratio:.2f}x ({mine['req_per_s']:,.0f} vs {theirs['req_per_s']:,.0f} req/s)"

    return Target(f"{model}: c{conns} req/s >= {factor:g}x {label}", model, other, check)


def _latency(model: str, conns: int, pct: str, factor: float) -> Target:
    def check(results: dict[str, Any]) -> tuple[bool, str] | None:
        mine, theirs = _run(results, model, "mlship", conns), _run(results, model, "bare", conns)
        if not mine or not theirs or not theirs[f"{pct}_ms"]:
            return None
        ratio = mine[f"{pct}_ms"] / theirs[f"{pct}_ms"]
        return ratio <= factor, f"{ratio:.2f}x ({mine[f'{pct}_ms']:.2f} vs {theirs[f'{pct}_ms']:.2f} ms)"

    return Target(f"{model}: c{conns} {pct} <= {factor:g}x the bare baseline's", model, "bare", check)


def _cold_start(model: str, slack: float) -> Target:
    def check(results: dict[str, Any]) -> tuple[bool, str] | None:
        mine, theirs = _cold(results, model, "mlship"), _cold(results, model, "bare")
        if mine is None or theirs is None:
            return None
        return mine <= theirs + slack, f"{mine - theirs:+.2f} s ({mine:.2f} vs {theirs:.2f} s)"

    return Target(f"{model}: cold start within {slack:g} s of the bare baseline's", model, "bare", check)


def _zero_errors(model: str) -> Target:
    def check(results: dict[str, Any]) -> tuple[bool, str] | None:
        entry = results.get(model, {}).get("mlship", {})
        if "runs" not in entry:
            return None
        return entry["errors"] == 0 and "failed" not in entry, f"{entry['errors']} errors/non-2xx"

    return Target(f"{model}: zero errors and non-2xx under load", model, "mlship", check)


TARGETS = [
    _throughput("lr", "mlflow", 3.0),
    _throughput("lr", "bentoml", 3.0),
    _throughput("rf", "bentoml", 1.5),
    _throughput("lr", "bare", 1.0),
    _throughput("rf", "bare", 3.0),
    _latency("lr", 1, "p50", 1.1),
    _latency("rf", 1, "p50", 1.1),
    _latency("lr", 32, "p99", 1.0),
    _latency("rf", 32, "p99", 1.0),
    _cold_start("lr", 0.5),
    _cold_start("rf", 0.5),
    _zero_errors("lr"),
    _zero_errors("rf"),
]


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, str]]:
    out = []
    for target in TARGETS:
        verdict = target.check(results)
        if verdict is None:
            out.append({"target": target.text, "result": "n/a", "detail": "not measured in this run"})
        else:
            ok, detail = verdict
            out.append({"target": target.text, "result": "PASS" if ok else "FAIL", "detail": detail})
    return out


# --------------------------------------------------------------------------------------------------------------
# Versions and the command line.


def versions(venv_python: Path, wrk: str | None) -> dict[str, Any]:
    code = (
        "import json, sys; from importlib.metadata import version, PackageNotFoundError\n"
        "def v(n):\n  try: return version(n)\n  except PackageNotFoundError: return None\n"
        "print(json.dumps({n: v(n) for n in sys.argv[1:]}))"
    )
    main_names = ["mlship", "scikit-learn", "numpy", "starlette", "uvicorn", "uvloop", "httptools", "orjson"]
    peer_names = ["mlflow", "bentoml", "scikit-learn", "numpy", "pandas", "uvicorn", "starlette"]
    out: dict[str, Any] = {"python": platform.python_version()}
    out["main"] = json.loads(
        subprocess.run(
            [sys.executable, "-c", code, *main_names], capture_output=True, text=True, timeout=60
        ).stdout
    )
    if venv_python.exists():
        proc = subprocess.run(
            [str(venv_python), "-c", code, *peer_names], capture_output=True, text=True, timeout=60
        )
        out["peers_venv"] = json.loads(proc.stdout) if proc.returncode == 0 else None
    if wrk:
        proc = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10)
        out["wrk"] = (
            (proc.stdout or proc.stderr).strip().splitlines()[0] if (proc.stdout or proc.stderr) else "?"
        )
    return out


def _csv(choices: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        unknown = [item for item in items if item not in choices]
        if unknown or not items:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)} (got {text!r})")
        return list(dict.fromkeys(items))

    return parse


def _connections(text: str) -> list[int]:
    try:
        values = sorted({int(item) for item in text.split(",") if item.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"a comma-separated list of whole numbers, got {text!r}") from None
    if not values or values[0] < 1 or values[-1] > 1000:
        raise argparse.ArgumentTypeError(f"each between 1 and 1000, got {text!r}")
    return values


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 600:
        raise argparse.ArgumentTypeError(f"between 0 and 600 seconds, got {text}")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/serving.py",
        description="Load-test mlship's runtime against a bare Starlette app, MLflow and BentoML on two iris "
        "models, on 127.0.0.1 with wrk; print a table, ratios and the issue's speed targets as PASS/FAIL.",
        epilog="Peers (MLflow, BentoML) come from their own virtualenv: bash benchmarks/setup_peers.sh. "
        "A server whose software is missing is skipped with a message. Servers: "
        + ", ".join(SERVERS)
        + " (bentoml-nobatch: the same BentoML service with batching off).",
    )
    parser.add_argument("--models", type=_csv(MODELS), default=list(MODELS), help="default: lr,rf")
    parser.add_argument(
        "--servers",
        type=_csv(SERVERS),
        default=list(DEFAULT_SERVERS),
        help="default: " + ",".join(DEFAULT_SERVERS),
    )
    parser.add_argument(
        "--duration",
        type=_seconds,
        default=15.0,
        help="seconds of load per concurrency level (default: %(default)g)",
    )
    parser.add_argument(
        "--warmup",
        type=_seconds,
        default=3.0,
        help="seconds of warm-up load before measuring, at the highest concurrency; never longer "
        "than --duration (default: %(default)g)",
    )
    parser.add_argument(
        "--connections",
        type=_connections,
        default=[1, 32],
        help="concurrency levels, comma-separated (default: 1,32)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 2,
        help="worker processes for every server (default: the number of cores, %(default)s)",
    )
    parser.add_argument(
        "--peers-venv",
        type=Path,
        default=Path(DEFAULT_VENV),
        help="virtualenv holding mlflow and bentoml (default: %(default)s) [env var: MLSHIP_BENCH_VENV]",
    )
    parser.add_argument(
        "--inproc-seconds",
        type=_seconds,
        default=1.0,
        help="seconds for each in-process predict rate (default: %(default)g)",
    )
    parser.add_argument(
        "--json", type=Path, metavar="OUT", help="also write every raw figure to this JSON file"
    )
    parser.add_argument(
        "--keep-workdir",
        action="store_true",
        help="keep the temporary directory (bundles, server logs) and print its path",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.workers <= 64:
        parser.error("--workers must be between 1 and 64")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    wrk = shutil.which("wrk")
    if wrk is None:
        say("error: wrk is not installed\nhint: apt-get install -y wrk (or bash benchmarks/setup_peers.sh)")
        return 2
    signal.signal(signal.SIGTERM, _raise_system_exit)
    signal.signal(signal.SIGHUP, _raise_system_exit)
    groups = ProcessGroups()
    atexit.register(groups.stop_all)
    workdir = Path(tempfile.mkdtemp(prefix="mlship-bench-"))
    venv_python = args.peers_venv / "bin" / "python"
    ctx = Context(args, workdir, venv_python, groups)
    began = time.time()
    try:
        return run(ctx, wrk, began)
    finally:
        groups.stop_all()
        if args.keep_workdir:
            say(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def run(ctx: Context, wrk: str, began: float) -> int:
    args = ctx.args
    load = os.getloadavg()
    say(
        f"serving benchmark: models {','.join(args.models)}; servers {','.join(args.servers)}; "
        f"{args.duration:g} s per level at c={','.join(map(str, args.connections))}; warm-up {args.warmup:g} s; "
        f"{args.workers} workers; {os.cpu_count()} cores; load average {load[0]:.2f}"
    )
    if load[0] > 0.5:
        say(
            f"  note: the machine is busy (load average {load[0]:.2f}); figures will be lower than on a quiet one"
        )
    peers = {"mlflow", "bentoml", "bentoml-nobatch"} & set(args.servers)
    if peers and not ctx.venv_python.exists():
        say(
            f"  note: no peers virtualenv at {args.peers_venv}: {', '.join(sorted(peers))} will be skipped "
            "(create it with: bash benchmarks/setup_peers.sh)"
        )
    info = versions(ctx.venv_python, wrk)
    say("versions: " + json.dumps(info))

    say("training models")
    models = train_models(args.models, ctx.workdir)
    inproc: dict[str, dict[str, float]] = {}
    for name, model in models.items():
        inproc[name] = in_process_rates(model, args.inproc_seconds)
        say(
            f"  {name}: {model.description}; in-process predict {inproc[name]['predict_1_row_per_s']:,.0f} "
            f"calls/s on 1 row, {inproc[name]['predict_32_rows_rows_per_s']:,.0f} rows/s in 32-row batches"
        )
    if "mlship" in args.servers:
        say("packaging with mlship")
        package_bundles(ctx, models)
        bundle = next((b for b in ctx.bundles.values() if isinstance(b, Path)), None)
        if bundle is not None:
            ctx.serve_options, help_text = mlship_serve_options(bundle)
            info["mlship_serve_options"] = ctx.serve_options
            info["mlship_serve_help"] = help_text
            say(f"  python -m mlship_runtime serve options: {' '.join(ctx.serve_options)}")
    if "mlflow" in args.servers:
        say("saving MLflow models")
        save_mlflow_models(ctx, models)

    results: dict[str, Any] = {}
    for name, model in models.items():
        say(f"model {name}")
        results[name] = {}
        for server in args.servers:
            results[name][server] = measure_server(ctx, model, server, wrk)

    table = render_table(results, args.connections)
    ratios_text, ratios = render_ratios(results, args.connections)
    targets = evaluate_targets(results)
    say("\nin-process predict (main environment, this interpreter)")
    say(
        _format(
            ["model", "1 row: calls/s", "32-row batches: rows/s"],
            [
                [n, f"{r['predict_1_row_per_s']:,.0f}", f"{r['predict_32_rows_rows_per_s']:,.0f}"]
                for n, r in inproc.items()
            ],
            left=1,
        )
    )
    say(
        f"\nresults ({args.duration:g} s per level, wrk -t1, {args.workers} workers per server, one-row JSON "
        "POSTs; errors = non-2xx + socket errors + timeouts)"
    )
    say(table)
    busy = max((_others(e) for servers in results.values() for e in servers.values()), default=0.0)
    say(
        "others' CPU: cores' worth of CPU used by processes other than the server under test and wrk during "
        "its load runs (the most over its runs; 0 on a quiet machine)"
    )
    if busy > 0.2:
        say(
            f"  WARNING: other processes took up to {busy:.2f} of the {os.cpu_count()} cores during the load "
            "runs: the figures and ratios are not reliable; run again on a quiet machine"
        )
    if ratios:
        say("\nratios: mlship / other (req/s: higher is better; p50, p99: lower is better)")
        say(ratios_text)
    say("\ntargets (issue 5)")
    say(
        _format(
            ["result", "target", "measured"],
            [[t["result"], t["target"], t["detail"]] for t in targets],
            left=3,
        )
    )
    failed = [entry for servers in results.values() for entry in servers.values() if "failed" in entry]
    if args.json:
        report = {
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(began)),
            "elapsed_s": time.time() - began,
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "machine": {
                "cores": os.cpu_count(),
                "load_average_at_start": load,
                "platform": platform.platform(),
            },
            "versions": info,
            "request_body": BODY,
            "models": {n: {"description": m.description, "expected": m.expected} for n, m in models.items()},
            "in_process": inproc,
            "results": results,
            "ratios": ratios,
            "targets": targets,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        say(f"\nraw figures: {args.json}")
    say(f"\ndone in {time.time() - began:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
