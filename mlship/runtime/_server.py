"""Serving processes: load the bundle once, then one worker in this process or N forked workers under a supervisor.

The model is loaded (predictor.py imported, values unpickled) before forking, so its large read-only arrays are
shared copy-on-write between the workers instead of loaded N times. The golden case that makes a worker ready is
replayed in each worker after the fork, never before it: some native thread pools (GNU OpenMP) do not survive a
fork once used. The listening sockets (one per worker, see bind_sockets) are bound before the fork.

Shutdown (SIGTERM or SIGINT): every worker turns not-ready at once, keeps serving for MLSHIP_DRAIN_DELAY seconds,
closes the listener, lets in-flight requests finish within MLSHIP_GRACE_PERIOD, and exits 0; the supervisor
forwards the signal, waits for its workers and exits 0. A worker that dies otherwise is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import http
import logging
import math
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from ._app import create_app
from ._bundle import BundleLoadError, LoadedBundle, load_bundle
from ._http import RECEIVED_KEY, encode_json, set_pending_limit
from ._logs import configure_logging
from ._metrics import MULTIPROC_ENV, enable_multiprocess, process_exited, remove_directory, remove_own_files
from ._settings import Settings, SettingsError
from ._state import AppState

logger = logging.getLogger(__name__)

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_MAX_CRASHES = 5  # within _CRASH_WINDOW seconds: then the supervisor gives up rather than fork forever
_CRASH_WINDOW = 60.0


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, lowered by a cgroup CPU quota (containers)."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cgroup_quota()
    return max(1, min(count, math.ceil(quota)) if quota else count)


def _cgroup_quota() -> float | None:
    with contextlib.suppress(OSError, ValueError, ZeroDivisionError):
        text = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if text[0] != "max":
            return int(text[0]) / int(text[1])
    with contextlib.suppress(OSError, ValueError, ZeroDivisionError):
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        if quota > 0:
            return quota / int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
    return None


def limit_native_threads(workers: int) -> None:
    """Share the CPUs between the workers' BLAS/OpenMP pools (unless the user chose), before numpy loads."""
    per_worker = str(max(1, available_cpus() // workers))
    for name in _THREAD_VARIABLES:
        os.environ.setdefault(name, per_worker)


def bind_sockets(host: str, port: int, count: int, backlog: int = 2048) -> list[socket.socket]:
    """`count` listening sockets on one address: one per worker, joined with SO_REUSEPORT when several.

    One socket per worker, not one shared: the kernel then spreads new connections evenly over the workers,
    where a shared socket lets whichever worker wakes first accept a whole burst of them. A worker's socket
    outlives the worker (the supervisor keeps it), so connections that arrive while it is being replaced wait
    in its backlog instead of being refused.
    """
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    # Plain first: SO_REUSEPORT alone would silently join a server of the same user already on this port.
    first = _listen(family, host, port, backlog, reuse_port=False)
    if count == 1:
        return [first]
    port = first.getsockname()[1]
    first.close()
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sockets.append(_listen(family, host, port, backlog, reuse_port=True))
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _listen(family: int, host: str, port: int, backlog: int, *, reuse_port: bool) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


# Seconds a connection idle at shutdown stays open: a request may already be on its way (the client sent it
# after its previous answer, before it could see the connection close).
_LINGER = 0.25


class ServerHTTPProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
    """uvicorn's HTTP protocol (httptools, else h11) with these changes.

    - Each response leaves in one write: uvicorn writes the header block, then the body, and on loopback each
      write is a system call and a TCP segment that wakes the client (see _CoalescingTransport).
    - Shutdown does not close an idle connection at once: a request that arrives within _LINGER seconds is
      answered (with Connection: close, the server is draining) instead of being lost to a reset. Busy
      connections close after their response, as in uvicorn.
    - Bounded before any request exists: a connection must send a request's line and headers within
      MLSHIP_HEADER_TIMEOUT seconds of connecting (or of its first byte after an idle keep-alive period), at most
      MLSHIP_MAX_HEADER_BYTES bytes of them in at most MLSHIP_MAX_HEADERS fields; else it is answered 408 or 431
      (JSON) and closed. Silent connections used to stay open forever (2,100 of them exhausted 1,024 file
      descriptors), and 64 MiB of headers were held in full.
    - Protocol errors are answered with JSON, like everything else, instead of uvicorn's text/plain.
    - The moment a request's first byte was read goes into its scope (RECEIVED_KEY): its deadline and its
      access-log duration start there, not when the application gets to it.

    `limits` is set on the subclass that `protocol_class(settings)` makes.
    """

    limits: Settings = Settings()

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(_CoalescingTransport(transport, self.loop))
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_bytes = self._raw_header_bytes = 0
        self._in_headers = False
        self._refusal: tuple[int, str] | None = None
        self._received = time.monotonic()
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._header_timer is None and (self.cycle is None or self.cycle.response_complete):
            self._arm_header_timer()  # the first byte of the next request on a kept-alive connection
        super().data_received(data)
        if self._in_headers and not self.transport.is_closing():
            # httptools holds a header line until it ends, and calls on_header only then: an endless one is
            # counted here, as it arrives.
            self._raw_header_bytes += len(data)
            if self._raw_header_bytes > self.limits.max_header_bytes:
                self._refusal = (431, self._header_bytes_message())
                self.send_400_response("")

    # httptools' parser callbacks (the h11 protocol has none: there, uvicorn's h11_max_incomplete_event_size
    # bounds the header block)
    def on_message_begin(self) -> None:
        self._header_bytes = self._raw_header_bytes = 0
        self._in_headers = True
        self._received = time.monotonic()
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._count_header_bytes(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header_bytes(len(name) + len(value) + 4)
        if len(self.headers) >= self.limits.max_headers:
            self._refuse(431, f"more than {self.limits.max_headers} header fields [env var: MLSHIP_MAX_HEADERS]")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._cancel_header_timer()
        self.scope[RECEIVED_KEY] = self._received
        super().on_headers_complete()

    def _count_header_bytes(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self.limits.max_header_bytes:
            self._refuse(431, self._header_bytes_message())

    def _header_bytes_message(self) -> str:
        return (f"the request line and headers are larger than {self.limits.max_header_bytes} bytes "
                "[env var: MLSHIP_MAX_HEADER_BYTES]")

    def _refuse(self, status: int, message: str) -> None:
        # Raised inside a parser callback: httptools turns it into a parser error, which uvicorn answers
        # through send_400_response (below), with this status and message.
        self._refusal = (status, message)
        raise ValueError(message)

    def send_400_response(self, msg: str) -> None:
        status, message = self._refusal or (400, msg)
        self._cancel_header_timer()
        if status != 400:
            _REFUSALS.log("refused a request: %s (client %s)", message, _client(self))
        self._send_json_and_close(status, message)

    def _send_json_and_close(self, status: int, message: str) -> None:
        body = encode_json({"error": message})
        reason = http.HTTPStatus(status).phrase
        head = (
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        if not self.transport.is_closing():
            self.transport.write(head.encode("latin-1") + body)
            self.transport.close()

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.limits.header_timeout, self._on_header_timeout)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _on_header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or not (self.cycle is None or self.cycle.response_complete):
            return
        _SILENT.log(
            "closed a connection that sent no complete request headers within %g s "
            "[env var: MLSHIP_HEADER_TIMEOUT] (client %s)", self.limits.header_timeout, _client(self),
        )
        timeout = self.limits.header_timeout
        self._send_json_and_close(
            408, f"the request headers did not arrive within {timeout:g} s [env var: MLSHIP_HEADER_TIMEOUT]"
        )

    def shutdown(self) -> None:
        if self.cycle is None or self.cycle.response_complete:
            self.loop.call_later(_LINGER, self._close_if_idle)
        else:
            super().shutdown()

    def _close_if_idle(self) -> None:
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            super().shutdown()


def protocol_class(settings: Settings) -> type[ServerHTTPProtocol]:
    """ServerHTTPProtocol with these settings' limits (uvicorn makes its protocols from a class)."""
    return type("MlshipHTTPProtocol", (ServerHTTPProtocol,), {"limits": settings})


def _client(protocol: Any) -> str:
    client = getattr(protocol, "client", None)
    return f"{client[0]}:{client[1]}" if client else "-"


class _RateLimitedLog:
    """A warning at most once per `interval` seconds, with how many like it were left out: a client opening
    thousands of bad connections must not also flood the log."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self.next_at = 0.0
        self.skipped = 0

    def log(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now < self.next_at:
            self.skipped += 1
            return
        if self.skipped:
            message += f" (and {self.skipped} more like it in the last {self.interval:g} s)"
        self.next_at, self.skipped = now + self.interval, 0
        logger.warning(message, *args)


_SILENT = _RateLimitedLog()
_REFUSALS = _RateLimitedLog()


class _CoalescingTransport:
    """A transport that holds a response's header block until the body follows, and writes both at once.

    A header block ("HTTP/1.1 ...") waits for the next write, which in uvicorn is the body, written in the same
    event-loop iteration; if none comes (a response without a body), it goes out at the next iteration, or
    before the connection closes. Everything else passes straight through to the real transport.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._flush_handle: asyncio.Handle | None = None

    def write(self, data: bytes) -> None:
        if self._held is not None:
            data = self._held + data
            self._held = None
            if self._flush_handle is not None:
                self._flush_handle.cancel()
                self._flush_handle = None
        elif data.startswith(b"HTTP/"):
            self._held = bytes(data)
            self._flush_handle = self._loop.call_soon(self._flush)
            return
        self._transport.write(data)

    def writelines(self, chunks: Iterable[bytes]) -> None:
        self.write(b"".join(chunks))

    def _flush(self) -> None:
        self._flush_handle = None
        if self._held is not None:
            data, self._held = self._held, None
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class WorkerServer(uvicorn.Server):
    """uvicorn's server with mlship's shutdown: not ready at once, a drain delay, exit 0 (no re-raised signal)."""

    def __init__(self, config: uvicorn.Config, state: AppState) -> None:
        super().__init__(config)
        self.state = state
        self._exit_at: float | None = None
        tasks = self.server_state.tasks  # one per request read, started or not: what tells "alone" (_inference)
        state.requests = tasks.__len__

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        if not _LIFELINE.supervised:  # serving alone: no supervisor to restart workers (under one, SIGHUP is its)
            previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, _ignore_hangup)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if _LIFELINE.fd is not None:
            asyncio.get_running_loop().add_reader(_LIFELINE.fd, self._on_supervisor_gone)

    def _on_supervisor_gone(self) -> None:
        # End of file on the lifeline: the supervisor died without stopping us (kill -9). Drain and exit as on
        # SIGTERM, so nothing is left listening on the port.
        assert _LIFELINE.fd is not None
        asyncio.get_running_loop().remove_reader(_LIFELINE.fd)
        _LIFELINE.orphaned = True
        logger.error("the %s is gone; this worker stops", "supervisor" if _LIFELINE.supervised else "front")
        self.handle_exit(signal.SIGTERM, None)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.state.draining:
            if sig == signal.SIGINT:  # a second Ctrl-C: stop waiting for in-flight requests
                self.force_exit = True
            return
        self.state.draining = True
        delay = self.state.settings.drain_delay
        logger.info(
            "%s: not ready; closing the listener in %g s, then up to %g s for in-flight requests",
            signal.Signals(sig).name,
            delay,
            self.state.settings.grace_period,
        )
        self._exit_at = time.monotonic() + delay
        # uvicorn's own grace timeout runs on the event loop, which a model running inline holds: a 20 s request
        # kept a single worker 20.5 s with a 2 s grace. A thread enforces it whatever the loop does.
        limit = delay + self.state.settings.grace_period + _GRACE_SLACK
        watchdog = threading.Timer(limit, _exit_after_grace, args=(limit,))
        watchdog.daemon = True
        watchdog.start()

    async def on_tick(self, counter: int) -> bool:
        if self._exit_at is not None and time.monotonic() >= self._exit_at:
            self.should_exit = True
        return await super().on_tick(counter)


# Seconds past drain delay + grace period before a worker stops itself however busy (the supervisor's own
# deadline, which kills, is 5 s past it).
_GRACE_SLACK = 1.0


def _exit_after_grace(limit: float) -> None:
    logger.error("requests still running %g s after the signal (drain delay + grace period + %g s); exiting",
                 limit, _GRACE_SLACK)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(1)


def _ignore_hangup(sig: int, frame: FrameType | None) -> None:
    logger.warning("SIGHUP: serving with one worker, there is nothing to restart; ignored "
                   "(with --workers 2 or more, SIGHUP restarts the workers)")


class _Lifeline:
    """The read end of a pipe whose write end only the supervisor holds: it reads end-of-file once the
    supervisor is gone, however it died.

    Chosen over Linux's prctl(PR_SET_PDEATHSIG): it works on every POSIX system (macOS too), needs no ctypes,
    and has no window where the supervisor dies between the fork and the prctl call; the worker then drains
    like on SIGTERM instead of dying mid-request.
    """

    def __init__(self) -> None:
        self.fd: int | None = None
        self.orphaned = False
        self.owns_metrics = False  # the metrics directory is the supervisor's own, not PROMETHEUS_MULTIPROC_DIR
        self.supervised = False  # a worker forked by a Supervisor (else it serves alone, maybe under a front)


_LIFELINE = _Lifeline()


def run_worker(
    bundle_dir: Path, bundle: LoadedBundle, settings: Settings, sock: socket.socket, log_level: str
) -> int:
    """Serve on `sock` in this process until a signal; 0 after a clean shutdown."""
    app = create_app(bundle_dir, bundle=bundle, settings=settings)
    set_pending_limit(settings.pending_limit)
    config = uvicorn.Config(
        app,
        # uvloop and httptools when importable (the protocol is httptools' when it is): plain asyncio under
        # several workers left TCP_NODELAY off (44 ms per request) and piled connections onto one worker
        # (measured on 2 cores; benchmarks/serving.py).
        loop="auto",
        http=protocol_class(settings),
        timeout_keep_alive=settings.keepalive_timeout,  # type: ignore[arg-type]  # uvicorn takes a float too
        h11_max_incomplete_event_size=settings.max_header_bytes,  # the h11 fallback's header limit
        lifespan="on",
        log_config=None,
        log_level=log_level,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=math.ceil(settings.grace_period),  # uvicorn takes whole seconds
    )
    server = WorkerServer(config, app.state.mlship)
    server.run(sockets=[sock])  # uvicorn logs the requests it had to cancel when the grace period ran out
    if _LIFELINE.orphaned and _LIFELINE.owns_metrics:  # nobody else will clean the metrics directory
        remove_own_files(Path(os.environ[MULTIPROC_ENV]), os.getpid())
    return 0 if server.started else 1


class Supervisor:
    """Forks `workers` processes running `work()`, replaces those that die, and stops them all on a signal."""

    def __init__(
        self, work: Callable[[socket.socket], int], settings: Settings, listeners: list[socket.socket],
        front_lifeline: int | None = None,
    ) -> None:
        self.front_lifeline = front_lifeline  # a multi-model front's pipe: end-of-file stops us (see serve)
        self.workers = len(listeners)
        self.work = work
        self.settings = settings
        self.listeners = listeners
        self.children: dict[int, int] = {}  # pid -> slot
        self.stopping = False
        self.restart_requested = False
        self.retiring: set[int] = set()  # workers told to stop by a restart: not replaced, not crashes
        self.crashes: list[float] = []
        self.lifeline: tuple[int, int] | None = None

    def run(self) -> int:
        owned = MULTIPROC_ENV not in os.environ
        directory = enable_multiprocess()
        if directory is None:
            logger.warning("no writable directory for the workers' metrics (set PROMETHEUS_MULTIPROC_DIR): "
                           "/metrics reports only the worker that answers it")
        # Objects alive now are never collected again: the collector would otherwise write to every shared page
        # it scans, and each worker would end up with its own copy of the model.
        gc.collect()
        gc.freeze()
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_hangup)
        self.lifeline = os.pipe()
        _LIFELINE.owns_metrics = owned and directory is not None
        try:
            for slot in range(self.workers):
                self._fork(slot)
            return self._supervise()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for fd in self.lifeline:
                os.close(fd)
            if owned and directory is not None:
                remove_directory(directory)

    def _on_hangup(self, sig: int, frame: FrameType | None) -> None:
        if not self.stopping:
            self.restart_requested = True  # acted on by the supervising loop, outside the signal handler

    def _restart(self) -> None:
        """SIGHUP: a new worker per slot, forked from this process (the bundle loaded once, as at start),
        then the old ones drained as on SIGTERM; both accept on the slot's socket meanwhile, so no connection
        is refused. Reloading a changed bundle is left to the multi-model work."""
        self.restart_requested = False
        old = [pid for pid in self.children if pid not in self.retiring]
        logger.info("SIGHUP: restarting %d workers", len(old))
        for pid in old:
            self.retiring.add(pid)
            self._fork(self.children[pid])
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        if self.stopping:
            return
        self.stopping = True
        logger.info("%s: stopping %d workers", signal.Signals(sig).name, len(self.children))
        self._signal_all(signal.SIGTERM)
        for sock in self.listeners:
            # The workers hold their own copies; once they close theirs, nothing is left listening.
            sock.close()

    def _signal_all(self, sig: int) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _supervise(self) -> int:
        give_up_at: float | None = None
        status = 0
        while self.children:
            if self.restart_requested and not self.stopping:
                self._restart()
            if self.front_lifeline is not None and not self.stopping and _at_end(self.front_lifeline):
                logger.error("the front is gone; stopping")
                self.front_lifeline = None
                self._on_signal(signal.SIGTERM, None)
            if self.stopping and give_up_at is None:
                give_up_at = time.monotonic() + self.settings.drain_delay + self.settings.grace_period + 5
            if give_up_at is not None and time.monotonic() > give_up_at:
                logger.error("workers still running after the grace period; killing them")
                self._signal_all(signal.SIGKILL)
                give_up_at = math.inf
                status = 1
            reaped = self._reap()
            if reaped is None:
                time.sleep(0.05)
                continue
            pid, code = reaped
            slot = self.children.pop(pid)
            process_exited(pid)
            if pid in self.retiring:
                self.retiring.discard(pid)
                logger.info("worker %d stopped for the restart (%s)", pid, _describe(code))
                continue
            if self.stopping:
                status = status or (1 if code not in (0, -signal.SIGTERM) else 0)
                continue
            logger.error("worker %d exited with %s; starting another", pid, _describe(code))
            if self._too_many_crashes():
                logger.error("%d workers died within %g s; giving up", _MAX_CRASHES, _CRASH_WINDOW)
                self.stopping = True
                self._signal_all(signal.SIGTERM)
                status = 1
                continue
            self._fork(slot)
        logger.info("all workers stopped")
        return status

    def _reap(self) -> tuple[int, int] | None:
        try:
            pid, raw = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:  # nothing left to wait for (should not happen while children is not empty)
            return next(iter(self.children)), 0
        if pid == 0:
            return None
        return pid, os.waitstatus_to_exitcode(raw)

    def _too_many_crashes(self) -> bool:
        now = time.monotonic()
        self.crashes = [when for when in self.crashes if now - when < _CRASH_WINDOW] + [now]
        return len(self.crashes) >= _MAX_CRASHES

    def _fork(self, slot: int) -> None:
        # Signals wait until the child has dropped the supervisor's handlers (which would signal its siblings).
        handled = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
        signal.pthread_sigmask(signal.SIG_BLOCK, handled)
        pid = os.fork()
        if pid:
            self.children[pid] = slot
            signal.pthread_sigmask(signal.SIG_UNBLOCK, handled)
            return
        code = 1
        try:
            for sig in handled:
                signal.signal(sig, signal.SIG_DFL)
            # A hangup is the supervisor's to act on (it restarts the workers); a terminal's hangup, sent to
            # the whole process group, must not kill the workers under it.
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, handled)
            _LIFELINE.supervised = True
            if self.lifeline is not None:
                os.close(self.lifeline[1])  # only the supervisor may hold the write end
                _LIFELINE.fd = self.lifeline[0]
            for index, sock in enumerate(self.listeners):
                if index != slot:
                    sock.close()
            code = self.work(self.listeners[slot])
        except BaseException:
            logger.exception("worker failed")
        finally:
            logging.shutdown()
            os._exit(code)


def _at_end(fd: int) -> bool:
    """Whether the pipe `fd` reads end-of-file (its writer is gone); never blocks."""
    readable, _, _ = select.select([fd], [], [], 0)
    return bool(readable) and os.read(fd, 1) == b""


def _describe(code: int) -> str:
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"status {code}"


def configured_settings(served: Path, log_level: str) -> Settings | None:
    """The settings from the environment, logging configured by them; None after one error line naming `served`."""
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        configure_logging(log_level)
        logger.error("cannot serve %s: %s", served, exc)
        return None
    configure_logging(log_level, settings.log_format)
    return settings


def serve(bundle_dir: Path, *, host: str, port: int, workers: int, log_level: str,
          listen_fds: tuple[int, ...] = (), lifeline_fd: int | None = None) -> int:
    """Load the bundle, then serve it until SIGINT/SIGTERM; return 1 after one log line if it cannot start.

    `listen_fds`: listening sockets handed down by a multi-model front (one per worker; host and port are then
    unused), and `lifeline_fd` the read end of its pipe: end-of-file there stops this server as SIGTERM does.
    """
    settings = configured_settings(bundle_dir, log_level)
    if settings is None:
        return 1
    if workers > 1:
        limit_native_threads(workers)
    try:
        bundle = load_bundle(bundle_dir)
        if listen_fds:
            sockets = [socket.socket(fileno=fd) for fd in listen_fds]
        else:
            sockets = bind_sockets(host, port, workers)
    except BundleLoadError as exc:
        logger.error("cannot serve %s: %s", bundle_dir, exc)
        return 1
    except OSError as exc:
        logger.error("cannot listen on %s port %d: %s", host, port, exc)
        return 1
    name, version = bundle.manifest.name, bundle.manifest.version
    plural = "" if workers == 1 else "s"
    if listen_fds:
        logger.info("serving %s %s on %d inherited socket%s with %d worker%s", name, version, len(sockets),
                    "" if len(sockets) == 1 else "s", workers, plural)
    else:
        shown = f"[{host}]" if ":" in host else host
        logger.info("serving %s %s on http://%s:%d with %d worker%s", name, version, shown,
                    sockets[0].getsockname()[1], workers, plural)

    def work(sock: socket.socket) -> int:
        return run_worker(bundle_dir, bundle, settings, sock, log_level)

    if workers == 1:
        _LIFELINE.fd = lifeline_fd  # serving alone: this process watches the front itself
        return work(sockets[0])
    return Supervisor(work, settings, sockets, front_lifeline=lifeline_fd).run()
