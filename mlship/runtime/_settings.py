"""Serving settings, read once from the environment when the server (or the app) is created."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_MAX_ROWS = 10_000
DEFAULT_MAX_BODY_BYTES = 20 * 1024 * 1024
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_BATCH_ROWS = 128
DEFAULT_MAX_IN_FLIGHT = 1024
DEFAULT_GRACE_PERIOD = 30.0
# Bounds on the work and memory one client can cost a worker before the model runs (docs/RUNTIME.md, "Limits").
# 20 MiB of `{},` parsed into 7 million dicts took a worker to 1.2 GB; a million values is 10,000 rows of 100.
DEFAULT_MAX_ELEMENTS = 1024 * 1024
DEFAULT_MAX_TENSOR_DIMS = 32  # numpy 1.x's largest ndim; a V2 shape with more dimensions cannot be an array there
DEFAULT_MAX_HEADER_BYTES = 64 * 1024
DEFAULT_MAX_HEADERS = 100
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_KEEPALIVE_TIMEOUT = 5.0
DEFAULT_MAX_CSV_FIELD_CHARS = 131_072  # the csv module's own default
DEFAULT_INLINE_SECONDS = 0.02
LOG_FORMATS = ("json", "text")
MIN_TOKEN_CHARS = 16  # a bearer token shorter than this is a password someone typed, not a secret


class SettingsError(ValueError):
    """An environment variable holds a value the runtime cannot use."""


@dataclass(frozen=True)
class Settings:
    """Limits and behaviour of the server. Every field has an environment variable (docs/RUNTIME.md).

    max_rows:       rows per request                              [env var: MLSHIP_MAX_ROWS, default 10000]
    max_body_bytes: request body size, in bytes                   [env var: MLSHIP_MAX_BODY_BYTES, default 20 MiB]
    timeout:        seconds a request may wait for and run in the model before it is answered 503
                                                                  [env var: MLSHIP_TIMEOUT, default 60]
    max_batch_rows: rows merged into one model call when the bundle is batch-safe; a request with more rows
                    runs alone and whole; 1 turns batching off     [env var: MLSHIP_MAX_BATCH_ROWS, default 128]
    max_in_flight:  requests one worker holds at once before it answers 503
                                                                  [env var: MLSHIP_MAX_IN_FLIGHT, default 1024]
    drain_delay:    seconds between SIGTERM and closing the listener, serving while readiness says 503 so that
                    a load balancer can stop routing here first   [env var: MLSHIP_DRAIN_DELAY, default 0]
    grace_period:   seconds in-flight requests get to finish after the listener closes
                                                                  [env var: MLSHIP_GRACE_PERIOD, default 30]
    access_log:     one JSON line per request                     [env var: MLSHIP_ACCESS_LOG, default 1]
    log_format:     json (one object per line) or text           [env var: MLSHIP_LOG_FORMAT, default json]
    max_elements:   values in one request: JSON values (counted before parsing) and V2 tensor elements
                                                                  [env var: MLSHIP_MAX_ELEMENTS, default 1 Mi]
    max_tensor_dims: dimensions of a V2 tensor's shape           [env var: MLSHIP_MAX_TENSOR_DIMS, default 32]
    max_header_bytes: request line and headers, in bytes          [env var: MLSHIP_MAX_HEADER_BYTES, default 64 KiB]
    max_headers:    header fields per request                     [env var: MLSHIP_MAX_HEADERS, default 100]
    header_timeout: seconds a connection may take to send a request's headers
                                                                  [env var: MLSHIP_HEADER_TIMEOUT, default 10]
    keepalive_timeout: seconds an idle keep-alive connection stays open
                                                                  [env var: MLSHIP_KEEPALIVE_TIMEOUT, default 5]
    max_pending_bytes: body bytes one worker holds for requests still arriving, all together (503 beyond)
                                                    [env var: MLSHIP_MAX_PENDING_BYTES, default 3 x max_body_bytes]
    inline_seconds: model calls expected to take longer than this run on a thread of their own, so that the
                    event loop keeps reading requests and answering /livez meanwhile; shorter ones run inline
                    (a pool thread costs a scikit-learn predict about twice the CPU)
                                                                  [env var: MLSHIP_INLINE_SECONDS, default 0.02]
    max_csv_field_chars: characters in one CSV field on /invocations
                                                                  [env var: MLSHIP_MAX_CSV_FIELD_CHARS, default 131072]
    api_token:      bearer token every endpoint but the probes requires; empty: no authentication
                                        [env var: MLSHIP_API_TOKEN_FILE (a file holding it) or MLSHIP_API_TOKEN]
    metrics_token:  bearer token /metrics requires (apart from api_token); empty: /metrics is open
                                [env var: MLSHIP_METRICS_TOKEN_FILE (a file holding it) or MLSHIP_METRICS_TOKEN]
    publish_example: /metadata and /openapi.json show the bundle's first golden row as the example instead of
                    a synthetic one built from the schema     [env var: MLSHIP_PUBLISH_EXAMPLE, default 0]
    publish_versions: /metadata lists the exact versions of the Python and the requirements (0: names only)
                                                                  [env var: MLSHIP_PUBLISH_VERSIONS, default 1]
    strict_columns: a request (or a `predict` file) with columns the input schema does not take is a 400 (an
                    error); 0: they are dropped, and named in the Mlship-Ignored-Columns response header and the log
                                                                  [env var: MLSHIP_STRICT_COLUMNS, default 0]
    model_rejections: an input the model's own input validation refuses (scikit-learn's check_array, an
                    encoder's unknown category, a cast overflow; see _rejection) is a 422 with the library's
                    message; 0: a 500 like any other model failure [env var: MLSHIP_MODEL_REJECTIONS, default 1]
    ui:             GET / (the model's page, with a try-it form) and GET /docs (interactive API docs), static
                    files served from the runtime itself; 0: the JSON API only  [env var: MLSHIP_UI, default 1]
    """

    max_rows: int = DEFAULT_MAX_ROWS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    timeout: float = DEFAULT_TIMEOUT
    max_batch_rows: int = DEFAULT_MAX_BATCH_ROWS
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    drain_delay: float = 0.0
    grace_period: float = DEFAULT_GRACE_PERIOD
    access_log: bool = True
    log_format: str = "json"
    max_elements: int = DEFAULT_MAX_ELEMENTS
    max_tensor_dims: int = DEFAULT_MAX_TENSOR_DIMS
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    max_headers: int = DEFAULT_MAX_HEADERS
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT
    max_pending_bytes: int | None = None  # None: 3 x max_body_bytes (see pending_limit)
    max_csv_field_chars: int = DEFAULT_MAX_CSV_FIELD_CHARS
    inline_seconds: float = DEFAULT_INLINE_SECONDS
    api_token: str = field(default="", repr=False)
    metrics_token: str = field(default="", repr=False)
    publish_example: bool = False
    publish_versions: bool = True
    model_rejections: bool = True
    strict_columns: bool = False
    ui: bool = True

    @property
    def pending_limit(self) -> int:
        return self.max_pending_bytes or 3 * self.max_body_bytes

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        log_format = env.get("MLSHIP_LOG_FORMAT", "").strip().lower() or "json"
        if log_format not in LOG_FORMATS:
            raise SettingsError(f"MLSHIP_LOG_FORMAT={log_format!r} must be one of {', '.join(LOG_FORMATS)}")
        max_body_bytes = _positive_int(env, "MLSHIP_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)
        max_pending_bytes = _positive_int(env, "MLSHIP_MAX_PENDING_BYTES", 0) or None
        if max_pending_bytes is not None and max_pending_bytes < max_body_bytes:
            raise SettingsError(
                f"MLSHIP_MAX_PENDING_BYTES={max_pending_bytes} must be at least MLSHIP_MAX_BODY_BYTES "
                f"({max_body_bytes}): a body of the largest size could never be received"
            )
        return cls(
            max_rows=_positive_int(env, "MLSHIP_MAX_ROWS", DEFAULT_MAX_ROWS),
            max_body_bytes=max_body_bytes,
            timeout=_seconds(env, "MLSHIP_TIMEOUT", DEFAULT_TIMEOUT, zero_ok=False),
            max_batch_rows=_positive_int(env, "MLSHIP_MAX_BATCH_ROWS", DEFAULT_MAX_BATCH_ROWS),
            max_in_flight=_positive_int(env, "MLSHIP_MAX_IN_FLIGHT", DEFAULT_MAX_IN_FLIGHT),
            drain_delay=_seconds(env, "MLSHIP_DRAIN_DELAY", 0.0, zero_ok=True),
            grace_period=_seconds(env, "MLSHIP_GRACE_PERIOD", DEFAULT_GRACE_PERIOD, zero_ok=True),
            access_log=_flag(env, "MLSHIP_ACCESS_LOG", True),
            log_format=log_format,
            max_elements=_positive_int(env, "MLSHIP_MAX_ELEMENTS", DEFAULT_MAX_ELEMENTS),
            max_tensor_dims=_positive_int(env, "MLSHIP_MAX_TENSOR_DIMS", DEFAULT_MAX_TENSOR_DIMS),
            max_header_bytes=_positive_int(env, "MLSHIP_MAX_HEADER_BYTES", DEFAULT_MAX_HEADER_BYTES),
            max_headers=_positive_int(env, "MLSHIP_MAX_HEADERS", DEFAULT_MAX_HEADERS),
            header_timeout=_seconds(env, "MLSHIP_HEADER_TIMEOUT", DEFAULT_HEADER_TIMEOUT, zero_ok=False),
            keepalive_timeout=_seconds(env, "MLSHIP_KEEPALIVE_TIMEOUT", DEFAULT_KEEPALIVE_TIMEOUT, zero_ok=False),
            max_pending_bytes=max_pending_bytes,
            max_csv_field_chars=_positive_int(env, "MLSHIP_MAX_CSV_FIELD_CHARS", DEFAULT_MAX_CSV_FIELD_CHARS),
            inline_seconds=_seconds(env, "MLSHIP_INLINE_SECONDS", DEFAULT_INLINE_SECONDS, zero_ok=True),
            api_token=_token(env, "MLSHIP_API_TOKEN"),
            metrics_token=_token(env, "MLSHIP_METRICS_TOKEN"),
            publish_example=_flag(env, "MLSHIP_PUBLISH_EXAMPLE", False),
            publish_versions=_flag(env, "MLSHIP_PUBLISH_VERSIONS", True),
            model_rejections=_flag(env, "MLSHIP_MODEL_REJECTIONS", True),
            strict_columns=_flag(env, "MLSHIP_STRICT_COLUMNS", False),
            ui=_flag(env, "MLSHIP_UI", True),
        )


def _token(env: Mapping[str, str], name: str) -> str:
    """The token in the file $NAME_FILE names (a mounted Kubernetes secret), or in $NAME itself; "" for none.

    The file's surrounding whitespace is dropped (`echo` and editors end it with a newline). The value is never
    put into an error message.
    """
    path, value, raw = env.get(f"{name}_FILE", "").strip(), env.get(name, ""), b""
    if path and value:
        raise SettingsError(f"{name}_FILE and {name} are both set; set one of them")
    if path:
        try:
            with open(path, "rb") as fh:
                raw = fh.read(65_537)
        except OSError as exc:
            raise SettingsError(f"{name}_FILE={path!r} cannot be read: {exc.strerror}") from None
        where = f"{name}_FILE={path!r}"
        try:
            value = raw.decode("ascii")
        except UnicodeDecodeError:
            raise SettingsError(f"{where} must hold a token of visible ASCII characters") from None
    else:
        where = name
    token = value.strip()
    if not path and not value:
        return ""
    if not token or max(len(raw), len(token)) > 65_536 or not all("!" <= char <= "~" for char in token):
        raise SettingsError(f"{where} must hold one token of visible ASCII characters (no spaces), at most 64 KiB")
    if len(token) < MIN_TOKEN_CHARS:
        raise SettingsError(
            f"{where} holds a token of {len(token)} characters; use at least {MIN_TOKEN_CHARS} random ones "
            "(e.g. `openssl rand -hex 32`)"
        )
    return token


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number") from None
    if value < 1:
        raise SettingsError(f"{name}={raw!r} must be at least 1")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float, *, zero_ok: bool) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number of seconds") from None
    if not value < float("inf") or value < 0 or (value == 0 and not zero_ok):
        raise SettingsError(
            f"{name}={raw!r} must be a {'' if zero_ok else 'positive '}finite number of seconds"
        )
    return value


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={raw!r} must be 1 or 0")
