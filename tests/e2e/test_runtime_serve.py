"""The runtime as a bundle runs it: `python -m mlship_runtime` in the bundle directory, on a real socket."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.servers import clean_env, free_port, wait_until_ready

pytestmark = pytest.mark.e2e


def runtime(bundle: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "mlship_runtime", *args]


def run_runtime(bundle: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m mlship_runtime ARGS` in the bundle directory, run to its end (60 s at most)."""
    return subprocess.run(runtime(bundle, *args), cwd=bundle, env=clean_env(), capture_output=True, text=True,
                          timeout=60, check=False)


def get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_predict_verify_and_stop_on_sigterm(make_bundle: Callable[[str], Path], workers: int) -> None:
    bundle = make_bundle("iris_frame")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = runtime(bundle, "serve", ".", "--port", str(port), "--workers", str(workers))
    process = subprocess.Popen(
        command, cwd=bundle, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        wait_until_ready(f"{url}/readyz", process)
        request = urllib.request.Request(
            f"{url}/predict", data=b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}', method="POST"
        )  # no Content-Type, like a bare client
        with urllib.request.urlopen(request, timeout=5) as response:
            assert json.loads(response.read()) == {"predictions": [0]}
            assert response.headers["x-request-id"]
        assert get(f"{url}/metadata")[1]["name"] == "iris-frame"

        verify = run_runtime(bundle, "verify", ".", "--url", url, "--json")
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert json.loads(verify.stdout)["ok"] is True

        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=10)
        # A clean, signal-initiated shutdown exits 0 (uvicorn alone would re-raise the signal).
        assert process.returncode == 0, output
        assert output.count("iris-frame 0.1.0 loaded, its 6 golden cases match") == workers, output
        assert output.count("Application shutdown complete.") == workers, output
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_serve_a_bad_bundle_exits_1_with_one_line(make_bundle: Callable[[str], Path]) -> None:
    bundle = make_bundle("iris_frame")
    (bundle / "artifacts" / "values.pkl").write_bytes(b"tampered")
    result = run_runtime(bundle, "serve", ".")
    assert result.returncode == 1
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    record = json.loads(line)
    assert record["level"] == "error" and record["logger"] == "mlship_runtime._server"
    assert record["message"].startswith("cannot serve .: artifact artifacts/values.pkl has sha256 ")
    assert "exception" not in record
