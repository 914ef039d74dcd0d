"""`mlship build --target docker`: a container image that serves the bundle, smoke-tested (docs/DOCKER.md).

This module declares the target: its options and its entry point. How it builds is in _docker_build.py and the
modules it names, imported when a build starts, so that declaring the target (for `mlship --help`) stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .options import DENY_LICENSES, DENY_UNKNOWN_LICENSES, PLATFORM, WHEEL_CACHE, Option, Target, WheelOptions

if TYPE_CHECKING:
    from ._docker_build import DockerResult
    from ._docker_service import DockerServiceResult


@dataclass
class DockerOptions(WheelOptions):
    base_image: str | None = None  # default python:X.Y-slim for the bundle's Python
    tags: list[str] = field(default_factory=list)
    push: bool = False
    context_only: Path | None = None
    test: bool = True
    keep_failed: bool = False
    build_cache: bool = True  # keep the build stage's image as the layer cache for rebuilds
    builder: str = "auto"  # native | engine | auto (the engine if reachable, else native)
    output: Path | None = None  # native: the image as one tar (docker load, podman load, skopeo)
    registry_auth: str | None = None  # USER:PASSWORD for the native builder's registry requests


def build_docker(bundle: Path, options: DockerOptions) -> DockerResult:
    """Build BUNDLE into an image (or only its build context), smoke-test it, push it."""
    from ._docker_build import build_docker as build

    return build(bundle, options)


def build_docker_service(service: Path, options: DockerOptions) -> DockerServiceResult:
    """Build the service file SERVICE into one image serving every model in it, smoke-tested, pushed."""
    from ._docker_service import build_docker_service as build

    return build(service, options)


TARGET = Target(
    name="docker",
    summary="a container image, smoke-tested against the golden cases",
    docs="docs/DOCKER.md",
    options_type=DockerOptions,
    build=build_docker,
    build_service=build_docker_service,
    options=(
        PLATFORM,
        WHEEL_CACHE,
        DENY_LICENSES,
        DENY_UNKNOWN_LICENSES,
        Option("base_image", ("--base-image",), str | None,
               "Base image with python3.X (default python:X.Y-slim); for the native builder a registry "
               "reference, oci-archive:FILE, docker-archive:FILE or an OCI layout folder.",
               envvar="MLSHIP_BASE_IMAGE"),
        Option("tags", ("--tag",), list[str] | None, "Image tag (repeatable; default NAME:VERSION).",
               convert=lambda v: list(v or [])),
        Option("push", ("--push",), bool, "Push the tags after the smoke test.", default=False),
        Option("context_only", ("--context-only",), Path | None,
               "Write the build context to DIR and stop (for kaniko, buildah, remote CI)."),
        Option("test", ("--no-test",), bool, "Skip the smoke test of the image.", default=False,
               convert=lambda v: not v),
        Option("keep_failed", ("--keep-failed",), bool, "Keep an image that failed its smoke test.", default=False),
        Option("builder", ("--builder",), str, "Who builds the image: native (mlship writes it itself, no "
               "engine needed), engine (the Docker engine) or auto (the engine if reachable, else native; native "
               "with --output).", default="auto", envvar="MLSHIP_BUILDER"),
        Option("output", ("-o", "--output"), Path, "Native builder: write the image as one tar that docker load, "
               "podman load and skopeo (oci-archive: and docker-archive:) read (default, without --push: "
               "NAME-VERSION.image.tar beside the bundle, SERVICE-latest.image.tar beside a service file)."),
        Option("registry_auth", ("--registry-auth",), str | None, "Native builder: USER:PASSWORD for the "
               "registries of --base-image and --push (default: ~/.docker/config.json and its credential helpers).",
               envvar="MLSHIP_REGISTRY_AUTH"),
        Option("build_cache", ("--no-build-cache",), bool, "Remove the build stage's image (wheels and pip "
               "install) after the build; the next build then installs the dependencies again.", default=False,
               convert=lambda v: not v),
    ),
)
