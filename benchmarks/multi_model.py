#!/usr/bin/env python3
"""Multi-model benchmark (issue 11): one mlship service serving three models against each served alone, and
against MLServer serving the same three, in one run.

Models: `lr` and `rf` of benchmarks/serving.py (iris) and `knn`, a KNeighborsClassifier over iris rows jittered to
about --knn-mb megabytes (default 300), each packaged as an mlship bundle from the same kind of three-cell notebook
serving.py uses. Every request is the same one-row iris POST. Mixed load: three `wrk -t1` processes at once, one
per model, the --connections (default 32) split between them. Memory: PSS summed over each server's whole process
tree (/proc/PID/smaps_rollup), read after its load runs. See README.md here.

    python benchmarks/multi_model.py                         # everything: about 6 minutes with a 300 MB KNN
    python benchmarks/multi_model.py --knn-mb 30 --duration 3 --servers alone,mlship   # about 2 minutes

Every request goes to 127.0.0.1; every loop is bounded; every server runs in its own process group, stopped with
its descendants' groups at the end (serving.py's ProcessGroups), also on Ctrl-C, SIGTERM or an error.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import serving  # noqa: E402  (benchmarks/serving.py: processes, packaging, wrk, tables)
from serving import HOST, ROW, Model, ProcessGroups, Server, base_env, say  # noqa: E402

from tests.support.servers import free_port  # noqa: E402

DEFAULT_MLSERVER_VENV = os.environ.get("MLSHIP_MLSERVER_VENV", "/opt/mlship-bench/mlserver-venv")
NAMES = ("lr", "rf", "knn")
SERVERS = ("alone", "mlship", "mlserver", "reload")
READY_LIMIT_S = 180.0  # a 300 MB model takes a while to unpickle in every MLServer worker
V2_BODY = json.dumps(
    {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": ROW}]}, separators=(",", ":")
)


# --------------------------------------------------------------------------------------------------------------
# Models and bundles.


def train_knn(workdir: Path, megabytes: float) -> Model:
    """KNN over iris jittered to `megabytes` of training data (float64 rows, their labels and the tree's index:
    48 bytes a row), so the model weighs what the issue's models weigh."""
    import numpy as np
    from sklearn.datasets import load_iris
    from sklearn.neighbors import KNeighborsClassifier

    features, target = load_iris(return_X_y=True)
    rows = max(150, int(megabytes * 1e6 / 48))
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(features), rows)
    data = features[picks] + rng.normal(0.0, 0.05, (rows, features.shape[1]))
    model = KNeighborsClassifier(n_neighbors=5, algorithm="kd_tree").fit(data, target[picks])
    path = workdir / "knn.pkl"
    path.write_bytes(pickle.dumps(model, protocol=5))
    expected = int(model.predict([ROW])[0])
    size = path.stat().st_size / 1e6
    return Model("knn", path, expected, f"KNeighborsClassifier(5, kd_tree) over {rows:,} rows, {size:.0f} MB pickled")


def prepare_models(workdir: Path, knn_mb: float) -> dict[str, Model]:
    models = serving.train_models(["lr", "rf"], workdir)
    models["knn"] = train_knn(workdir, knn_mb)
    return models


def package(workdir: Path, groups: ProcessGroups, models: dict[str, Model]) -> dict[str, Path]:
    """One bundle per model, as serving.py makes them (its package_bundles); fails loudly if any fails."""
    ctx = serving.Context(argparse.Namespace(), workdir, Path("/nonexistent"), groups)
    serving.package_bundles(ctx, models)
    bundles = {}
    for name, bundle in ctx.bundles.items():
        if not isinstance(bundle, Path):
            raise SystemExit(f"error: packaging {name} failed: {bundle}")
        bundles[name] = bundle
    return bundles


def manifest_name(bundle: Path) -> str:
    return str(json.loads((bundle / "mlship.json").read_text())["name"])


def write_service_file(path: Path, bundles: dict[str, Path]) -> None:
    """mlship.toml naming the three bundles, each renamed to its short name (lr, rf, knn)."""
    lines = ['[service]\nname = "bench"\n']
    for name, bundle in bundles.items():
        lines.append(f'[[models]]\nbundle = "{bundle}"\nname = "{name}"\n')
    path.write_text("\n".join(lines))


# --------------------------------------------------------------------------------------------------------------
# Memory: PSS of a whole process tree.


def tree_pss_mb(root: int) -> float:
    """Proportional set size summed over `root` and every descendant: shared pages counted once in total."""
    total_kb = 0
    for pid in {root} | serving._descendants(root):
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kb += int(line.split()[1])
                    break
    return total_kb / 1024


def tree_size(root: int) -> int:
    return 1 + len(serving._descendants(root))


# --------------------------------------------------------------------------------------------------------------
# Servers: starting, readiness, load.


@dataclass
class Running:
    label: str
    proc: subprocess.Popen[bytes]
    port: int
    paths: dict[str, str]  # model -> URL path of its one-row predictions
    body: str
    log: Path
    ready_s: float = 0.0


def answer(port: int, path: str, body: str, timeout: float = 10.0) -> tuple[int, Any]:
    conn = HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(raw)
    except ValueError:
        return response.status, raw[:200]


def prediction(value: Any) -> Any:
    """The first prediction in an answer: {"predictions": [0]}, or V2's {"outputs": [{"data": [0]}]}."""
    if isinstance(value, dict) and isinstance(value.get("outputs"), list) and value["outputs"]:
        value = value["outputs"][0].get("data") if isinstance(value["outputs"][0], dict) else value["outputs"]
    elif isinstance(value, dict):
        value = value.get("predictions")
    while isinstance(value, list) and value:
        value = value[0]
    return value


def start(
    groups: ProcessGroups,
    label: str,
    argv: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    port: int,
    paths: dict[str, str],
    body: str,
    expected: dict[str, int],
    log: Path,
) -> Running:
    """Start a server and wait (bounded) until every model in `paths` answers with its right prediction."""
    began = time.monotonic()
    proc = groups.start(argv, cwd=cwd, env=env, log=log)
    running = Running(label, proc, port, paths, body, log)
    waiting, last = dict(paths), "no answer yet"
    while waiting and time.monotonic() - began < READY_LIMIT_S:
        if proc.poll() is not None:
            raise RuntimeError(f"{label} exited with {proc.returncode} ({last}):\n{serving._tail(log, 20)}")
        for name, path in list(waiting.items()):
            try:
                status, value = answer(port, path, body)
            except OSError as exc:
                last = f"{name}: {type(exc).__name__}"
                continue
            if status == 200 and prediction(value) == expected[name]:
                del waiting[name]
            else:
                last = f"{name}: HTTP {status} {str(value)[:120]}"
        time.sleep(0.1)
    if waiting:
        groups.stop(proc)
        raise RuntimeError(f"{label}: not answering within {READY_LIMIT_S:g} s ({last}):\n{serving._tail(log, 20)}")
    running.ready_s = time.monotonic() - began
    return running


def split(connections: int, parts: int) -> list[int]:
    """`connections` spread over `parts` (32 over 3: 11, 11, 10)."""
    return [connections // parts + (1 if i < connections % parts else 0) for i in range(parts)]


def load(wrk: str, workdir: Path, running: Running, connections: int, seconds: float) -> dict[str, Any]:
    """One `wrk -t1` per model, all at once, the connections split between them: {model: wrk figures}."""
    script = workdir / f"wrk-{running.label}.lua"
    script.write_text(serving.WRK_SCRIPT.replace("@BODY@", json.dumps(running.body)))
    shares = split(connections, len(running.paths))

    def one(item: tuple[str, int]) -> tuple[str, dict[str, Any]]:
        name, conns = item
        server = Server(running.label, [], workdir, {}, running.paths[name], running.port)
        return name, serving.run_wrk(wrk, script, server, max(1, conns), seconds)

    with ThreadPoolExecutor(len(running.paths)) as pool:
        return dict(pool.map(one, zip(running.paths, shares, strict=True)))


def measure(wrk: str, workdir: Path, running: Running, args: argparse.Namespace) -> dict[str, Any]:
    if args.warmup:
        load(wrk, workdir, running, args.connections, min(args.warmup, args.duration))
    with serving.OthersCpu(running.proc.pid) as others:
        runs = load(wrk, workdir, running, args.connections, args.duration)
    pss = tree_pss_mb(running.proc.pid)
    result = {
        "others_cpu_cores": others.cores,
        "ready_s": running.ready_s,
        "processes": tree_size(running.proc.pid),
        "pss_mb": pss,
        "runs": runs,
        "errors": sum(run["errors"] for run in runs.values()),
    }
    if running.proc.poll() is not None:
        result["failed"] = f"exited with {running.proc.returncode} during the load"
    return result


# --------------------------------------------------------------------------------------------------------------
# The three kinds of server.


def mlship_alone(ctx: Ctx, name: str, workers: int) -> Running:
    bundle = ctx.bundles[name]
    port = free_port(HOST)
    argv = [sys.executable, "-m", "mlship_runtime", "serve", str(bundle), "--host", HOST, "--port", str(port),
            "--workers", str(workers), "--log-level", "warning"]
    return start(ctx.groups, f"alone-{name}-w{workers}", argv, cwd=bundle, env=base_env(), port=port,
                 paths={name: "/predict"}, body=serving.BODY, expected={name: ctx.models[name].expected},
                 log=ctx.workdir / f"alone-{name}-w{workers}.log")


def mlship_service(ctx: Ctx, service_file: Path, label: str) -> Running:
    port = free_port(HOST)
    argv = [sys.executable, "-m", "mlship", "serve", str(service_file), "--host", HOST, "--port", str(port),
            "--workers", str(ctx.args.workers)]
    return start(ctx.groups, label, argv, cwd=ctx.workdir, env=base_env() | {"MLSHIP_PLAIN": "1"}, port=port,
                 paths={name: f"/models/{name}/predict" for name in NAMES}, body=serving.BODY,
                 expected={name: model.expected for name, model in ctx.models.items()},
                 log=ctx.workdir / f"{label}.log")


MLSERVER_DUMP = """\
import pickle, sys
import joblib
with open(sys.argv[1], "rb") as file:
    joblib.dump(pickle.load(file), sys.argv[2])
"""


def mlserver(ctx: Ctx) -> Running:
    python = ctx.args.mlserver_venv / "bin" / "python"
    if not (ctx.args.mlserver_venv / "bin" / "mlserver").exists():
        raise Skip(f"no mlserver in {ctx.args.mlserver_venv} (bash benchmarks/setup_peers.sh)")
    repo = ctx.workdir / "mlserver-models"
    for name, model in ctx.models.items():
        folder = repo / name
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(python), "-c", MLSERVER_DUMP, str(model.path), str(folder / "model.joblib")],
                       check=True, timeout=300)
        settings = {"name": name, "implementation": "mlserver_sklearn.SKLearnModel",
                    "parameters": {"uri": "./model.joblib", "version": "v1"}}
        (folder / "model-settings.json").write_text(json.dumps(settings))
    port = free_port(HOST)
    (repo / "settings.json").write_text(json.dumps({
        "parallel_workers": ctx.args.workers, "host": HOST, "http_port": port, "grpc_port": free_port(HOST),
        "metrics_port": free_port(HOST), "debug": False,
    }))
    argv = [str(ctx.args.mlserver_venv / "bin" / "mlserver"), "start", str(repo)]
    env = base_env(ctx.args.mlserver_venv / "bin")
    return start(ctx.groups, "mlserver", argv, cwd=repo, env=env, port=port,
                 paths={name: f"/v2/models/{name}/infer" for name in NAMES}, body=V2_BODY,
                 expected={name: model.expected for name, model in ctx.models.items()},
                 log=ctx.workdir / "mlserver.log")


class Skip(Exception):
    """This server cannot be measured in this run; the message says why."""


@dataclass
class Ctx:
    args: argparse.Namespace
    workdir: Path
    groups: ProcessGroups
    models: dict[str, Model]
    bundles: dict[str, Path]


def run_server(ctx: Ctx, wrk: str, label: str, starter: Callable[[], Running]) -> dict[str, Any]:
    try:
        running = starter()
    except Skip as exc:
        say(f"  {label:<14} skipped: {exc}")
        return {"skipped": str(exc)}
    except RuntimeError as exc:
        say(f"  {label:<14} FAILED to start: {exc}")
        return {"failed": str(exc)}
    try:
        result = measure(wrk, ctx.workdir, running, ctx.args)
    except RuntimeError as exc:
        say(f"  {label:<14} FAILED: {exc}")
        return {"failed": str(exc)}
    finally:
        ctx.groups.stop(running.proc)
    rates = ", ".join(f"{n} {r['req_per_s']:,.0f} req/s" for n, r in result["runs"].items())
    say(f"  {label:<14} ready {result['ready_s']:.1f} s; {rates}; PSS {result['pss_mb']:,.0f} MB over "
        f"{result['processes']} processes; errors {result['errors']}; others' CPU {result['others_cpu_cores']:.2f} "
        "cores")
    return result


# --------------------------------------------------------------------------------------------------------------
# Reload under load.


def reload_under_load(ctx: Ctx, wrk: str) -> dict[str, Any]:
    """Mixed load on the service while its file changes (lr's bundle replaced by a copy with another version,
    then knn removed and added back), each change applied with `mlship reload`: every answer must be 2xx."""
    service_file = ctx.workdir / "reload.toml"
    write_service_file(service_file, ctx.bundles)
    try:
        running = mlship_service(ctx, service_file, "reload")
    except RuntimeError as exc:
        say(f"  reload         FAILED to start: {exc}")
        return {"failed": str(exc)}
    changed = ctx.workdir / "bundle-lr-2"
    shutil.copytree(ctx.bundles["lr"], changed)
    steps = [
        ("lr's bundle replaced", ctx.bundles | {"lr": changed}),
        ("knn removed", {n: b for n, b in (ctx.bundles | {"lr": changed}).items() if n != "knn"}),
        ("knn added back", ctx.bundles | {"lr": changed}),
    ]
    seconds = max(ctx.args.duration, 30.0)
    reloads: list[dict[str, Any]] = []
    try:
        with ThreadPoolExecutor(1) as pool:
            # knn is removed then added during the run: its own wrk counts the 404s of the gap, so only lr and rf
            # (always served) are loaded here.
            half = Running(running.label, running.proc, running.port,
                           {n: p for n, p in running.paths.items() if n != "knn"}, running.body, running.log)
            future = pool.submit(load, wrk, ctx.workdir, half, ctx.args.connections, seconds)
            for what, bundles in steps:
                time.sleep(seconds / (len(steps) + 1))
                write_service_file(service_file, bundles)
                began = time.monotonic()
                proc = subprocess.run([sys.executable, "-m", "mlship", "reload", str(service_file)],
                                      capture_output=True, text=True, timeout=120, env=base_env())
                reloads.append({"change": what, "exit": proc.returncode, "seconds": time.monotonic() - began,
                                "output": (proc.stdout + proc.stderr).strip()[-400:]})
            runs = future.result()
    finally:
        ctx.groups.stop(running.proc)
    result = {"runs": runs, "reloads": reloads, "errors": sum(run["errors"] for run in runs.values()),
              "requests": sum(run["requests"] for run in runs.values())}
    steps_text = ", ".join(f"{r['change']}: exit {r['exit']}" for r in reloads)
    say(f"  reload         {len(reloads)} reloads ({steps_text}); {result['requests']:,} requests to lr and rf "
        f"in {seconds:g} s of load, errors {result['errors']}")
    return result


# --------------------------------------------------------------------------------------------------------------
# Report.


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    alone2 = {n: results["alone"].get(f"{n}-w{args.workers}", {}) for n in NAMES}
    alone1 = {n: results["alone"].get(f"{n}-w1", {}) for n in NAMES}
    rows, shares = [], []
    for name in NAMES:
        base = alone2[name].get("runs", {}).get(name)
        mine = results.get("mlship", {}).get("runs", {}).get(name)
        theirs = results.get("mlserver", {}).get("runs", {}).get(name)
        if mine and base:
            shares.append(mine["req_per_s"] / base["req_per_s"])
        rows.append([name, _rate(base), _rate(mine), _ratio(mine and mine["req_per_s"], base and base["req_per_s"]),
                     f"{mine['p99_ms']:.1f}" if mine else "n/a", _rate(theirs),
                     _ratio(mine and mine["req_per_s"], theirs and theirs["req_per_s"]),
                     f"{theirs['p99_ms']:.1f}" if theirs else "n/a"])
    headers = ["model", f"alone c{args.connections} req/s", "service req/s", "service/alone", "service p99 ms",
               "MLServer req/s", "service/MLServer", "MLServer p99 ms"]
    out = [serving._format(headers, rows, left=1)]
    if len(shares) == len(NAMES):
        out.append(f"sum of service/alone: {sum(shares):.2f} (each model's share of its alone rate, added up: "
                   "1.00 means serving the three together neither costs nor gains; above 1, one model's idle "
                   "time goes to another)")
    summed1 = sum(a.get("pss_mb", 0.0) for a in alone1.values()) if all("pss_mb" in a for a in alone1.values()) else None
    summed2 = sum(a.get("pss_mb", 0.0) for a in alone2.values()) if all("pss_mb" in a for a in alone2.values()) else None
    mem_rows = []
    for name in NAMES:
        mem_rows.append([f"{name} alone, 1 worker", _mb(alone1[name]), ""])
        mem_rows.append([f"{name} alone, {args.workers} workers", _mb(alone2[name]), ""])
    mem_rows.append(["sum alone, 1 worker", f"{summed1:,.0f}" if summed1 else "n/a", "1.00" if summed1 else ""])
    if summed2:
        mem_rows.append([f"sum alone, {args.workers} workers", f"{summed2:,.0f}", _ratio(summed2, summed1)])
    for label, text in (("mlship", f"mlship service, {args.workers} workers"),
                        ("mlserver", f"MLServer, {args.workers} parallel workers")):
        entry = results.get(label, {})
        mem_rows.append([text, _mb(entry), _ratio(entry.get("pss_mb"), summed1)])
    out.append(serving._format(["server", "PSS MB", "vs sum alone 1 worker"], mem_rows, left=1))
    service = results.get("mlship", {})
    if "pss_mb" in service and summed1:
        ratio = service["pss_mb"] / summed1
        note = "" if getattr(args, "knn_mb", 300) >= 300 else (
            " (the issue states it for models of about 300 MB; this run's KNN is smaller, so each process's own "
            "memory weighs more)")
        out.append(f"target: service with {args.workers} workers <= 1.2x the sum alone with 1 worker: "
                   f"{'PASS' if ratio <= 1.2 else 'FAIL'} ({ratio:.2f}x){note}")
    errors = {label: entry.get("errors") for label, entry in
              ({"mlship": service, "mlserver": results.get("mlserver", {}), "reload": results.get("reload", {})}).items()
              if "errors" in entry}
    out.append("errors (non-2xx + socket errors + timeouts): " + (", ".join(f"{k} {v}" for k, v in errors.items())
                                                                   or "n/a"))
    busy = max((e.get("others_cpu_cores", 0.0) for e in [*results["alone"].values(), service,
                                                          results.get("mlserver", {})]), default=0.0)
    if busy > 0.2:
        out.append(f"WARNING: other processes took up to {busy:.2f} of the {os.cpu_count()} cores during the load "
                   "runs: the req/s figures are not reliable (memory is); run again on a quiet machine")
    return "\n\n".join(out)


def _rate(run: dict[str, Any] | None) -> str:
    return f"{run['req_per_s']:,.0f}" if run else "n/a"


def _mb(entry: dict[str, Any]) -> str:
    return f"{entry['pss_mb']:,.0f}" if "pss_mb" in entry else "n/a"


def _ratio(value: float | None, base: float | None) -> str:
    return f"{value / base:.2f}" if value and base else "n/a"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/multi_model.py",
        description="Three models (lr, rf, a large KNN) behind one mlship service against each served alone and "
        "against MLServer: req/s per model under mixed load, PSS memory, errors during reloads.")
    parser.add_argument("--servers", type=serving._csv(SERVERS), default=list(SERVERS),
                        help="default: " + ",".join(SERVERS))
    parser.add_argument("--knn-mb", type=float, default=300.0, help="KNN training data size (default: 300)")
    parser.add_argument("--duration", type=serving._seconds, default=15.0, help="seconds per load run (15)")
    parser.add_argument("--warmup", type=serving._seconds, default=3.0, help="seconds of warm-up load (3)")
    parser.add_argument("--connections", type=int, default=32, help="total connections (default: 32)")
    parser.add_argument("--workers", type=int, default=2, help="workers per model and MLServer's (default: 2)")
    parser.add_argument("--mlserver-venv", type=Path, default=Path(DEFAULT_MLSERVER_VENV),
                        help="virtualenv with mlserver and mlserver-sklearn (default: %(default)s) "
                        "[env var: MLSHIP_MLSERVER_VENV]")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write every raw figure to this file")
    parser.add_argument("--keep-workdir", action="store_true", help="keep the bundles and server logs")
    args = parser.parse_args(argv)
    if not 3 <= args.connections <= 1000 or not 1 <= args.workers <= 16:
        parser.error("--connections between 3 and 1000, --workers between 1 and 16")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    wrk = shutil.which("wrk")
    if wrk is None:
        say("error: wrk is not installed\nhint: apt-get install -y wrk (or bash benchmarks/setup_peers.sh)")
        return 2
    signal.signal(signal.SIGTERM, serving._raise_system_exit)
    groups = ProcessGroups()
    atexit.register(groups.stop_all)
    workdir = Path(tempfile.mkdtemp(prefix="mlship-multi-"))
    began = time.time()
    try:
        say(f"multi-model benchmark: {','.join(args.servers)}; c{args.connections} split over the models; "
            f"{args.duration:g} s per run; {args.workers} workers; {os.cpu_count()} cores; "
            f"load average {os.getloadavg()[0]:.2f}")
        say("training models")
        models = prepare_models(workdir, args.knn_mb)
        for model in models.values():
            say(f"  {model.name}: {model.description}")
        say("packaging with mlship")
        bundles = package(workdir, groups, models)
        ctx = Ctx(args, workdir, groups, models, bundles)
        results: dict[str, Any] = {"alone": {}}
        if "alone" in args.servers:
            say("each model alone (python -m mlship_runtime serve BUNDLE)")
            for name in NAMES:
                for workers in sorted({1, args.workers}):
                    results["alone"][f"{name}-w{workers}"] = run_server(
                        ctx, wrk, f"{name} w{workers}", lambda n=name, w=workers: mlship_alone(ctx, n, w))
        if "mlship" in args.servers:
            say("the three in one mlship service (mlship serve mlship.toml)")
            service_file = workdir / "mlship.toml"
            write_service_file(service_file, bundles)
            results["mlship"] = run_server(ctx, wrk, "mlship", lambda: mlship_service(ctx, service_file, "mlship"))
        if "mlserver" in args.servers:
            say(f"the three in MLServer ({args.workers} parallel workers, V2 infer)")
            results["mlserver"] = run_server(ctx, wrk, "mlserver", lambda: mlserver(ctx))
        if "reload" in args.servers:
            say("reloads under load (mlship reload mlship.toml)")
            results["reload"] = reload_under_load(ctx, wrk)
        say(f"\nresults: c{args.connections} over the three models at once (alone: c{args.connections} on the "
            f"one model), {args.duration:g} s, wrk -t1 per model, one-row JSON POSTs")
        say(report(results, args))
        if args.json:
            args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                             "models": {n: m.description for n, m in models.items()},
                                             "results": results}, indent=2, default=str))
        say(f"\ndone in {time.time() - began:.0f} s")
        failed = [k for k, v in results.items() if isinstance(v, dict) and "failed" in v]
        return 1 if failed else 0
    finally:
        groups.stop_all()
        if args.keep_workdir:
            say(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
