"""Talking to the Docker engine through the docker SDK: connect, check the base image, build, tag, push."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import urllib.parse
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BuildError, DockerUnavailable
from .wheelhouse import Platform

logger = logging.getLogger(__name__)

Step = Callable[[str], None]
_LOG_TAIL = 25


def connect() -> Any:
    """A docker client that has answered a ping, or DockerUnavailable saying how to get one."""
    import docker

    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    client = None
    try:
        _reach(host)
        client = docker.from_env(timeout=600)
        client.ping()
    except Exception as exc:  # DockerException, requests' ConnectionError, PermissionError...
        if client is not None:
            client.close()
        raise DockerUnavailable(
            f"no Docker daemon is reachable at {host}: {_first_line(exc)}",
            hint="start the Docker engine (`sudo systemctl start docker`, or `sudo dockerd &`), or check "
            "DOCKER_HOST and your permission on the socket; without Docker, build the image with --builder "
            "native (mlship writes it: docs/DOCKER.md), write the build context with --context-only DIR (for "
            "kaniko, buildah or a remote CI) or build an offline installer with --target onprem",
        ) from None
    return client


def _reach(host: str) -> None:
    """Connect to the daemon's socket once, cleanly: the SDK leaks the socket of a connection that fails."""
    if host.startswith("unix://"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(host.removeprefix("unix://"))
    elif host.startswith(("tcp://", "http://", "https://")):
        address = urllib.parse.urlsplit(host)
        with socket.create_connection((address.hostname or "localhost", address.port or 2375), timeout=5):
            pass


def ensure_image(client: Any, image: str, platform: Platform, on_step: Step) -> dict[str, Any]:
    """The base image's inspect data, pulling it when it is not local; BuildError if it cannot be had."""
    import docker

    try:
        info: dict[str, Any] = client.api.inspect_image(image)
        return info
    except docker.errors.ImageNotFound:
        pass
    on_step(f"pulling base image {image}")
    try:
        client.images.pull(image, platform=platform.docker)
        pulled: dict[str, Any] = client.api.inspect_image(image)
        return pulled
    except docker.errors.APIError as exc:
        raise BuildError(
            f"cannot pull the base image {image}: {_first_line(exc)}",
            hint="without access to Docker Hub, make a base image from Debian packages "
            "(`sudo mlship base-image TAG`) or use a mirror, and pass --base-image TAG",
        ) from None


_PROBE = ("import json, platform, sys; print(json.dumps({'version': '%d.%d.%d' % sys.version_info[:3], "
          "'executable': sys.executable, 'machine': platform.machine()}))")


@dataclass(frozen=True)
class BasePython:
    version: str  # e.g. 3.11.2
    executable: str  # e.g. /usr/bin/python3.11
    machine: str


def check_base_python(client: Any, image: str, python: str, platform: Platform) -> BasePython:
    """Run the base image once: `python{X.Y}` must be on its PATH and run on the target machine."""
    found = _run_python(client, image, f"python{python}")
    if found is None:
        other = _run_python(client, image, "python3")
        has = f"only Python {other.version} ({other.executable})" if other else "no python3 at all"
        raise BuildError(
            f"the base image {image} has no python{python} on its PATH ({has}); the bundle was packaged "
            f"with Python {python}, and its pickled model loads only under the same major.minor",
            hint=f"use a base with Python {python} (e.g. --base-image python:{python}-slim, or one made by "
            "`mlship base-image TAG`), or package the notebook under the base's Python",
        )
    if found.machine != platform.machine:
        raise BuildError(
            f"the base image {image} runs on {found.machine}, but the target platform is {platform.docker} "
            f"({platform.machine})",
            hint=f"use a base image for {platform.docker}, or pass --platform to match the base",
        )
    return found


def _run_python(client: Any, image: str, interpreter: str) -> BasePython | None:
    import docker

    container = None
    try:
        container = client.containers.create(image, entrypoint=[interpreter], command=["-c", _PROBE],
                                             network_disabled=True, user="0")
        container.start()
        status = container.wait(timeout=60)
        output = container.logs(stdout=True, stderr=False).decode(errors="replace").strip()
        if status.get("StatusCode") != 0 or not output:
            return None
        data = json.loads(output.splitlines()[-1])
        return BasePython(data["version"], data["executable"], data["machine"])
    except (docker.errors.APIError, ValueError, KeyError):
        # "executable file not found in $PATH" arrives as an APIError from start().
        return None
    finally:
        if container is not None:
            try:
                container.remove(force=True)
            except docker.errors.APIError:
                logger.debug("could not remove probe container %s", container.id)


@dataclass
class BuildLog:
    """What the build stream said: the steps, which of them came from the cache, and the last lines."""

    steps: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=_LOG_TAIL))
    image_id: str | None = None
    lines: list[str] = field(default_factory=list)
    ids: dict[int, str] = field(default_factory=dict)  # step index (0-based) -> the image it left

    def stage_images(self) -> list[tuple[str, bool]]:
        """The images the build stage's steps left (its FROM excluded), each with whether it came from the
        cache: every step before the build's last FROM belongs to an earlier stage."""
        froms = [i for i, step in enumerate(self.steps) if _STEP_FROM.match(step)]
        if len(froms) < 2:
            return []
        return [(self.ids[i], self.steps[i] in self.cached) for i in range(froms[0] + 1, froms[-1])
                if i in self.ids]


_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
_STEP_FROM = re.compile(r"^Step \d+/\d+ : FROM ", re.IGNORECASE)
_IMAGE_ID = re.compile(r"^ ---> ([0-9a-f]{12,64})$")
# Every image of the Dockerfile's build stage carries this label (templates/Dockerfile.jinja), so mlship removes
# its own stages and nothing else.
STAGE_LABEL = "dev.mlship.stage"
STAGE_VALUE = "build"
NAME_LABEL = "dev.mlship.name"


def build_image(client: Any, context: Path, tag: str, platform: Platform, on_step: Step,
                nocache: bool = False) -> BuildLog:
    """docker build (legacy builder, via the SDK), streaming each line into on_step; BuildError on failure."""
    import docker

    log = BuildLog()
    params: dict[str, Any] = {"path": str(context), "tag": tag, "rm": True, "forcerm": True, "decode": True,
                              "pull": False, "nocache": nocache}
    if _daemon_machine(client) != platform.machine:
        params["platform"] = platform.docker
    try:
        try:
            for chunk in client.api.build(**params):
                if "error" in chunk:
                    raise _build_error(log, str(chunk["error"]).strip())
                if "aux" in chunk and isinstance(chunk["aux"], dict) and "ID" in chunk["aux"]:
                    log.image_id = chunk["aux"]["ID"]
                for line in str(chunk.get("stream", "")).splitlines():
                    _record(log, line.rstrip(), on_step)
        except docker.errors.APIError as exc:
            raise _build_error(log, _first_line(exc)) from None
        if log.image_id is None:
            built = [line for line in log.lines if line.startswith("Successfully built ")]
            if not built:
                raise _build_error(log, "the build stream ended without an image id")
            log.image_id = built[-1].split()[-1]
    except BuildError:
        remove_failed_stage(client, log)
        raise
    return log


def remove_failed_stage(client: Any, log: BuildLog) -> list[str]:
    """After a failed build: remove the build-stage images this build made (not those it found in the cache)."""
    ids = [image for image, cached in _partial_stage(log) if not cached]
    return remove_stage_images(client, ids)


def _partial_stage(log: BuildLog) -> list[tuple[str, bool]]:
    # A build that failed in its build stage has one FROM so far: every later step is the stage's.
    froms = [i for i, step in enumerate(log.steps) if _STEP_FROM.match(step)]
    if len(froms) >= 2:
        return log.stage_images()
    start = froms[0] + 1 if froms else 0
    return [(log.ids[i], log.steps[i] in log.cached) for i in range(start, len(log.steps)) if i in log.ids]


def remove_stage_images(client: Any, ids: list[str]) -> list[str]:
    """Remove, newest first, those of `ids` that carry mlship's build-stage label and nothing else; untagged
    parents go with them (noprune=False) unless another image still needs them. Returns the removed ids."""
    import docker

    removed = []
    for image in reversed(ids):
        try:
            labels = client.api.inspect_image(image).get("Config", {}).get("Labels") or {}
            if labels.get(STAGE_LABEL) != STAGE_VALUE:
                continue
            client.api.remove_image(image, force=False, noprune=False)
            removed.append(image)
        except docker.errors.ImageNotFound:
            removed.append(image)  # already pruned with its child
        except docker.errors.APIError as exc:  # still used by a container or a child image: leave it
            logger.debug("kept build stage image %s: %s", image, _first_line(exc))
    return removed


def superseded_stages(client: Any, name: str, keep: str) -> list[str]:
    """The leaf images of earlier build stages of model `name` (label dev.mlship.name), other than `keep`."""
    filters = {"label": [f"{STAGE_LABEL}={STAGE_VALUE}", f"{NAME_LABEL}={name}"], "dangling": True}
    leaves = [str(image["Id"]) for image in client.api.images(filters=filters)]
    return [image for image in leaves if not _same_id(image, keep)]


def _same_id(a: str, b: str) -> bool:
    a, b = a.removeprefix("sha256:"), b.removeprefix("sha256:")
    return a.startswith(b) or b.startswith(a)


def _record(log: BuildLog, line: str, on_step: Step) -> None:
    if not line.strip():
        return
    log.lines.append(line)
    log.tail.append(line)
    match = _STEP.match(line)
    if match:
        log.steps.append(line)
        log.tail.clear()
        log.tail.append(line)
        on_step(f"docker build step {match[1]}/{match[2]}: {match[3][:100]}")
    elif line.strip() == "---> Using cache" and log.steps:
        log.cached.append(log.steps[-1])
    elif (image := _IMAGE_ID.match(line)) and log.steps:
        log.ids[len(log.steps) - 1] = image[1]
    elif not line.startswith((" ---> ", "Removing intermediate container")):
        on_step(f"  {line[:160]}")


def _build_error(log: BuildLog, error: str) -> BuildError:
    step = log.steps[-1] if log.steps else "(before the first step)"
    tail = "\n".join(f"  {line}" for line in log.tail)
    return BuildError(
        f"docker build failed at {step}\n{tail}\n{error}",
        hint="the lines above are the end of the failing step's log; write the context with --context-only DIR "
        "to inspect or build it by hand",
    )


def _daemon_machine(client: Any) -> str:
    arch = str(client.info().get("Architecture", ""))
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch)


def split_tag(tag: str) -> tuple[str, str]:
    from docker.utils import parse_repository_tag

    repository, version = parse_repository_tag(tag)
    return str(repository), str(version or "latest")


def tag_image(client: Any, image_id: str, tags: list[str]) -> None:
    for tag in tags:
        repository, version = split_tag(tag)
        client.api.tag(image_id, repository, version, force=True)


def push_tag(client: Any, tag: str, on_step: Step) -> str:
    """Push one tag with the engine's own credentials (docker login); return the digest the registry gave."""
    import docker

    repository, version = split_tag(tag)
    on_step(f"pushing {repository}:{version}")
    digest = None
    try:
        for chunk in client.api.push(repository, tag=version, stream=True, decode=True):
            if "error" in chunk:
                raise _push_error(tag, str(chunk["error"]))
            aux = chunk.get("aux")
            if isinstance(aux, dict) and aux.get("Digest"):
                digest = str(aux["Digest"])
    except docker.errors.APIError as exc:
        raise _push_error(tag, _first_line(exc)) from None
    if digest is None:
        raise _push_error(tag, "the registry returned no digest")
    return digest


def _push_error(tag: str, reason: str) -> BuildError:
    registry = tag.split("/", 1)[0] if "/" in tag else "docker.io"
    return BuildError(
        f"pushing {tag} failed: {reason.strip()}",
        hint=f"check that the tag names a registry you can reach (REGISTRY[:PORT]/NAME:TAG) and log in with "
        f"`docker login {registry}`; the image was built and tested and stays local",
    )


def remove_image(client: Any, image_id: str, tags: list[str]) -> None:
    import docker

    for ref in [*tags, image_id]:
        try:
            client.api.remove_image(ref, force=True, noprune=False)
        except docker.errors.APIError:
            logger.debug("could not remove %s", ref)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "explanation", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
