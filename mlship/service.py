"""Several bundles behind one server, on the host side: the service named on the command line (bundle directories
or a service file, runtime/_service.py), the environment check before serving it, and `mlship verify` of every
model in it (docs/SERVICE.md).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ._paths import BUNDLE_RUNTIME_NAME
from .bundle.manifest import RUNTIME_REQUIREMENTS, canonical
from .errors import MlshipError
from .runtime._contract import CaseResult, Manifest, read_manifest
from .runtime._service import (
    Service,
    ServiceError,
    ServiceModel,
    is_service_file,
    read_service,
    service_from_bundles,
    write_service,
)

__all__ = ["Conflict", "ModelVerification", "check_environments", "describe_models", "find_conflicts",
           "front_command", "open_service", "parse_defaults", "prepare_service", "service_file", "verify_service"]

# An exact pin, `name==version` (what `mlship package` writes), with an optional extra.
_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*===?\s*([^\s;,]+)\s*$")


@contextmanager
def service_errors() -> Iterator[None]:
    """ServiceError (the runtime's: message and hint, stdlib only) -> MlshipError, for host code."""
    try:
        yield
    except ServiceError as exc:
        raise MlshipError(exc.message, hint=exc.hint) from None


def open_service(paths: Sequence[Path], *, name: str | None = None,
                 defaults: Mapping[str, str] | None = None) -> Service:
    """The service the command line names: one service file, or bundle directories (see service_from_bundles for
    how their defaults are chosen). MlshipError naming what is wrong."""
    files = [path for path in paths if is_service_file(path)]
    if files and len(paths) > 1:
        raise MlshipError(f"{files[0]} is a service file, and a service file is served alone",
                          hint="list the other bundles in it as [[models]] tables, or pass only bundle directories")
    with service_errors():
        if files:
            if defaults:
                raise MlshipError("--default applies to bundle directories, not to a service file",
                                  hint=f'write it in {files[0]} as [routes.NAME] default = "VERSION"')
            return read_service(files[0])
        return service_from_bundles(paths, **({"name": name} if name else {}), defaults=defaults)


def prepare_service(paths: Sequence[Path], *, defaults: Sequence[str] = (), key: Path | None = None) -> Service:
    """What `mlship serve` checks before it starts anything: the service, every bundle (mlship's own copy of the
    checks: every file listed and unchanged; its signature by `key`, if given), and that each model's environment
    has what it pins (check_environments)."""
    from .bundle.manifest import open_bundle

    service = open_service(paths, defaults=parse_defaults(defaults))
    for model in service.models:
        if key is not None:
            from .bundle.signing import check_signature

            check_signature(model.bundle, key)
        open_bundle(model.bundle)
        check_backend_runtime(model)
    check_environments(service)
    return service


# What a bundle's own runtime must accept to run behind the front: the sockets the front binds for it.
_BACKEND_OPTION = "--listen-fd"


def check_backend_runtime(model: ServiceModel) -> None:
    """Each model runs on its bundle's own copy of the runtime (mlship_runtime/, digest-checked), so a bundle
    packaged before multi-model serving existed cannot be a backend: say so now rather than let its model be
    UNAVAILABLE once the server runs."""
    main = model.bundle / BUNDLE_RUNTIME_NAME / "__main__.py"
    try:
        text = main.read_text(encoding="utf-8")
    except OSError:
        text = ""
    if _BACKEND_OPTION not in text:
        raise MlshipError(
            f"model {model.name} {model.version} ({model.bundle}) was packaged by an mlship whose runtime cannot "
            "run behind a multi-model server",
            hint=f"package its notebook again with this mlship (mlship package NOTEBOOK -o {model.bundle}), or "
            f"serve it alone: mlship serve {model.bundle}",
        )


def service_file(service: Service) -> Path:
    """The service file the front reads: the one given, else one written for the bundles named on the command line,
    at a path that depends only on its content (the same bundles reuse one file, and nothing piles up)."""
    if service.source is not None:
        return service.source
    import hashlib
    import os
    import tempfile

    folder = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())
    staging = Path(tempfile.mkdtemp(prefix="mlship-service-", dir=folder))
    try:
        write_service(service, staging / "mlship.toml")
        content = (staging / "mlship.toml").read_bytes()
        path = folder / f"mlship-service-{hashlib.sha256(content).hexdigest()[:16]}.toml"
        os.replace(staging / "mlship.toml", path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def front_command(source: Path, *, host: str, port: int, workers: int | None) -> list[str]:
    """The multi-model front (runtime/_front.py) serving the service file `source`: mlship's own runtime, run by
    this interpreter; the front starts each model's backend from the bundle's own runtime with the model's Python."""
    argv = [sys.executable, "-B", "-m", "mlship.runtime", "serve-service", str(source), "--host", host,
            "--port", str(port)]
    return argv + (["--workers", str(workers)] if workers is not None else [])


def describe_models(service: Service) -> str:
    """"churn 0.1.0, fraud 1.0.0 (default) and 2.0.0"."""
    parts = []
    for name in service.names:
        versions = service.versions(name)
        if len(versions) == 1:
            parts.append(f"{name} {versions[0]}")
        else:
            default = service.defaults[name]
            parts.append(f"{name} " + ", ".join(f"{v} (default)" if v == default else v for v in versions))
    return "; ".join(parts)


def parse_defaults(values: Sequence[str]) -> dict[str, str]:
    """`--default fraud=1.0.0` options -> {"fraud": "1.0.0"}."""
    out: dict[str, str] = {}
    for value in values:
        model, sep, version = value.partition("=")
        if not sep or not model or not version:
            raise MlshipError(f"--default {value!r} is not NAME=VERSION", hint="e.g. --default fraud=1.0.0")
        out[model.strip()] = version.strip()
    return out


# -- does each model's environment have what it pins? -----------------------------------------------------------


@dataclass(frozen=True)
class Conflict:
    """A model's pin (or Python) that the interpreter it would run on does not satisfy; `installed` None: absent."""

    model: ServiceModel
    package: str
    pinned: str
    installed: str | None
    python: str

    def describe(self) -> str:
        found = f"has {self.installed}" if self.installed is not None else "does not have it"
        what = f"Python {self.pinned}" if self.package == "python" else f"{self.package}{self.pinned}"
        return f"model {self.model.name} {self.model.version} ({self.model.bundle}) pins {what}, but {self.python} {found}"


def find_conflicts(service: Service) -> list[Conflict]:
    """Every model pin its interpreter (its `python`, else this one, which serves the models that give none) does
    not have: exact pins (`name==version`, what `mlship package` writes) of the model's own packages, and the
    Python minor version its pickles need. Other specifiers (a --requirement range) are left to pip."""
    conflicts: list[Conflict] = []
    manifests = {model: read_manifest(model.bundle) for model in service.models}
    for python in dict.fromkeys(model.python for model in service.models):
        models = [model for model in service.models if model.python == python]
        pins = {model: _model_pins(manifests[model]) for model in models}
        names = sorted({name for model_pins in pins.values() for name in model_pins})
        found = _installed(python, names)
        label = f"the serving Python ({sys.executable})" if python is None else f"python = {python!r}"
        for model in models:
            wanted = ".".join(str(part) for part in manifests[model].python.minor)
            if found["python"] != wanted:
                conflicts.append(Conflict(model, "python", wanted, found["python"], label))
            for name, version in pins[model].items():
                if found.get(name) != version:
                    conflicts.append(Conflict(model, name, f"=={version}", found.get(name), label))
    return conflicts


def check_environments(service: Service) -> None:
    """MlshipError listing every conflict find_conflicts finds, with the fix."""
    conflicts = find_conflicts(service)
    if not conflicts:
        return
    first = conflicts[0].model
    where = (f"its [[models]] table in {service.source}" if service.source is not None
             else "its [[models]] table in a service file (docs/SERVICE.md; bundle directories alone cannot say it)")
    venv = f"envs/{first.name}-{first.version}"
    raise MlshipError(
        f"{len(conflicts)} pinned requirement{'s' if len(conflicts) > 1 else ''} "
        f"disagree{'' if len(conflicts) > 1 else 's'} with the Python that would serve them:\n  "
        + "\n  ".join(conflict.describe() for conflict in conflicts),
        hint=(f"give each such model an environment of its own, e.g. python3 -m venv {venv} && {venv}/bin/pip "
              f"install -r {first.bundle}/requirements.txt, then python = \"{venv}/bin/python\" in {where}; or "
              "build one image or tarball (mlship build --target docker|onprem mlship.toml), which makes one "
              "environment per set of pins"),
    )


def _model_pins(manifest: Manifest) -> dict[str, str]:
    """The model's exact pins by canonical name. The runtime's own serving dependencies (RUNTIME_REQUIREMENTS)
    are left out: they are the server's, not the model's; a bundle packaged by another mlship pins other releases
    of them, and a single-bundle `mlship serve` has always run it on the host's."""
    server = {canonical(name) for name in RUNTIME_REQUIREMENTS}
    pins = {}
    for requirement in manifest.requirements:
        match = _PIN.match(requirement)
        if match and canonical(match[1]) not in server:
            pins[canonical(match[1])] = match[2]
    return pins


# Run by another interpreter: its Python major.minor and the installed version of each distribution asked for.
_PROBE = """\
import importlib.metadata as m, json, sys
out = {"python": "%d.%d" % sys.version_info[:2]}
for name in json.loads(sys.argv[1]):
    try:
        out[name] = m.version(name)
    except m.PackageNotFoundError:
        pass
print(json.dumps(out))
"""


def _installed(python: str | None, names: list[str]) -> dict[str, str]:
    if python is None:
        import importlib.metadata

        out = {"python": "{}.{}".format(*sys.version_info[:2])}
        for name in names:
            try:
                out[name] = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                pass
        return out
    try:
        done = subprocess.run([python, "-I", "-c", _PROBE, json.dumps(names)], capture_output=True, text=True,
                              timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MlshipError(f"cannot run python = {python!r}: {exc}",
                          hint="give the path of a virtual environment's interpreter, e.g. envs/NAME/bin/python") \
            from None
    if done.returncode != 0:
        raise MlshipError(f"python = {python!r} failed: {done.stderr.strip()[-300:]}",
                          hint="give the path of a working Python 3 interpreter")
    data: dict[str, str] = json.loads(done.stdout)
    return data


# -- mlship verify SERVICE --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelVerification:
    """One model version's golden cases replayed; `error` when it could not be replayed at all."""

    model: ServiceModel
    cases: tuple[CaseResult, ...]
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and all(case.ok for case in self.cases)

    def to_json(self) -> dict[str, object]:
        return {"name": self.model.name, "version": self.model.version, "bundle": str(self.model.bundle),
                "ok": self.ok, "error": self.error, "cases": [case.to_json() for case in self.cases]}


def model_url(url: str, model: ServiceModel) -> str:
    """Where a multi-model server serves `model`: its methods are POST {this}/{method}."""
    return f"{url.rstrip('/')}/models/{model.name}/versions/{model.version}"


def verify_service(service: Service, *, url: str | None = None, python: str | None = None) -> list[ModelVerification]:
    """Every model's golden cases, each in a fresh interpreter of its own (its `python`, else `python`, else this
    one), or against the multi-model server at `url` through /models/{name}/versions/{version}/{method}.
    A model that cannot be verified is a failed result, not an exception: the others are still replayed."""
    from .bundle.verify import verify_bundle

    results = []
    for model in service.models:
        try:
            cases = verify_bundle(model.bundle, python=model.python or python,
                                  url=None if url is None else model_url(url, model))
        except MlshipError as exc:
            results.append(ModelVerification(model, (), exc.message))
            continue
        results.append(ModelVerification(model, tuple(cases)))
    return results
