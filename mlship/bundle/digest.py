"""A bundle's digest: the sha256 of its mlship.json, which pins the sha256 of every other file of the bundle (the
bytes `mlship sign` signs). `mlship compare` records it for both bundles; `mlship promote --require-report` matches
a report to the bundles of a service file by it."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..runtime._contract import MANIFEST_NAME


def bundle_digest(path: Path) -> str:
    """`sha256:` and the hex sha256 of `path`/mlship.json (OSError when it cannot be read)."""
    return "sha256:" + hashlib.sha256((path / MANIFEST_NAME).read_bytes()).hexdigest()
