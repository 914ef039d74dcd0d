"""What a package says about itself: a wheel's METADATA, an installed distribution's, a dpkg status file's entries.

Only the standard library reads them (zipfile, email's header parser, importlib.metadata in the packaging
interpreter): the SBOM lists what the artifact holds, read from the files that are installed, not from an index.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesHeaderParser
from pathlib import Path
from urllib.parse import quote

from ..bundle.manifest import canonical  # PEP 503: what a purl of type pypi uses
from ..errors import BuildError
from .licenses import License, read_license

_METADATA = re.compile(r"^[^/]+\.dist-info/METADATA$")


@dataclass(frozen=True)
class PythonPackage:
    """One Python distribution: `sha256` is the digest of the wheel it is installed from, when that is known."""

    name: str
    version: str
    license: License
    sha256: str | None = None
    filename: str | None = None

    @property
    def key(self) -> str:
        return canonical(self.name)

    @property
    def pin(self) -> str:
        return f"{self.name}=={self.version}"

    @property
    def purl(self) -> str:
        version = f"@{quote(self.version, safe='+')}" if self.version else ""
        return f"pkg:pypi/{quote(self.key)}{version}"


def from_fields(fields: Mapping[str, object], *, sha256: str | None = None,
                filename: str | None = None) -> PythonPackage:
    """From metadata fields: Name, Version, License-Expression, License, Classifier (a list)."""
    classifiers = fields.get("Classifier") or []
    lic = read_license(_text(fields.get("License-Expression")), _text(fields.get("License")),
                       [str(c) for c in classifiers] if isinstance(classifiers, list) else [])
    return PythonPackage(str(fields["Name"]), str(fields["Version"]), lic, sha256, filename)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _fields(message: Message) -> dict[str, object]:
    return {"Name": message["Name"], "Version": message["Version"],
            "License-Expression": message.get("License-Expression"), "License": message.get("License"),
            "Classifier": message.get_all("Classifier") or []}


def read_wheel(path: Path, sha256: str) -> PythonPackage:
    """The distribution a wheel installs, from its .dist-info/METADATA (headers only)."""
    with zipfile.ZipFile(path) as wheel:
        names = [n for n in wheel.namelist() if _METADATA.match(n)]
        if len(names) != 1:
            raise BuildError(f"{path.name} is not a wheel: it has {len(names)} .dist-info/METADATA files")
        message = BytesHeaderParser().parsebytes(wheel.read(names[0]))
    return from_fields(_fields(message), sha256=sha256, filename=path.name)


# Run by the interpreter the bundle was packaged with: its installed distributions' metadata, as JSON.
_PROBE = """
import importlib.metadata as m, json, sys
out = {}
for name in sys.argv[1:]:
    try:
        md = m.metadata(name)
    except m.PackageNotFoundError:
        continue
    out[name] = {"Name": md["Name"], "Version": md["Version"], "License-Expression": md.get("License-Expression"),
                 "License": md.get("License"), "Classifier": md.get_all("Classifier") or []}
print(json.dumps(out))
"""


def installed_packages(executable: str, names: Iterable[str]) -> dict[str, PythonPackage]:
    """The installed distributions `names` (canonical name -> package) as the interpreter `executable` sees them;
    names it does not have are left out."""
    wanted = sorted(set(names))
    if not wanted:
        return {}
    if os.path.abspath(executable) == os.path.abspath(sys.executable):  # the kernel ran in mlship's own interpreter
        found = {}
        for name in wanted:
            try:
                found[name] = _fields(importlib.metadata.metadata(name))  # type: ignore[arg-type]
            except importlib.metadata.PackageNotFoundError:
                continue
        return {canonical(name): from_fields(fields) for name, fields in found.items()}
    proc = subprocess.run([executable, "-I", "-c", _PROBE, *wanted], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120)
    if proc.returncode != 0:
        raise BuildError(f"could not read the installed packages' metadata with {executable}: "
                         f"{proc.stderr.strip()[-500:]}")
    found = json.loads(proc.stdout)
    return {canonical(name): from_fields(fields) for name, fields in found.items()}


@dataclass(frozen=True)
class DebPackage:
    """An installed Debian package, from var/lib/dpkg/status."""

    name: str
    version: str
    architecture: str
    source: str | None = None

    @property
    def purl(self) -> str:
        arch = f"?arch={quote(self.architecture)}" if self.architecture else ""
        return f"pkg:deb/debian/{quote(self.name)}@{quote(self.version, safe='+~:')}{arch}"


def parse_dpkg_status(text: str) -> list[DebPackage]:
    """The packages var/lib/dpkg/status says are installed (Status: install ok installed), sorted by name."""
    found = []
    for paragraph in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in paragraph.splitlines():
            if line and not line[0].isspace() and ":" in line:
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
        if "Package" in fields and fields.get("Status", "").endswith(" installed"):
            source = fields.get("Source")
            found.append(DebPackage(fields["Package"], fields.get("Version", ""), fields.get("Architecture", ""),
                                    source.split(" ")[0] if source else None))
    return sorted(found, key=lambda p: (p.name, p.architecture))
