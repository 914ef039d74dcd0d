"""Minimal valid pure-Python wheels, built in memory: what pip installs and what the SBOM reads (its METADATA)."""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from collections.abc import Sequence


def make_wheel(name: str, version: str, *, license_expression: str | None = None, license: str | None = None,
               classifiers: Sequence[str] = ()) -> bytes:
    """A wheel holding the module `name`, with these license fields in its METADATA; the same bytes every time."""
    info = f"{name}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.4\nName: {name}\nVersion: {version}\n"
    if license_expression:
        metadata += f"License-Expression: {license_expression}\n"
    if license:
        metadata += f"License: {license}\n"
    metadata += "".join(f"Classifier: {c}\n" for c in classifiers)
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n",
        f"{info}/METADATA": metadata,
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: mlship-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, text in files.items():
            archive.writestr(zipfile.ZipInfo(path, (2020, 1, 1, 0, 0, 0)), text)
    return buffer.getvalue()
