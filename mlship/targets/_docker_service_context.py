"""The docker build context of a service (several bundles, one image), written deterministically.

    Dockerfile, .dockerignore
    envs/ENV/                       the locked wheels of each environment and its lock file
    layers/NN/app/models/NAME/VERSION/   one folder per model: the bundle, with its parent folders
    layers/service/app/             mlship.toml (the image's service file) and mlship_runtime/ (the front)
    sbom/                           the image's SBOM (sbom/artifacts.py IMAGE_FILES), the last layer

`COPY layers/NN/ /` puts a model's parent folders into its layer with the context's fixed times: an unchanged
model gives a byte-identical layer (the same digest) in every build, wherever it sits in the Dockerfile, whereas
`COPY bundle/ /app/models/NAME/VERSION/` would stamp the folders it creates with the time of the build.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import __version__
from .._paths import BUNDLE_RUNTIME_NAME, RUNTIME_DIR
from ..bundle.digest import bundle_digest
from ..bundle.render import make_environment
from ..errors import BuildError
from ._docker_context import (
    _PACKAGE_DIRS_TO_DROP,
    _VENV_TOOLS,
    APP_DIR,
    CONTEXT_HASH_LABEL,
    HOME,
    LABEL_PREFIX,
    PORT,
    SBOM_DIR,
    UID,
    _ignore,
    _write_sbom,
    context_hash,
    dockerfile_string,
    lock_file_name,
    normalize_tree,
)
from ._docker_engine import NAME_LABEL, STAGE_LABEL, STAGE_VALUE
from ._service_plan import ServicePlan
from .wheelhouse import Wheelhouse

TEMPLATE = "Dockerfile.service.jinja"
ENVS_ROOT = "/opt/envs"
SERVICE_FILE = f"{APP_DIR}/mlship.toml"
PID_FILE = f"{HOME}/mlship.pid"
MODELS_LABEL = f"{LABEL_PREFIX}.models"
ENVIRONMENTS_LABEL = f"{LABEL_PREFIX}.environments"


def env_python(env: str) -> str:
    return f"{ENVS_ROOT}/{env}/bin/python"


def front_command(python: str, service_file: str) -> list[str]:
    """The multi-model front (docs/SERVICE.md), run in the folder that holds the runtime copied beside the
    service file (`-m mlship_runtime` imports it from the working folder). It imports no bundle code: every
    model's backend is started by the front with that model's own interpreter and digest-checked runtime."""
    return [python, "-B", "-m", BUNDLE_RUNTIME_NAME, "serve-service", service_file]


@dataclass(frozen=True)
class EnvStage:
    name: str
    venv: str
    wheels_dir: str
    lock_file: str
    remove_from_venv: list[str]
    stage_labels: list[tuple[str, str]]


@dataclass(frozen=True)
class ServiceDockerfile:
    """Everything templates/Dockerfile.service.jinja needs (data only)."""

    mlship_version: str
    name: str
    base_image: str
    python: str
    environments: list[EnvStage]
    models: list[str]
    model_layers: list[str]
    service_layer: str
    front_venv: str
    pid_file: str
    app_dir: str
    home: str
    uid: int
    port: int
    passwd_line: str
    drop_package_dirs: list[str]
    start_period: int
    healthcheck: list[str]
    entrypoint: list[str]
    cmd: list[str]
    labels: list[tuple[str, str]]
    sbom_dir: str = ""  # the context folder holding the SBOM ("" for none)
    sbom_dest: str = ""  # where it goes in the image


def stage_name(service: str, env: str) -> str:
    """The dev.mlship.name of an environment's build stage (superseded ones are removed by this name)."""
    return f"service:{service}:{env}"


def service_labels(plan: ServicePlan, base_image: str, digest: str,
                   sbom_labels: dict[str, str] | None = None) -> list[tuple[str, str]]:
    oci = "org.opencontainers.image"
    listing = ", ".join(p.label for p in plan.models)
    models = [{"name": p.model.name, "version": p.model.version, "environment": p.environment,
               "bundle_digest": bundle_digest(p.model.bundle)} for p in plan.models]
    envs = {env.name: list(env.members) for env in plan.environments}
    return [
        (f"{oci}.title", plan.service.name),
        (f"{oci}.description", f"mlship service {plan.service.name}: {listing}"),
        (f"{oci}.base.name", base_image),
        (MODELS_LABEL, json.dumps(models, separators=(",", ":"))),
        (ENVIRONMENTS_LABEL, json.dumps(envs, separators=(",", ":"))),
        (f"{LABEL_PREFIX}.version", __version__),
        (f"{LABEL_PREFIX}.python", plan.python),
        *sorted((sbom_labels or {}).items()),
        (CONTEXT_HASH_LABEL, digest),
    ]


def dockerfile(plan: ServicePlan, houses: dict[str, Wheelhouse], *, base_image: str, digest: str = "",
               sbom_dest: str = "", sbom_labels: dict[str, str] | None = None) -> ServiceDockerfile:
    """`sbom_dest`: the image folder the context's sbom/ goes to ("" for none); `sbom_labels` name its files."""
    front = env_python(plan.environments[0].name)
    stages = []
    for env in plan.environments:
        locked = {w.name for w in houses[env.name].lock}
        stages.append(EnvStage(env.name, f"{ENVS_ROOT}/{env.name}", f"envs/{env.name}",
                               lock_file_name(houses[env.name]), [t for t in _VENV_TOOLS if t not in locked],
                               [(STAGE_LABEL, STAGE_VALUE), (NAME_LABEL, stage_name(plan.service.name, env.name))]))
    readyz = f"http://127.0.0.1:{PORT}/readyz"
    return ServiceDockerfile(
        mlship_version=__version__, name=plan.service.name, base_image=base_image, python=f"python{plan.python}",
        environments=stages, models=[p.label for p in plan.models],
        model_layers=[f"layers/{index:02d}" for index in range(len(plan.models))], service_layer="layers/service",
        front_venv=f"{ENVS_ROOT}/{plan.environments[0].name}", pid_file=PID_FILE, app_dir=APP_DIR, home=HOME,
        uid=UID, port=PORT,
        passwd_line=f"mlship:x:{UID}:0:mlship model service:{HOME}:/usr/sbin/nologin",
        drop_package_dirs=list(_PACKAGE_DIRS_TO_DROP),
        # Every model loads and replays a golden case before the service is ready.
        start_period=180,
        healthcheck=[front, "-c", f"import urllib.request; urllib.request.urlopen('{readyz}', timeout=4)"],
        entrypoint=front_command(front, SERVICE_FILE),
        cmd=["--host", "0.0.0.0", "--port", str(PORT)],
        labels=service_labels(plan, base_image, digest, sbom_labels),
        sbom_dir=SBOM_DIR if sbom_dest else "",
        sbom_dest=sbom_dest,
    )


def render(context: ServiceDockerfile) -> str:
    env = make_environment()
    env.filters["dockerstr"] = dockerfile_string
    return str(env.get_template(TEMPLATE).render(asdict(context)))


def write_service_context(dest: Path, plan: ServicePlan, houses: dict[str, Wheelhouse], *, base_image: str,
                          sbom: dict[str, bytes] | None = None, sbom_labels: dict[str, str] | None = None) -> str:
    """Lay out the build context of `plan` in `dest` (new or empty); return its hash (the context-hash label).
    `sbom`: the image's SBOM files by their path in the image (one folder); `sbom_labels` name them."""
    if dest.exists() and any(dest.iterdir()):
        raise BuildError(f"{dest} is not empty", hint="give --context-only a new or empty directory")
    dest.mkdir(parents=True, exist_ok=True)
    for env in plan.environments:
        house = houses[env.name]
        wheels = dest / "envs" / env.name
        wheels.mkdir(parents=True)
        for locked in house.lock:
            shutil.copyfile(house.directory / locked.filename, wheels / locked.filename)
        (wheels / lock_file_name(house)).write_text(house.lock_text(), encoding="utf-8")
    for index, planned in enumerate(plan.models):
        shutil.copytree(planned.model.bundle, dest / "layers" / f"{index:02d}" / APP_DIR.lstrip("/") / planned.folder,
                        ignore=_ignore)
    service_dir = dest / "layers" / "service" / APP_DIR.lstrip("/")
    service_dir.mkdir(parents=True)
    shutil.copytree(RUNTIME_DIR, service_dir / BUNDLE_RUNTIME_NAME, ignore=_ignore)
    plan.write_service_file(service_dir / "mlship.toml", bundle_root=Path(APP_DIR), python=env_python)
    sbom_dest = _write_sbom(dest / SBOM_DIR, sbom or {})
    env = make_environment()
    (dest / ".dockerignore").write_text(env.get_template("dockerignore").render(), encoding="utf-8")
    draft = dockerfile(plan, houses, base_image=base_image, sbom_dest=sbom_dest, sbom_labels=sbom_labels)
    (dest / "Dockerfile").write_text(render(draft), encoding="utf-8")
    normalize_tree(dest)
    digest = context_hash(dest)
    final = dockerfile(plan, houses, base_image=base_image, digest=digest, sbom_dest=sbom_dest,
                       sbom_labels=sbom_labels)
    (dest / "Dockerfile").write_text(render(final), encoding="utf-8")
    normalize_tree(dest)
    return digest
