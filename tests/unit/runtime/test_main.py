from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mlship.runtime import __main__ as cli
from mlship.runtime import _server, _verify
from mlship.runtime._verify import ServerUnreachable
from tests.support.servers import free_port

from .sample_bundles import edit_golden, edit_manifest

MakeBundle = Callable[[str], Path]


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    # serve() configures logging for a server process: JSON on stderr, root at its level.
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.setLevel(level)
    root.handlers[:] = handlers


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What `serve` would run: each in-process worker's socket, or the Supervisor's; nothing serves."""
    calls: list[dict[str, Any]] = []

    def run_worker(bundle_dir: Path, bundle: Any, settings: Any, sock: socket.socket, log_level: str) -> int:
        calls.append({"worker": sock.getsockname(), "reuse_port": _reuse_port(sock), "log_level": log_level})
        sock.close()
        return 0

    class Supervisor:
        def __init__(self, work: Any, settings: Any, listeners: list[socket.socket],
                     front_lifeline: int | None = None) -> None:
            calls.append({"supervisor": [sock.getsockname() for sock in listeners],
                          "reuse_port": [_reuse_port(sock) for sock in listeners]})
            for sock in listeners:
                sock.close()

        def run(self) -> int:
            return 0

    monkeypatch.setattr(_server, "run_worker", run_worker)
    monkeypatch.setattr(_server, "Supervisor", Supervisor)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)  # so that monkeypatch restores what serve sets
    return calls


def _reuse_port(sock: socket.socket) -> bool:
    return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT))


def test_verify_prints_a_table(sample_bundle: MakeBundle, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["verify", str(sample_bundle("raises"))]) == 0
    assert capsys.readouterr().out == (
        "case       method   result  detail\npredict-0  predict  ok\n1 of 1 golden cases match\n"
    )


def test_verify_json(sample_bundle: MakeBundle, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = sample_bundle("iris_frame")
    assert cli.main(["verify", str(bundle), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["url"] is None and report["bundle"] == str(bundle)
    assert len(report["cases"]) == 6
    assert report["cases"][0] == {
        "id": "predict-0",
        "method": "predict",
        "ok": True,
        "detail": "",
        "expected": [0],
        "actual": [0],
    }


def test_verify_mismatch_exits_1(make_bundle: MakeBundle, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = make_bundle("raises")
    edit_golden(bundle, lambda golden: golden["cases"][0].update(expected=[3.5]))
    assert cli.main(["verify", str(bundle)]) == 1
    out = capsys.readouterr().out
    assert "predict-0  predict  FAIL    at [0]: expected 3.5, got 3.0" in out
    assert out.endswith("0 of 1 golden cases match\n")


def test_verify_bad_bundle_exits_2_with_the_reason(
    make_bundle: MakeBundle, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = make_bundle("raises")
    edit_manifest(bundle, python={"version": "3.9.1"})
    assert cli.main(["verify", str(bundle), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: the bundle was packaged with Python 3.9.1 and must be served by")
    assert "Traceback" not in captured.err and captured.err.count("\n") == 1


def test_verify_url_unreachable_exits_2(
    sample_bundle: MakeBundle, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def unreachable(url: str, body: Any, timeout: float) -> Any:
        raise ServerUnreachable(f"cannot reach {url}: Connection refused")

    monkeypatch.setattr(_verify, "_post", unreachable)
    assert cli.main(["verify", str(sample_bundle("raises")), "--url", "http://127.0.0.1:9"]) == 2
    assert capsys.readouterr().err == "error: cannot reach http://127.0.0.1:9/predict: Connection refused\n"


def test_serve_one_worker_serves_in_this_process(sample_bundle: MakeBundle, served: list[dict[str, Any]]) -> None:
    port = free_port()
    assert cli.main(["serve", str(sample_bundle("raises")), "--port", str(port), "--workers", "1"]) == 0
    assert served == [{"worker": ("127.0.0.1", port), "reuse_port": False, "log_level": "info"}]


def test_serve_several_workers_get_one_socket_each_on_one_port(
    sample_bundle: MakeBundle, served: list[dict[str, Any]]
) -> None:
    port = free_port()
    argv = ["serve", str(sample_bundle("raises")), "--workers", "3", "--port", str(port), "--log-level", "warning"]
    assert cli.main(argv) == 0
    assert served == [{"supervisor": [("127.0.0.1", port)] * 3, "reuse_port": [True] * 3}]
    # Native thread pools share the CPUs between the workers; set before numpy loaded the bundle.
    assert os.environ["OMP_NUM_THREADS"] == str(max(1, _server.available_cpus() // 3))


def test_workers_default_to_the_cpus_or_mlship_workers(
    sample_bundle: MakeBundle, served: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_server, "available_cpus", lambda: 2)
    assert cli.main(["serve", str(sample_bundle("raises")), "--port", str(free_port())]) == 0
    assert len(served[-1]["supervisor"]) == 2
    monkeypatch.setenv("MLSHIP_WORKERS", "1")
    assert cli.main(["serve", str(sample_bundle("raises")), "--port", str(free_port())]) == 0
    assert "worker" in served[-1]


def test_available_cpus_counts_the_affinity_mask_and_the_cgroup_quota(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(_server, "_cgroup_quota", lambda: None)
    assert _server.available_cpus() == 4
    monkeypatch.setattr(_server, "_cgroup_quota", lambda: 1.5)
    assert _server.available_cpus() == 2


def test_a_port_in_use_exits_1(sample_bundle: MakeBundle, served: list[dict[str, Any]],
                               caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli.main(["serve", str(sample_bundle("raises")), "--port", str(port), "--workers", "2"]) == 1
    assert served == []
    assert caplog.messages[-1].startswith(f"cannot listen on 127.0.0.1 port {port}: ")


def test_serve_bad_bundle_logs_one_line_and_exits_1(
    make_bundle: MakeBundle, caplog: pytest.LogCaptureFixture, served: list[dict[str, Any]]
) -> None:
    bundle = make_bundle("raises")
    (bundle / "golden.json").write_text("{}")
    with caplog.at_level(logging.INFO):
        assert cli.main(["serve", str(bundle)]) == 1
    [record] = caplog.records
    assert record.levelno == logging.ERROR and record.exc_info is None
    assert record.getMessage().startswith(f"cannot serve {bundle}: artifact golden.json has sha256 ")
    assert served == []


def test_serve_bad_limit_setting_exits_1(
    sample_bundle: MakeBundle, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLSHIP_MAX_ROWS", "lots")
    assert cli.main(["serve", str(sample_bundle("raises"))]) == 1
    assert caplog.messages[-1].endswith("MLSHIP_MAX_ROWS='lots' is not a whole number")


@pytest.mark.parametrize("argv", [["serve", "b", "--workers", "0"], ["verify"], ["explode", "b"]])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert "usage: python -m mlship_runtime" in capsys.readouterr().err


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


def test_a_response_leaves_in_one_write() -> None:
    async def main() -> list[list[bytes]]:
        loop = asyncio.get_running_loop()
        seen = []
        real = FakeTransport()
        transport = _server._CoalescingTransport(real, loop)  # type: ignore[arg-type]
        transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        transport.write(b"{}")
        seen.append(list(real.writes))
        real.writes.clear()
        transport.write(b"HTTP/1.1 204 No Content\r\n\r\n")  # no body follows: out at the next iteration
        seen.append(list(real.writes))
        await asyncio.sleep(0)
        seen.append(list(real.writes))
        real.writes.clear()
        transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
        transport.close()  # what is held goes out before the connection closes
        seen.append(list(real.writes))
        assert transport.get_extra_info("peername") == "info:peername" and real.closed
        return seen

    assert asyncio.run(main()) == [
        [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"],
        [],
        [b"HTTP/1.1 204 No Content\r\n\r\n"],
        [b"HTTP/1.1 200 OK\r\n\r\n"],
    ]
