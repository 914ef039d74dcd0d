"""`mlship build --target docker mlship.toml`: one image serving every model of a service file (docs/DOCKER.md
"A service: several models, one image").

The steps of the one-bundle build, for several bundles: the environments are grouped and each one's wheelhouse
resolved on the host (_service_plan.py), the license gate runs over every environment's wheels and the image's
SBOM is written (_service_sbom.py), the context is written (_docker_service_context.py), the engine builds it, and the smoke test replays every model's golden cases through the front's /models/NAME/versions/VERSION
routes. The one-bundle path (_docker_build.py) is unchanged. With --builder native, or auto when no engine
answers, _native_service.py writes the same image without an engine.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DockerUnavailable
from ..sbom.artifacts import IMAGE_FILES, image_files
from ..sbom.document import BaseImage
from ._docker_build import check_tag, default_tag
from ._docker_engine import (
    _STEP_FROM,
    BuildLog,
    build_image,
    check_base_python,
    connect,
    ensure_image,
    push_tag,
    remove_image,
    remove_stage_images,
    superseded_stages,
    tag_image,
)
from ._docker_sbom import base_image as base_image_of
from ._docker_sbom import debian_packages
from ._docker_service_context import stage_name, write_service_context
from ._docker_smoke import SmokeModel, SmokeResult, parity_json, smoke_rows, smoke_test
from ._service_plan import ServicePlan
from ._service_sbom import service_sbom
from .wheelhouse import parse_platform

if TYPE_CHECKING:
    from ._native_build import NativeImage
    from .docker import DockerOptions


@dataclass
class DockerServiceResult:
    plan: ServicePlan
    base_image: str
    platform: str
    context_hash: str
    wheels: dict[str, int]  # environment -> how many wheels it installs
    context_dir: Path | None = None
    image_id: str | None = None
    tags: list[str] = field(default_factory=list)
    size: int | None = None
    base_python: str | None = None
    layers: list[str] = field(default_factory=list)
    build_log: BuildLog | None = None
    smoke: SmokeResult | None = None
    kept: bool = True
    stages: list[str] = field(default_factory=list)  # the environments' build-stage images, kept as the cache
    removed_stages: list[str] = field(default_factory=list)
    digests: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    builder: str = "engine"
    native: NativeImage | None = None  # what the native builder made (_native_service.py)
    sbom: dict[str, str] = field(default_factory=dict)  # format -> path in the image
    sbom_summary: str = ""
    license_warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.smoke is None or self.smoke.ok

    def rows(self) -> list[tuple[str, str]]:
        rows = self.plan.rows()
        base = f"{self.base_image} (Python {self.base_python})" if self.base_python else self.base_image
        rows.append(("base image", base))
        rows.append(("wheels", ", ".join(f"{env}: {count}" for env, count in self.wheels.items())))
        rows.append(("context hash" if self.native is None else "build hash", self.context_hash))
        if self.sbom:
            rows.append(("sbom", f"{', '.join(self.sbom.values())} ({self.sbom_summary})"))
        rows.extend(("license", warning) for warning in self.license_warnings)
        if self.context_dir is not None:
            rows.append(("context", f"{self.context_dir} (build it with: docker build {self.context_dir})"))
        if self.native is not None:
            from ._native_build import NOT_RUN, describe

            rows.extend(describe(self.native))
            rows.append(("smoke test", f"{NOT_RUN}`mlship verify mlship.toml --url URL` replays them against a "
                                       "container of the image)"))
        elif self.image_id:
            state = "" if self.kept else " (removed: it failed its smoke test; --keep-failed keeps it)"
            rows.append(("image", f"{self.image_id}{state}"))
            rows.append(("tags", ", ".join(self.tags)))
            rows.append(("size", "?" if self.size is None else f"{self.size / 1e6:.1f} MB"))
        if self.build_log:
            log = self.build_log
            rows.append(("build", f"{len(log.steps)} steps, {len(log.cached)} from cache, "
                                  f"{self.timings.get('build', 0):.1f}s"))
        if self.native is None:
            rows.extend(smoke_rows(self.smoke, built=bool(self.image_id)))
            rows.extend((f"pushed {tag}", digest) for tag, digest in self.digests.items())
        rows.append(("time", ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items())))
        return rows

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "builder": self.builder,
            "native": None if self.native is None else self.native.to_json(),
            "service": self.plan.to_json(),
            "platform": self.platform,
            "base_image": self.base_image,
            "base_python": self.base_python,
            "context_hash": self.context_hash,
            "context_dir": str(self.context_dir) if self.context_dir else None,
            "wheels": self.wheels,
            "image": None if not self.image_id else {
                "id": self.image_id, "tags": self.tags, "size": self.size, "layers": self.layers,
                "kept": self.kept,
            },
            "build": None if not self.build_log else {
                "steps": self.build_log.steps, "cached": self.build_log.cached, "stages": self.stages,
                "removed_stages": self.removed_stages,
            },
            "digests": self.digests,
            "sbom": self.sbom,
            "license_warnings": self.license_warnings,
            "parity": parity_json(self.smoke),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }


def build_docker_service(path: Path, options: DockerOptions) -> DockerServiceResult:
    """Build the service file at PATH into one image, smoke-test every model in it, push it."""
    from ._native_build import check_options

    started = time.perf_counter()
    timings: dict[str, float] = {}
    check_options(options.builder, output=options.output, context_only=options.context_only)
    platform = parse_platform(options.platform)
    plan = ServicePlan.from_file(Path(path), platform)
    tags = options.tags or [default_tag(plan.service.name, "latest")]
    for tag in tags:
        check_tag(tag)
    base_image = options.base_image or f"python:{plan.python}-slim"
    step = options.on_step or (lambda message: None)
    policy = options.license_policy()  # a bad --deny-licenses fails here, before any download
    native = options.context_only is None and (
        options.builder == "native" or (options.builder == "auto" and options.output is not None))
    client = None
    if options.context_only is None and not native:
        try:
            client = connect()  # before any download: no daemon fails in a second, with its hint
        except DockerUnavailable as unavailable:
            if options.builder == "engine":
                raise
            step(f"{unavailable.message}: building natively (--builder native)")
            native = True
    if native:
        from ._native_service import build_native_service

        result = build_native_service(plan, options, tags=tags, base_image=base_image, policy=policy, step=step)
        result.timings["total"] = time.perf_counter() - started
        return result
    try:
        base_python = None
        base, debian = BaseImage(base_image, None), []  # unknown for --context-only: no engine to ask
        if client is not None:
            mark = time.perf_counter()
            base_info = ensure_image(client, base_image, platform, step)
            step(f"checking the Python of {base_image}")
            base_python = check_base_python(client, base_image, plan.python, platform).version
            base, debian = base_image_of(base_image, base_info), debian_packages(client, base_image)
            timings["base check"] = time.perf_counter() - mark
        with tempfile.TemporaryDirectory(prefix="mlship-service-") as tmp:
            mark = time.perf_counter()
            houses = plan.resolve(Path(tmp) / "wheels", options.wheel_cache, step)
            timings["wheels"] = time.perf_counter() - mark
            # The gate before the context is written or anything built: a denied license leaves no image behind.
            sbom = service_sbom(plan, houses, policy, kind="image", what=f"the image {tags[0]}", base=base,
                                debian=debian)
            files, labels = image_files(sbom.contents)
            context = options.context_only.resolve() if options.context_only else Path(tmp) / "context"
            step(f"writing the build context ({len(plan.models)} models, {len(plan.environments)} environments)")
            digest = write_service_context(context, plan, houses, base_image=base_image, sbom=files,
                                           sbom_labels=labels)
            result = DockerServiceResult(plan, base_image, platform.docker, digest,
                                         {env: len(house.lock) for env, house in houses.items()},
                                         base_python=base_python, timings=timings, sbom=dict(IMAGE_FILES),
                                         sbom_summary=sbom.summary, license_warnings=sbom.warnings)
            if client is None:
                result.context_dir = context
            else:
                mark = time.perf_counter()
                result.build_log = build_image(client, context, tags[0], platform, step)
                timings["build"] = time.perf_counter() - mark
        if client is not None:
            _finish(client, result, tags, options, step)
    finally:
        if client is not None:
            client.close()
    timings["total"] = time.perf_counter() - started
    return result


def _finish(client: Any, result: DockerServiceResult, tags: list[str], options: DockerOptions, step: Any) -> None:
    """Tag, smoke-test, clean up the superseded build stages, push."""
    log = result.build_log
    assert log is not None and log.image_id is not None
    image_id = log.image_id
    tag_image(client, image_id, tags)
    info = client.api.inspect_image(image_id)
    result.image_id, result.tags, result.size = image_id, tags, int(info.get("Size", 0))
    result.layers = list(info.get("RootFS", {}).get("Layers", []))
    plan = result.plan
    if options.test:
        mark = time.perf_counter()
        models = [SmokeModel(p.label, p.model.bundle, f"/models/{p.model.name}/versions/{p.model.version}",
                             p.manifest.method_names[0]) for p in plan.models]
        result.smoke = smoke_test(client, image_id, plan.models[0].model.bundle, step, models=models)
        result.timings["test"] = time.perf_counter() - mark
    if not result.ok and not options.keep_failed:
        remove_image(client, image_id, tags)
        result.kept = False
    leaves = stage_leaves(log)
    for env, leaf in zip((env.name for env in plan.environments), leaves, strict=False):
        name = stage_name(plan.service.name, env)
        result.removed_stages += remove_stage_images(client, superseded_stages(client, name, keep=leaf))
    if options.build_cache:
        result.stages = leaves
    else:
        result.removed_stages += remove_stage_images(client, leaves)
    if result.ok and options.push:
        mark = time.perf_counter()
        result.digests = {tag: push_tag(client, tag, step) for tag in tags}
        result.timings["push"] = time.perf_counter() - mark


def stage_leaves(log: BuildLog) -> list[str]:
    """The image each build stage ended with (its LABEL step), in Dockerfile order; the final stage excluded."""
    froms = [i for i, line in enumerate(log.steps) if _STEP_FROM.match(line)]
    leaves = []
    for start, end in zip(froms, froms[1:], strict=False):
        last = end - 1
        if last > start and last in log.ids:
            leaves.append(log.ids[last])
    return leaves
