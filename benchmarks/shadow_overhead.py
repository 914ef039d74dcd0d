#!/usr/bin/env python3
"""What a shadow costs the client, and how a canary splits, in one run.

Packages the iris `lr` model (as benchmarks/runtime_throughput.py does) and copies it as version 2.0.0 of the
same model, then starts three fronts (`python -m mlship.runtime serve-service FILE`, each with both versions,
N workers each):

  off      [routes.lr] default = "1.0.0"                                  (no candidate)
  shadow   ... shadow = { version = "2.0.0", percent = 100 }             (every request copied to 2.0.0)
  canary   ... canary = { version = "2.0.0", percent = 10, sticky = "X-User-ID" }

`off` and `shadow` are load-tested in turn with `wrk -t1` (single-row JSON POSTs to /models/lr/predict) at each
concurrency, in rounds; medians of req/s, p50 and p99 are printed with the shadow's ratios, and its comparison
counts (agree/disagree/error, dropped copies) from /metrics. The canary front gets --split requests without the
header (the share answered by 2.0.0, from X-Model-Version) and the same number spread over 1,000 X-User-ID values
(the share, and whether any user ever saw both versions).

    python benchmarks/shadow_overhead.py                                      # 3 rounds x 10 s
    python benchmarks/shadow_overhead.py --duration 3 --warmup 1 --rounds 1   # a quick look
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import front_overhead as fo  # noqa: E402
import runtime_throughput as rt  # noqa: E402

from mlship.runtime import _contract as contract  # noqa: E402
from tests.support.servers import clean_env, free_port  # noqa: E402

ROUTES = {
    "off": "",
    "shadow": 'shadow = { version = "2.0.0", percent = 100 }\n',
    "canary": 'canary = { version = "2.0.0", percent = 10, sticky = "X-User-ID" }\n',
}


class Front(fo.Server):
    """A front of both versions with the routes of `kind` (ROUTES); readiness and stop as front_overhead's."""

    def __init__(self, kind: str, versions: list[Path], work: Path, workers: int) -> None:
        self.kind, self.model, self.port = kind, "lr", free_port()
        self.path = "/models/lr/predict"
        service = work / f"{kind}.toml"
        models = "".join(f'[[models]]\nbundle = "{bundle}"\nname = "lr"\nworkers = {workers}\n\n'
                         for bundle in versions)
        service.write_text(f'{models}[routes.lr]\ndefault = "1.0.0"\n{ROUTES[kind]}')
        self.log = (work / f"{kind}.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-B", "-m", "mlship.runtime", "serve-service", str(service), "--port", str(self.port),
             "--pid-file", str(work / f"{kind}.pid")],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
            env=clean_env(MLSHIP_ACCESS_LOG="0", MLSHIP_SHADOW_LOG=str(work / f"{kind}.shadow.jsonl")))
        self.runs: dict[str, list[dict[str, Any]]] = {}

    def metric(self, family: str, **labels: str) -> float:
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as response:
            text = response.read().decode()
        return sum(sample.value for metric in text_string_to_metric_families(text) for sample in metric.samples
                   if sample.name == family and all(sample.labels.get(k) == v for k, v in labels.items()))


def _version(bundle: Path, copy: Path, version: str) -> Path:
    shutil.copytree(bundle, copy)
    read = contract.read(copy)
    contract.write(copy, replace(read.manifest, version=version), read.golden)
    return copy


def _split(front: Front, requests: int, users: int | None) -> tuple[float, int]:
    """The share of `requests` answered by 2.0.0, and how many users saw both versions."""
    connection = http.client.HTTPConnection("127.0.0.1", front.port, timeout=30)
    seen: dict[str, set[str]] = {}
    candidate = 0
    for n in range(requests):
        headers = {"Content-Type": "application/json"}
        user = f"user-{n % users}" if users else None
        if user is not None:
            headers["X-User-ID"] = user
        connection.request("POST", front.path, rt.BODY, headers)
        response = connection.getresponse()
        response.read()
        version = response.getheader("X-Model-Version") or ""
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status} from the canary")
        candidate += version == "2.0.0"
        if user is not None:
            seen.setdefault(user, set()).add(version)
    connection.close()
    return candidate / requests, sum(len(versions) > 1 for versions in seen.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds per load level (default: 10)")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up at the highest level")
    parser.add_argument("--connections", default="1,32", help="concurrency levels (default: 1,32)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes per version (default: 1)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, fronts in turn; medians (default: 3)")
    parser.add_argument("--split", type=int, default=10_000, help="canary requests per measurement (10000)")
    parser.add_argument("--work", help="keep bundles and logs in this directory")
    args = parser.parse_args(argv)
    wrk = shutil.which("wrk")
    if wrk is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="mlship-shadow-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    connections = [int(c) for c in args.connections.split(",")]
    print(f"work dir {work}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}", flush=True)
    stable = rt.package(["lr"], work)["lr"]
    stable = _version(stable, work / "lr-1", "1.0.0")
    versions = [stable, _version(stable, work / "lr-2", "2.0.0")]
    script = work / "wrk.lua"
    script.write_text(rt.WRK_SCRIPT % json.dumps(rt.BODY))
    fronts = [Front(kind, versions, work, args.workers) for kind in ("off", "shadow")]
    try:
        for front in fronts:
            front.wait_ready()
            if args.warmup:
                rt._wrk(wrk, script, front.port, max(connections), args.warmup, front.path)
        for _ in range(args.rounds):
            for conns in connections:
                for front in fronts:
                    front.runs.setdefault(str(conns), []).append(
                        rt._wrk(wrk, script, front.port, conns, args.duration, front.path))
        time.sleep(2)  # the last copies compared
        shadow = fronts[1]
        labels = {"model": "lr", "stable": "1.0.0", "candidate": "2.0.0"}
        counts = {result: shadow.metric("mlship_shadow_comparisons_total", result=result, **labels)
                  for result in ("agree", "disagree", "error")}
        dropped = shadow.metric("mlship_shadow_dropped_total", **labels)
    finally:
        for front in fronts:
            front.stop()
    medians = {front.kind: {c: rt._median_run(runs) for c, runs in front.runs.items()} for front in fronts}
    lines = []
    for level in map(str, connections):
        off, on = medians["off"][level], medians["shadow"][level]
        lines.append(
            f"c{level:<3} shadow off {off['req_per_s']:7.0f} req/s p50 {off['p50_ms']:6.2f} ms p99 {off['p99_ms']:6.2f}"
            f" ms | on {on['req_per_s']:7.0f} req/s p50 {on['p50_ms']:6.2f} ms p99 {on['p99_ms']:6.2f} ms | on/off "
            f"{on['req_per_s'] / off['req_per_s']:.2f}x req/s, p50 {on['p50_ms'] - off['p50_ms']:+.2f} ms, p99 "
            f"{on['p99_ms'] - off['p99_ms']:+.2f} ms | errors {off['errors']}/{on['errors']}")
    print(f"\n{args.rounds} rounds x {args.duration:g} s, wrk -t1, {args.workers} worker(s) per version, single-row "
          "JSON POST, medians:")
    print("\n".join(lines))
    print(f"shadow comparisons: {counts['agree']:.0f} agree, {counts['disagree']:.0f} disagree, "
          f"{counts['error']:.0f} error; {dropped:.0f} copies dropped (queue full)")

    canary = Front("canary", versions, work, args.workers)
    try:
        canary.wait_ready()
        share, _ = _split(canary, args.split, None)
        sticky_share, switched = _split(canary, args.split, 1000)
    finally:
        canary.stop()
    print(f"canary 10%: {args.split} requests without X-User-ID: {100 * share:.2f}% answered by 2.0.0; "
          f"{args.split} over 1000 X-User-ID values: {100 * sticky_share:.2f}%, {switched} users saw both versions")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
