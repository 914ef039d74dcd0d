"""A bundle's digest: the sha256 of its mlship.json, which pins the sha256 of every other file of the bundle (the
bytes `mlship sign` signs). `mlship compare` records it for both bundles; `mlship promote --require-report` matches
a report to the bundles of a service file by it; images (label io.mlship.bundle.digest, a service image's models)
and Kubernetes objects (annotation mlship.io/bundle-digest) carry it, so one image or pod is traced to its bundle."""

from __future__ import annotations

from pathlib import Path

from ..runtime._contract import MANIFEST_NAME, sha256_file


def bundle_digest(path: Path) -> str:
    """`sha256:` and the hex sha256 of `path`/mlship.json (OSError when it cannot be read)."""
    return "sha256:" + sha256_file(path / MANIFEST_NAME)
