"""Bundles for service-file tests: a copy of a real bundle whose mlship.json says another name, version, or pins.

Only mlship.json changes, and it is not among the files it digests, so the copy stays a valid bundle that serves
and verifies like the original (under the new name and version).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from mlship.runtime._contract import MANIFEST_NAME


def bundle_copy(source: Path, dest: Path, name: str, version: str = "0.1.0", **manifest: object) -> Path:
    shutil.copytree(source, dest)
    data = json.loads((dest / MANIFEST_NAME).read_text())
    data.update(name=name, version=version, **manifest)
    (dest / MANIFEST_NAME).write_text(json.dumps(data, indent=2))
    return dest
