"""`mlship build --target docker mlship.toml --builder native`: the image of a service file written by mlship
itself, no engine anywhere (docs/DOCKER.md "The native builder", docs/SERVICE.md "Images and tarballs").

The image templates/Dockerfile.service.jinja gives, from the pieces of the one-bundle native build
(_native_build.py: base check, venv layer and its cache, config, archive, push), in this order:

    the base's layers, as they are
    one venv per environment at /opt/envs/ENV (its locked wheels installed on the host, _native_venv.py)
    one layer per model: its bundle at /app/models/NAME/VERSION, in the service file's order
    the service layer: /app/mlship.toml (each model's python its environment's), /app/mlship_runtime (the front),
        /etc/passwd with the service's user
    the SBOM layer: /opt/mlship/sbom.{cdx,spdx}.json (_service_sbom.py: every model, every environment's wheels,
        the base by digest and its Debian packages), named by the labels

so a change to one model's artifacts changes that model's layer, the SBOM layer (it lists every model's digest)
and the config: the venvs, the other models and the service layer keep their digests and are not uploaded again.
The license gate runs over every environment's wheels before any layer is written.
The config is the final stage's (user, entrypoint, env, port, healthcheck, labels), taken from the same
ServiceDockerfile the engine's Dockerfile is rendered from, so both builders make the same image.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._paths import BUNDLE_RUNTIME_NAME, RUNTIME_DIR
from ..sbom.artifacts import IMAGE_FILES, IMAGE_SBOM_DIR, image_files
from ..sbom.document import BaseImage as SbomBase
from ..sbom.licenses import LicensePolicy
from ..sbom.packages import parse_dpkg_status
from ._docker_build import default_tag
from ._docker_context import APP_DIR
from ._docker_service import DockerServiceResult
from ._docker_service_context import (
    ENVS_ROOT,
    SERVICE_FILE,
    ServiceDockerfile,
    dockerfile,
    env_python,
)
from ._native_build import (
    BASE_DIGEST_LABEL,
    CheckedBase,
    NativeImage,
    _extra_entries,
    _passwd,
    _venv_layer,
    check_base,
    deliver,
    image_config,
    tree_files,
)
from ._oci import Layer, make_image, write_layer
from ._oci_base import BaseImage
from ._service_plan import ServicePlan
from ._service_sbom import service_sbom
from .wheelhouse import Wheelhouse

if TYPE_CHECKING:
    from .docker import DockerOptions

Step = Any  # Callable[[str], None]


def build_native_service(plan: ServicePlan, options: DockerOptions, *, tags: list[str], base_image: str,
                         policy: LicensePolicy, step: Step) -> DockerServiceResult:
    """Check the base, resolve every environment's wheels, apply the license gate, write the layers and the
    config, then --output (default: NAME-latest.image.tar beside the service file, without --push) and/or --push."""
    timings: dict[str, float] = {}
    output = options.output
    if output is None and not options.push:
        output = plan.source.parent / f"{default_tag(plan.service.name, 'latest').replace(':', '-')}.image.tar"
    mark = time.perf_counter()
    checked = check_base(base_image, plan.python, plan.platform, auth=options.registry_auth, step=step)
    timings["base"] = time.perf_counter() - mark
    with tempfile.TemporaryDirectory(prefix="mlship-service-") as tmp:
        mark = time.perf_counter()
        houses = plan.resolve(Path(tmp) / "wheels", options.wheel_cache, step)
        timings["wheels"] = time.perf_counter() - mark
        mark = time.perf_counter()
        base = checked.image
        sbom = service_sbom(plan, houses, policy, kind="image", what=f"the image {tags[0]}",
                            base=SbomBase(base.reference, base.digest, "manifest"),
                            debian=parse_dpkg_status(base.dpkg_status() or ""))
        native = _image(plan, checked, houses, image_files(sbom.contents), base_image=base_image, tmp=Path(tmp),
                        step=step)
        timings["layers"] = time.perf_counter() - mark
    deliver(native, tags, output=output.resolve() if output else None, push=options.push,
            auth=options.registry_auth, step=step, timings=timings)
    image = native.image
    layers = [layer.diff_id for layer in (*native.base.layers, *native.new_layers)]
    return DockerServiceResult(plan, base_image, plan.platform.docker, _build_hash(native.new_layers),
                               {env: len(house.lock) for env, house in houses.items()},
                               image_id=image.config.digest, tags=tags, size=image.size,
                               base_python=checked.version, layers=layers, digests=dict(native.pushed),
                               timings=timings, builder="native", native=native, sbom=dict(IMAGE_FILES),
                               sbom_summary=sbom.summary, license_warnings=sbom.warnings)


def _image(plan: ServicePlan, checked: CheckedBase, houses: dict[str, Wheelhouse],
           sbom: tuple[dict[str, bytes], dict[str, str]], *, base_image: str, tmp: Path, step: Step) -> NativeImage:
    """The layers and the config; `sbom`: the SBOM's files by their path in the image, and the labels naming them."""
    base = checked.image
    store = base.store
    stage = dockerfile(plan, houses, base_image=base_image)
    ours, kinds, reused = [], [], []
    for env in plan.environments:
        venv = f"{ENVS_ROOT}/{env.name}"
        layer, cached = _venv_layer(store, houses[env.name], python=plan.python, executable=checked.executable,
                                    version=checked.version, step=step, venv=venv)
        ours.append(layer)
        kinds.append(f"venv {env.name}")
        if cached:
            reused.append(f"venv {env.name}")
    app = APP_DIR.strip("/")
    for index, planned in enumerate(plan.models):
        step(f"writing the layer of {planned.label}")
        ours.append(write_layer(store, tree_files(planned.model.bundle, f"{app}/{planned.folder}"),
                                f"COPY layers/{index:02d}/ / ({planned.label}) # mlship"))
        kinds.append(planned.label)
    ours.append(_service_layer(plan, base, stage, tmp))
    kinds.append("service")
    files, sbom_labels = sbom
    ours.append(write_layer(store, _extra_entries(files), f"COPY sbom/ {IMAGE_SBOM_DIR}/ # mlship"))
    kinds.append("sbom")
    build_hash = _build_hash(ours)
    # The engine build's label holds the hash of its context; here, of the layers mlship adds.
    stage = dockerfile(plan, houses, base_image=base_image, digest=build_hash, sbom_dest=IMAGE_SBOM_DIR,
                       sbom_labels=sbom_labels)
    labels = {**dict(stage.labels), BASE_DIGEST_LABEL: base.digest}
    config = image_config(base, stage, ours, labels, env=service_env(stage))
    image = make_image(store, config, [layer.descriptor for layer in (*base.layers, *ours)])
    return NativeImage(image, base, checked.version, ours, reused, kinds=kinds)


def _service_layer(plan: ServicePlan, base: BaseImage, stage: ServiceDockerfile, tmp: Path) -> Layer:
    """/app/mlship.toml, the front's runtime beside it, and /etc/passwd with the service's user."""
    service_file = tmp / "mlship.toml"
    plan.write_service_file(service_file, bundle_root=Path(APP_DIR), python=env_python)
    app = APP_DIR.strip("/")
    entries = [*_passwd(base, stage), *tree_files(RUNTIME_DIR, f"{app}/{BUNDLE_RUNTIME_NAME}"),
               *_extra_entries({SERVICE_FILE: service_file.read_bytes()})]
    return write_layer(base.store, entries, "COPY layers/service/ / (service file and front) # mlship")


def service_env(stage: ServiceDockerfile) -> list[tuple[str, str]]:
    """The ENV of templates/Dockerfile.service.jinja's final stage."""
    return [("PATH", f"{stage.front_venv}/bin:$PATH"), ("MLSHIP_PID_FILE", stage.pid_file),
            ("PYTHONDONTWRITEBYTECODE", "1"), ("PYTHONUNBUFFERED", "1"), ("HOME", stage.home)]


def _build_hash(layers: list[Layer]) -> str:
    return "sha256:" + hashlib.sha256("".join(layer.diff_id for layer in layers).encode()).hexdigest()
