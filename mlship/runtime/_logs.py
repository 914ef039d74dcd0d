"""Structured logs: one JSON object per line for every log record and every request (the access log).

Error and lifecycle records go through `logging` (ours and uvicorn's alike, formatted by JsonFormatter). Access
lines bypass it: a LogRecord, a handler lock and a formatter per request cost more than the request's own JSON
parsing. They are written once the response has been sent, while the client reads it, never ahead of the next
request.

Whatever a client sends (a path, a column name quoted in a message, a lone surrogate) cannot forge or break a
line: in JSON every field is JSON-escaped, and a value orjson refuses falls back to the standard library's ASCII
encoder rather than failing the record; in text every control, invisible or surrogate character of a field is
written as an escape (`_values.escape_text`), and a traceback's lines are indented, so a line that starts at the
margin is always a record of its own.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import sys
import traceback
from typing import Any, TextIO

import orjson

from ._values import escape_text

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
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
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
        return dumps_line(entry).decode()


def dumps_line(entry: dict[str, Any]) -> bytes:
    """One JSON log line: orjson, else (a lone surrogate, a key that is not a string, a cycle) the standard
    library's ASCII-only encoder, which escapes what orjson refuses; a record is never lost to its content."""
    try:
        return orjson.dumps(entry, default=str)
    except TypeError:
        pass
    try:
        return json.dumps(entry, default=str, ensure_ascii=True, separators=(",", ":")).encode()
    except (TypeError, ValueError):
        plain = {key: value if isinstance(value, (int, float)) else str(value) for key, value in entry.items()}
        return json.dumps(plain, ensure_ascii=True, separators=(",", ":")).encode()


class TextFormatter(logging.Formatter):
    """`LEVEL:  logger: message`, the message escaped (escape_text) and a traceback's lines indented."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s:  %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        record.message = escape_text(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:  # noqa: N802 (logging's name)
        lines = super().formatException(ei).splitlines()
        return "\n".join("    " + escape_text(line) for line in lines)

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 (logging's name)
        return "\n".join("    " + escape_text(line) for line in stack_info.splitlines())


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
            line = dumps_line({
                "time": timestamp(when), "level": "info", "logger": "mlship.access",
                "message": f"{method} {path} {status}", "pid": _pid, "method": method, "path": path,
                "status": status, "duration_ms": round(seconds * 1000, 3), "request_id": request_id,
                "client": client,
            })
        else:
            # The path is the client's (a %0A in the URL is a newline here): escaped, so it cannot end the line.
            line = (f"INFO:  mlship.access: {escape_text(client)} {escape_text(method)} {escape_text(path)} "
                    f"{status} {seconds * 1000:.2f}ms {request_id}").encode("utf-8", "backslashreplace")
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
