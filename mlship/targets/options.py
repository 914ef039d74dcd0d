"""Options shared by the build targets, and how `mlship build` finds its bundle."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..errors import BuildError

StepCallback = Callable[[str], None]


def default_wheel_cache() -> Path:
    env = os.environ.get("MLSHIP_WHEEL_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mlship" / "wheels"


@dataclass
class BuildOptions:
    platform: str = "linux/amd64"
    wheel_cache: Path = field(default_factory=default_wheel_cache)
    on_step: StepCallback | None = None


@dataclass
class DockerOptions(BuildOptions):
    base_image: str | None = None  # default python:X.Y-slim for the bundle's Python
    tags: list[str] = field(default_factory=list)
    push: bool = False
    context_only: Path | None = None
    test: bool = True
    keep_failed: bool = False


@dataclass
class OnpremOptions(BuildOptions):
    output: Path = Path("dist")


class BuildResult(Protocol):
    def rows(self) -> list[tuple[str, str]]: ...

    def to_json(self) -> dict[str, Any]: ...

    @property
    def ok(self) -> bool: ...


def find_bundle(dist: Path = Path("dist")) -> Path:
    """The most recently written bundle under dist/ (newest mlship.json)."""
    manifests = sorted(dist.glob("*/mlship.json"), key=lambda p: p.stat().st_mtime) if dist.is_dir() else []
    if not manifests:
        raise BuildError(
            f"no bundle found under {dist}/",
            hint="package a notebook first (mlship package NOTEBOOK.ipynb), pass --bundle PATH, or give the "
            "notebook to build: mlship build NOTEBOOK.ipynb --target docker",
        )
    return manifests[-1].parent
