"""`mlship build --target onprem`: one reproducible tarball that installs and serves on an air-gapped Linux host
(docs/ONPREM.md).

This module declares the target: its options and its entry point. How it builds is in _onprem_build.py, imported
when a build starts, so that declaring the target (for `mlship --help`) stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .options import DENY_LICENSES, DENY_UNKNOWN_LICENSES, PLATFORM, WHEEL_CACHE, Option, Target, WheelOptions

if TYPE_CHECKING:
    from ._onprem_build import OnpremResult
    from ._onprem_service import OnpremServiceResult


@dataclass
class OnpremOptions(WheelOptions):
    output: Path = Path("dist")


def build_onprem(bundle: Path, options: OnpremOptions) -> OnpremResult:
    """Resolve the bundle's wheels for the target platform and write the installer tarball into options.output."""
    from ._onprem_build import build_onprem as build

    return build(bundle, options)


def build_onprem_service(service: Path, options: OnpremOptions) -> OnpremServiceResult:
    """Resolve every environment of the service file SERVICE and write one installer tarball for all its models."""
    from ._onprem_service import build_onprem_service as build

    return build(service, options)


TARGET = Target(
    name="onprem",
    summary="an offline installer tarball for a Linux host",
    docs="docs/ONPREM.md",
    options_type=OnpremOptions,
    build=build_onprem,
    build_service=build_onprem_service,
    options=(
        PLATFORM,
        WHEEL_CACHE,
        DENY_LICENSES,
        DENY_UNKNOWN_LICENSES,
        Option("output", ("-o", "--output"), Path, "Folder for the tarball.", default=Path("dist")),
    ),
)
