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


def write_split_service(folder: Path) -> Path:
    """A service file of three tiny bundles in `folder`: `tiny`, and `pinned` 1.0.0 and 2.0.0 reporting six 1.16.0
    and 1.17.0 (two environments; 2.0.0 the default)."""
    from tests.support.docker import write_tiny_bundle

    dist = folder / "dist"
    write_tiny_bundle(dist / "tiny")
    write_tiny_bundle(dist / "old", name="pinned", version="1.0.0", reports="six==1.16.0")
    write_tiny_bundle(dist / "new", name="pinned", version="2.0.0", reports="six==1.17.0")
    path = folder / "mlship.toml"
    path.write_text('[service]\nname = "scoring"\n\n[[models]]\nbundle = "dist/tiny"\n\n[[models]]\n'
                    'bundle = "dist/old"\n\n[[models]]\nbundle = "dist/new"\n\n[routes.pinned]\ndefault = "2.0.0"\n')
    return path
