"""The runtime's server processes for real: forked workers, metrics summed over them, SIGTERM under load,
timeouts that interrupt the model, a killed worker replaced. Every server listens on 127.0.0.1 only."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.servers import clean_env, free_port, wait_until_ready

pytestmark = pytest.mark.e2e
HOST = "127.0.0.1"


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
        try:
            data = None if body is None else json.dumps(body)
            conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()

    def predict(self, x: float, **headers: str) -> tuple[int, Any]:
        status, _, body = self.request("POST", "/predict", {"instances": [{"x": x}]}, headers)
        return status, json.loads(body)

    def workers(self) -> list[int]:
        try:
            return [int(pid) for pid in Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()]
        except OSError:
            return []

    def access_lines(self) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]
        return [line for line in lines if line.get("logger") == "mlship.access"]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Any]:
    servers: list[Server] = []

    def run(bundle: Path, workers: int, **env: str) -> Server:
        port = free_port()
        log = tmp_path / f"server-{len(servers)}.log"
        environment = clean_env(**env)
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "mlship_runtime", "serve", ".", "--host", HOST, "--port", str(port),
                 "--workers", str(workers)],
                cwd=bundle, env=environment, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        server = Server(process, port, log)
        servers.append(server)
        children = workers if workers > 1 else 0  # one worker serves in the supervisor's own process
        wait_until_ready(f"http://{HOST}:{port}/readyz", process, log=log, interval=0.05,
                         until=lambda: len(server.workers()) == children)
        return server

    yield run
    for server in servers:
        if server.process.poll() is None:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait()


def metric(text: str, line_start: str) -> float:
    match = re.search(rf"^{re.escape(line_start)} (\S+)$", text, re.M)
    assert match, f"{line_start} not in /metrics"
    return float(match.group(1))


def test_two_workers_serve_one_model_and_metrics_sum_over_them(start: Any, slow: Path) -> None:
    server = start(slow, 2, MLSHIP_DRAIN_DELAY="0")
    for _ in range(40):  # a new connection each: the kernel spreads them over the workers' sockets
        assert server.predict(0.0) == (200, {"predictions": [0.0]})
    status, headers, body = server.request("HEAD", "/livez")  # a response without a body still goes out
    assert status == 200 and body == b"" and headers["content-length"] == "18"
    served_by = {line["pid"] for line in server.access_lines() if line["path"] == "/predict"}
    assert served_by == set(server.workers())
    for _ in range(4):  # whichever worker answers /metrics, it reports both
        _, _, body = server.request("GET", "/metrics")
        text = body.decode()
        assert metric(text, 'mlship_requests_total{endpoint="/predict",method="POST",status="200"}') == 40
        assert metric(text, 'mlship_batch_rows_sum{method="predict"}') == 40
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=20) == 0


@dataclass(eq=False)  # threads must stay hashable
class LoadClient(threading.Thread):
    """Sends requests one after another on a keep-alive connection until the server refuses connections."""

    server: Server
    name_prefix: str
    x: float
    done: dict[str, tuple[float, float, int, Any]] = field(default_factory=dict)  # id -> (sent, answered, status, body)
    errors: dict[str, tuple[float, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(daemon=True)

    def run(self) -> None:
        conn = http.client.HTTPConnection(HOST, self.server.port, timeout=30)
        deadline = time.monotonic() + 30
        for index in range(10_000):
            if time.monotonic() > deadline:
                return
            rid = f"{self.name_prefix}-{index}"
            sent = time.monotonic()
            try:
                conn.request("POST", "/predict", body=json.dumps({"instances": [{"x": self.x}]}),
                             headers={"Content-Type": "application/json", "X-Request-ID": rid})
                response = conn.getresponse()
                self.done[rid] = (sent, time.monotonic(), response.status, json.loads(response.read()))
            except OSError as exc:  # refused: the listener is closed; reset/disconnected: see the assertions
                self.errors[rid] = (sent, type(exc).__name__)
                conn.close()
                if isinstance(exc, ConnectionRefusedError):
                    return
                conn = http.client.HTTPConnection(HOST, self.server.port, timeout=30)


def test_sigterm_under_load_loses_no_accepted_request(start: Any, slow: Path) -> None:
    server = start(slow, 2, MLSHIP_DRAIN_DELAY="1", MLSHIP_GRACE_PERIOD="10")
    clients = [LoadClient(server, f"c{index}", 0.05) for index in range(8)]
    for client in clients:
        client.start()
    time.sleep(1.0)
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    # Draining: not ready, while the listener still accepts and answers.
    status, _, body = server.request("GET", "/readyz")
    assert (status, json.loads(body)) == (503, {"error": "the server is shutting down"})
    assert server.predict(0.0)[0] == 200
    assert server.process.wait(timeout=20) == 0
    for client in clients:
        client.join(timeout=30)

    answered = {rid: entry for client in clients for rid, entry in client.done.items()}
    failed = {rid: entry for client in clients for rid, entry in client.errors.items()}
    assert answered and all(status == 200 and body == {"predictions": [0.1]}
                            for _, _, status, body in answered.values())
    # Requests in flight when the signal came finished normally.
    assert any(sent < signalled < done for sent, done, _, _ in answered.values())
    # Every request the server took in was answered. What failed never reached the server: refused once the
    # listener had closed, or reset with it, while still in the kernel's accept queue (clients that ignore
    # readiness and keep connecting always race the close; a load balancer stops sending at the 503).
    logged = {line["request_id"]: line["status"] for line in server.access_lines()}
    assert set(answered) <= set(logged)
    assert not set(failed) & set(logged), f"the server handled requests whose answers were lost: {failed}"
    assert {status for rid, status in logged.items() if rid in answered} == {200}
    assert all(kind in ("ConnectionRefusedError", "ConnectionResetError", "RemoteDisconnected", "BrokenPipeError")
               for _, kind in failed.values()), failed


@pytest.mark.parametrize("workers", [1, 2])
def test_a_model_call_past_the_timeout_is_503_and_the_worker_serves_on(start: Any, slow: Path, workers: int) -> None:
    server = start(slow, workers, MLSHIP_TIMEOUT="0.5")
    started = time.monotonic()
    status, answer = server.predict(5.0, **{"X-Request-ID": "too-slow"})
    assert time.monotonic() - started < 3
    assert status == 503 and answer == {"error": "timed out: the model ran past the 0.5 s timeout "
                                                  "[env var: MLSHIP_TIMEOUT]"}
    for _ in range(2 * workers):
        assert server.predict(0.0) == (200, {"predictions": [0.0]})
    warning = next(line for line in map(json.loads, server.log.read_text().splitlines())
                   if line.get("request_id") == "too-slow" and line["logger"] != "mlship.access")
    assert warning["level"] == "warning"


def test_a_killed_worker_is_replaced(start: Any, slow: Path) -> None:
    server = start(slow, 2)
    victim, survivor = server.workers()
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (len(server.workers()) < 2 or victim in server.workers()):
        time.sleep(0.05)
    workers = server.workers()
    assert len(workers) == 2 and victim not in workers and survivor in workers
    for _ in range(10):
        assert server.predict(0.0)[0] == 200
    log = server.log.read_text()
    assert f"worker {victim} exited with signal SIGKILL; starting another" in log
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=20) == 0
