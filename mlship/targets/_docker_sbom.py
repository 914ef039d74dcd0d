"""The engine build's SBOM inputs: the base image by digest and the Debian packages its dpkg status lists.

The final image's Debian packages are the base's (the Dockerfile installs none), so they are read from the base
before the build, through a container that is created and never started (`docker create` + `docker cp`).
"""

from __future__ import annotations

import io
import tarfile
from typing import Any

from ..sbom.document import BaseImage
from ..sbom.packages import DebPackage, parse_dpkg_status

DPKG_STATUS = "/var/lib/dpkg/status"


def base_image(reference: str, info: dict[str, Any]) -> BaseImage:
    """The base by its manifest digest when it came from a registry (RepoDigests), else by the engine's image id
    (an image made locally, e.g. by `mlship base-image`, has no manifest digest)."""
    for repo_digest in info.get("RepoDigests") or []:
        if "@" in repo_digest:
            return BaseImage(reference, repo_digest.split("@", 1)[1], "manifest")
    image_id = info.get("Id")
    return BaseImage(reference, str(image_id) if image_id else None, "image-id")


def debian_packages(client: Any, image: str) -> list[DebPackage]:
    """The installed packages of `image`'s dpkg status; [] when it has none (not a Debian-based image)."""
    import docker

    container = client.api.create_container(image, command=["/bin/true"], network_disabled=True)
    try:
        stream, _ = client.api.get_archive(container["Id"], DPKG_STATUS)
        data = b"".join(stream)
    except docker.errors.NotFound:
        return []
    finally:
        client.api.remove_container(container["Id"], force=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.next()
        handle = tar.extractfile(member) if member is not None else None
        text = handle.read().decode("utf-8", errors="replace") if handle is not None else ""
    return parse_dpkg_status(text)
