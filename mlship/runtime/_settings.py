"""Request limits, read once from the environment when the app is created."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_MAX_ROWS = 10_000
DEFAULT_MAX_BODY_BYTES = 20 * 1024 * 1024


class SettingsError(ValueError):
    """An environment variable holds a value the runtime cannot use."""


@dataclass(frozen=True)
class Settings:
    """Limits applied to every request.

    max_rows:       rows per request                  [env var: MLSHIP_MAX_ROWS, default 10000]
    max_body_bytes: request body size, in bytes       [env var: MLSHIP_MAX_BODY_BYTES, default 20 MiB]
    """

    max_rows: int = DEFAULT_MAX_ROWS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        return cls(
            max_rows=_positive_int(env, "MLSHIP_MAX_ROWS", DEFAULT_MAX_ROWS),
            max_body_bytes=_positive_int(env, "MLSHIP_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES),
        )


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
