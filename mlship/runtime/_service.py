"""The service file (docs/SERVICE.md): several bundles behind one server, as one typed contract.

Standard library only (tomllib), because it travels with the runtime: the multi-model front reads it inside an
image or a tarball, and the host (mlship/service.py, the targets) imports it from here. The API:

    ServiceModel(name, version, bundle, python=None, workers=None)
                                                         one model version: bundle is absolute; python is the
                                                         interpreter of its environment (None: the serving one);
                                                         workers its worker processes (None: the service's)
    Service(name, models, defaults, source)              .model(name, version=None) -> ServiceModel (LookupError
                                                         naming what exists), .names, .versions(name)
    ServiceError(message, hint)                          every refusal: names the key/table/bundle, says the fix
    read_service(path) -> Service                        mlship.toml, validated (see below)
    service_from_bundles(paths, name="mlship", defaults=None) -> Service   `mlship serve dist/a dist/b`
    write_service(service, path)                         the one writer; read_service(path) gives it back
    is_service_file(path) -> bool                        a path the CLI should read as a service file

The file:

    [service]
    name = "scoring"                 # optional, default "mlship"

    [[models]]
    bundle = "dist/fraud-1"          # required; relative to the file's folder
    name = "fraud"                   # optional: serve it under another name (default: the bundle's mlship.json)
    python = "envs/a/bin/python"     # optional: its environment's interpreter (relative paths: to the file)
    workers = 2                      # optional: its worker processes (default: `mlship serve --workers`)

    [routes.fraud]
    default = "1.0.0"                # what an unversioned request gets; required when a name has several versions
    canary = { version = "2.0.0", percent = 10, sticky = "X-User-ID" }
                                     # or shadow = { version = "2.0.0", percent = 100 } (one or the other); both
                                     # take max_disagreement, max_error_rate, window (the guard, _rollout)

What read_service refuses (ServiceError): unknown keys (named, with their table), a missing bundle or a folder
that is not a bundle, a bundle in a format this runtime does not read, two models with the same name and
version, a name with several versions and no default, a default naming a version that is not served, a route for a
name no model has. Each bundle's mlship.json is read and checked; its digests are not (the model's own runtime
checks them when it starts, and `mlship verify` does).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ._contract import FORMAT, MANIFEST_NAME, BundleLoadError, Manifest, read_manifest

DEFAULT_NAME = "mlship"
SERVICE_SUFFIX = ".toml"

# The keys each table may hold. Issue 12 adds `shadow` and `canary` under [routes.NAME]; until then they are
# unknown keys like any other.
_TOP_KEYS = ("service", "models", "routes")
_SERVICE_KEYS = ("name",)
_MODEL_KEYS = ("bundle", "name", "python", "workers")
_ROUTE_KEYS = ("default", "shadow", "canary")
_ROLLOUT_KEYS = ("version", "percent", "sticky", "max_disagreement", "max_error_rate", "window")
# The guard's defaults (docs/SERVICE.md "Shadow and canary"): a candidate is taken out of traffic when, over its
# last WINDOW compared (shadow) or answered (canary) requests, more than these fractions disagreed or failed.
DEFAULT_MAX_DISAGREEMENT = 0.05
DEFAULT_MAX_ERROR_RATE = 0.01
DEFAULT_WINDOW = 200
# An HTTP header name (RFC 9110 token).
_HEADER = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")

# A model name and a version are path segments of the routes (/models/{name}/versions/{version}/...).
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+!-]*")


class ServiceError(Exception):
    """The service cannot be served as written: `message` names the thing, `hint` says what to do."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class ServiceModel:
    """One model version of a service. `name` is the bundle's own unless renamed; `version` is always the bundle's."""

    name: str
    version: str
    bundle: Path
    python: str | None = None
    workers: int | None = None


@dataclass(frozen=True)
class Rollout:
    """A candidate version of one model name next to its default: `mode` "shadow" (a copy of `percent` % of the
    unversioned requests goes to it, answers come from the default) or "canary" (`percent` % of them are answered
    by it; with `sticky`, the hash of that request header decides). The guard's thresholds come with it."""

    mode: str
    version: str
    percent: float
    sticky: str | None = None
    max_disagreement: float = DEFAULT_MAX_DISAGREEMENT
    max_error_rate: float = DEFAULT_MAX_ERROR_RATE
    window: int = DEFAULT_WINDOW


@dataclass(frozen=True)
class Service:
    """The models a server serves. `defaults` maps every model name to the version an unversioned request gets;
    `source` is the service file (None when built from bundle paths)."""

    name: str
    models: tuple[ServiceModel, ...]
    defaults: Mapping[str, str] = field(default_factory=dict)
    source: Path | None = None
    rollouts: Mapping[str, Rollout] = field(default_factory=dict)  # by model name: its shadow or canary

    @property
    def names(self) -> tuple[str, ...]:
        """Every model name, in the order the models are listed."""
        return tuple(dict.fromkeys(model.name for model in self.models))

    def versions(self, name: str) -> tuple[str, ...]:
        return tuple(model.version for model in self.models if model.name == name)

    def model(self, name: str, version: str | None = None) -> ServiceModel:
        """The model `name` at `version` (its default when None); LookupError naming what exists otherwise."""
        versions = self.versions(name)
        if not versions:
            raise LookupError(f"no model named {name!r}; this service serves {_listing(self.names)}")
        wanted = self.defaults[name] if version is None else version
        for model in self.models:
            if model.name == name and model.version == wanted:
                return model
        raise LookupError(f"model {name!r} has no version {wanted!r}; it has {_listing(versions)}")


# -- reading ----------------------------------------------------------------------------------------------------


def is_service_file(path: str | os.PathLike[str]) -> bool:
    """A path to read as a service file (a .toml file), as opposed to a bundle directory."""
    candidate = Path(path)
    return candidate.suffix == SERVICE_SUFFIX and not candidate.is_dir()


def read_service(path: str | os.PathLike[str]) -> Service:
    """Read and validate the service file at `path` (module docstring); ServiceError on anything wrong."""
    source = Path(path).expanduser().absolute()
    data = _load_toml(source)
    where = str(source)
    _reject_unknown(data, _TOP_KEYS, where, "the top level")
    service_table = _table(data, "service", where, "[service]")
    _reject_unknown(service_table, _SERVICE_KEYS, where, "[service]")
    name = _optional_str(service_table, "name", where, "[service]") or DEFAULT_NAME
    entries = data.get("models")
    if entries is None or entries == []:
        raise ServiceError(f"{where} lists no models",
                           'add one [[models]] table per bundle, with bundle = "dist/NAME"')
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise ServiceError(f"{where}: 'models' must be an array of tables",
                           'write each model as a [[models]] table with bundle = "dist/NAME"')
    models = [_model_entry(entry, index, source) for index, entry in enumerate(entries)]
    routes = _table(data, "routes", where, "[routes]")
    defaults: dict[str, str] = {}
    for route, table in routes.items():
        label = f"[routes.{_toml_key(route)}]"
        if not isinstance(table, dict):
            raise ServiceError(f"{where}: routes.{route} must be a table",
                               f'write it as {label} with default = "VERSION"')
        _reject_unknown(table, _ROUTE_KEYS, where, label)
        default = _optional_str(table, "default", where, label)
        if default is not None:
            defaults[route] = default
    service = _service(name, models, defaults, source, routes=tuple(routes))
    rollouts = {route: rollout for route, table in routes.items()
                if (rollout := _rollout(table, route, service, where)) is not None}
    return replace(service, rollouts=rollouts) if rollouts else service


def _rollout(table: Mapping[str, Any], route: str, service: Service, where: str) -> Rollout | None:
    """The shadow or canary of [routes.NAME], validated against the versions served."""
    label = f"[routes.{_toml_key(route)}]"
    modes = [mode for mode in ("shadow", "canary") if mode in table]
    if not modes:
        return None
    if len(modes) > 1:
        raise ServiceError(f"{where}: {label} has both 'shadow' and 'canary'",
                           "keep one: a candidate either answers some requests (canary) or only sees copies (shadow)")
    mode = modes[0]
    entry = table[mode]
    what = f"{label} {mode}"
    example = f'{mode} = {{ version = "2.0.0", percent = 10 }}'
    if not isinstance(entry, dict):
        raise ServiceError(f"{where}: {what} must be an inline table, got {entry!r}", f"write it as {example}")
    _reject_unknown(entry, _ROLLOUT_KEYS, where, what)
    version = _optional_str(entry, "version", where, what)
    if version is None:
        raise ServiceError(f"{where}: {what} has no 'version'", f"name the candidate version: {example}")
    versions = service.versions(route)
    if version not in versions:
        raise ServiceError(f"{where}: {what} names version {version!r}, but model {route!r} has no such version "
                           f"(it has {_listing(versions)})",
                           f"add a [[models]] table for the bundle of version {version}, or name one of those")
    percent = _number(entry, "percent", where, what, 100.0 if mode == "shadow" else None, 0.0, 100.0)
    sticky = entry.get("sticky")
    if sticky is not None:
        if mode != "canary":
            raise ServiceError(f"{where}: 'sticky' in {what}: only a canary is sticky",
                               "remove it (a shadow's answers always come from the default)")
        if not isinstance(sticky, str) or not _HEADER.fullmatch(sticky):
            raise ServiceError(f"{where}: 'sticky' in {what} must be a request header name, got {sticky!r}",
                               'write e.g. sticky = "X-User-ID"')
    window = entry.get("window", DEFAULT_WINDOW)
    if type(window) is not int or window < 1:
        raise ServiceError(f"{where}: 'window' in {what} must be a positive integer, got {window!r}",
                           f"write e.g. window = {DEFAULT_WINDOW} (requests the guard looks back over)")
    return Rollout(mode, version, percent, sticky,
                   _number(entry, "max_disagreement", where, what, DEFAULT_MAX_DISAGREEMENT, 0.0, 1.0),
                   _number(entry, "max_error_rate", where, what, DEFAULT_MAX_ERROR_RATE, 0.0, 1.0), window)


def _number(table: Mapping[str, Any], key: str, where: str, what: str, default: float | None, low: float,
            high: float) -> float:
    value = table.get(key, default)
    if value is None:
        raise ServiceError(f"{where}: {what} has no {key!r}", f"add {key} = a number from {low:g} to {high:g}")
    if type(value) not in (int, float) or not low <= value <= high:
        raise ServiceError(f"{where}: {key!r} in {what} must be a number from {low:g} to {high:g}, got {value!r}",
                           f"write e.g. {key} = {high / 10:g}")
    return float(value)


def service_from_bundles(paths: Sequence[str | os.PathLike[str]], name: str = DEFAULT_NAME,
                         defaults: Mapping[str, str] | None = None) -> Service:
    """The service of these bundle directories, each under its own name and version. A name with several versions
    and no entry in `defaults` gets its highest version (version_key) as the default, since a command line has
    no [routes] table; a service file must say which."""
    models = [_model(Path(path).expanduser(), None, None, f"bundle {path}") for path in paths]
    if not models:
        raise ServiceError("no bundles given", "pass one or more bundle directories, or a service file")
    chosen = dict(defaults or {})
    for model_name in dict.fromkeys(model.name for model in models):
        versions = [model.version for model in models if model.name == model_name]
        if model_name not in chosen and len(set(versions)) > 1:
            chosen[model_name] = max(versions, key=version_key)
    return _service(name, models, chosen, None, routes=tuple(defaults or {}))


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Orders versions the way people read them: 1.10.0 after 1.9.0 (numeric parts compare as numbers)."""
    parts = re.split(r"[.+!-]", version)
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in parts)


def _service(name: str, models: list[ServiceModel], defaults: Mapping[str, str], source: Path | None, *,
             routes: tuple[str, ...]) -> Service:
    where = str(source) if source is not None else "the command line"
    if not _NAME.fullmatch(name):
        raise ServiceError(f"{where}: the service name {name!r} is not a valid name",
                           "use letters, digits, '.', '_' and '-', starting with a letter or digit")
    seen: dict[tuple[str, str], ServiceModel] = {}
    for model in models:
        key = (model.name, model.version)
        if key in seen:
            raise ServiceError(
                f"{where}: two bundles serve model {model.name!r} version {model.version!r}: "
                f"{seen[key].bundle} and {model.bundle}",
                'list each bundle once; to serve both, rename one (name = "..." in its [[models]] table) or '
                "package it again with another --version",
            )
        seen[key] = model
    names = tuple(dict.fromkeys(model.name for model in models))
    for route in routes:
        if route not in names:
            what = f"[routes.{_toml_key(route)}]" if source is not None else f"--default {route}={defaults[route]}"
            raise ServiceError(f"{where}: {what} names no served model", f"model names served here: {_listing(names)}")
    chosen: dict[str, str] = {}
    for model_name in names:
        versions = tuple(model.version for model in models if model.name == model_name)
        default = defaults.get(model_name)
        if default is None:
            if len(versions) > 1:
                raise ServiceError(
                    f"{where}: model {model_name!r} has versions {_listing(versions)} and no default",
                    f'say which one an unversioned request gets: [routes.{_toml_key(model_name)}] '
                    f'default = "{versions[-1]}"',
                )
            default = versions[0]
        elif default not in versions:
            what = (f"[routes.{_toml_key(model_name)}] default = {default!r}" if source is not None
                    else f"--default {model_name}={default}")
            raise ServiceError(
                f"{where}: {what}, but model {model_name!r} has no such version (it has {_listing(versions)})",
                f"set default to one of {_listing(versions)}, or add the bundle of version {default}",
            )
        chosen[model_name] = default
    return Service(name, tuple(models), chosen, source)


def _model_entry(entry: Mapping[str, Any], index: int, source: Path) -> ServiceModel:
    where, label = str(source), f"[[models]] #{index + 1}"
    _reject_unknown(entry, _MODEL_KEYS, where, label)
    bundle = _optional_str(entry, "bundle", where, label)
    if bundle is None:
        raise ServiceError(f"{where}: {label} has no 'bundle'",
                           'add bundle = "dist/NAME", the folder `mlship package` wrote')
    rename = _optional_str(entry, "name", where, label)
    python = _optional_str(entry, "python", where, label)
    workers = entry.get("workers")
    if workers is not None and (type(workers) is not int or workers < 1):
        raise ServiceError(f"{where}: 'workers' in {label} must be a positive integer, got {workers!r}",
                           "write e.g. workers = 2, or leave it out to use `mlship serve --workers`")
    folder = source.parent
    return _model(_relative_to(folder, bundle), rename, _python_path(folder, python), f"{where}: {label}", workers)


def _model(bundle: Path, rename: str | None, python: str | None, where: str,
           workers: int | None = None) -> ServiceModel:
    root = bundle.absolute()
    if not root.is_dir():
        problem = "does not exist" if not root.exists() else "is not a folder"
        raise ServiceError(f"{where}: the bundle {root} {problem}",
                           "package the notebook first (mlship package NOTEBOOK -o DIR), or fix the path")
    if not (root / MANIFEST_NAME).is_file():
        raise ServiceError(f"{where}: {root} is not a bundle: it has no {MANIFEST_NAME}",
                           "name the folder `mlship package` wrote (e.g. dist/churn)")
    try:
        manifest: Manifest = read_manifest(root)
    except BundleLoadError as exc:
        raise ServiceError(
            f"{where}: {exc.message}",
            "install the newer mlship that wrote it (pip install -U mlship) to serve it"
            if _written_by_newer(root) else "package the notebook again with this version of mlship",
        ) from None
    name = rename if rename is not None else manifest.name
    if not _NAME.fullmatch(name):
        raise ServiceError(f"{where}: the model name {name!r} ({root}) cannot be part of a URL",
                           'rename it with name = "..." (letters, digits, ".", "_", "-") in its [[models]] table')
    if not _VERSION.fullmatch(manifest.version):
        raise ServiceError(f"{where}: the version {manifest.version!r} of {root} cannot be part of a URL",
                           "package it again with --version, e.g. --version 1.0.0")
    return ServiceModel(name, manifest.version, root.resolve(), python, workers)


def _written_by_newer(root: Path) -> bool:
    """The bundle's mlship.json says a format newer than this runtime's (Manifest.from_json refused it)."""
    try:
        fmt = json.loads((root / MANIFEST_NAME).read_bytes()).get("format")
    except (OSError, ValueError, AttributeError):
        return False
    return type(fmt) is int and fmt > FORMAT


def _load_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ServiceError(f"the service file {path} does not exist",
                           "write one ([[models]] tables with bundle = \"dist/NAME\"), or pass bundle directories instead") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ServiceError(f"the service file {path} cannot be read: {exc}", "check the path") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ServiceError(f"{path} is not valid TOML: {exc}", "fix the syntax at the line and column named") \
            from None


def _reject_unknown(table: Mapping[str, Any], known: tuple[str, ...], where: str, label: str) -> None:
    unknown = [key for key in table if key not in known]
    if unknown:
        keys = ", ".join(repr(key) for key in unknown)
        raise ServiceError(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {keys} in {label}",
                           f"{label} takes {_listing(known)}; check the spelling, or remove the key")


def _table(data: Mapping[str, Any], key: str, where: str, label: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ServiceError(f"{where}: {key!r} must be a table, got {value!r}", f"write it as {label}")
    return value


def _optional_str(table: Mapping[str, Any], key: str, where: str, label: str) -> str | None:
    value = table.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise ServiceError(f"{where}: {key!r} in {label} must be a non-empty string, got {value!r}",
                           f'quote it: {key} = "..."')
    return value


def _relative_to(folder: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else Path(os.path.normpath(folder / path))


def _python_path(folder: Path, value: str | None) -> str | None:
    """A bare command (`python3.11`) stays as written, found on PATH when the model starts; a path is relative to
    the service file's folder."""
    if value is None or "/" not in value:
        return value
    return str(_relative_to(folder, value))


def _listing(items: Sequence[str]) -> str:
    return ", ".join(repr(item) for item in items) if items else "none"


# -- writing ----------------------------------------------------------------------------------------------------


def write_service(service: Service, path: str | os.PathLike[str]) -> None:
    """Write `service` as a service file at `path` that read_service reads back as the same models and defaults.

    Bundles and interpreters under the file's folder are written relative to it (an unpacked tarball or an image
    may move as a whole), relative ones as given (a target writing paths inside an artifact: "../envs/a/bin/python"
    is relative to the file), others as absolute paths. Every model's name is written, so a renamed one stays renamed.
    Written to a temporary file beside `path`, then moved into place.
    """
    target = Path(path).absolute()
    folder = target.parent
    lines = ["[service]", f"name = {_toml_string(service.name)}"]
    for model in service.models:
        lines += ["", "[[models]]", f"bundle = {_toml_string(_written_path(folder, model.bundle))}",
                  f"name = {_toml_string(model.name)}"]
        if model.python is not None:
            python = model.python if "/" not in model.python else _written_path(folder, Path(model.python))
            lines.append(f"python = {_toml_string(python)}")
        if model.workers is not None:
            lines.append(f"workers = {model.workers}")
    for name in service.names:
        if len(service.versions(name)) > 1:
            lines += ["", f"[routes.{_toml_key(name)}]", f"default = {_toml_string(service.defaults[name])}"]
            rollout = service.rollouts.get(name)
            if rollout is not None:
                lines.append(f"{rollout.mode} = {_rollout_toml(rollout)}")
    temporary = target.with_name(f".{target.name}.tmp")
    try:
        temporary.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def _rollout_toml(rollout: Rollout) -> str:
    parts = [f"version = {_toml_string(rollout.version)}", f"percent = {rollout.percent!r}"]
    if rollout.sticky is not None:
        parts.append(f"sticky = {_toml_string(rollout.sticky)}")
    if rollout.max_disagreement != DEFAULT_MAX_DISAGREEMENT:
        parts.append(f"max_disagreement = {rollout.max_disagreement!r}")
    if rollout.max_error_rate != DEFAULT_MAX_ERROR_RATE:
        parts.append(f"max_error_rate = {rollout.max_error_rate!r}")
    if rollout.window != DEFAULT_WINDOW:
        parts.append(f"window = {rollout.window}")
    return "{ " + ", ".join(parts) + " }"


def _written_path(folder: Path, path: Path) -> str:
    """A relative path as given (it means: relative to the file), one under `folder` relative to it, others
    absolute."""
    if not path.is_absolute():
        return path.as_posix()
    if path.is_relative_to(folder):
        return path.relative_to(folder).as_posix() or "."
    return str(path)


def _toml_string(value: str) -> str:
    # A JSON string is a TOML basic string, but for DEL, which TOML requires escaped and JSON leaves as is.
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_string(key)
