"""One backend per model of a service: the bundle's own `serve` (supervisor and forked workers, unchanged), run by
the model's Python in the bundle's folder, on Unix sockets the front binds and hands down.

- **Sockets.** One listening socket per worker, bound by the front to an abstract Unix name (Linux: nothing on
  the filesystem, so a read-only root needs no tmpfs, and no port can clash) and inherited by the backend
  (`serve --listen-fd`). The front keeps them: a backend that is replaced gets the same sockets, and a connection
  made meanwhile waits in the backlog instead of being refused.
- **Lifeline.** The backend watches the read end of a pipe whose write end only the front holds
  (`serve --lifeline-fd`): if the front dies, even by kill -9, its backends drain and exit.
- **Own session.** A terminal's Ctrl-C reaches the front alone, which stops the backends in order.
- **Watched.** The front learns at once when a backend process exits (a pidfd), marks the model unavailable with
  the reason, and starts it again (after a backoff); a worker that dies is the backend's own supervisor's to
  replace, as in a single-bundle server. A backend that exits before it was ever ready (the bundle cannot load)
  is not restarted: the model stays UNAVAILABLE with the error it logged.
- **Logs.** The backend's stderr (its JSON log lines) is copied to the front's, whole lines at a time; the last
  error line is kept as the reason when it exits.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._contract import read_manifest
from ._metrics import MULTIPROC_ENV
from ._metrics import new_directory as new_metrics_directory
from ._settings import Settings, SettingsError
from ._upstream import Pool, UpstreamError, UpstreamResponse

logger = logging.getLogger(__name__)

READY, UNAVAILABLE = "READY", "UNAVAILABLE"
_BACKLOG = 2048
_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)  # seconds before restart number 1, 2, ... (then the last)
_STABLE_SECONDS = 60.0  # a backend that stayed up this long restarts from the first backoff again
# Backends' clients are only the front's pool: keep its connections open (the pool's idle ones would otherwise be
# closed under it every 5 s, and each reuse after that costs a retry).
_BACKEND_KEEPALIVE = "3600"


def backend_env(base: Mapping[str, str], label: str) -> dict[str, str]:
    """The environment of one backend: the front's, without PYTHONPATH (as `mlship serve`), with its own
    metrics directory (the supervisors would empty each other's) and long-lived kept-alive connections."""
    env = {k: v for k, v in base.items() if k != "PYTHONPATH"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["MLSHIP_KEEPALIVE_TIMEOUT"] = _BACKEND_KEEPALIVE
    shared = env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if shared:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(Path(shared) / label)
    return env


class Backend:
    """One model version's server process and the pool of connections to it.

    `ready` and `reason` are what the routes and the repository index show; `metadata` and `openapi` are the
    backend's own /metadata and /openapi.json, read once it is ready (None before)."""

    def __init__(self, name: str, version: str, bundle: Path, *, python: str, workers: int, boot: Path,
                 log_level: str, env: Mapping[str, str]) -> None:
        self.name, self.version, self.bundle = name, version, bundle
        self.label = f"{name} {version}"
        self.python, self.workers, self.boot, self.log_level = python, workers, boot, log_level
        self.env = backend_env(env, f"{name}-{version}")
        # Metrics of its workers in a directory of the front's, emptied by each start of the backend and removed
        # with it: a backend killed with its workers cannot remove its own.
        self.metrics_dir: Path | None = None
        if MULTIPROC_ENV not in self.env:
            with contextlib.suppress(OSError):
                self.metrics_dir = Path(new_metrics_directory())
                self.env[MULTIPROC_ENV] = str(self.metrics_dir)
        # The front's own requests to it (its description, its metrics) carry the tokens it requires, if any.
        self.api_headers, self.metrics_headers = _token_headers(self.env)
        token = secrets.token_hex(6)
        self.addresses = [f"\0mlship-{os.getpid()}-{token}-{slot}" for slot in range(workers)]
        self.sockets = [_listen(address) for address in self.addresses]
        self.pool = Pool(self.addresses)
        self.ready = False
        self.reason: str | None = "starting"
        self.metadata: dict[str, Any] | None = None
        self.described = _manifest_summary(bundle)  # what GET /models shows before the backend said itself
        self.openapi: dict[str, Any] | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.inflight = 0  # the front's requests routed here and not answered yet (a reload drains by it)
        self.stopping = False
        self._task: asyncio.Task[None] | None = None
        self._became_ready = asyncio.Event()
        self._last_errors: collections.deque[str] = collections.deque(maxlen=5)

    @property
    def state(self) -> str:
        return READY if self.ready else UNAVAILABLE

    @property
    def gave_up(self) -> bool:
        """Whether its process exited before it was ever ready (it is not started again)."""
        return self._task is not None and self._task.done()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"backend {self.label}")

    async def wait_ready(self, timeout: float) -> bool:
        """Whether the backend became ready within `timeout` seconds (False at once if it gave up)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not self.ready:
                    if self._task is not None and self._task.done():
                        return False
                    self._became_ready.clear()
                    waiter = asyncio.ensure_future(self._became_ready.wait())
                    await asyncio.wait([waiter, *([self._task] if self._task else [])],
                                       return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
        return self.ready

    async def request(self, method: str, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes,
                      timeout: float) -> UpstreamResponse:
        return await self.pool.request(method, target, headers, body, timeout=timeout)

    async def stop(self, timeout: float) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds; the sockets and connections are closed."""
        self.stopping = True
        self.ready = False
        self.reason = "stopping"
        process = self.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while process.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if process.poll() is None:
                logger.error("%s did not stop within %g s; killing it", self.label, timeout)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await asyncio.sleep(0)
                process.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self.pool.close()
        for sock in self.sockets:
            sock.close()
        if self.metrics_dir is not None:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)

    # -- the process ------------------------------------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        while not self.stopping:
            started = time.monotonic()
            was_ready = await self._serve_once()
            if self.stopping:
                return
            if not was_ready:
                logger.error("%s cannot serve: %s", self.label, self.reason)
                return
            attempt = 0 if time.monotonic() - started > _STABLE_SECONDS else attempt + 1
            delay = _BACKOFF[min(attempt, len(_BACKOFF) - 1)] if attempt else 0.0
            self.restarts += 1
            logger.error("%s: %s", self.label, self.reason)
            await asyncio.sleep(delay)

    async def _serve_once(self) -> bool:
        """Start the process, wait until ready, watch it until it exits; whether it was ever ready."""
        read_end, write_end = os.pipe()
        argv = [self.python, "-B", "-P", str(self.boot), "--bundle", str(self.bundle), "serve", str(self.bundle),
                *(f"--listen-fd={sock.fileno()}" for sock in self.sockets), f"--lifeline-fd={read_end}",
                "--log-level", self.log_level]
        self.reason = "starting"
        self._last_errors.clear()
        try:
            process = subprocess.Popen(argv, cwd=self.bundle, env=self.env, stdin=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE, start_new_session=True,
                                       pass_fds=[read_end, *(sock.fileno() for sock in self.sockets)])
        except OSError as exc:
            os.close(write_end)
            self.reason = f"cannot start {self.python}: {exc.strerror or exc}"
            return False
        finally:
            os.close(read_end)
        self.process = process
        logs = asyncio.ensure_future(self._copy_logs(process))
        exited = asyncio.ensure_future(_wait_exit(process))
        was_ready = False
        try:
            was_ready = await self._until_ready(exited)
            await exited
        finally:
            os.close(write_end)
            self.ready = False
            await asyncio.wait([logs], timeout=1.0)
            logs.cancel()
        code = process.returncode
        error = self._last_errors[-1] if self._last_errors else None
        how = _describe(code)
        if was_ready:
            self.reason = f"its process exited with {how}; restarting"
        elif error:
            self.reason = error
        else:
            self.reason = f"its process exited with {how} before it was ready"
        return was_ready

    async def _until_ready(self, exited: asyncio.Future[None]) -> bool:
        while not exited.done() and not self.stopping:
            try:
                answer = await self.pool.request("GET", b"/readyz", [], b"", timeout=2.0)
            except (UpstreamError, TimeoutError):
                await asyncio.sleep(0.1)
                continue
            if answer.status == 200:
                await self._describe_model()
                self.ready, self.reason = True, None
                self._became_ready.set()
                logger.info("%s is ready (pid %d)", self.label, self.process.pid if self.process else 0)
                return True
            self.reason = _error_of(answer) or f"/readyz answered {answer.status}"
            await asyncio.sleep(0.5)
        return False

    async def _describe_model(self) -> None:
        for path in ("metadata", "openapi"):
            with contextlib.suppress(UpstreamError, TimeoutError, ValueError):
                answer = await self.pool.request("GET", f"/{path}{'.json' if path == 'openapi' else ''}".encode(),
                                                 self.api_headers, b"", timeout=10.0)
                if answer.status == 200:
                    setattr(self, path, json.loads(answer.body))

    async def _copy_logs(self, process: subprocess.Popen[bytes]) -> None:
        """Copy the backend's stderr to ours a whole line at a time (backends' lines never interleave), keeping
        its last error lines."""
        assert process.stderr is not None
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 20)
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), process.stderr)
        out = sys.stderr.buffer
        pending = b""
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                data = pending + chunk
                cut = data.rfind(b"\n") + 1
                pending = data[cut:]
                if cut:
                    out.write(data[:cut])
                    out.flush()
                    self._note_errors(data[:cut])
            if pending:
                out.write(pending + b"\n")
                self._note_errors(pending)
        finally:
            transport.close()

    def _note_errors(self, lines: bytes) -> None:
        for line in lines.splitlines():
            message = _error_message(line)
            if message:
                self._last_errors.append(message)


def _token_headers(env: Mapping[str, str]) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]:
    """The Authorization headers of the front's requests for the API and for /metrics (none without tokens)."""
    try:
        settings = Settings.from_env(env)
    except SettingsError:  # the backend will say so when it starts
        return [], []
    def bearer(token: str) -> list[tuple[bytes, bytes]]:
        return [(b"authorization", b"Bearer " + token.encode("latin-1"))] if token else []

    return bearer(settings.api_token), bearer(settings.metrics_token)


def _manifest_summary(bundle: Path) -> dict[str, Any]:
    """Methods and input schema from the bundle's mlship.json (a model that never became ready still shows
    them); empty when it cannot be read (the backend will say why)."""
    try:
        manifest = read_manifest(bundle)
    except Exception:  # noqa: BLE001 - any unreadable manifest: the backend's own start reports it
        return {}
    return {"methods": [method.name for method in manifest.methods], "input": manifest.input.to_json(),
            "batch_safe": manifest.batch_safe}


def _listen(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(address)
        sock.listen(_BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


async def _wait_exit(process: subprocess.Popen[bytes]) -> None:
    """Until `process` exits (reaped): a pidfd where there is one, else polling."""
    loop = asyncio.get_running_loop()
    try:
        fd = os.pidfd_open(process.pid)
    except (AttributeError, OSError):
        while process.poll() is None:
            await asyncio.sleep(0.1)
        return
    try:
        gone: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not gone.done():
                gone.set_result(None)

        loop.add_reader(fd, readable)
        try:
            if process.poll() is None:
                await gone
        finally:
            loop.remove_reader(fd)
        process.wait()
    finally:
        os.close(fd)


def _error_of(answer: UpstreamResponse) -> str | None:
    with contextlib.suppress(ValueError, AttributeError):
        error = json.loads(answer.body).get("error")
        return str(error) if error else None
    return None


def _error_message(line: bytes) -> str | None:
    """The message of an error log line (JSON or text format), None for other lines."""
    text = line.decode("utf-8", "replace").strip()
    if text.startswith("{"):
        with contextlib.suppress(ValueError):
            record = json.loads(text)
            if isinstance(record, dict) and record.get("level") in ("error", "critical"):
                return str(record.get("message", ""))
            return None
    if text.startswith("error: "):  # _boot's own refusal, before logging exists
        return text[len("error: "):]
    if " ERROR " in text or " CRITICAL " in text:
        return text
    return None


def _describe(code: int | None) -> str:
    if code is None:
        return "an unknown status"
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"status {code}"
