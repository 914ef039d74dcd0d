"""Calling the model: adaptive micro-batching, per-request deadlines, and failures kept to their own request.

Every request becomes a job on one queue. The first job to arrive when the queue is idle schedules a drain with
`loop.call_soon`, which runs once the requests already read in this event-loop iteration have been parsed and
queued too: alone, a request waits for nothing (no timer); under load, the requests that arrived while the model
was busy run together in the next call. The model is called inline on the event loop, never from a thread pool
(measured: about twice the CPU for a scikit-learn predict called from a pool thread).

Merging follows the bundle's `batch_safe` (decided at package time: predicting the golden rows together equals
predicting them one by one). Only whole requests are merged, in arrival order, up to `max_batch_rows` rows; a
request with more rows runs alone and is never split. The merged output must have one entry per row, or every
request runs again alone; so does a merged call that raises, so that one bad request fails only itself. Unsafe
bundles never merge, and their multi-row requests are predicted row by row, as the golden cases were recorded.

With no other request in the worker at all (uvicorn's count of request tasks, which includes those read but
not yet started), a request runs at once: at concurrency 1 batching adds nothing, not even a loop iteration.

A request that waits past its deadline is answered 503 without running. A model call that outlives the earliest
deadline of its batch is interrupted by SIGALRM (only where the loop runs in the main thread, as in the server)
at the next Python bytecode; native code that never returns to Python cannot be interrupted.
"""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import functools
import logging
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._build import merge_data, split_rows
from ._bundle import LoadedBundle
from ._codec import to_jsonable
from ._metrics import Metrics
from ._rejection import rejection
from ._schema import Checked, InputError
from ._settings import Settings

logger = logging.getLogger(__name__)
# time.monotonic() when the server read the request's first byte (set per request by the Observe layer): the
# deadline counts from there, so a request read late behind a busy model is not given its full timeout again.
REQUEST_RECEIVED: contextvars.ContextVar[float | None] = contextvars.ContextVar("mlship_received", default=None)


class ModelError(Exception):
    """The model raised (or returned what cannot be encoded); details are in the log, not in the message."""


class ModelRejected(Exception):
    """The model's own input validation refused the input (see _rejection): the client's error, a 422 with the
    library's message (bounded, escaped)."""


class ModelTimeout(Exception):
    """The request's deadline passed, waiting for the model or inside it."""


class _Interrupt(BaseException):
    # BaseException, so that a notebook's `except Exception:` around its own code cannot swallow the timeout.
    pass


@dataclass(eq=False)
class _Job:
    method: str
    checked: Checked
    deadline: float
    request_id: str
    future: asyncio.Future[Any] = field(repr=False)


class Runner:
    """Queues prediction jobs and runs them in (micro-)batches on the event loop."""

    def __init__(self, bundle: LoadedBundle, settings: Settings, metrics: Metrics | None = None,
                 after: Callable[[Callable[[], None]], None] | None = None) -> None:
        self.bundle = bundle
        # Where bookkeeping goes that can wait until responses are out (AppState.after_response); else now.
        self._after = after or (lambda work: work())
        self.batch_safe = bundle.manifest.batch_safe
        self.max_batch_rows = settings.max_batch_rows if self.batch_safe else 1
        self.timeout = settings.timeout
        self.rejections = settings.model_rejections
        self._metrics = metrics
        self._queue: deque[_Job] = deque()
        self._scheduled = False
        # Calls expected to take longer than this run on the model thread (see _ModelThread), so the event loop
        # goes on reading requests and answering /livez meanwhile; shorter ones stay inline.
        self.inline_seconds = settings.inline_seconds
        self._expected: dict[str, float] = {}  # method -> expected call time (jumps up, decays slowly)
        self._busy = False  # a batch is on the model thread: the next waits, and joins whatever arrives meanwhile
        self._thread: _ModelThread | None = None

    async def predict(self, method: str, checked: Checked, request_id: str = "-", *, alone: bool = False) -> Any:
        """The JSON-able predictions for one request. Raises InputError (a value that does not convert),
        ModelError or ModelTimeout.

        `alone`: no other request is in this worker (not even one read but not yet started); then, with nothing
        queued, the model runs at once, without the event-loop round trip that lets concurrent requests join.
        """
        loop = asyncio.get_running_loop()
        start = REQUEST_RECEIVED.get()
        job = _Job(method, checked, (start or time.monotonic()) + self.timeout, request_id, loop.create_future())
        if alone and not self._queue and not self._scheduled and not self._busy and not self._offloads(method):
            self._run([job])
            return job.future.result()
        self._queue.append(job)
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._drain)
        return await job.future

    @property
    def queued(self) -> int:
        return len(self._queue)

    def _offloads(self, method: str) -> bool:
        expected: float = self._expected.get(method, 0.0)
        return expected > self.inline_seconds

    def expect(self, method: str, seconds: float) -> None:
        """What a call of `method` took outside the runner (the golden case replayed for readiness): a model
        slow from its first request then runs on the model thread from the start."""
        self._expected[method] = max(seconds, self._expected.get(method, 0.0))

    def _drain(self) -> None:
        self._scheduled = False
        if self._busy:  # _thread_done drains again
            return
        batch = self._take()
        if batch and self._offloads(batch[0].method):
            self._offload(batch)
            return
        if batch:
            try:
                self._run(batch)
            except BaseException as exc:  # never leave a request waiting forever, whatever escaped
                for job in batch:
                    _settle(job, exception=ModelError("internal error while running the model"))
                if not isinstance(exc, Exception):
                    raise
                logger.exception("running a batch failed")
        self._drain_later()

    def _offload(self, batch: list[_Job]) -> None:
        """Run `batch` on the model thread; its futures are settled back on the loop when it is done."""
        loop = asyncio.get_running_loop()
        if self._thread is None:
            self._thread = _ModelThread()
        self._busy = True
        deadline = min(job.deadline for job in batch)
        thread = self._thread

        def done(settled: list[tuple[_Job, Any, BaseException | None]], error: BaseException | None) -> None:
            loop.call_soon_threadsafe(self._thread_done, batch, settled, error)

        call = thread.submit(lambda: self._run(batch), done)
        # SIGALRM reaches only the main thread; the model thread is interrupted the same way (at its next
        # Python bytecode) by an asynchronous exception.
        self._timer = loop.call_later(max(deadline - time.monotonic(), 1e-3), thread.interrupt, call)

    def _thread_done(self, batch: list[_Job], settled: list[tuple[_Job, Any, BaseException | None]],
                     error: BaseException | None) -> None:
        self._timer.cancel()
        self._busy = False
        for job, result, exception in settled:
            _settle(job, result=result, exception=exception)
        if error is not None:
            if isinstance(error, _Interrupt):
                error = ModelTimeout(f"the model ran past the {self.timeout:g} s timeout")
            else:
                logger.error("running a batch failed", exc_info=error)
                error = ModelError("internal error while running the model")
            for job in batch:
                _settle(job, exception=error)
        self._drain_later()

    def _drain_later(self) -> None:
        if self._queue and not self._scheduled:
            # Later: first the answered requests' responses go out and newly arrived requests join the queue.
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._drain)

    def _take(self) -> list[_Job]:
        """The next batch: the oldest live job, then younger ones of the same method while the rows fit."""
        now = time.monotonic()
        batch: list[_Job] = []
        kept: deque[_Job] = deque()
        rows = 0
        while self._queue:
            job = self._queue.popleft()
            if job.future.done():  # its request was cancelled
                continue
            if job.deadline <= now:
                self._fail(job, "timeout", ModelTimeout(f"waited {self.timeout:g} s for the model"))
                continue
            if not batch:
                batch.append(job)
                rows = job.checked.rows
            elif job.method == batch[0].method and rows + job.checked.rows <= self.max_batch_rows:
                batch.append(job)
                rows += job.checked.rows
            else:
                kept.append(job)
            if rows >= self.max_batch_rows:
                break
        kept.extend(self._queue)
        self._queue = kept
        return batch

    def _run(self, batch: list[_Job]) -> None:
        if len(batch) > 1:
            try:
                outputs = self._run_merged(batch)
            except ModelTimeout as exc:
                for job in batch:
                    self._fail(job, "timeout", exc)
                return
            if outputs is not None:
                for job, output in zip(batch, outputs, strict=True):
                    _settle(job, result=output)
                return
        for job in batch:
            self._run_alone(job)

    def _run_merged(self, batch: list[_Job]) -> list[Any] | None:
        """Outputs per job from one model call, or None when the jobs must run alone instead."""
        first = batch[0].checked
        total = sum(job.checked.rows for job in batch)
        try:
            merged = Checked(first.kind, merge_data(first.kind, [job.checked.data for job in batch]), total)
            value = merged.build(self.bundle.schema)
            output = to_jsonable(self._call(batch[0].method, value, batch, total))
        except ModelTimeout:
            raise
        except (Exception, SystemExit):  # a notebook that calls sys.exit() fails its request, not the worker
            logger.debug(
                "a merged call of %d requests failed; running them one by one", len(batch), exc_info=True
            )
            return None
        if not isinstance(output, list) or len(output) != total:
            return None
        outputs, start = [], 0
        for job in batch:
            outputs.append(output[start : start + job.checked.rows])
            start += job.checked.rows
        return outputs

    def _run_alone(self, job: _Job) -> None:
        try:
            value = job.checked.build(self.bundle.schema)
        except InputError as exc:
            _settle(job, exception=exc)
            return
        except Exception as exc:  # decoding depends only on the request and the schema: the client's input
            logger.warning(
                "could not convert a request's values", exc_info=True, extra={"request_id": job.request_id}
            )
            _settle(job, exception=InputError(f"cannot decode the input: {type(exc).__name__}: {exc}"))
            return
        try:
            if self.batch_safe or job.checked.rows == 1:
                output = to_jsonable(self._call(job.method, value, [job], job.checked.rows))
            else:
                output = self._row_by_row(job, value)
        except ModelTimeout as exc:
            self._fail(job, "timeout", exc)
        except (Exception, SystemExit) as exc:  # a notebook that calls sys.exit() fails its request only
            self._fail_call(job, exc)
        else:
            _settle(job, result=output)

    def _fail_call(self, job: _Job, exc: BaseException) -> None:
        """The model raised `exc` on this request: a rejection of the input (422), else a failure (500)."""
        message = rejection(exc) if self.rejections else None
        if message is not None:
            logger.warning(
                "method %s rejected the input of request %s: %s", job.method, job.request_id, message,
                extra={"request_id": job.request_id},
            )
            self._fail(job, "rejected", ModelRejected(message))
            return
        logger.exception(
            "method %s failed (request id %s)", job.method, job.request_id, extra={"request_id": job.request_id}
        )
        self._fail(job, "error", ModelError(f"model failed on this input (request id {job.request_id})"))

    def _row_by_row(self, job: _Job, value: Any) -> list[Any]:
        outputs: list[Any] = []
        for row in split_rows(job.checked.kind, value):
            output = to_jsonable(self._call(job.method, row, [job], 1))
            # One row in, one entry out: unwrap the row axis so the rows' outputs line up as one list.
            outputs.extend(output if isinstance(output, list) and len(output) == 1 else [output])
        return outputs

    def _call(self, method: str, value: Any, jobs: list[_Job], rows: int) -> Any:
        deadline = min(job.deadline for job in jobs)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ModelTimeout(f"waited {self.timeout:g} s for the model")
        started = time.perf_counter()
        armed = _arm(remaining)
        try:
            try:
                return self.bundle.methods[method](value)
            finally:
                if armed:
                    _disarm()
        except _Interrupt:
            raise ModelTimeout(f"the model ran past the {self.timeout:g} s timeout") from None
        finally:
            seconds = time.perf_counter() - started
            # Jumps to a slow call at once, forgets it over some tens of fast ones: a model whose time depends
            # on its input (or a first slow call) moves to the model thread and stays there a while.
            self._expected[method] = max(seconds, self._expected.get(method, 0.0) * _DECAY)
            if self._metrics is not None:
                self._after(functools.partial(self._metrics.observe_call, method, len(jobs), rows, seconds))

    def _fail(self, job: _Job, reason: str, exc: Exception) -> None:
        if self._metrics is not None:
            self._metrics.model_failed(job.method, reason)
        if reason == "timeout":
            logger.warning("request %s: %s", job.request_id, exc, extra={"request_id": job.request_id})
        _settle(job, exception=exc)


_DECAY = 0.9
_local = threading.local()


class _ModelThread:
    """One long-lived thread that runs model calls handed over by the event loop, one at a time.

    Long-lived, not one per call: native thread pools (OpenMP, BLAS) keep a team per calling thread. Futures
    are not thread-safe, so what the batch settles is collected here (_settle sees `_local.settled`) and
    handed back to the loop with the call's escaped exception, if any.
    """

    def __init__(self) -> None:
        self._work: queue.SimpleQueue[tuple[int, Callable[[], None], Callable[..., None]]] = queue.SimpleQueue()
        self._calls = 0
        self._running: int | None = None  # the number of the call running now
        self._thread = threading.Thread(target=self._serve, name="mlship-model", daemon=True)
        self._thread.start()

    def submit(self, work: Callable[[], None], done: Callable[..., None]) -> int:
        self._calls += 1
        self._work.put((self._calls, work, done))
        return self._calls

    def interrupt(self, call: int) -> None:
        """Raise _Interrupt in the thread if `call` is still running there."""
        ident = self._thread.ident
        if self._running == call and ident is not None:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(_Interrupt))

    def _serve(self) -> None:
        while True:
            try:
                number, work, done = self._work.get()
            except _Interrupt:  # an interrupt that arrived after its call had ended
                continue
            settled: list[tuple[_Job, Any, BaseException | None]] = []
            _local.settled = settled
            error: BaseException | None = None
            self._running = number
            try:
                work()
            except BaseException as exc:  # _Interrupt outside the model call itself, or a bug
                error = exc
            finally:
                self._running = None
                _local.settled = None
            done(settled, error)


def _settle(job: _Job, *, result: Any = None, exception: BaseException | None = None) -> None:
    settled = getattr(_local, "settled", None)
    if settled is not None:  # on the model thread: the loop settles it
        settled.append((job, result, exception))
        return
    if job.future.done():
        return
    if exception is not None:
        job.future.set_exception(exception)
    else:
        job.future.set_result(result)


_armed = False
_handler_installed = False


def _on_alarm(signum: int, frame: Any) -> None:
    if _armed:  # a late signal, after the call returned, is ignored
        raise _Interrupt()


def _arm(seconds: float) -> bool:
    """Raise _Interrupt in this thread after `seconds`, when this is the main thread; True if armed."""
    global _armed, _handler_installed
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        return False
    if not _handler_installed:
        signal.signal(signal.SIGALRM, _on_alarm)
        _handler_installed = True
    _armed = True
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-3))
    return True


def _disarm() -> None:
    global _armed
    _armed = False
    signal.setitimer(signal.ITIMER_REAL, 0)
