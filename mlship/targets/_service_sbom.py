"""The SBOM and the license gate of an artifact built from a service file (docs/SERVICE.md "SBOM and licenses"):
every environment's locked wheels (each venv holds exactly its lock: the tools ensurepip adds are removed when
the lock does not name them), every model, and for an image the base by digest and its Debian packages.

The gate runs before anything is built or written, over every environment at once: a denied license is named
with the environments and models that need it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..sbom.artifacts import documents, service_contents, service_gate, wheel_packages
from ..sbom.document import BaseImage, Contents
from ..sbom.licenses import LicensePolicy
from ..sbom.packages import DebPackage
from ._service_plan import ServicePlan
from .wheelhouse import Wheelhouse


@dataclass(frozen=True)
class ServiceSbom:
    contents: Contents
    warnings: list[str]  # packages without a recognizable license (the gate's warnings)

    @property
    def summary(self) -> str:
        contents = self.contents
        counts = ", ".join(f"{env.name} {len(env.packages)}" for env in contents.environments)
        text = f"{len(contents.every_model)} models, Python packages {counts}"
        if contents.base is not None:
            text += f", {len(contents.debian)} Debian packages, base {contents.base.digest or 'by name'}"
        return text

    def documents(self) -> dict[str, bytes]:
        return documents(self.contents)


def service_sbom(plan: ServicePlan, houses: Mapping[str, Wheelhouse], policy: LicensePolicy, *, kind: str,
                 what: str, base: BaseImage | None = None, debian: Iterable[DebPackage] = ()) -> ServiceSbom:
    """The gate over every environment's wheels (LicenseError naming package, license, environments, models),
    then the artifact's Contents."""
    packages = {env: wheel_packages(house.directory, house.lock) for env, house in houses.items()}
    contents = service_contents(plan, packages, kind=kind, platform=plan.platform.docker, base=base, debian=debian)
    return ServiceSbom(contents, service_gate(contents, policy, what=what))
