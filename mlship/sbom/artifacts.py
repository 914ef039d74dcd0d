"""The SBOM of each artifact, and reading one back out (`mlship sbom BUNDLE|IMAGE.tar|TARBALL`).

- A bundle (written by `mlship package`): its requirements as pinned, with the license metadata of the packages
  installed where it was packaged; no wheel digests yet, since the wheels depend on the platform a build chooses.
  Two files listed in mlship.json like every other (contract.SBOM_FILES), so they are digest-checked.
- An image: what its venv holds, which is exactly the wheels of the build's lock (each with its sha256 and the
  license its METADATA states), the base image by digest and the Debian packages its dpkg status lists.
  At IMAGE_SBOM_DIR, named by the labels in IMAGE_LABELS.
- An on-prem tarball: the same for the wheels it installs, under TOP/sbom/.
- An image or tarball built from a service file (service_contents): every model (with its environment and bundle
  digest) and every environment's wheels, a distribution listed once per environment that installs it; the
  license gate (service_gate) runs over all environments and names the environments and models a package serves.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from ..bundle.digest import bundle_digest
from ..bundle.manifest import canonical
from ..errors import MlshipError, bundle_errors
from ..runtime import _contract as contract
from ..runtime._contract import Bundle, Manifest
from .document import CYCLONEDX, FORMATS, SPDX, BaseImage, Contents, Environment, Model, render
from .licenses import License, LicensePolicy, check_licenses
from .packages import DebPackage, PythonPackage, installed_packages, read_wheel

if TYPE_CHECKING:
    from ..targets._service_plan import ServicePlan

IMAGE_SBOM_DIR = "/opt/mlship"
IMAGE_FILES = {CYCLONEDX: f"{IMAGE_SBOM_DIR}/sbom.cdx.json", SPDX: f"{IMAGE_SBOM_DIR}/sbom.spdx.json"}
IMAGE_LABELS = {CYCLONEDX: "io.mlship.sbom.cyclonedx", SPDX: "io.mlship.sbom.spdx"}
ONPREM_FILES = {CYCLONEDX: "sbom/sbom.cdx.json", SPDX: "sbom/sbom.spdx.json"}
_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*==\s*([^\s;#]+)")
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def documents(contents: Contents) -> dict[str, bytes]:
    """Both formats of `contents`: {"cyclonedx": ..., "spdx": ...}."""
    return {fmt: render(contents, fmt).encode() for fmt in FORMATS}


# -- what each artifact holds ------------------------------------------------------------------------------------


def requirement_packages(requirements: Iterable[str], executable: str) -> list[PythonPackage]:
    """The bundle's pinned requirements, each with the license of the distribution `executable` has installed
    (when that is the pinned version; a pin to another version has no metadata here, and is listed as unknown)."""
    pins: list[tuple[str, str]] = []
    for line in requirements:
        match = _PIN.match(line) or _NAME.match(line)
        if match:
            pins.append((match.group(1), match.group(2) if match.lastindex == 2 else ""))
    found = installed_packages(executable, [name for name, _ in pins])
    out = []
    for name, version in pins:
        have = found.get(canonical(name))
        if have is not None and have.version == version:
            out.append(have)
        else:
            out.append(PythonPackage(name, version, License(None, source="none")))
    return sorted(out, key=lambda p: p.key)


def wheel_packages(directory: Path, lock: Iterable[Any]) -> list[PythonPackage]:
    """The packages a wheelhouse installs (its lock's LockedWheel entries), read from the wheels themselves."""
    return sorted((read_wheel(directory / w.filename, w.sha256) for w in lock), key=lambda p: p.key)


def bundle_model(manifest: Manifest, golden_cases: int, *, model_class: str | None) -> Model:
    source = manifest.source
    return Model(
        name=manifest.name, version=manifest.version,
        library=model_class.split(".", 1)[0] if model_class else None, cls=model_class,
        artifact=contract.VALUES_NAME, artifact_sha256=manifest.artifacts.get(contract.VALUES_NAME, ""),
        notebook=source.notebook if source else None, notebook_sha256=source.sha256 if source else None,
        golden_cases=golden_cases, methods=tuple(manifest.method_names))


def model_class_of(bundle: Path) -> str | None:
    """The model's class as the bundle's own SBOM records it (None for bundles without one)."""
    path = bundle / contract.SBOM_FILES[CYCLONEDX]
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    for component in data.get("components", []):
        if component.get("type") == "machine-learning-model":
            for prop in component.get("properties", []):
                if prop.get("name") == "mlship:model:class":
                    return str(prop.get("value"))
    return None


def artifact_contents(bundle: Bundle, kind: str, packages: list[PythonPackage], *, platform: str,
                      base: BaseImage | None = None, debian: Iterable[DebPackage] = ()) -> Contents:
    """The Contents of an image or tarball built from `bundle` with `packages` installed."""
    manifest = bundle.manifest
    model = bundle_model(manifest, len(bundle.golden.cases), model_class=model_class_of(bundle.path))
    return Contents(kind=kind, name=manifest.name, version=manifest.version, created=manifest.created_at,
                    model=model, packages=tuple(packages), base=base, debian=tuple(debian), platform=platform,
                    properties=(("bundle:digest", bundle_digest(bundle.path)),))


def service_contents(plan: ServicePlan, packages: Mapping[str, list[PythonPackage]], *, kind: str, platform: str,
                     base: BaseImage | None = None, debian: Iterable[DebPackage] = ()) -> Contents:
    """The Contents of an image or tarball built from a service file: `packages` maps each environment's name to
    what it installs (wheel_packages of its wheelhouse)."""
    missing = [env.name for env in plan.environments if env.name not in packages]
    if missing:
        raise MlshipError(f"no packages given for the environment(s) {', '.join(missing)} of {plan.source}")
    models = []
    for planned in plan.models:
        with bundle_errors(planned.model.bundle):
            bundle = contract.read(planned.model.bundle)
        model = bundle_model(bundle.manifest, len(bundle.golden.cases), model_class=model_class_of(bundle.path))
        models.append(replace(model, environment=planned.environment, bundle_digest=bundle_digest(bundle.path)))
    # The service has no version of its own: a digest of its models' bundles, so it changes when any of them does.
    version = hashlib.sha256(" ".join(m.bundle_digest or "" for m in models).encode()).hexdigest()[:12]
    environments = tuple(Environment(env.name, tuple(sorted(packages[env.name], key=lambda p: p.key)))
                         for env in plan.environments)
    return Contents(kind=kind, name=plan.service.name, version=version,
                    created=max(p.manifest.created_at for p in plan.models), model=models[0], packages=(),
                    base=base, debian=tuple(debian), platform=platform,
                    properties=(("service:models", str(len(models))),
                                ("service:environments", ",".join(env.name for env in environments))),
                    models=tuple(models), environments=environments)


def image_files(contents: Contents) -> tuple[dict[str, bytes], dict[str, str]]:
    """The image's SBOM files (absolute path in the image -> bytes) and the labels that name them."""
    docs = documents(contents)
    return {IMAGE_FILES[fmt]: data for fmt, data in docs.items()}, dict(
        (IMAGE_LABELS[fmt], IMAGE_FILES[fmt]) for fmt in FORMATS)


def gate(packages: list[PythonPackage], policy: LicensePolicy, *, what: str) -> list[str]:
    """check_licenses over `packages`: LicenseError for a denied license; the warnings to show."""
    return check_licenses(((p.pin, p.license) for p in packages), policy, what=what)


def service_gate(contents: Contents, policy: LicensePolicy, *, what: str) -> list[str]:
    """check_licenses over the packages of every environment of a service's `contents`, each named once with the
    environments that install it and the models each serves: `numpy==2.4.6 (env1: iris 0.1.0, wine 1.0)`."""
    users: dict[tuple[str, License], list[str]] = {}
    for env in contents.environments:
        served = ", ".join(m.label for m in contents.every_model if m.environment == env.name)
        for package in env.packages:
            users.setdefault((package.pin, package.license), []).append(f"{env.name}: {served}")
    return check_licenses(((f"{pin} ({'; '.join(where)})", lic) for (pin, lic), where in users.items()), policy,
                          what=what)


# -- reading one back ---------------------------------------------------------------------------------------------


def read_sbom(path: Path, fmt: str = CYCLONEDX) -> bytes:
    """The `fmt` SBOM of a bundle directory, an image archive (docker save, OCI archive) or an on-prem tarball."""
    if fmt not in FORMATS:
        raise MlshipError(f"unknown SBOM format {fmt!r}", hint="use --format cyclonedx or --format spdx")
    if path.is_dir():
        return _from_bundle(path, fmt)
    if not path.is_file():
        raise MlshipError(f"{path} does not exist",
                          hint="pass a bundle directory, an image tar (docker save) or an on-prem tarball")
    try:
        with tarfile.open(path) as tar:
            names = set(tar.getnames())
            if "manifest.json" in names or "index.json" in names:
                return _from_image(tar, path, fmt)
            return _from_tarball(tar, path, fmt)
    except tarfile.TarError as exc:
        raise MlshipError(f"{path} is neither a bundle directory nor a tar archive: {exc}",
                          hint="pass a bundle directory, an image tar (docker save) or an on-prem tarball") from None


def _from_bundle(path: Path, fmt: str) -> bytes:
    from ..bundle.manifest import open_bundle

    bundle = open_bundle(path)  # digests checked: the SBOM is one of the listed files
    name = contract.SBOM_FILES[fmt]
    if name not in bundle.manifest.artifacts:
        raise MlshipError(f"{path} has no SBOM: it was packaged by mlship {bundle.manifest.mlship_version or '?'}, "
                          "before bundles carried one",
                          hint="package the notebook again (mlship package NOTEBOOK)")
    return bundle.file(name).read_bytes()


def _from_tarball(tar: tarfile.TarFile, path: Path, fmt: str) -> bytes:
    wanted = ONPREM_FILES[fmt]
    for member in tar.getmembers():
        parts = PurePosixPath(member.name).parts
        if member.isfile() and len(parts) == 3 and "/".join(parts[1:]) == wanted:
            return _read(tar, member)
    raise MlshipError(f"{path} holds no {wanted}: it is not an mlship image or on-prem tarball, or it was built "
                      "before they carried an SBOM", hint="build it again with mlship build")


def _from_image(tar: tarfile.TarFile, path: Path, fmt: str) -> bytes:
    config, layers = _image_config_and_layers(tar, path)
    labels = (config.get("config") or {}).get("Labels") or {}
    where = labels.get(IMAGE_LABELS[fmt])
    if not where:
        raise MlshipError(f"the image in {path} has no {IMAGE_LABELS[fmt]} label: it was not built by mlship, or "
                          "before its images carried an SBOM", hint="build it again with mlship build --target docker")
    target = where.lstrip("/")
    for layer in reversed(layers):  # the last layer that has the file is the one the image shows
        with tarfile.open(fileobj=io.BytesIO(_read(tar, tar.getmember(layer)))) as inner:
            try:
                member = inner.getmember(target)
            except KeyError:
                continue
            if member.isfile():
                return _read(inner, member)
    raise MlshipError(f"the image in {path} names {where} in its label, but no layer holds it")


def _image_config_and_layers(tar: tarfile.TarFile, path: Path) -> tuple[dict[str, Any], list[str]]:
    names = set(tar.getnames())
    if "manifest.json" in names:  # docker save (docker-archive)
        entry = json.loads(_read(tar, tar.getmember("manifest.json")))[0]
        return json.loads(_read(tar, tar.getmember(entry["Config"]))), list(entry["Layers"])
    index = json.loads(_read(tar, tar.getmember("index.json")))  # an OCI archive
    manifest = json.loads(_blob(tar, index["manifests"][0]["digest"]))
    if "manifests" in manifest:  # an index of one image per platform: the first
        manifest = json.loads(_blob(tar, manifest["manifests"][0]["digest"]))
    layers = [f"blobs/{layer['digest'].replace(':', '/')}" for layer in manifest["layers"]]
    return json.loads(_blob(tar, manifest["config"]["digest"])), layers


def _blob(tar: tarfile.TarFile, digest: str) -> bytes:
    return _read(tar, tar.getmember(f"blobs/{digest.replace(':', '/')}"))


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = tar.extractfile(member)
    if handle is None:
        raise MlshipError(f"{member.name} in the archive is not a file")
    return handle.read()
