"""One artifact's contents (Contents) written as CycloneDX 1.6 JSON (cyclonedx-python-lib) and SPDX 2.3 JSON
(spdx-tools), each checked by its library's own validator before it is returned.

Both are functions of Contents only: the serial number and the SPDX namespace are derived from the contents, the
timestamp is the bundle's created_at, so the same bundle and wheels give the same bytes (the on-prem tarball and
the image layers stay reproducible).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import re
import uuid
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

from .. import __version__
from ..errors import MlshipError
from .packages import DebPackage, PythonPackage

CYCLONEDX = "cyclonedx"
SPDX = "spdx"
FORMATS = (CYCLONEDX, SPDX)
PROPERTY = "mlship"  # the namespace of mlship's CycloneDX properties (mlship:model:class, ...)


@dataclass(frozen=True)
class Model:
    """The model itself: the notebook's estimator, its pickled artifact and the golden cases it was verified on."""

    name: str
    version: str
    library: str | None  # the top-level package of the model's class (sklearn), when known
    cls: str | None  # the model's class (sklearn.pipeline.Pipeline), when known
    artifact: str  # bundle path of the pickled values
    artifact_sha256: str
    notebook: str | None
    notebook_sha256: str | None
    golden_cases: int
    methods: tuple[str, ...] = ()
    environment: str | None = None  # a service's: the environment (venv) that serves it
    bundle_digest: str | None = None  # a service's: sha256 of its bundle's mlship.json

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"


@dataclass(frozen=True)
class BaseImage:
    reference: str  # as the user named it
    digest: str | None  # sha256:... (the manifest digest, or the engine's image id when the base has none)
    digest_kind: str = "manifest"  # manifest | image-id


@dataclass(frozen=True)
class Environment:
    """One Python environment (venv) of a service artifact and the distributions installed in it."""

    name: str
    packages: tuple[PythonPackage, ...]


@dataclass(frozen=True)
class Contents:
    """What one artifact (kind: bundle, image or onprem) holds. A single bundle's: `model` and its `packages`.
    A service's (several models, several environments): every model in `models` (`model` is the first), every
    environment's packages in `environments`, `packages` empty."""

    kind: str
    name: str
    version: str
    created: str  # ISO 8601, the bundle's created_at
    model: Model
    packages: tuple[PythonPackage, ...]
    base: BaseImage | None = None
    debian: tuple[DebPackage, ...] = ()
    platform: str | None = None  # linux/amd64 (images, tarballs)
    properties: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    models: tuple[Model, ...] = ()
    environments: tuple[Environment, ...] = ()

    @property
    def service(self) -> bool:
        return bool(self.environments)

    @property
    def every_model(self) -> tuple[Model, ...]:
        return self.models or (self.model,)

    def fingerprint(self) -> str:
        """A digest of everything the documents say, for their serial number and namespace. The service fields are
        left out when empty, so a single bundle's documents keep the serial number they had before there were any."""
        data = asdict(self)
        if not self.service and not self.models:
            del data["models"], data["environments"]
        for model in (data["model"], *data.get("models", ())):
            for key in ("environment", "bundle_digest"):
                if model[key] is None:
                    del model[key]
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()

    @property
    def timestamp(self) -> _dt.datetime:
        try:
            return _dt.datetime.strptime(self.created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.UTC)
        except ValueError:
            return _dt.datetime(1980, 1, 1, tzinfo=_dt.UTC)


class SbomError(MlshipError):
    """An SBOM that its own format's validator refuses (a bug in mlship: report it)."""


def warm_up() -> None:
    """Import both libraries, read SPDX's license list and write one small document in each format (a few seconds
    on a busy machine, mostly spdx-tools' type-checked model): `mlship package` calls it in a thread while the
    notebook runs."""
    import cyclonedx.output.json  # noqa: F401
    import cyclonedx.validation.json  # noqa: F401
    import spdx_tools.spdx.validation.document_validator  # noqa: F401
    import spdx_tools.spdx.writer.json.json_writer  # noqa: F401

    from .licenses import License, licensing
    from .packages import PythonPackage

    licensing()
    # Both libraries set themselves up on their first document (serializers, the JSON schema): about 0.6 s.
    sample = Contents(kind="bundle", name="warm-up", version="0", created="1980-01-01T00:00:00Z",
                      model=Model("warm-up", "0", None, None, "artifacts/values.pkl", "0" * 64, None, None, 0),
                      packages=(PythonPackage("warm-up", "0", License("MIT")),))
    for fmt in FORMATS:
        render(sample, fmt)


def render(contents: Contents, fmt: str) -> str:
    return to_cyclonedx(contents) if fmt == CYCLONEDX else to_spdx(contents)


# -- CycloneDX ---------------------------------------------------------------------------------------------------


def to_cyclonedx(contents: Contents) -> str:
    from cyclonedx.model import HashAlgorithm, HashType, Property
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.model.license import DisjunctiveLicense, LicenseExpression
    from cyclonedx.output.json import JsonV1Dot6
    from packageurl import PackageURL

    def sha(hexdigest: str | None) -> list[Any]:
        return [HashType(alg=HashAlgorithm.SHA_256, content=hexdigest)] if hexdigest else []

    def props(pairs: list[tuple[str, str | None]]) -> list[Any]:
        return [Property(name=f"{PROPERTY}:{key}", value=value) for key, value in pairs if value is not None]

    def model_component(model: Model, ref: str) -> Any:
        return Component(
            type=ComponentType.MACHINE_LEARNING_MODEL, name=model.name, version=model.version, bom_ref=ref,
            group=model.library, description=f"{model.cls or 'model'} served by mlship ({', '.join(model.methods)})",
            hashes=sha(model.artifact_sha256),
            properties=props([("model:library", model.library), ("model:class", model.cls),
                              ("model:artifact", model.artifact), ("model:artifact:sha256", model.artifact_sha256),
                              ("model:notebook", model.notebook), ("model:notebook:sha256", model.notebook_sha256),
                              ("model:golden-cases", str(model.golden_cases)),
                              ("model:methods", ",".join(model.methods)),
                              ("model:environment", model.environment),
                              ("model:bundle:digest", model.bundle_digest)]))

    def library(package: PythonPackage, env: str | None) -> Any:
        licenses: list[Any] = []
        if package.license.expression:
            licenses = [LicenseExpression(package.license.expression)]
        elif package.license.declared:
            licenses = [DisjunctiveLicense(name=package.license.declared)]
        # In a service a distribution is listed once per environment that has it: the ref names the environment.
        return Component(
            type=ComponentType.LIBRARY, name=package.name, version=package.version,
            bom_ref=package.purl if env is None else f"{env}:{package.purl}",
            purl=PackageURL.from_string(package.purl), hashes=sha(package.sha256), licenses=licenses,
            properties=props([("license:source", package.license.source), ("wheel", package.filename),
                              ("environment", env)]))

    subject = Component(
        type=ComponentType.CONTAINER if contents.kind == "image" else ComponentType.APPLICATION,
        name=contents.name, version=contents.version, bom_ref=f"{contents.kind}:{contents.name}",
        properties=props([("artifact", contents.kind), ("platform", contents.platform), *contents.properties]))
    if contents.service:
        models = [model_component(m, f"model:{m.name}:{m.version}") for m in contents.every_model]
        by_env = {env.name: [library(p, env.name) for p in env.packages] for env in contents.environments}
        libraries = [c for env in contents.environments for c in by_env[env.name]]
        needs = [(ml, by_env.get(m.environment or "", [])) for ml, m in zip(models, contents.every_model,
                                                                             strict=True)]
    else:
        models = [model_component(contents.model, "model")]
        libraries = [library(p, None) for p in contents.packages]
        needs = [(models[0], [])]
    debs = [Component(type=ComponentType.LIBRARY, name=deb.name, version=deb.version, bom_ref=deb.purl,
                      purl=PackageURL.from_string(deb.purl), properties=props([("deb:source", deb.source)]))
            for deb in contents.debian]
    bom = Bom(serial_number=uuid.uuid5(uuid.NAMESPACE_URL, f"mlship:{contents.fingerprint()}"))
    bom.metadata.timestamp = contents.timestamp
    bom.metadata.component = subject
    bom.metadata.tools.components.add(Component(type=ComponentType.APPLICATION, name="mlship",
                                                version=__version__))
    for component in (*models, *libraries, *debs):
        bom.components.add(component)
    top = [*models, *libraries]
    if contents.base is not None:
        base = _cyclonedx_base(contents.base, Component, ComponentType, PackageURL, sha, props)
        bom.components.add(base)
        bom.register_dependency(base, debs)
        top.append(base)
    bom.register_dependency(subject, top)
    for ml, uses in needs:
        bom.register_dependency(ml, uses)
    for leaf in (*libraries, *debs):
        bom.register_dependency(leaf, [])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the library's own notices (e.g. about optional fields); validated below
        text = JsonV1Dot6(bom).output_as_string(indent=2)
    problem = validate_cyclonedx(text)
    if problem:
        raise SbomError(f"the CycloneDX SBOM of {contents.name} does not validate: {problem}")
    return text + "\n"


def _cyclonedx_base(base: BaseImage, component: Any, ctype: Any, purl: Any, sha: Any, props: Any) -> Any:
    repository, _, tag = base.reference.rpartition(":") if ":" in base.reference.rsplit("/", 1)[-1] else (
        base.reference, "", "")
    name = repository.rsplit("/", 1)[-1] or repository
    digest = base.digest.split(":", 1)[-1] if base.digest else None
    ref = None
    if base.digest and base.digest_kind == "manifest":
        qualifiers = {"repository_url": repository, **({"tag": tag} if tag else {})}
        ref = purl(type="oci", name=name, version=base.digest, qualifiers=qualifiers)
    return component(type=ctype.CONTAINER, name=base.reference, version=base.digest or "", bom_ref="base-image",
                     purl=ref, hashes=sha(digest),
                     properties=props([("base:digest", base.digest), ("base:digest-kind", base.digest_kind)]))


def validate_cyclonedx(text: str) -> str | None:
    """The CycloneDX 1.6 JSON schema's verdict on `text` (the library's strict validator): None when valid."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    return None if error is None else str(error).splitlines()[0]


# -- SPDX --------------------------------------------------------------------------------------------------------


def to_spdx(contents: Contents) -> str:
    from spdx_tools.spdx.model.actor import Actor, ActorType
    from spdx_tools.spdx.model.checksum import Checksum, ChecksumAlgorithm
    from spdx_tools.spdx.model.document import CreationInfo, Document
    from spdx_tools.spdx.model.package import (
        ExternalPackageRef,
        ExternalPackageRefCategory,
        Package,
        PackagePurpose,
    )
    from spdx_tools.spdx.model.relationship import Relationship, RelationshipType
    from spdx_tools.spdx.model.spdx_no_assertion import SpdxNoAssertion
    from spdx_tools.spdx.writer.json.json_writer import write_document_to_stream

    from .licenses import licensing

    ids: set[str] = set()

    def spdx_id(*parts: str) -> str:
        base = "SPDXRef-" + re.sub(r"[^A-Za-z0-9.-]+", "-", "-".join(parts)).strip("-")
        unique, n = base, 1
        while unique in ids:
            n += 1
            unique = f"{base}-{n}"
        ids.add(unique)
        return unique

    def sums(hexdigest: str | None) -> list[Any]:
        return [Checksum(ChecksumAlgorithm.SHA256, hexdigest)] if hexdigest else []

    def purl(ref: str | None) -> list[Any]:
        return [ExternalPackageRef(ExternalPackageRefCategory.PACKAGE_MANAGER, "purl", ref)] if ref else []

    def package(pid: str, name: str, version: str, purpose: Any, **more: Any) -> Any:
        return Package(spdx_id=pid, name=name, version=version, download_location=SpdxNoAssertion(),
                       files_analyzed=False, license_concluded=SpdxNoAssertion(),
                       license_declared=more.pop("license_declared", SpdxNoAssertion()),
                       copyright_text=SpdxNoAssertion(), primary_package_purpose=purpose, **more)

    subject_id = spdx_id(contents.kind, contents.name)
    packages = [package(subject_id, contents.name, contents.version,
                        PackagePurpose.CONTAINER if contents.kind == "image" else PackagePurpose.APPLICATION,
                        comment=f"mlship {contents.kind}" + (f" for {contents.platform}" if contents.platform else ""))]
    relationships = [Relationship("SPDXRef-DOCUMENT", RelationshipType.DESCRIBES, subject_id)]
    model_ids: dict[str, list[str]] = {}  # environment -> its models' ids
    for model in contents.every_model:
        model_id = spdx_id("model", model.name, *((model.version,) if contents.service else ()))
        where = (f"; environment {model.environment}; bundle {model.bundle_digest}" if contents.service else "")
        packages.append(package(
            model_id, model.name, model.version, PackagePurpose.OTHER, checksums=sums(model.artifact_sha256),
            summary=f"machine-learning-model: {model.cls or 'model'}",
            comment=(f"machine-learning-model; library {model.library or '?'}; class {model.cls or '?'}; artifact "
                     f"{model.artifact}; notebook {model.notebook or '?'} sha256 {model.notebook_sha256 or '?'}; "
                     f"{model.golden_cases} golden cases; methods {', '.join(model.methods)}{where}")))
        relationships.append(Relationship(subject_id, RelationshipType.CONTAINS, model_id))
        model_ids.setdefault(model.environment or "", []).append(model_id)
    groups = ([(env.name, env.packages) for env in contents.environments] if contents.service
              else [(None, contents.packages)])
    for env, items in groups:
        for item in items:
            pid = spdx_id("pypi", *((env,) if env else ()), item.key, item.version)
            declared: Any = (licensing().parse(item.license.expression) if item.license.expression
                             else SpdxNoAssertion())
            packages.append(package(pid, item.name, item.version, PackagePurpose.LIBRARY,
                                    checksums=sums(item.sha256), external_references=purl(item.purl),
                                    license_declared=declared,
                                    license_comment=None if item.license.expression else item.license.describe(),
                                    file_name=item.filename,
                                    **({"comment": f"installed in environment {env}"} if env else {})))
            relationships.append(Relationship(subject_id, RelationshipType.CONTAINS, pid))
            relationships += [Relationship(model_id, RelationshipType.DEPENDS_ON, pid)
                              for model_id in model_ids.get(env or "", []) if env]
    if contents.base is not None:
        base = contents.base
        base_id = spdx_id("base-image")
        packages.append(package(base_id, base.reference, base.digest or "NOASSERTION", PackagePurpose.CONTAINER,
                                checksums=sums(base.digest.split(":", 1)[-1] if base.digest else None),
                                comment=f"base image ({base.digest_kind} digest)"))
        relationships.append(Relationship(subject_id, RelationshipType.DESCENDANT_OF, base_id))
        for deb in contents.debian:
            did = spdx_id("deb", deb.name, deb.architecture)
            packages.append(package(did, deb.name, deb.version, PackagePurpose.OPERATING_SYSTEM,
                                    external_references=purl(deb.purl)))
            relationships.append(Relationship(base_id, RelationshipType.CONTAINS, did))
    info = CreationInfo(
        spdx_version="SPDX-2.3", spdx_id="SPDXRef-DOCUMENT", name=f"{contents.name}-{contents.version}-{contents.kind}",
        document_namespace=f"https://spdx.org/spdxdocs/mlship-{contents.kind}-{contents.fingerprint()}",
        creators=[Actor(ActorType.TOOL, f"mlship-{__version__}")], created=contents.timestamp.replace(tzinfo=None))
    document = Document(info, packages=packages, relationships=relationships)
    problem = validate_spdx_document(document)
    if problem:
        raise SbomError(f"the SPDX SBOM of {contents.name} does not validate: {problem}")
    stream = io.StringIO()
    write_document_to_stream(document, stream, validate=False)
    return stream.getvalue() + "\n"


def validate_spdx_document(document: Any) -> str | None:
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    messages = validate_full_spdx_document(document)
    return "; ".join(m.validation_message for m in messages[:3]) or None


def validate_spdx(text: str) -> str | None:
    """spdx-tools' verdict on an SPDX JSON document: parsed, then validated as SPDX 2.3; None when valid."""
    import tempfile

    from spdx_tools.spdx.parser.error import SPDXParsingError
    from spdx_tools.spdx.parser.json.json_parser import parse_from_file

    with tempfile.NamedTemporaryFile("w", suffix=".spdx.json", encoding="utf-8") as tmp:
        tmp.write(text)
        tmp.flush()
        try:
            document = parse_from_file(tmp.name)
        except SPDXParsingError as exc:
            return str(exc)[:500]
    return validate_spdx_document(document)
