"""`mlship build --target onprem mlship.toml`: one offline tarball that installs every model of a service file
and serves them behind one front (docs/ONPREM.md "A service: several models, one tarball").

    dist/SERVICE-pyXY-PLATFORM.tar.gz
      SERVICE/
        app/mlship.toml            the service file: bundle = "models/NAME/VERSION", python = "../envs/ENV/bin/python"
        app/mlship_runtime/        the front (the building mlship's runtime)
        app/models/NAME/VERSION/   each bundle (mlship.json and its artifacts)
        envs/ENV/wheels/, envs/ENV/requirements.lock      each environment's locked wheels
        sbom/sbom.cdx.json, sbom/sbom.spdx.json           the SBOM: every model, every environment's wheels
        install.sh, bin/SERVICE-serve, lib/systemd/SERVICE.service, etc/SERVICE.env, INSTALL.txt, SHA256SUMS

install.sh is the one-bundle installer with a venv per environment (PREFIX/envs/ENV) and a model check per model,
each under its own environment's Python; the launcher starts the front. Each venv holds exactly its lock (pip and
setuptools are removed when the lock does not name them), which is what the SBOM lists. The license gate runs over
every environment before the tarball is written. Same inputs, same bytes.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from .._paths import BUNDLE_RUNTIME_NAME, RUNTIME_DIR
from ..bundle.archive import Member, unsafe_members, write_tar_gz
from ..runtime import RUNTIME_VERSION
from ..runtime._contract import MANIFEST_NAME
from ..sbom.artifacts import ONPREM_FILES
from ..sbom.licenses import LicensePolicy
from ._onprem_build import DEFAULT_PORT, LOCK_FILE, OnpremContext, OnpremResult, service_name, with_installer
from ._service_plan import ServicePlan
from ._service_sbom import ServiceSbom, service_sbom
from .wheelhouse import Wheelhouse, parse_platform

if TYPE_CHECKING:
    from .onprem import OnpremOptions

_SKIP = ("__pycache__", ".pyc")


@dataclass
class OnpremServiceResult(OnpremResult):
    plan: ServicePlan | None = None

    def rows(self) -> list[tuple[str, str]]:
        return [*(self.plan.rows() if self.plan else []), *super().rows()]

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "service": self.plan.to_json() if self.plan else None}


class OnpremServiceBuilder:
    """`OnpremServiceBuilder(plan, options).build(out_dir)`; `build` accepts ready wheelhouses (tests)."""

    def __init__(self, plan: ServicePlan, options: OnpremOptions) -> None:
        self.plan = plan
        self.options = options
        self.name = plan.service.name
        self.service = service_name(self.name)
        self.top = self.name
        self.tarball_name = f"{self.top}-py{plan.python.replace('.', '')}-{plan.platform.name}.tar.gz"

    @classmethod
    def from_file(cls, path: Path, options: OnpremOptions) -> OnpremServiceBuilder:
        return cls(ServicePlan.from_file(path, parse_platform(options.platform)), options)

    def build(self, out_dir: Path, houses: dict[str, Wheelhouse] | None = None) -> OnpremServiceResult:
        start = time.perf_counter()
        timings: dict[str, float] = {}
        out_dir.mkdir(parents=True, exist_ok=True)
        step = self.options.on_step or (lambda message: None)
        policy = self.options.license_policy()  # a bad --deny-licenses fails before any download
        with tempfile.TemporaryDirectory(prefix=f".{self.top}.", dir=out_dir) as tmp:
            if houses is None:
                houses = self.plan.resolve(Path(tmp) / "wheels", self.options.wheel_cache, step)
            timings["wheels"] = time.perf_counter() - start
            sbom = self.sbom(houses, policy)  # the gate, before anything is written
            step(f"writing {self.tarball_name}")
            members = self.members(houses, Path(tmp), sbom)
            tarball = out_dir / self.tarball_name
            digest = write_tar_gz(tarball, members)
            sizes = {m.name: m.size() for m in members}
        wheels = [size for name, size in sizes.items() if name.endswith(".whl")]
        timings["archive"] = time.perf_counter() - start - timings["wheels"]
        (out_dir / f"{self.tarball_name}.sha256").write_text(f"{digest}  {self.tarball_name}\n", encoding="utf-8")
        problems = unsafe_members(tarball)
        timings["total"] = time.perf_counter() - start
        return OnpremServiceResult(
            tarball=tarball, sha256=digest, size=tarball.stat().st_size, content_size=sum(sizes.values()),
            wheels_size=sum(wheels), wheel_count=len(wheels), name=self.name, version=self.context(houses).version,
            python=self.plan.python, platform=self.plan.platform.name, top=self.top, problems=problems,
            timings=timings, plan=self.plan, license_warnings=sbom.warnings)

    def sbom(self, houses: dict[str, Wheelhouse], policy: LicensePolicy) -> ServiceSbom:
        return service_sbom(self.plan, houses, policy, kind="onprem", what=f"the tarball {self.tarball_name}")

    def members(self, houses: dict[str, Wheelhouse], tmp: Path, sbom: ServiceSbom | None = None) -> list[Member]:
        """Every file of the tarball, SHA256SUMS last computed over all the others; the SBOM (`sbom`, else that of
        `houses` with no license denied) under sbom/."""
        ctx = self.context(houses)
        top = self.top
        service_file = tmp / "mlship.toml"
        self.plan.write_service_file(service_file, bundle_root=Path("."),
                                     python=lambda env: f"../envs/{env}/bin/python")
        files = [Member(f"{top}/app/mlship.toml", data=service_file.read_bytes())]
        files += [Member(f"{top}/app/{BUNDLE_RUNTIME_NAME}/{path.relative_to(RUNTIME_DIR).as_posix()}", source=path)
                  for path in sorted(RUNTIME_DIR.rglob("*"))
                  if path.is_file() and not any(part.endswith(_SKIP) for part in path.parts)]
        for planned in self.plan.models:
            bundle = planned.model.bundle
            files += [Member(f"{top}/app/{planned.folder}/{rel}", source=bundle / rel)
                      for rel in [MANIFEST_NAME, *sorted(planned.manifest.artifacts)]]
        for env, house in houses.items():
            files.append(Member(f"{top}/envs/{env}/{LOCK_FILE}", data=house.lock_text().encode()))
            files += [Member(f"{top}/envs/{env}/wheels/{w.filename}", source=house.directory / w.filename)
                      for w in house.lock]
        documents = (sbom or self.sbom(houses, LicensePolicy())).documents()
        files += [Member(f"{top}/{ONPREM_FILES[fmt]}", data=data) for fmt, data in documents.items()]
        return with_installer(top, ctx, files, guide="INSTALL.service.txt.jinja")

    def context(self, houses: dict[str, Wheelhouse]) -> OnpremContext:
        plan = self.plan
        first = plan.models[0]
        method = first.manifest.method_names[0]
        listing = ", ".join(p.label for p in plan.models)
        wheels = {(w.name, w.version): w for house in houses.values() for w in house.lock}
        envs = [env.name for env in plan.environments]
        return OnpremContext(
            title=f"{self.name}: offline installer for a service of {len(plan.models)} models",
            name=self.name, version=f"({listing})", service=self.service, top=self.top,
            tarball=self.tarball_name, python=plan.python, machine=plan.platform.machine,
            platform=plan.platform.name, mlship_version=__version__, runtime_version=RUNTIME_VERSION,
            default_prefix=f"/opt/{self.service}", default_port=DEFAULT_PORT,
            launcher=f"bin/{self.service}-serve", unit=f"lib/systemd/{self.service}.service",
            env_file=f"etc/{self.service}.env",
            methods=[f"models/{first.model.name}/versions/{first.model.version}/{method}"],
            example_body=json.dumps({"instances": [first.manifest.input.example]}, ensure_ascii=False),
            wheels=[{"name": w.name, "version": w.version, "filename": w.filename, "sha256": w.sha256}
                    for _, w in sorted(wheels.items())],
            environments=envs, model_specs=[f"{p.environment}:{p.folder}" for p in plan.models],
            models=[p.label for p in plan.models], venvs="envs", front_venv=f"envs/{envs[0]}",
        )


def build_onprem_service(path: Path, options: OnpremOptions) -> OnpremServiceResult:
    """Resolve every environment of the service file at PATH and write the installer tarball into options.output."""
    return OnpremServiceBuilder.from_file(path, options).build(options.output)
