"""What the docker and onprem targets build from a service file (docs/SERVICE.md "Images and tarballs"): its
models, read through the bundle contract, grouped into environments (environments.py), each environment's
wheelhouse resolved on the host, and the service file the artifact carries.

Every bundle is read with its digests checked: a bundle the runtime would refuse to serve is refused here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import BuildError, MlshipError, bundle_errors
from ..runtime import _contract as contract
from ..runtime._contract import Manifest
from ..runtime._service import Service, ServiceError, ServiceModel, read_service, write_service
from .environments import Environment, Grouping, Member, group_environments, parse_pins
from .wheelhouse import Platform, Wheelhouse, build_wheelhouse, bundle_python, bundle_requirements

Step = Callable[[str], None]


@dataclass(frozen=True)
class PlannedModel:
    model: ServiceModel
    manifest: Manifest
    environment: str  # the name of its environment, "env1"...

    @property
    def label(self) -> str:
        return f"{self.model.name} {self.model.version}"

    @property
    def folder(self) -> str:
        """Where the bundle goes, relative to the service's folder: models/NAME/VERSION (both URL-safe segments,
        checked by read_service, so nested folders never collide the way NAME-VERSION could)."""
        return f"models/{self.model.name}/{self.model.version}"


@dataclass
class ServicePlan:
    source: Path
    service: Service
    models: list[PlannedModel]
    grouping: Grouping
    python: str  # major.minor of every bundle
    platform: Platform

    @classmethod
    def from_file(cls, path: Path, platform: Platform) -> ServicePlan:
        try:
            service = read_service(path)
        except ServiceError as exc:
            raise BuildError(exc.message, hint=exc.hint) from None
        manifests = []
        for model in service.models:
            with bundle_errors(model.bundle):
                manifests.append(contract.read(model.bundle).manifest)
        members = [Member(f"{m.name} {m.version}", bundle_python(manifest),
                          _pins(m.bundle, manifest)) for m, manifest in zip(service.models, manifests, strict=True)]
        grouping = group_environments(members)
        pythons = sorted({env.python for env in grouping.environments})
        if len(pythons) > 1:
            which = "; ".join(f"Python {py}: " + ", ".join(m.label for m in members if m.python == py)
                              for py in pythons)
            raise BuildError(f"the bundles of {path} were packaged under different Pythons ({which}); one image "
                             "or tarball runs one Python",
                             hint="package them again under one Python, or build a service file per Python")
        models = [PlannedModel(m, manifest, grouping.placement[member.label])
                  for m, manifest, member in zip(service.models, manifests, members, strict=True)]
        return cls(Path(path).absolute(), service, models, grouping, pythons[0], platform)

    @property
    def environments(self) -> tuple[Environment, ...]:
        return self.grouping.environments

    def resolve(self, dest: Path, cache_dir: Path | None, on_step: Step) -> dict[str, Wheelhouse]:
        """Each environment's wheelhouse in dest/ENV (resolved on the host: artifacts have no network)."""
        houses = {}
        for env in self.environments:
            on_step(f"wheels of {env.name} ({', '.join(env.members)})")
            houses[env.name] = build_wheelhouse(env.requirements(), python=self.python, platform=self.platform,
                                                dest=dest / env.name, cache_dir=cache_dir, on_step=on_step)
        return houses

    def write_service_file(self, path: Path, *, bundle_root: Path, python: Callable[[str], str]) -> Service:
        """The artifact's own service file at `path`: every bundle under bundle_root/models/NAME/VERSION, every
        model's `python` its environment's interpreter (`python(env name)`), the defaults kept."""
        models = tuple(replace(p.model, bundle=bundle_root / p.folder, python=python(p.environment))
                       for p in self.models)
        service = replace(self.service, models=models, source=None)
        write_service(service, path)
        return service

    def rows(self) -> list[tuple[str, str]]:
        rows = [("service", f"{self.service.name} ({self.source}): {len(self.models)} models")]
        for env in self.environments:
            rows.append((f"environment {env.name}", ", ".join(env.members)))
        for split in self.grouping.splits:
            rows.append(("split", split.describe()))
        return rows

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.service.name,
            "file": str(self.source),
            "models": [{"name": p.model.name, "version": p.model.version, "bundle": str(p.model.bundle),
                        "environment": p.environment} for p in self.models],
            "environments": [{"name": env.name, "python": env.python, "models": list(env.members),
                              "requirements": env.requirements()} for env in self.environments],
            "splits": [{"model": split.member, "environment": split.environment,
                        "conflicts": [{"environment": name, "package": c.package, "wanted": c.wanted,
                                       "found": c.found, "models": list(c.holders)}
                                      for name, conflicts in split.conflicts for c in conflicts],
                        "reason": split.describe()} for split in self.grouping.splits],
        }


def _pins(bundle: Path, manifest: Manifest) -> dict[str, str]:
    try:
        return parse_pins(bundle_requirements(bundle, manifest))
    except ValueError as exc:
        raise MlshipError(f"{bundle}: {exc}", hint="package the notebook again") from None


def relative_python(folder: str) -> Callable[[str], str]:
    """`python` for environments installed at FOLDER/ENV (a path relative to the service file, or absolute)."""
    return lambda env: os.path.join(folder, env, "bin", "python")
