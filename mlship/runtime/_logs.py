"""Structured logs: one JSON object per line for every log record and every request (the access log).

Error and lifecycle records go through `logging` (ours and uvicorn's alike, formatted by JsonFormatter). Access
lines bypass it: a LogRecord, a handler lock and a formatter per request cost more than the request's own JSON
parsing. They are written once the response has been sent, while the client reads it, never ahead of the next
request.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import sys
import traceback
from typing import Any, TextIO

import orjson

# LogRecord attributes that are not "extra" fields a caller passed.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "color_message",
}


_pid = os.getpid()  # os.getpid() is a system call: one per access line is measurable, and it changes only at fork


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


def configure_logging(level: str, fmt: str = "json") -> None:
    """Our records and uvicorn's on stderr, one JSON object per line (or plain text with fmt="text").

    uvicorn runs with log_config=None, so its loggers propagate here; its own access log is off (AccessLog
    replaces it).
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if fmt == "json" else logging.Formatter("%(levelname)s:  %(name)s: %(message)s")
    )
    handler._mlship = True  # type: ignore[attr-defined]  # replaced on the next call; others' handlers stay
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_mlship", False):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True


def timestamp(seconds: float) -> str:
    return (
        _dt.datetime.fromtimestamp(seconds, _dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


class JsonFormatter(logging.Formatter):
    """{"time", "level", "logger", "message", "pid", ...extra fields, "exception"}: greppable, and what log
    collectors parse without configuration."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["exception"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        return orjson.dumps(entry, default=str).decode()


class AccessLog:
    """One line per request, written when its response has gone out (the Observe layer calls `log` then)."""

    def __init__(self, enabled: bool = True, fmt: str = "json", stream: TextIO | None = None) -> None:
        self.enabled = enabled
        self.fmt = fmt
        self._stream = stream

    def log(self, *, method: str, path: str, status: int, seconds: float, request_id: str, client: str,
            when: float) -> None:
        if not self.enabled:
            return
        if self.fmt == "json":
            line = orjson.dumps({
                "time": timestamp(when), "level": "info", "logger": "mlship.access",
                "message": f"{method} {path} {status}", "pid": _pid, "method": method, "path": path,
                "status": status, "duration_ms": round(seconds * 1000, 3), "request_id": request_id,
                "client": client,
            })
        else:
            line = f"INFO:  mlship.access: {client} {method} {path} {status} {seconds * 1000:.2f}ms {request_id}".encode()
        stream = self._stream or sys.stderr
        buffer = getattr(stream, "buffer", None)
        if buffer is not None:
            buffer.write(line + b"\n")
            buffer.flush()
        else:
            stream.write(line.decode("utf-8", "replace") + "\n")
            stream.flush()

    def flush(self) -> None:
        stream = self._stream or sys.stderr
        stream.flush()
