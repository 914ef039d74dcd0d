"""Starting real servers in tests: a free loopback port, an environment without MLSHIP_ settings, and one wait
for readiness that says why a server never got ready (its exit status and its own output).

    port = free_port()
    process = subprocess.Popen([...,"--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    wait_until_ready(f"http://127.0.0.1:{port}/readyz", process, log=log_path)
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol


class Container(Protocol):
    """What wait_until_ready uses of a docker SDK container."""

    status: str

    def reload(self) -> None: ...

    def logs(self) -> bytes: ...


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it; another process could still take it)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without MLSHIP_* settings (a bundle's runtime reads its config from them)."""
    return {name: value for name, value in os.environ.items() if not name.startswith("MLSHIP_")} | extra


def wait_until_ready(
    url: str,
    process: subprocess.Popen[Any] | Container | None = None,
    *,
    log: Path | None = None,
    timeout: float = 60.0,
    interval: float = 0.1,
    until: Callable[[], bool] | None = None,
    status: int = 200,
) -> float:
    """Poll `url` until it answers `status` (and `until()`, if given, holds); return the seconds that took.

    Raises AssertionError when `process` (a Popen or a docker container) ends first, or after `timeout` seconds;
    the message has the exit status and the server's output: the `log` file it writes to, a piped stdout (the
    process is killed first when it still runs), or the container's logs.
    """
    start = time.monotonic()
    while True:
        if _answers(url, status) and (until is None or until()):
            return time.monotonic() - start
        ended = _ended(process)
        if ended:
            raise AssertionError(f"{url}: the server {ended} before it was ready:\n{_output(process, log)}")
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{url}: not ready after {timeout:g} s:\n{_output(process, log)}")
        time.sleep(interval)


def shut_down(*processes: subprocess.Popen[Any], timeout: float = 30.0) -> list[int]:
    """Stop `processes` as a supervisor does: SIGTERM to all at once (so they shut down in parallel), up to `timeout`
    seconds in all for them to exit, then SIGKILL to any still running. Returns their exit codes in order; one that
    had to be killed has -SIGKILL, so a test that wants a clean shutdown asserts the codes (`== [0]`)."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return [process.returncode for process in processes]


def _answers(url: str, status: int = 200) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == status)
    except urllib.error.HTTPError as error:  # e.g. 503 while it loads: close it, or a ResourceWarning follows
        error.close()
        return error.code == status
    except (OSError, http.client.HTTPException):  # refused or reset while the server starts
        return False


def _ended(process: subprocess.Popen[Any] | Container | None) -> str:
    """How the server ended ("exited with 1"), or "" while it runs."""
    if process is None:
        return ""
    if isinstance(process, subprocess.Popen):
        code = process.poll()
        return "" if code is None else f"exited with {code}"
    process.reload()
    return "exited" if process.status == "exited" else ""


def _output(process: subprocess.Popen[Any] | Container | None, log: Path | None) -> str:
    if log is not None:
        return log.read_text(errors="replace")
    if isinstance(process, subprocess.Popen):
        if process.stdout is None:
            return "(its output was not captured)"
        if process.poll() is None:
            process.kill()
        output = process.communicate()[0]
        return output.decode(errors="replace") if isinstance(output, bytes) else str(output)
    if process is not None:
        return process.logs().decode(errors="replace")
    return "(no process given)"


_ASSET = re.compile(r'<(?:link rel="stylesheet" href|script src)="([^"]+)"')


def check_page(base: str) -> dict[str, int]:
    """GET / and /docs from a running server, and every stylesheet and script they load (relative URLs, so from
    this server alone), as a browser would: each a 200 with a body. Returns {path: bytes}; AssertionError names the
    first file that fails."""
    loaded: dict[str, int] = {}
    for page, media_type in (("/", "text/html"), ("/docs", "text/html")):
        html = _get(base + page, media_type, loaded).decode()
        for ref in _ASSET.findall(html):
            assert "//" not in ref, f"{page} loads {ref} from another host"
            kind = "text/css" if ref.endswith(".css") else "text/javascript"
            _get(urllib.parse.urljoin(base + page, ref), kind, loaded)
    return loaded


def _get(url: str, media_type: str, loaded: dict[str, int]) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
        assert response.status == 200 and body, f"{url}: {response.status}, {len(body)} bytes"
        assert response.headers.get_content_type() == media_type, f"{url}: {response.headers['content-type']}"
    loaded[urllib.parse.urlsplit(url).path] = len(body)
    return body


@contextmanager
def serving(bundles: dict[str, Path], logs: Path) -> Iterator[dict[str, str]]:
    """`mlship serve` (one worker) for each of `bundles`, all started at once (they load in parallel) and stopped
    (SIGTERM, then kill) when the block ends: {name: base URL}. Each server's output goes to logs/NAME.log."""
    running: dict[str, tuple[subprocess.Popen[bytes], str, Path]] = {}
    try:
        for name, bundle in bundles.items():
            port, log = free_port(), logs / f"{name}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [sys.executable, "-m", "mlship", "serve", str(bundle), "--port", str(port), "--workers", "1"],
                    stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "MLSHIP_PLAIN": "1"})
            running[name] = (process, f"http://127.0.0.1:{port}", log)
        for process, url, log in running.values():
            wait_until_ready(f"{url}/readyz", process, log=log, interval=0.2)
        yield {name: url for name, (_, url, _) in running.items()}
    finally:
        shut_down(*(process for process, _, _ in running.values()), timeout=15)
