"""How the onprem target builds (onprem.py declares it): one reproducible tarball that installs and serves on
an air-gapped Linux host (docs/ONPREM.md).

    dist/NAME-VERSION-pyXY-PLATFORM.tar.gz
      NAME-VERSION/
        app/                      the bundle (mlship.json and its artifacts) + app/lock/PLATFORM-pyXY.txt
        wheels/                   every wheel the bundle needs on PLATFORM, Python X.Y
        requirements.lock         name==version --hash=sha256:... for pip --no-index --require-hashes
        install.sh                POSIX sh installer: checks, venv, offline pip, service account, systemd unit
        bin/SERVICE-serve         launcher: exec venv/bin/python -m mlship_runtime serve app
        sbom/sbom.cdx.json        the SBOM (CycloneDX 1.6; sbom.spdx.json: SPDX 2.3): the wheels installed, the model
        lib/systemd/SERVICE.service, etc/SERVICE.env, INSTALL.txt, SHA256SUMS

The tarball is a function of the bundle's files, the wheels and SOURCE_DATE_EPOCH only (bundle/archive.py), so
the same bundle and wheelhouse give the same bytes.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..bundle.archive import Member, unsafe_members, write_tar_gz
from ..bundle.render import render
from ..errors import BuildError, bundle_errors
from ..runtime import _contract as contract
from ..runtime._contract import MANIFEST_NAME, Manifest
from ..sbom.artifacts import ONPREM_FILES, artifact_contents, documents, gate, wheel_packages
from ..sbom.packages import PythonPackage
from .wheelhouse import (
    Platform,
    Wheelhouse,
    build_wheelhouse,
    bundle_python,
    bundle_requirements,
    parse_platform,
)

if TYPE_CHECKING:
    from .onprem import OnpremOptions

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8080
LOCK_FILE = "requirements.lock"


def service_name(name: str) -> str:
    """A name usable as a systemd unit, a launcher and a Linux account: `Iris_Model 2` -> `iris-model-2`."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "model"
    if not slug[0].isalpha():  # useradd's default NAME_REGEX wants a letter first
        slug = f"model-{slug}"
    return slug[:32].rstrip("-")  # the longest account name useradd accepts


@dataclass(frozen=True)
class OnpremContext:
    """What the onprem templates show: names, versions, paths and hashes, never logic."""

    title: str
    name: str
    version: str
    service: str
    top: str  # the tarball's top folder
    tarball: str
    python: str  # "3.11"
    machine: str  # uname -m on the target
    platform: str
    mlship_version: str
    runtime_version: str
    default_prefix: str
    default_port: int
    launcher: str  # paths relative to the top folder and to the install prefix
    unit: str
    env_file: str
    methods: list[str]
    example_body: str  # a ready-to-send JSON body for POST /METHOD
    wheels: list[dict[str, str]]  # name, version, filename, sha256
    # A service of several models (_onprem_service.py); a single bundle leaves these as they are.
    environments: list[str] = field(default_factory=list)  # env1, env2...: PREFIX/envs/ENV
    model_specs: list[str] = field(default_factory=list)  # ENV:FOLDER, FOLDER under app/
    models: list[str] = field(default_factory=list)  # "NAME VERSION" of each model
    venvs: str = "venv"  # the release's folder of environments: venv, or envs for a service
    front_venv: str = "venv"  # the environment whose Python the launcher runs


@dataclass
class OnpremResult:
    tarball: Path
    sha256: str
    size: int  # the .tar.gz
    content_size: int  # the files in it, uncompressed
    wheels_size: int
    wheel_count: int
    name: str
    version: str
    python: str
    platform: str
    top: str
    problems: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    license_warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def rows(self) -> list[tuple[str, str]]:
        share = self.wheels_size / self.content_size if self.content_size else 0.0
        return [
            ("tarball", str(self.tarball)),
            ("sha256", self.sha256),
            ("size", f"{self.size / 1e6:.1f} MB; {self.wheel_count} wheels, {self.wheels_size / 1e6:.1f} MB "
                     f"({share:.1%} of the content)"),
            ("target", f"{self.platform}, Python {self.python}"),
            ("checks", "safe to unpack (relative paths, no links)" if self.ok else "; ".join(self.problems)),
            ("sbom", f"{self.top}/{ONPREM_FILES['cyclonedx']}, {self.top}/{ONPREM_FILES['spdx']}"),
            *(("license", warning) for warning in self.license_warnings),
            ("time", f"{self.timings.get('total', 0):.1f}s ({self.timings.get('wheels', 0):.1f}s wheels, "
                     f"{self.timings.get('archive', 0):.1f}s archive)"),
            ("next", f"copy it to the host, then: tar xzf {self.tarball.name} && cd {self.top} && sudo ./install.sh"),
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "target": "onprem", "tarball": str(self.tarball), "sha256": self.sha256,
            "size_bytes": self.size, "content_bytes": self.content_size, "wheels_bytes": self.wheels_size, "wheels": self.wheel_count,
            "name": self.name, "version": self.version, "python": self.python, "platform": self.platform,
            "problems": self.problems, "license_warnings": self.license_warnings,
            "sbom": {fmt: f"{self.top}/{path}" for fmt, path in ONPREM_FILES.items()}, "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }


class OnpremBuilder:
    """`OnpremBuilder.from_bundle(path, options).build(out_dir)`; `build` accepts a ready wheelhouse (tests)."""

    def __init__(self, bundle: Path, manifest: Manifest, platform: Platform, options: OnpremOptions) -> None:
        self.bundle = bundle
        self.manifest = manifest
        self.platform = platform
        self.options = options
        self.python = bundle_python(manifest)
        self.name = manifest.name
        self.version = manifest.version
        self.service = service_name(self.name)
        self.top = f"{self.name}-{self.version}"
        self.tarball_name = f"{self.top}-py{self.python.replace('.', '')}-{platform.name}.tar.gz"
        if "/" in self.top or self.top.startswith("."):
            raise BuildError(f"the bundle's name and version {self.top!r} cannot name a folder",
                             hint="package the notebook again with --name and --version")

    @classmethod
    def from_bundle(cls, bundle: Path, options: OnpremOptions) -> OnpremBuilder:
        # Digests checked: never ship a bundle the runtime would refuse to serve.
        with bundle_errors(bundle):
            manifest = contract.read(bundle).manifest
        return cls(bundle, manifest, parse_platform(options.platform), options)

    def _step(self, message: str) -> None:
        logger.info(message)
        if self.options.on_step:
            self.options.on_step(message)

    def build(self, out_dir: Path, wheelhouse: Wheelhouse | None = None) -> OnpremResult:
        start = time.perf_counter()
        timings: dict[str, float] = {}
        policy = self.options.license_policy()  # a bad --deny-licenses fails before any download
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{self.top}.", dir=out_dir) as tmp:
            if wheelhouse is None:
                wheelhouse = build_wheelhouse(
                    bundle_requirements(self.bundle, self.manifest), python=self.python, platform=self.platform,
                    dest=Path(tmp) / "wheels", cache_dir=self.options.wheel_cache, on_step=self.options.on_step)
                _record_lock(wheelhouse, self.bundle)
            timings["wheels"] = time.perf_counter() - start
            packages = wheel_packages(wheelhouse.directory, wheelhouse.lock)
            warnings = gate(packages, policy, what=f"the tarball {self.tarball_name}")
            self._step(f"writing {self.tarball_name}")
            members = self.members(wheelhouse, packages)
            tarball = out_dir / self.tarball_name
            digest = write_tar_gz(tarball, members)
            sizes = {m.name: m.size() for m in members}
        wheels = [size for name, size in sizes.items() if name.startswith(f"{self.top}/wheels/")]
        timings["archive"] = time.perf_counter() - start - timings["wheels"]
        (out_dir / f"{self.tarball_name}.sha256").write_text(f"{digest}  {self.tarball_name}\n", encoding="utf-8")
        problems = unsafe_members(tarball)
        timings["total"] = time.perf_counter() - start
        return OnpremResult(
            tarball=tarball, sha256=digest, size=tarball.stat().st_size, content_size=sum(sizes.values()),
            wheels_size=sum(wheels),
            wheel_count=len(wheels), name=self.name, version=self.version, python=self.python,
            platform=self.platform.name, top=self.top, problems=problems, timings=timings,
            license_warnings=warnings)

    def members(self, wheelhouse: Wheelhouse, packages: list[PythonPackage] | None = None) -> list[Member]:
        """Every file of the tarball, SHA256SUMS last computed over all the others; the SBOM of `packages` (the
        wheelhouse's, read from its wheels, when not given) under sbom/."""
        ctx = self.context(wheelhouse)
        top = self.top
        lock = wheelhouse.lock_text().encode()
        files = [Member(f"{top}/app/{rel}", source=self.bundle / rel)
                 for rel in [MANIFEST_NAME, *sorted(self.manifest.artifacts)]]
        files.append(Member(f"{top}/app/{wheelhouse.lock_path}", data=lock))
        files += [Member(f"{top}/wheels/{w.filename}", source=wheelhouse.directory / w.filename)
                  for w in wheelhouse.lock]
        files.append(Member(f"{top}/{LOCK_FILE}", data=lock))
        files += [Member(f"{top}/{ONPREM_FILES[fmt]}", data=data)
                  for fmt, data in self.sbom(wheelhouse, packages).items()]
        return with_installer(top, ctx, files, guide="INSTALL.txt.jinja")

    def sbom(self, wheelhouse: Wheelhouse, packages: list[PythonPackage] | None) -> dict[str, bytes]:
        """The tarball's SBOM: the wheels install.sh installs, which are all its venv holds (it removes the
        tools ensurepip adds, as the image does), and the model."""
        if packages is None:
            packages = wheel_packages(wheelhouse.directory, wheelhouse.lock)
        with bundle_errors(self.bundle):
            bundle = contract.read(self.bundle)
        return documents(artifact_contents(bundle, "onprem", packages, platform=self.platform.docker))

    def context(self, wheelhouse: Wheelhouse) -> OnpremContext:
        example = self.manifest.input.example
        return OnpremContext(
            title=f"{self.name} {self.version}: offline installer for a model server",
            name=self.name, version=self.version, service=self.service, top=self.top, tarball=self.tarball_name,
            python=self.python, machine=self.platform.machine, platform=self.platform.name,
            mlship_version=__version__, runtime_version=self.manifest.runtime_version,
            default_prefix=f"/opt/{self.service}", default_port=DEFAULT_PORT,
            launcher=f"bin/{self.service}-serve", unit=f"lib/systemd/{self.service}.service",
            env_file=f"etc/{self.service}.env", methods=self.manifest.method_names,
            example_body=json.dumps({"instances": [example]}, ensure_ascii=False),
            wheels=[{"name": w.name, "version": w.version, "filename": w.filename, "sha256": w.sha256}
                    for w in wheelhouse.lock],
        )


def build_onprem(bundle: Path, options: OnpremOptions) -> OnpremResult:
    """Resolve the bundle's wheels for the target platform and write the installer tarball into options.output."""
    return OnpremBuilder.from_bundle(bundle, options).build(options.output)


def with_installer(top: str, ctx: OnpremContext, files: list[Member], *, guide: str) -> list[Member]:
    """`files` and the installer's own (install.sh, launcher, unit, settings, INSTALL.txt from `guide`), sorted,
    then SHA256SUMS computed over all of them."""
    files = [*files,
             Member(f"{top}/install.sh", data=_text("install.sh.jinja", ctx), executable=True),
             Member(f"{top}/{ctx.launcher}", data=_text("launcher.jinja", ctx), executable=True),
             Member(f"{top}/{ctx.unit}", data=_text("systemd.service.jinja", ctx)),
             Member(f"{top}/{ctx.env_file}", data=_env_file(ctx).encode()),
             Member(f"{top}/INSTALL.txt", data=_text(guide, ctx))]
    files.sort(key=lambda m: m.name)
    sums = "".join(f"{m.sha256()}  {m.name[len(top) + 1:]}\n" for m in files)
    return [*files, Member(f"{top}/SHA256SUMS", data=sums.encode())]


def _text(template: str, ctx: OnpremContext) -> bytes:
    return render(template, ctx).encode()


def _env_file(ctx: OnpremContext) -> str:
    return (f"# Settings for {ctx.service}-serve under systemd (read at start: systemctl restart {ctx.service}).\n"
            "# install.sh writes this file once and keeps your changes across upgrades.\n"
            "# 0.0.0.0 listens on every interface; 127.0.0.1 only on this machine.\n"
            "MLSHIP_HOST=127.0.0.1\n"
            f"MLSHIP_PORT={ctx.default_port}\n"
            f"# Worker processes (default: the runtime's own; {ctx.service}-serve --help shows it):\n"
            "#MLSHIP_WORKERS=2\n"
            "MLSHIP_LOG_LEVEL=info\n"
            f"# More settings: {ctx.service}-serve --help\n")


def _record_lock(wheelhouse: Wheelhouse, bundle: Path) -> None:
    # BUILD.md: the lock also goes into the bundle. A read-only bundle still builds; the tarball has its own copy.
    try:
        wheelhouse.write_lock(bundle)
    except OSError as exc:
        logger.warning("could not record the lock in %s: %s", bundle, exc)


__all__ = ["OnpremBuilder", "OnpremContext", "OnpremResult", "build_onprem", "service_name"]
