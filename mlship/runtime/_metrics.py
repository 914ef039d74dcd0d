"""Prometheus metrics, correct across worker processes (prometheus-client's multiprocess mode).

With several workers, `enable_multiprocess` runs in the supervisor before it forks: every process then writes
its samples to memory-mapped files in one directory, and /metrics, whichever worker answers it, sums them all.
A single process keeps its samples in memory. Metric names are documented in docs/RUNTIME.md.
"""

from __future__ import annotations

import operator
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess, values
from prometheus_client.exposition import choose_encoder
from prometheus_client.mmap_dict import MmapedDict

from ._contract import Manifest

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
_COUNT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096, 16384)
_HTTP_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}


def enable_multiprocess(directory: str | None = None) -> Path | None:
    """Switch this process (and those it forks) to multiprocess mode; returns the directory, emptied.

    The directory is PROMETHEUS_MULTIPROC_DIR when set, else a new one in /dev/shm (memory, and writable even
    in a container with a read-only root), else in the temporary directory. None when nothing is writable: each
    worker then reports only its own samples. prometheus-client decides at import time from the environment
    variable; it is set later here (the supervisor decides), so its value class is chosen again, before any
    metric exists.
    """
    chosen = directory or os.environ.get(MULTIPROC_ENV)
    try:
        if chosen:
            path = Path(chosen)
            path.mkdir(parents=True, exist_ok=True)
        else:
            path = Path(new_directory())
        for stale in path.glob("*.db"):  # samples of an earlier run would be added to ours
            stale.unlink()
    except OSError:
        return None
    os.environ[MULTIPROC_ENV] = str(path)
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    return path


def new_directory() -> str:
    for parent in ("/dev/shm", None):
        try:
            return tempfile.mkdtemp(prefix="mlship-metrics-", dir=parent)
        except OSError:
            continue
    raise OSError("no writable directory for the workers' metrics")


def is_multiprocess() -> bool:
    return MULTIPROC_ENV in os.environ and values.ValueClass is not values.MutexValue


def process_exited(pid: int) -> None:
    """Fold a dead worker's samples into the directory's archive files, then remove its own.

    Its live gauges (in-flight) are dropped (prometheus-client's mark_process_dead); its counters and histograms
    are added to `counter_archive.db` / `histogram_archive.db`, and max/min gauges kept as a max/min, so totals
    survive restarts while the number of files stays that of the live workers plus the archive: a scrape read
    3 more files per worker death before (0.33 s after 300 deaths, ~1.2 s after 1,000).
    """
    if not is_multiprocess():
        return
    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
    merge_dead_files(Path(os.environ[MULTIPROC_ENV]), pid)


_MERGES: dict[str, Callable[[float, float], float]] = {
    "counter": operator.add,
    "histogram": operator.add,
    "summary": operator.add,
    "gauge_sum": operator.add,
    "gauge_max": max,
    "gauge_min": min,
}


def merge_dead_files(directory: Path, pid: int) -> None:
    for kind, merge in _MERGES.items():
        dead = directory / f"{kind}_{pid}.db"
        if not dead.exists():
            continue
        archive = MmapedDict(str(directory / f"{kind}_archive.db"))  # type: ignore[no-untyped-call]
        try:
            for key, value, _timestamp, _pos in MmapedDict.read_all_values_from_file(str(dead)):  # type: ignore[no-untyped-call]
                if key in archive._positions:  # noqa: SLF001  (no public "has key" in prometheus-client)
                    current, _ = archive.read_value(key)  # type: ignore[no-untyped-call]
                    value = merge(current, value)
                archive.write_value(key, value, 0.0)  # type: ignore[no-untyped-call]
        finally:
            archive.close()  # type: ignore[no-untyped-call]
        # A scrape between the write above and this unlink counts the dead worker twice, once: the price of two
        # files that cannot change together (the other order would show totals going down instead).
        dead.unlink(missing_ok=True)


def remove_own_files(directory: Path, pid: int) -> None:
    """A worker left without its supervisor removes its own files, and the directory once it is empty."""
    for path in directory.glob(f"*_{pid}.db"):
        path.unlink(missing_ok=True)
    if not any(path.name.endswith(".db") and not path.name.endswith("_archive.db") for path in directory.iterdir()):
        shutil.rmtree(directory, ignore_errors=True)


def remove_directory(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


class Metrics:
    """The runtime's metrics. Label children are cached: `labels()` takes a lock and builds a tuple each time."""

    def __init__(self, manifest: Manifest) -> None:
        self.multiprocess = is_multiprocess()
        # Multiprocess samples are read back from the files, so the metrics themselves are registered nowhere.
        self._own = None if self.multiprocess else CollectorRegistry(auto_describe=True)
        reg = self._own
        self.requests = Counter(
            "mlship_requests",
            "HTTP requests answered, by endpoint (route template), method and status.",
            ["endpoint", "method", "status"],
            registry=reg,
        )
        self.latency = Histogram(
            "mlship_request_duration_seconds",
            "Time from request to response, by endpoint, method and status.",
            ["endpoint", "method", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self.in_flight = Gauge(
            "mlship_requests_in_flight",
            "Requests being served right now.",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.batch_requests = Histogram(
            "mlship_batch_requests",
            "Requests merged into one model call.",
            ["method"],
            buckets=_COUNT_BUCKETS,
            registry=reg,
        )
        self.batch_rows = Histogram(
            "mlship_batch_rows", "Rows in one model call.", ["method"], buckets=_COUNT_BUCKETS, registry=reg
        )
        self.inference = Histogram(
            "mlship_inference_duration_seconds",
            "Time spent in one model call.",
            ["method"],
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self.failures = Counter(
            "mlship_model_failures",
            "Model calls that raised or timed out.",
            ["method", "reason"],
            registry=reg,
        )
        info = Gauge(
            "mlship_model_info",
            "The model being served (always 1).",
            ["name", "version", "runtime_version", "batch_safe"],
            registry=reg,
            multiprocess_mode="max",
        )
        info.labels(
            manifest.name, manifest.version, manifest.runtime_version, str(manifest.batch_safe).lower()
        ).set(1)
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._method_children: dict[str, tuple[Any, Any, Any]] = {}

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        key = (endpoint, method, status)
        children = self._request_children.get(key)
        if children is None:
            method_label = method if method in _HTTP_METHODS else "other"
            labels = (endpoint, method_label, str(status))
            children = (self.requests.labels(*labels), self.latency.labels(*labels))
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_call(self, method: str, requests: int, rows: int, seconds: float) -> None:
        children = self._method_children.get(method)
        if children is None:
            children = (
                self.batch_requests.labels(method),
                self.batch_rows.labels(method),
                self.inference.labels(method),
            )
            self._method_children[method] = children
        children[0].observe(requests)
        children[1].observe(rows)
        children[2].observe(seconds)

    def model_failed(self, method: str, reason: str) -> None:
        self.failures.labels(method, reason).inc()

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The text exposition (or OpenMetrics, when the scraper asks for it) and its content type."""
        try:
            encoder, content_type = choose_encoder(accept or "")
        except ValueError:  # an Accept header naming a version that does not parse
            encoder, content_type = choose_encoder("")
        if self._own is not None:
            return encoder(self._own), content_type
        for attempt in range(3):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            try:
                return encoder(registry), content_type
            except FileNotFoundError:  # a dead worker's file, merged and removed after the collector listed it
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")
