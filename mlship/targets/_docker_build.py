"""How the docker target builds: bundle -> build context -> image -> smoke test -> (push) (docs/DOCKER.md).

The steps, each in its own module: the wheelhouse is resolved on the host (wheelhouse.py), the context is written
deterministically (_docker_context.py), the engine builds it through the docker SDK (_docker_engine.py), and a
container of the new image replays the golden cases over HTTP (_docker_smoke.py). docker.py declares the target.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..bundle.digest import bundle_digest
from ..errors import BuildError, DockerUnavailable, bundle_errors
from ..runtime import _contract as contract
from ..runtime._contract import Manifest
from ..sbom.artifacts import IMAGE_FILES, artifact_contents, gate, image_files, wheel_packages
from ..sbom.document import BaseImage
from ..sbom.licenses import LicensePolicy
from ..sbom.packages import DebPackage
from ._docker_context import CONTEXT_HASH_LABEL, ImageMetadata, write_context
from ._docker_engine import (
    BasePython,
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
from ._docker_smoke import SmokeResult, parity_json, smoke_rows, smoke_test
from .wheelhouse import (
    Platform,
    Wheelhouse,
    build_wheelhouse,
    bundle_python,
    bundle_requirements,
    parse_platform,
)

if TYPE_CHECKING:
    from ._native_build import NativeImage
    from .docker import DockerOptions

# A docker image reference: [registry[:port]/]path[:tag] with a lowercase path (distribution/reference).
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REFERENCE = re.compile(rf"^(?:[A-Za-z0-9.-]+(?::\d+)?/)?{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?$")


@dataclass
class BuildStage:
    """The build stage's image (wheels + pip install), which the final image does not contain: kept as the
    layer cache for the next build of the same dependencies, or removed; and the older stages removed."""

    image_id: str
    size: int  # with the base's layers, which it shares with the final image
    kept: bool
    reason: str
    removed: list[str] = field(default_factory=list)  # earlier build stages of this model

    def describe(self) -> str:
        state = "kept as the layer cache for rebuilds (--no-build-cache removes it)" if self.kept else "removed"
        return f"{self.image_id.removeprefix('sha256:')[:12]}, {self.size / 1e6:.1f} MB with the base: {state}" \
            + (f" ({self.reason})" if self.reason else "")

    def to_json(self) -> dict[str, Any]:
        return {"id": self.image_id, "size": self.size, "kept": self.kept, "reason": self.reason,
                "removed": self.removed}


@dataclass
class DockerResult:
    bundle: Path
    base_image: str
    platform: str
    context_hash: str
    lock_file: Path
    wheels: int
    context_dir: Path | None = None  # --context-only: where the context was written; no image
    image_id: str | None = None
    tags: list[str] = field(default_factory=list)
    size: int | None = None
    base_size: int | None = None
    base_python: str | None = None
    layers: list[str] = field(default_factory=list)
    build_log: BuildLog | None = None
    smoke: SmokeResult | None = None
    kept: bool = True  # False when a failed image was removed
    stage: BuildStage | None = None
    digests: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    builder: str = "engine"
    native: NativeImage | None = None
    sbom: dict[str, str] = field(default_factory=dict)  # format -> path in the image
    sbom_summary: str = ""
    license_warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.smoke is None or self.smoke.ok

    def rows(self) -> list[tuple[str, str]]:
        rows = [("bundle", str(self.bundle)), ("base image", self._base())]
        rows.append(("wheels", f"{self.wheels} locked in {self.lock_file}"))
        rows.append(("context hash" if self.native is None else "build hash", self.context_hash))
        if self.native is not None:
            from ._native_build import describe

            rows.extend(describe(self.native))
        if self.sbom:
            rows.append(("sbom", f"{', '.join(self.sbom.values())} ({self.sbom_summary})"))
        rows.extend(("license", warning) for warning in self.license_warnings)
        if self.context_dir is not None:
            rows.append(("context", f"{self.context_dir} (build it with: docker build {self.context_dir})"))
        if self.image_id and self.native is None:
            state = "" if self.kept else " (removed: it failed its smoke test; --keep-failed keeps it)"
            rows.append(("image", f"{self.image_id}{state}"))
            rows.append(("tags", ", ".join(self.tags)))
            rows.append(("size", self._size()))
        if self.build_log:
            log = self.build_log
            rows.append(("build", f"{len(log.steps)} steps, {len(log.cached)} from cache, "
                                  f"{self.timings.get('build', 0):.1f}s"))
        if self.stage:
            rows.append(("build stage", self.stage.describe()))
            if self.stage.removed:
                rows.append(("removed", f"{len(self.stage.removed)} earlier build stage(s) of this model"))
        rows.extend(self._smoke_rows())
        if self.native is None:
            rows.extend((f"pushed {tag}", digest) for tag, digest in self.digests.items())
        rows.append(("time", ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items())))
        return rows

    def _base(self) -> str:
        return f"{self.base_image} (Python {self.base_python})" if self.base_python else self.base_image

    def _size(self) -> str:
        if self.size is None:
            return "?"
        text = f"{self.size / 1e6:.1f} MB"
        if self.base_size is not None:
            text += f" (base {self.base_size / 1e6:.1f} MB + {(self.size - self.base_size) / 1e6:.1f} MB)"
        return text

    def _smoke_rows(self) -> list[tuple[str, str]]:
        if self.smoke is None and self.native is not None:
            from ._native_build import NOT_RUN

            return [("smoke test", f"{NOT_RUN}`docker run IMAGE verify /app` replays them in the image)")]
        return smoke_rows(self.smoke, built=bool(self.image_id))

    def to_json(self) -> dict[str, Any]:
        smoke = self.smoke
        return {
            "ok": self.ok,
            "builder": self.builder,
            "native": None if self.native is None else self.native.to_json(),
            "bundle": str(self.bundle),
            "platform": self.platform,
            "base_image": self.base_image,
            "base_python": self.base_python,
            "context_hash": self.context_hash,
            "context_dir": str(self.context_dir) if self.context_dir else None,
            "lock": str(self.lock_file),
            "wheels": self.wheels,
            "image": None if not self.image_id else {
                "id": self.image_id, "tags": self.tags, "size": self.size, "base_size": self.base_size,
                "layers": self.layers, "kept": self.kept,
            },
            "build": None if not self.build_log else {
                "steps": self.build_log.steps, "cached": self.build_log.cached,
                "stage": self.stage.to_json() if self.stage else None,
            },
            "digests": self.digests,
            "sbom": self.sbom,
            "license_warnings": self.license_warnings,
            "parity": parity_json(smoke),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }


def build_docker(bundle: Path, options: DockerOptions) -> DockerResult:
    """Build BUNDLE into an image (or only its build context), smoke-test it, push it (docs/DOCKER.md)."""
    started = time.perf_counter()
    from ._native_build import check_options

    check_options(options.builder, output=options.output, context_only=options.context_only)
    plan = _Plan.from_bundle(Path(bundle).resolve(), options)
    if options.context_only is not None:
        result = plan.write_context(options.context_only.resolve(), client=None, base=None)
        result.context_dir = options.context_only.resolve()
    elif options.builder == "native" or (options.builder == "auto" and options.output is not None):
        result = plan.build_native()
    else:
        try:
            client = connect()  # before any download: no daemon fails in a second, with its hint
        except DockerUnavailable as unavailable:
            if options.builder == "engine":
                raise
            plan.step(f"{unavailable.message}: building natively (--builder native)")
            result = plan.build_native()
        else:
            try:
                result = plan.build(client)
            finally:
                client.close()
    result.timings["total"] = time.perf_counter() - started
    return result


@dataclass
class _Plan:
    bundle: Path
    manifest: Manifest
    options: DockerOptions
    python: str
    platform: Platform
    base_image: str
    tags: list[str]
    timings: dict[str, float] = field(default_factory=dict)
    licenses: LicensePolicy = field(default_factory=LicensePolicy)  # the license gate (--deny-licenses)
    image_sbom: ImageSbom | None = None  # once sbom() has run

    @classmethod
    def from_bundle(cls, bundle: Path, options: DockerOptions) -> _Plan:
        with bundle_errors(bundle):
            manifest = contract.read(bundle).manifest
        python = bundle_python(manifest)
        tags = options.tags or [default_tag(manifest.name, manifest.version)]
        for tag in tags:
            check_tag(tag)
        # A bad --deny-licenses fails here, before any download.
        return cls(bundle, manifest, options, python, parse_platform(options.platform),
                   options.base_image or f"python:{python}-slim", tags, licenses=options.license_policy())

    def step(self, message: str) -> None:
        if self.options.on_step:
            self.options.on_step(message)

    def build(self, client: Any) -> DockerResult:
        mark = time.perf_counter()
        base_info = ensure_image(client, self.base_image, self.platform, self.step)
        self.step(f"checking the Python of {self.base_image}")
        base_python = check_base_python(client, self.base_image, self.python, self.platform)
        base_sbom = (base_image_of(self.base_image, base_info), debian_packages(client, self.base_image))
        self.timings["base check"] = time.perf_counter() - mark
        with tempfile.TemporaryDirectory(prefix="mlship-docker-") as tmp:
            result = self.write_context(Path(tmp) / "context", client=client, base=base_python, base_sbom=base_sbom)
        assert result.build_log is not None and result.build_log.image_id is not None
        image_id = result.build_log.image_id
        tag_image(client, image_id, self.tags)
        info = client.api.inspect_image(image_id)
        result.image_id, result.tags, result.size = image_id, self.tags, int(info.get("Size", 0))
        result.layers = list(info.get("RootFS", {}).get("Layers", []))
        result.base_size = int(base_info.get("Size", 0))
        if self.options.test:
            mark = time.perf_counter()
            result.smoke = smoke_test(client, image_id, self.bundle, self.step)
            self.timings["test"] = time.perf_counter() - mark
        if not result.ok and not self.options.keep_failed:
            remove_image(client, image_id, self.tags)
            result.kept = False
        result.stage = self.clean_stages(client, result.build_log, ok=result.ok)
        if result.ok and self.options.push:
            mark = time.perf_counter()
            result.digests = {tag: push_tag(client, tag, self.step) for tag in self.tags}
            self.timings["push"] = time.perf_counter() - mark
        return result

    def clean_stages(self, client: Any, log: BuildLog, *, ok: bool) -> BuildStage | None:
        """Remove mlship's own build-stage images (labelled dev.mlship.stage=build, never anything else): this
        build's after a failure or with --no-build-cache; otherwise keep it as the cache and remove only this
        model's earlier stages, which no later build can use (their dependencies changed)."""
        stage = log.stage_images()
        if not stage:
            return None
        leaf, leaf_cached = stage[-1]
        size = int(client.api.inspect_image(leaf).get("Size", 0))
        removed = remove_stage_images(client, superseded_stages(client, self.manifest.name, keep=leaf))
        if not ok and not leaf_cached:
            remove_stage_images(client, [leaf])
            return BuildStage(leaf, size, kept=False, reason="the image failed its checks", removed=removed)
        if not self.options.build_cache:
            remove_stage_images(client, [leaf])
            return BuildStage(leaf, size, kept=False, reason="--no-build-cache", removed=removed)
        return BuildStage(leaf, size, kept=True, reason="", removed=removed)

    def wheelhouse(self, tmp: Path) -> Wheelhouse:
        """Resolve the wheels on the host into tmp and record the lock in the bundle."""
        mark = time.perf_counter()
        wheelhouse = build_wheelhouse(bundle_requirements(self.bundle, self.manifest), python=self.python,
                                      platform=self.platform, dest=tmp / "wheelhouse",
                                      cache_dir=self.options.wheel_cache, on_step=self.step)
        wheelhouse.write_lock(self.bundle)
        self.timings["wheels"] = time.perf_counter() - mark
        return wheelhouse

    def build_native(self) -> DockerResult:
        """The image written by mlship itself: --output FILE (default beside the bundle) and/or --push."""
        from ._native_build import build_native, prepare_base

        options = self.options
        output = options.output
        if output is None and not options.push:
            output = self.bundle.parent / f"{default_tag(self.manifest.name, self.manifest.version).replace(':', '-')}.image.tar"
        base = prepare_base(self, options.registry_auth)
        with tempfile.TemporaryDirectory(prefix="mlship-wheels-") as tmp:
            wheelhouse = self.wheelhouse(Path(tmp))
            native = build_native(self, base, wheelhouse, image_metadata(self.bundle, self.manifest),
                                  output=output.resolve() if output else None, push=options.push,
                                  auth=options.registry_auth)
        image = native.image
        labels = json.loads(image.store.read(image.config.digest))["config"]["Labels"]
        return DockerResult(bundle=self.bundle, base_image=self.base_image, platform=self.platform.docker,
                            context_hash=labels[CONTEXT_HASH_LABEL],
                            lock_file=self.bundle.joinpath(*wheelhouse.lock_path.split("/")),
                            wheels=len(wheelhouse.lock), image_id=image.config.digest, tags=self.tags,
                            size=image.size, base_python=native.base_python,
                            layers=[layer.diff_id for layer in (*native.base.layers, *native.new_layers)],
                            digests=dict(native.pushed), timings=self.timings, builder="native", native=native,
                            **self._sbom_fields())

    def _sbom_fields(self) -> dict[str, Any]:
        sbom = self.image_sbom
        if sbom is None:
            return {}
        return {"sbom": dict(IMAGE_FILES), "sbom_summary": sbom.summary, "license_warnings": sbom.warnings}

    def write_context(self, context: Path, *, client: Any, base: BasePython | None,
                      base_sbom: tuple[BaseImage, list[DebPackage]] | None = None) -> DockerResult:
        """Resolve the wheels, apply the license gate, record the lock in the bundle, write the context with the
        image's SBOM; build it if given a client."""
        with tempfile.TemporaryDirectory(prefix="mlship-wheels-") as tmp:
            wheelhouse = self.wheelhouse(Path(tmp))
            lock_file = self.bundle.joinpath(*wheelhouse.lock_path.split("/"))
            mark = time.perf_counter()
            sbom = self.sbom(wheelhouse, base_sbom)
            self.step(f"writing the build context ({len(wheelhouse.lock)} wheels)")
            digest = write_context(context, self.bundle, wheelhouse, image_metadata(self.bundle, self.manifest),
                                   base_image=self.base_image, python=self.python, sbom=sbom.files,
                                   sbom_labels=sbom.labels)
            self.timings["context"] = time.perf_counter() - mark
        result = DockerResult(bundle=self.bundle, base_image=self.base_image, platform=self.platform.docker,
                              context_hash=digest, lock_file=lock_file, wheels=len(wheelhouse.lock),
                              base_python=base.version if base else None, timings=self.timings,
                              **self._sbom_fields())
        if client is not None:
            mark = time.perf_counter()
            result.build_log = build_image(client, context, self.tags[0], self.platform, self.step)
            self.timings["build"] = time.perf_counter() - mark
        return result


    def sbom(self, wheelhouse: Wheelhouse, base_sbom: tuple[BaseImage, list[DebPackage]] | None) -> ImageSbom:
        """The license gate over the wheels the image installs, then the image's SBOM: those wheels (its venv
        holds exactly the lock), the base image and its Debian packages (unknown for --context-only)."""
        packages = wheel_packages(wheelhouse.directory, wheelhouse.lock)
        warnings = gate(packages, self.licenses, what=f"the image {self.tags[0]}")
        base, debian = base_sbom or (BaseImage(self.base_image, None), [])
        with bundle_errors(self.bundle):
            bundle = contract.read(self.bundle)
        contents = artifact_contents(bundle, "image", packages, platform=self.platform.docker, base=base,
                                     debian=debian)
        files, labels = image_files(contents)
        summary = f"{len(packages)} Python packages, {len(debian)} Debian packages, base {base.digest or 'by name'}"
        self.image_sbom = ImageSbom(files, labels, summary, warnings)
        return self.image_sbom


@dataclass(frozen=True)
class ImageSbom:
    files: dict[str, bytes]  # absolute path in the image -> content
    labels: dict[str, str]
    summary: str
    warnings: list[str]


def default_tag(name: str, version: str) -> str:
    """NAME:VERSION, made into a valid reference (lowercase; other characters become '-')."""
    name = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("._-") or "model"
    version = re.sub(r"[^\w.-]+", "-", version).lstrip(".-") or "latest"
    return f"{name}:{version[:128]}"


def check_tag(tag: str) -> None:
    if not _REFERENCE.match(tag):
        raise BuildError(f"--tag {tag!r} is not a valid image reference",
                         hint="use [REGISTRY[:PORT]/]NAME[:TAG] with a lowercase NAME, e.g. "
                         "registry.local:5000/iris:1.2")


def image_metadata(bundle: Path, manifest: Manifest) -> ImageMetadata:
    source = manifest.source
    notebook_sha = source.sha256 if source else ""
    revision, url = _git_origin(bundle)
    return ImageMetadata(
        name=manifest.name,
        version=manifest.version,
        created=manifest.created_at,
        revision=os.environ.get("MLSHIP_REVISION") or revision or notebook_sha,
        source=os.environ.get("MLSHIP_SOURCE") or url or (source.notebook if source else ""),
        bundle_digest=bundle_digest(bundle),
        notebook_sha256=notebook_sha,
        python=manifest.python.version,
        runtime_version=manifest.runtime_version,
    )


def _git_origin(bundle: Path) -> tuple[str | None, str | None]:
    """HEAD and origin URL of the git work tree holding the bundle (usually dist/ in the notebook's repo)."""
    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(["git", "-C", str(bundle), *args], capture_output=True, text=True, timeout=10,
                                  stdin=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError):
            return None
        return proc.stdout.strip() or None if proc.returncode == 0 else None

    url = git("config", "--get", "remote.origin.url")
    # Never put a credential from an https://user:token@host URL into a label.
    return git("rev-parse", "HEAD"), re.sub(r"//[^/@]+@", "//", url) if url else None

