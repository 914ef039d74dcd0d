#!/usr/bin/env python3
"""Soak test: normal traffic measured by wrk while the server is attacked (issue 9).

Starts `python -m mlship_runtime serve BUNDLE --workers 2` on 127.0.0.1 (by default the iris_frame sample
bundle, built from tests/samples/bundles), then runs, each for a bounded time, while `wrk` sends one-row
POST /predict requests on 8 connections:

  slowloris     300 connections that send a request's headers one byte a second and never finish them
                (the server runs with MLSHIP_HEADER_TIMEOUT=2, so that they are closed within a phase)
  header flood  8 connections each sending an endless header line (up to 64 MiB each)
  big shapes    4 clients posting an Open Inference Protocol shape of 100,000 dimensions, again and again
  kill worker   kill -9 of one worker, twice (the supervisor replaces them; 5 deaths a minute make it give up)
  kill -9 sup   kill -9 of the supervisor: its workers must stop too, and a new server must start on the port

For each attack it prints wrk's requests, errors (non-2xx answers and socket errors) and p99 latency before
(the baseline), during and after, plus what the attack saw. Every connection goes to 127.0.0.1.

    python benchmarks/soak.py                      # about 60 s
    python benchmarks/soak.py --phase 2            # shorter phases
    python benchmarks/soak.py --bundle DIR         # another bundle (e.g. one built by an older checkout)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = %s
wrk.headers["Content-Type"] = "application/json"
"""


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    wrk = shutil.which("wrk")
    if wrk is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="mlship-soak-"))
    bundle = Path(args.bundle) if args.bundle else _sample_bundle(work)
    script = work / "predict.lua"
    body = json.dumps({"instances": [dict.fromkeys(COLUMNS, 1.0)]})
    script.write_text(WRK_SCRIPT % json.dumps(body))
    port = _free_port()
    server = Server(bundle, port, work / "server.log")
    rows: list[tuple[str, str, dict[str, Any], str]] = []

    def measure(attack: str, phase: str, seconds: float, note: Callable[[], str] = lambda: "",
                before_note: Callable[[], None] = lambda: None) -> None:
        result = run_wrk(wrk, script, port, seconds)
        before_note()
        rows.append((attack, phase, result, note()))
        print(_row(attack, phase, result, rows[-1][3]), flush=True)

    try:
        server.start()
        print(f"serving {bundle} on {HOST}:{port} with 2 workers; phases of {args.phase} s", flush=True)
        print(f"{'attack':14} {'phase':7} {'requests':>9} {'errors':>7} {'p99 ms':>8}  notes", flush=True)
        status, answer = _post(port, "/predict", body.encode())
        if status != 200:
            raise RuntimeError(f"POST /predict answers {status}: {answer[:300]!r}")
        measure("-", "before", args.phase)
        for name, attack in ATTACKS.items():
            outcome: dict[str, Any] = {}
            thread = threading.Thread(target=attack, args=(server, args.phase, outcome), daemon=True)
            thread.start()
            # the attack's own figures are complete once it has ended
            measure(name, "during", args.phase, lambda outcome=outcome: _describe(outcome),  # type: ignore[misc]
                    lambda thread=thread: thread.join(timeout=args.phase + 30))  # type: ignore[misc]
            measure(name, "after", args.phase, lambda: f"worker RSS {server.rss_mb():.0f} MB")
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", help="the bundle to serve (default: the iris_frame sample, built here)")
    parser.add_argument("--phase", type=int, default=4, help="seconds per phase (default 4: about 60 s in all)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (the server's log)")
    return parser


def _sample_bundle(work: Path) -> Path:
    sys.path.insert(0, str(ROOT))
    from tests.unit.runtime.sample_bundles import build_bundle

    return build_bundle("iris_frame", work / "bundle")


class Server:
    def __init__(self, bundle: Path, port: int, log: Path) -> None:
        self.bundle, self.port, self.log = bundle, port, log
        self.process: subprocess.Popen[bytes] | None = None
        self.orphans: list[int] = []

    def start(self, timeout: float = 60) -> None:
        env = {key: value for key, value in os.environ.items() if not key.startswith("MLSHIP_")}
        env["MLSHIP_ACCESS_LOG"] = "0"
        # Below the 10 s default, so that the slowloris connections are seen closed within a phase.
        env["MLSHIP_HEADER_TIMEOUT"] = "2"
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mlship_runtime", "serve", ".", "--host", HOST, "--port", str(self.port),
                 "--workers", "2"],
                cwd=self.bundle, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}; see {self.log}")
            if _get(self.port, "/readyz") == 200 and len(self.workers()) == 2:
                return
            time.sleep(0.1)
        raise RuntimeError(f"the server was not ready within {timeout:g} s; see {self.log}")

    def workers(self) -> list[int]:
        if self.process is None:
            return []
        try:
            path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
            return [int(pid) for pid in path.read_text().split()]
        except OSError:
            return []

    def rss_mb(self) -> float:
        total = 0
        for pid in self.workers():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
            total += int(match.group(1)) if match else 0
        return total / 1024

    def stop(self) -> None:
        for pid in [*self.workers(), *self.orphans]:
            _kill(pid)
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def slowloris(server: Server, seconds: float, outcome: dict[str, Any]) -> None:
    sockets: list[socket.socket] = []
    for _ in range(300):
        try:
            sock = socket.create_connection((HOST, server.port), timeout=2)
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
            sock.setblocking(False)
            sockets.append(sock)
        except OSError:
            outcome["refused"] = outcome.get("refused", 0) + 1
    end = time.monotonic() + seconds
    closed: set[int] = set()
    while time.monotonic() < end:
        for index, sock in enumerate(sockets):
            if index in closed:
                continue
            try:
                sock.send(b"X")
                if sock.recv(4096, socket.MSG_PEEK):
                    closed.add(index)
            except BlockingIOError:
                pass
            except OSError:
                closed.add(index)
        time.sleep(1)
    outcome["connections"] = len(sockets)
    outcome["closed by server"] = len(closed)
    for sock in sockets:
        sock.close()


def header_flood(server: Server, seconds: float, outcome: dict[str, Any]) -> None:
    end = time.monotonic() + seconds
    answers: dict[str, int] = {}
    peak = [0.0]

    def one() -> None:
        while time.monotonic() < end:
            try:
                sock = socket.create_connection((HOST, server.port), timeout=5)
            except OSError:
                answers["refused"] = answers.get("refused", 0) + 1
                continue
            try:
                sock.sendall(b"GET /livez HTTP/1.1\r\nX: ")
                chunk = b"a" * (1 << 20)
                for _ in range(64):
                    if time.monotonic() > end:
                        break
                    sock.sendall(chunk)
                    peak[0] = max(peak[0], server.rss_mb())
                answer = sock.recv(64)
                status = answer.split(b" ")[1].decode() if answer.startswith(b"HTTP/") else "closed"
            except OSError:
                status = "reset"
            finally:
                sock.close()
            answers[status] = answers.get(status, 0) + 1

    threads = [threading.Thread(target=one, daemon=True) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 10)
    outcome.update(answers)
    outcome["peak worker RSS MB"] = round(peak[0])


def big_shapes(server: Server, seconds: float, outcome: dict[str, Any]) -> None:
    shape = [1] + [10**9] * 100_000
    tensors = [{"name": name, "shape": [1], "datatype": "FP64", "data": [1.0]} for name in COLUMNS]
    tensors[0] = {"name": COLUMNS[0], "shape": shape, "datatype": "FP64", "data": [1.0]}
    body = json.dumps({"inputs": tensors}).encode()
    model = json.loads((server.bundle / "mlship.json").read_text())["name"]
    request = (f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
    end = time.monotonic() + seconds
    statuses: dict[str, int] = {}
    slowest = [0.0]

    def one() -> None:
        while time.monotonic() < end:
            started = time.monotonic()
            try:
                with socket.create_connection((HOST, server.port), timeout=60) as sock:
                    sock.sendall(request)
                    answer = sock.recv(64)
                status = answer.split(b" ")[1].decode() if answer.startswith(b"HTTP/") else "closed"
            except OSError:
                status = "error"
            slowest[0] = max(slowest[0], time.monotonic() - started)
            statuses[status] = statuses.get(status, 0) + 1

    threads = [threading.Thread(target=one, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 60)
    outcome.update(statuses)
    outcome["slowest s"] = round(slowest[0], 2)


def kill_worker(server: Server, seconds: float, outcome: dict[str, Any]) -> None:
    killed = 0
    for _ in range(2):
        time.sleep(seconds / 3)
        workers = server.workers()
        if workers:
            _kill(workers[0])
            killed += 1
    outcome["killed"] = killed
    time.sleep(seconds / 3)
    outcome["workers now"] = len(server.workers())


def kill_supervisor(server: Server, seconds: float, outcome: dict[str, Any]) -> None:
    assert server.process is not None
    time.sleep(seconds / 3)
    workers = server.workers()
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait()
    time.sleep(min(2.0, seconds / 2))
    alive = [pid for pid in workers if _running(pid)]
    server.orphans = alive
    outcome["workers left running"] = len(alive)
    outcome["port still answers"] = _get(server.port, "/livez") == 200
    try:
        server.start(timeout=30)
        outcome["restart"] = "ok"
    except RuntimeError as exc:
        outcome["restart"] = f"failed ({exc})"


def _running(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


ATTACKS: dict[str, Callable[[Server, float, dict[str, Any]], None]] = {
    "slowloris": slowloris,
    "header flood": header_flood,
    "big shapes": big_shapes,
    "kill worker": kill_worker,
    "kill -9 sup": kill_supervisor,
}


def run_wrk(wrk: str, script: Path, port: int, seconds: float) -> dict[str, Any]:
    # wrk takes whole seconds
    argv = [wrk, "-t1", "-c8", f"-d{max(1, round(seconds))}s", "--timeout", "5s", "--latency", "-s", str(script),
            f"http://{HOST}:{port}/predict"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
    text = proc.stdout
    if "requests in" not in text:
        raise RuntimeError(f"wrk failed: {proc.stderr or text}")
    if os.environ.get("SOAK_DEBUG"):
        print(text, file=sys.stderr)
    requests = re.search(r"(\d+) requests in", text)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\b", text, re.M)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    return {
        "requests": int(requests.group(1)) if requests else 0,
        "errors": (int(non_2xx.group(1)) if non_2xx else 0) + (sum(map(int, sockets.groups())) if sockets else 0),
        "p99_ms": float(p99.group(1)) * scale[p99.group(2)] if p99 else None,
    }


def _row(attack: str, phase: str, result: dict[str, Any], note: str) -> str:
    p99 = "-" if result["p99_ms"] is None else f"{result['p99_ms']:.1f}"
    return f"{attack:14} {phase:7} {result['requests']:>9} {result['errors']:>7} {p99:>8}  {note}"


def _describe(outcome: dict[str, Any]) -> str:
    return ", ".join(f"{key}: {value}" for key, value in outcome.items())


def _post(port: int, path: str, body: bytes) -> tuple[int, bytes]:
    import http.client

    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("POST", path, body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _get(port: int, path: str) -> int:
    import http.client

    conn = http.client.HTTPConnection(HOST, port, timeout=2)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return 0
    finally:
        conn.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


if __name__ == "__main__":
    sys.exit(main())
