"""The native builder of `--target docker`: the image written by mlship itself, no engine anywhere (docs/DOCKER.md
"The native builder").

base layers (reused as they are) + the venv (the locked wheels installed by _native_venv.py) + the runtime and
notebook's modules (and /etc/passwd with the service's user) + the model (mlship.json, predictor.py, golden
cases, artifacts, lock):
so a model-only change makes one new layer. The config carries what the Dockerfile's final stage says (user,
entrypoint, env, port, healthcheck, labels), taken from the same DockerfileContext, so both builders make the
same image. The image is written as one tar (--output) and/or pushed (--push) by the registry client.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import BuildError
from ._docker_context import APP_DIR, VENV, DockerfileContext, dockerfile_context
from ._native_venv import make_venv, venv_key
from ._oci import (
    BlobStore,
    Descriptor,
    Entry,
    Image,
    Layer,
    make_image,
    tree_entries,
    write_archive,
    write_layer,
)
from ._oci_base import BaseImage, check_python, resolve_base
from ._registry import Counters, RegistryClient, find_credentials, split_reference
from .options import cache_dir
from .wheelhouse import Platform, Wheelhouse

if TYPE_CHECKING:
    from ._docker_build import _Plan

# In the code layer: what changes with mlship or the notebook's helper modules, not with a retrained model.
# predictor.py goes with the model: it names the notebook's sha256, which any retraining edit changes.
_CODE = ("mlship_runtime", "code")
_SKIP = ("__pycache__", ".DS_Store")
BASE_DIGEST_LABEL = "org.opencontainers.image.base.digest"
NOT_RUN = "not run: the native builder runs nothing (the golden cases were replayed when the bundle was packaged; "


class FinalStage(Protocol):
    """What image_config reads of a Dockerfile's final stage: DockerfileContext (one bundle) and
    ServiceDockerfile (a service file) both have it."""

    @property
    def uid(self) -> int: ...
    @property
    def port(self) -> int: ...
    @property
    def app_dir(self) -> str: ...
    @property
    def passwd_line(self) -> str: ...
    @property
    def start_period(self) -> int: ...
    @property
    def healthcheck(self) -> list[str]: ...
    @property
    def entrypoint(self) -> list[str]: ...
    @property
    def cmd(self) -> list[str]: ...


def default_oci_cache() -> Path:
    return cache_dir("MLSHIP_OCI_CACHE", "oci")


@dataclass
class NativeImage:
    """What the native builder made: the image, its base, the layers it wrote, where it went."""

    image: Image
    base: BaseImage
    base_python: str
    new_layers: list[Layer]
    reused: list[str]  # comments of our layers taken from the cache
    output: Path | None = None
    pushed: dict[str, str] = field(default_factory=dict)  # tag -> manifest digest
    uploads: dict[str, Counters] = field(default_factory=dict)
    kinds: list[str] = field(default_factory=lambda: ["venv", "code", "model"])  # what our layers hold, in order

    def to_json(self) -> dict[str, Any]:
        image = self.image
        return {
            "manifest_digest": image.digest,
            "config_digest": image.config.digest,
            "base": {"reference": self.base.reference, "digest": self.base.digest,
                     "layers": [layer.descriptor.digest for layer in self.base.layers]},
            "layers": [{"digest": layer.digest, "size": layer.size, "media_type": layer.media_type}
                       for layer in image.layers],
            "reused": self.reused,
            "output": str(self.output) if self.output else None,
            "pushed": self.pushed,
            "uploads": {tag: {"uploaded": c.uploaded, "existing": c.existing, "mounted": c.mounted,
                              "uploaded_bytes": c.uploaded_bytes} for tag, c in self.uploads.items()},
        }


def image_extras(plan: _Plan, wheelhouse: Wheelhouse, base: BaseImage) -> tuple[dict[str, bytes], dict[str, str]]:
    """Files (absolute path in the image -> bytes) for the last layer and labels for the config: the image's SBOM
    (after the license gate), with the base by its manifest digest and the Debian packages its dpkg status lists."""
    from ..sbom.document import BaseImage as SbomBase
    from ..sbom.packages import parse_dpkg_status

    sbom = plan.sbom(wheelhouse, (SbomBase(base.reference, base.digest, "manifest"),
                                  parse_dpkg_status(base.dpkg_status() or "")))
    return sbom.files, sbom.labels


@dataclass(frozen=True)
class CheckedBase:
    image: BaseImage
    executable: str  # the base's pythonX.Y on its PATH, e.g. /usr/bin/python3.11
    version: str  # its full version, e.g. 3.11.2


def prepare_base(plan: _Plan, auth: str | None) -> CheckedBase:
    """The base read into the cache and checked (Python, architecture): first, so a wrong base fails at once."""
    mark = time.perf_counter()
    checked = check_base(plan.base_image, plan.python, plan.platform, auth=auth, step=plan.step)
    plan.timings["base"] = time.perf_counter() - mark
    return checked


def check_base(reference: str, python: str, platform: Platform, *, auth: str | None, step: Any) -> CheckedBase:
    base = resolve_base(reference, BlobStore(default_oci_cache()), platform, auth=auth, on_step=step)
    executable, version = check_python(base, python, platform)
    return CheckedBase(base, executable, version)


def build_native(plan: _Plan, checked: CheckedBase, wheelhouse: Wheelhouse, meta: Any, *, output: Path | None,
                 push: bool, auth: str | None) -> NativeImage:
    base, executable, version = checked.image, checked.executable, checked.version
    store = base.store
    mark = time.perf_counter()
    files, labels = image_extras(plan, wheelhouse, base)
    ctx = dockerfile_context(meta, base_image=plan.base_image, python=plan.python, wheelhouse=wheelhouse)
    venv, cached = _venv_layer(store, wheelhouse, python=plan.python, executable=executable, version=version,
                               step=plan.step)
    code = write_layer(store, [*_passwd(base, ctx), *_bundle_entries(plan.bundle, code=True)],
                       f"COPY {plan.bundle.name}/ {APP_DIR}/ (runtime and code) # mlship")
    model = write_layer(store, [*_bundle_entries(plan.bundle, code=False), *_extra_entries(files)],
                        f"COPY {plan.bundle.name}/ {APP_DIR}/ (model) # mlship")
    ours = [venv, code, model]
    # The engine build's label holds the hash of its context; here, of the layers mlship adds.
    build_hash = "sha256:" + hashlib.sha256("".join(layer.diff_id for layer in ours).encode()).hexdigest()
    ctx = dockerfile_context(meta, base_image=plan.base_image, python=plan.python, wheelhouse=wheelhouse,
                             context_hash=build_hash)
    config = image_config(base, ctx, ours, {**dict(ctx.labels), BASE_DIGEST_LABEL: base.digest, **labels},
                          env=bundle_env(ctx))
    image = make_image(store, config, [layer.descriptor for layer in (*base.layers, *ours)])
    plan.timings["layers"] = time.perf_counter() - mark
    result = NativeImage(image, base, version, ours, ["venv"] if cached else [])
    deliver(result, plan.tags, output=output, push=push, auth=auth, step=plan.step, timings=plan.timings)
    return result


def deliver(result: NativeImage, tags: list[str], *, output: Path | None, push: bool, auth: str | None, step: Any,
            timings: dict[str, float]) -> None:
    """Write the image as one tar (--output) and/or push it under every tag (--push)."""
    image = result.image
    if output is not None:
        mark = time.perf_counter()
        step(f"writing {output}")
        result.output = write_archive(image, output, tags)
        timings["output"] = time.perf_counter() - mark
    if push:
        mark = time.perf_counter()
        for tag in tags:
            result.pushed[tag], result.uploads[tag] = push_image(image, tag, result.base, auth=auth, step=step)
        timings["push"] = time.perf_counter() - mark


def _venv_layer(store: BlobStore, wheelhouse: Wheelhouse, *, python: str, executable: str, version: str,
                step: Any, venv: str = VENV) -> tuple[Layer, bool]:
    """The layer of `wheelhouse` installed into `venv`, from the cache when the same key made it before."""
    key = hashlib.sha256(venv_key(wheelhouse, venv=venv, executable=executable, version=version).encode()).hexdigest()
    known = store.root / "layers" / f"{key}.json"
    comment = f"installed {len(wheelhouse.lock)} locked wheels into {venv} # mlship"
    if known.is_file():
        data = json.loads(known.read_text(encoding="utf-8"))
        layer = Layer(Descriptor.from_json(data["descriptor"]), data["diff_id"], comment)
        if store.has(layer.descriptor.digest):
            step(f"venv layer of {venv} from the cache ({len(wheelhouse.lock)} wheels)")
            return layer, True
    step(f"installing {len(wheelhouse.lock)} wheels into {venv} (installer, no engine)")
    with tempfile.TemporaryDirectory(prefix="mlship-venv-") as tmp:
        root = Path(tmp)
        prefix = make_venv(wheelhouse, root, venv=venv, python=python, executable=executable, version=version)
        step(f"writing the venv layer of {venv}")
        layer = write_layer(store, tree_entries(prefix, venv), comment)
    known.parent.mkdir(exist_ok=True)
    known.write_text(json.dumps({"descriptor": layer.descriptor.to_json(), "diff_id": layer.diff_id}),
                     encoding="utf-8")
    return layer, False


def _passwd(base: BaseImage, ctx: FinalStage) -> list[Entry]:
    passwd = base.passwd()
    if ctx.passwd_line not in passwd.splitlines():
        passwd = passwd + ("" if passwd.endswith("\n") or not passwd else "\n") + ctx.passwd_line + "\n"
    return [Entry("etc", "dir", 0o755), Entry("etc/passwd", "file", 0o644, data=passwd.encode())]


def tree_files(root: Path, prefix: str) -> list[Entry]:
    """tree_entries without caches and mlship's temporary files (what the engine's context leaves out)."""
    return [entry for entry in tree_entries(root, prefix)
            if not any(part in _SKIP or part.endswith((".pyc", ".tmp")) or part.startswith(".mlship-")
                       for part in entry.path.split("/"))]


def _bundle_entries(bundle: Path, *, code: bool) -> list[Entry]:
    """The bundle's members under /app: the code layer's (runtime, code/) or the model's (the rest)."""
    entries = []
    app = APP_DIR.strip("/")
    for entry in tree_files(bundle, app):
        parts = entry.path.split("/")
        if len(parts) == 1:
            entries.append(entry)  # /app itself, in both layers
            continue
        top = parts[1]
        if (top in _CODE) == code:
            entries.append(entry)
    return entries


def _extra_entries(files: dict[str, bytes]) -> list[Entry]:
    entries = []
    for path, data in sorted(files.items()):
        parts = path.strip("/").split("/")
        entries += [Entry("/".join(parts[:depth]), "dir", 0o755) for depth in range(1, len(parts))]
        entries.append(Entry("/".join(parts), "file", 0o644, data=data))
    return entries


def bundle_env(ctx: DockerfileContext) -> list[tuple[str, str]]:
    """The ENV of templates/Dockerfile.jinja's final stage."""
    return [("PATH", f"{ctx.venv}/bin:$PATH"), ("PYTHONPATH", ctx.app_dir), ("PYTHONDONTWRITEBYTECODE", "1"),
            ("PYTHONUNBUFFERED", "1"), ("HOME", ctx.home)]


def image_config(base: BaseImage, ctx: FinalStage, layers: list[Layer], labels: dict[str, str], *,
                 env: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The image config the Dockerfile's final stage gives (its ENV as `env`, where ":$PATH" is the base's PATH),
    on the base's own config."""
    base_config = dict(base.config.get("config") or {})
    second = 1_000_000_000
    config = {
        **{k: v for k, v in base_config.items() if k not in ("Healthcheck", "OnBuild")},
        "User": f"{ctx.uid}:0",
        "ExposedPorts": {**(base_config.get("ExposedPorts") or {}), f"{ctx.port}/tcp": {}},
        "Env": _merged_env(list(base_config.get("Env") or []), env),
        "Entrypoint": list(ctx.entrypoint),
        "Cmd": list(ctx.cmd),
        "WorkingDir": ctx.app_dir,
        "Labels": {**(base_config.get("Labels") or {}), **labels},
        "StopSignal": "SIGTERM",
        "Healthcheck": {"Test": ["CMD", *ctx.healthcheck], "Interval": 10 * second, "Timeout": 5 * second,
                        "StartPeriod": ctx.start_period * second, "Retries": 3},
    }
    created = labels.get("org.opencontainers.image.created") or base.config.get("created") or "1980-01-01T00:00:00Z"
    history = list(base.config.get("history") or [])
    history += [{"created": created, "created_by": layer.comment} for layer in layers]
    image: dict[str, Any] = {
        "architecture": base.architecture,
        "os": base.config.get("os", "linux"),
        "created": created,
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in (*base.layers, *layers)]},
        "history": history,
    }
    if base.config.get("variant"):
        image["variant"] = base.config["variant"]
    return image


def _merged_env(merged: list[str], given: Sequence[tuple[str, str]]) -> list[str]:
    path = next((e.split("=", 1)[1] for e in merged if e.startswith("PATH=")), "")
    for name, value in given:
        # As Docker's ENV: a variable the base sets is replaced where it stands, a new one is appended.
        entry = f"{name}={value.replace(':$PATH', f':{path}' if path else '')}"
        at = next((i for i, e in enumerate(merged) if e.split("=", 1)[0] == name), None)
        if at is None:
            merged.append(entry)
        else:
            merged[at] = entry
    return merged


def push_image(image: Image, tag: str, base: BaseImage, *, auth: str | None, step: Any) -> tuple[str, Counters]:
    """Upload the blobs the repository lacks (the base's mounted from its repository on the same registry), then
    put the manifest under the tag; returns its digest and what was uploaded."""
    ref = split_reference(tag)
    client = RegistryClient(ref, find_credentials(ref.registry, auth))
    base_ref = base.registry_ref
    base_digests = {layer.descriptor.digest for layer in base.layers}
    step(f"pushing {ref.full} to {client.host}")
    for blob in (*image.layers, image.config):
        mount = base_ref.repository if base_ref and base_ref.registry == ref.registry and \
            blob.digest in base_digests and base_ref.repository != ref.repository else None
        client.push_blob(image.store, blob.digest, mount_from=mount)
    from ._oci import MANIFEST_TYPE

    digest = client.put_manifest(image.manifest, MANIFEST_TYPE, ref.tag)
    counters = client.counters
    step(f"pushed {ref.full}@{digest}: {len(counters.uploaded)} blob(s) uploaded "
         f"({counters.uploaded_bytes / 1e6:.1f} MB), {len(counters.existing) + len(counters.mounted)} already there")
    return digest, counters


def describe(result: NativeImage) -> list[tuple[str, str]]:
    image = result.image
    rows = [("builder", "native (no engine)"),
            ("base digest", result.base.digest),
            ("image", f"{image.digest} (manifest), config {image.config.digest}"),
            ("layers", f"{len(result.base.layers)} of the base + {', '.join(result.kinds)}"
                       + (f" ({', '.join(result.reused)} from the cache)" if result.reused else "")),
            ("size", f"{image.size / 1e6:.1f} MB compressed")]
    if result.output:
        rows.append(("output", f"{result.output} (docker load -i FILE, podman load, skopeo oci-archive:/docker-archive:)"))
    for tag, digest in result.pushed.items():
        counters = result.uploads[tag]
        rows.append((f"pushed {tag}", f"{digest} ({len(counters.uploaded)} blob(s) uploaded, "
                                      f"{len(counters.existing) + len(counters.mounted)} already there)"))
    return rows


def check_options(builder: str, *, output: Path | None, context_only: Path | None) -> None:
    if builder not in ("auto", "native", "engine"):
        raise BuildError(f"--builder {builder!r} is not a builder", hint="use --builder native, engine or auto")
    if builder == "engine" and output is not None:
        raise BuildError("--output is written by the native builder", hint="drop --builder engine, or --output")
    if builder == "native" and context_only is not None:
        raise BuildError("--context-only writes a build context for another builder, not --builder native",
                         hint="drop one of them")
