#!/usr/bin/env python3
"""What the multi-model front costs: one bundle served directly against the same bundle behind the front, in one run.

Packages the iris `lr` model (and `rf` with --models lr,rf) as benchmarks/runtime_throughput.py does, then for each
model starts

  direct   the bundle's own server: `_boot.py --bundle B serve B --workers N` on a TCP port
  front    `python -m mlship.runtime serve-service FILE`: the same bundle, N workers, behind the front
           (requests go to POST /models/NAME/predict, the front proxies them over a Unix socket)

and load-tests each with `wrk -t1` (single-row JSON POSTs) at each concurrency, in rounds that take the servers in
turn; prints medians of req/s, p50 and p99, and the front's ratios to direct.

    python benchmarks/front_overhead.py                                      # 3 rounds x 10 s
    python benchmarks/front_overhead.py --duration 3 --warmup 1 --rounds 1   # a quick look
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import runtime_throughput as rt  # noqa: E402

from mlship._paths import RUNTIME_DIR  # noqa: E402
from tests.support.servers import clean_env, free_port  # noqa: E402


class Server:
    def __init__(self, kind: str, model: str, bundle: Path, work: Path, workers: int) -> None:
        self.kind, self.model, self.port = kind, model, free_port()
        self.path = "/predict" if kind == "direct" else f"/models/{model}/predict"
        self.log = (work / f"{model}-{kind}.log").open("wb")
        if kind == "direct":
            argv = [sys.executable, "-B", "-P", str(RUNTIME_DIR / "_boot.py"), "--bundle", str(bundle), "serve",
                    str(bundle), "--port", str(self.port), "--workers", str(workers)]
            cwd = bundle
        else:
            service = work / f"{model}.toml"
            service.write_text(f'[[models]]\nbundle = "{bundle}"\nworkers = {workers}\n')
            argv = [sys.executable, "-B", "-m", "mlship.runtime", "serve-service", str(service), "--port",
                    str(self.port), "--pid-file", str(work / f"{model}.pid")]
            cwd = Path.cwd()
        env = clean_env(MLSHIP_ACCESS_LOG="0")
        self.proc = subprocess.Popen(argv, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        self.runs: dict[str, list[dict[str, Any]]] = {}

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.kind} not ready within 120 s")

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


def _wrk(wrk: str, script: Path, server: Server, connections: int, seconds: float) -> dict[str, Any]:
    return rt._wrk(wrk, script, server.port, connections, seconds, server.path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds per load level (default: 10)")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up at the highest level")
    parser.add_argument("--models", default="lr")
    parser.add_argument("--connections", default="1,32", help="concurrency levels (default: 1,32)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the model (default: 2)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, servers in turn; medians (default: 3)")
    parser.add_argument("--work", help="keep bundles and logs in this directory")
    args = parser.parse_args(argv)
    wrk = shutil.which("wrk")
    if wrk is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="mlship-front-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    models, connections = args.models.split(","), [int(c) for c in args.connections.split(",")]
    print(f"work dir {work}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}", flush=True)
    bundles = rt.package(models, work)
    script = work / "wrk.lua"
    script.write_text(rt.WRK_SCRIPT % rt.json.dumps(rt.BODY))
    lines = []
    for model in models:
        servers = [Server(kind, model, bundles[model], work, args.workers) for kind in ("direct", "front")]
        try:
            for server in servers:
                server.wait_ready()
                if args.warmup:
                    _wrk(wrk, script, server, max(connections), args.warmup)
            for _ in range(args.rounds):
                for conns in connections:
                    for server in servers:
                        server.runs.setdefault(str(conns), []).append(_wrk(wrk, script, server, conns,
                                                                           args.duration))
        finally:
            for server in servers:
                server.stop()
        medians = {server.kind: {c: rt._median_run(runs) for c, runs in server.runs.items()} for server in servers}
        for conns in map(str, connections):
            direct, front = medians["direct"][conns], medians["front"][conns]
            lines.append(
                f"{model:<4} c{conns:<3} direct {direct['req_per_s']:7.0f} req/s p50 {direct['p50_ms']:6.2f} ms "
                f"p99 {direct['p99_ms']:6.2f} ms | front {front['req_per_s']:7.0f} req/s p50 {front['p50_ms']:6.2f} "
                f"ms p99 {front['p99_ms']:6.2f} ms | front/direct {front['req_per_s'] / direct['req_per_s']:.2f}x "
                f"req/s, +{front['p50_ms'] - direct['p50_ms']:.2f} ms p50 | errors {direct['errors']}/"
                f"{front['errors']}")
    print(f"\n{args.rounds} rounds x {args.duration:g} s, wrk -t1, {args.workers} workers, single-row JSON POST, "
          "medians:")
    print("\n".join(lines))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
