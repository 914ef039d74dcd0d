"""`mlship promote`, `mlship rollback`, `mlship history` (docs/SERVICE.md "Promote and roll back"): change which
version of a model an unversioned request gets, in the service file itself, with an audit log beside it.

The file is rewritten with tomlkit, which keeps its comments and layout: only `[routes.NAME] default` changes (the
table is added when the name has none). The new text is read back with read_service (the runtime's own reader,
tomllib) before it replaces the file, atomically (a temporary file in the same folder, then a rename), so the file
is always either the old one or a valid new one. Each change appends one JSON line to `<file>.history.jsonl`
(history_file_for): when, who, what, from -> to, and the sha256 of the compare report when one was required. The
history file is locked (flock) for the whole change, so two promotes of one file run one after the other.

Before anything is written, promote replays the golden cases of the promoted version's bundle in a fresh interpreter
(its own `python`), as `mlship verify` does, and refuses a bundle that cannot load or whose cases differ: a default
that fails them would keep the server from serving the name after its next start (`verify=False`, the CLI's
--no-verify, skips it, and the audit record says so).

Rollback undoes the last promote of a name that has not been rolled back yet: the history is read as a stack
(each promote pushes, each rollback pops), so two rollbacks go back two promotes.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import hashlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import tomlkit
from tomlkit.exceptions import TOMLKitError
from tomlkit.items import InlineTable, Table

from .bundle.digest import bundle_digest
from .compare.report import REPORT_FORMAT
from .errors import MlshipError
from .runtime._service import Service, ServiceError, ServiceModel, read_service

HISTORY_SUFFIX = ".history.jsonl"

# Who made a change, in this order: the actor a pipeline names explicitly, then the CI systems' own variables.
_ACTORS = (("MLSHIP_ACTOR", ""), ("GITHUB_ACTOR", "github:"), ("GITLAB_USER_LOGIN", "gitlab:"),
           ("BUILDKITE_BUILD_CREATOR_EMAIL", "buildkite:"), ("BUILD_REQUESTEDFOR", "azure:"))


@dataclass(frozen=True)
class RouteChange:
    """What promote or rollback did: `record` is the audit record appended (None when nothing changed)."""

    source: Path
    name: str
    before: str
    after: str
    record: dict[str, Any] | None

    @property
    def changed(self) -> bool:
        return self.record is not None


def history_file_for(source: Path) -> Path:
    """The audit log of a service file: `mlship.toml.history.jsonl` beside it."""
    return source.with_name(source.name + HISTORY_SUFFIX)


def promote(source: Path, name: str, version: str, *, report: Path | None = None,
            verify: bool = True) -> RouteChange:
    """Make `version` the default of model `name` in the service file `source`, once its bundle passes its golden
    cases (unless not `verify`). With `report`, only when it is a passing `mlship compare --json` report of exactly
    the current default's bundle (OLD) and that version's (NEW)."""
    source = _service_path(source)
    with _locked_history(source) as history:
        service = _read(source)
        versions = _served_versions(service, name)
        if version not in versions:
            raise MlshipError(f"model {name!r} in {source} has no version {version!r} (it has {_listing(versions)})",
                              hint=f"promote one of {_listing(versions)}, or add the bundle of {name} {version} as "
                              "a [[models]] table first")
        before = service.defaults[name]
        text = source.read_text(encoding="utf-8")
        declared = _declared_default(text, name)
        if before == version and declared == version:
            return RouteChange(source, name, before, version, None)
        digest = None
        if report is not None and before != version:
            digest = check_report(report, service, name, before, version)
        if verify:
            check_golden(service.model(name, version))
        return _change("promote", history, service, text, name, before, version, report, digest, verified=verify)


def rollback(source: Path, name: str) -> RouteChange:
    """Set the default of `name` back to what it was before its last promote not rolled back yet."""
    source = _service_path(source)
    with _locked_history(source) as history:
        service = _read(source)
        versions = _served_versions(service, name)
        stack = _promotes(_parse_history(history.name, _read_all(history)), name)
        log = history_file_for(source)
        if not stack:
            raise MlshipError(f"there is no promote of {name!r} to roll back in {log}",
                              hint=f"`mlship promote {source} {name} VERSION` sets the default; "
                              f"`mlship history {source}` shows what was done")
        last = stack[-1]
        current = service.defaults[name]
        if current != last["to"]:
            raise MlshipError(f"the default of {name!r} in {source} is {current!r}, but its last promote "
                              f"({last['time']}) set {last['to']!r}: the file was changed by other means since",
                              hint=f"promote the version you want: mlship promote {source} {name} VERSION")
        target = str(last["from"])
        if target not in versions:
            raise MlshipError(f"cannot roll {name!r} back to {target!r}: {source} no longer serves that version "
                              f"(it has {_listing(versions)})",
                              hint=f"add its bundle back as a [[models]] table, or promote one of {_listing(versions)}")
        return _change("rollback", history, service, source.read_text(encoding="utf-8"), name, current, target)


def read_history(source: Path) -> list[dict[str, Any]]:
    """Every audit record of the service file, oldest first ([] when nothing was promoted yet)."""
    log = history_file_for(_service_path(source, must_exist=False))
    try:
        text = log.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise MlshipError(f"cannot read the history {log}: {exc.strerror or exc}", hint="check its permissions") \
            from None
    return _parse_history(log.name, text)


def check_report(report: Path, service: Service, name: str, old: str, new: str) -> str:
    """The sha256 of `report` when it is a passing compare report of `name` `old` -> `new` (matched by the two
    bundles' digests); MlshipError saying which side differs otherwise."""
    try:
        raw = report.read_bytes()
    except OSError as exc:
        raise MlshipError(f"cannot read the compare report {report}: {exc.strerror or exc}",
                          hint=f"write it with mlship compare OLD NEW --json > {report}") from None
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict) or not all(isinstance(data.get(side), dict) for side in ("old", "new")) \
            or not isinstance(data.get("passed"), bool):
        raise MlshipError(f"{report} is not an `mlship compare --json` report (it needs 'passed', 'old' and 'new')",
                          hint="write it with mlship compare OLD NEW --json > report.json")
    if data.get("format", REPORT_FORMAT) != REPORT_FORMAT:
        raise MlshipError(f"{report} is a compare report in format {data.get('format')!r}; this mlship reads "
                          f"format {REPORT_FORMAT}", hint="compare again with this mlship")
    for side, version in (("old", old), ("new", new)):
        bundle = service.model(name, version).bundle
        expected, found = bundle_digest(bundle), data[side].get("digest")
        if found != expected:
            what = f"{data[side].get('name', '?')} {data[side].get('version', '?')} ({found})"
            raise MlshipError(
                f"{report} compares other bundles: its {side.upper()} is {what}, but the "
                f"{'current default' if side == 'old' else 'promoted version'} {name} {version} is {bundle} "
                f"({expected})",
                hint=f"compare exactly these two: mlship compare {service.model(name, old).bundle} "
                f"{service.model(name, new).bundle} --json > {report}")
    if not data["passed"]:
        failed = [str(gate.get("detail", gate.get("gate"))) for gate in data.get("gates", [])
                  if isinstance(gate, dict) and not gate.get("passed")]
        raise MlshipError(f"{report}: {name} {new} failed its comparison with {old}"
                          + (f": {'; '.join(failed)}" if failed else ""),
                          hint="promote only a version that passes its gates (or compare again with other gates)")
    return hashlib.sha256(raw).hexdigest()


def check_golden(model: ServiceModel) -> None:
    """Replay `model`'s golden cases in a fresh interpreter (its `python`, else this one); MlshipError naming the
    first case that differs, or why the bundle cannot be verified at all."""
    # Imported here, not at the top: it loads the notebook tools, which rollback and history never need.
    from .bundle.verify import verify_bundle

    label = f"{model.name} {model.version}"
    skip = "or pass --no-verify to promote it anyway"
    try:
        results = verify_bundle(model.bundle, python=model.python)
    except MlshipError as exc:
        raise MlshipError(f"cannot promote {label}: its bundle {model.bundle} cannot be verified: {exc.message}",
                          hint=f"{exc.hint}; {skip}" if exc.hint else f"fix the bundle, {skip}") from None
    failed = [result for result in results if not result.ok]
    if failed:
        raise MlshipError(f"cannot promote {label}: {len(failed)} of {len(results)} golden cases of {model.bundle} "
                          f"differ from the notebook (first: {failed[0].id}: {failed[0].detail})",
                          hint=f"`mlship verify {model.bundle}` shows every case; promote a version that passes, "
                          f"{skip}")


def actor(environ: Mapping[str, str] | None = None) -> str:
    """Who is making the change: $MLSHIP_ACTOR, a CI system's user variable, else user@host."""
    env = os.environ if environ is None else environ
    for variable, prefix in _ACTORS:
        if env.get(variable):
            return prefix + env[variable]
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


# -- the file ---------------------------------------------------------------------------------------------------


def _service_path(source: Path, *, must_exist: bool = True) -> Path:
    path = source.expanduser().absolute()
    if must_exist and not path.is_file():
        raise MlshipError(f"the service file {path} does not exist",
                          hint="name the mlship.toml the server serves")
    return path


def _served_versions(service: Service, name: str) -> tuple[str, ...]:
    versions = service.versions(name)
    if not versions:
        raise MlshipError(f"{service.source} serves no model named {name!r}",
                          hint=f"the models it serves: {_listing(service.names)}")
    return versions


def _change(action: str, history: IO[str], service: Service, text: str, name: str, before: str, after: str,
            report: Path | None = None, digest: str | None = None, *, verified: bool | None = None) -> RouteChange:
    """Write the file with `after` as the default of `name`, then its audit record (with `verified`, whether its
    golden cases were replayed first, for a promote)."""
    assert service.source is not None
    new_text, ended = _with_default(text, name, after, service.source)
    _replace(service.source, new_text, service)
    record = _record(action, service.source, name, before, after, report, digest)
    if verified is not None:
        record["verified"] = verified
    if ended:
        record["ended"] = ended
    _append(history, record)
    return RouteChange(service.source, name, before, after, record)


def _read(source: Path) -> Service:
    try:
        return read_service(source)
    except ServiceError as exc:
        raise MlshipError(exc.message, hint=exc.hint) from None


def _declared_default(text: str, name: str) -> str | None:
    routes = tomlkit.parse(text).get("routes")
    table = routes.get(name) if isinstance(routes, dict) else None
    value = table.get("default") if isinstance(table, dict) else None
    return str(value) if value is not None else None


def _with_default(text: str, name: str, version: str, source: Path) -> tuple[str, dict[str, Any]]:
    """`text` with `[routes.NAME] default = VERSION`, everything else as it was, but a shadow or canary of that
    very version: it has become the default, so its rollout has ended (and a rollback must not start sending it
    traffic again). Also returns what was removed ({"canary": {...}}, or {})."""
    try:
        document = tomlkit.parse(text)
        routes = document.get("routes")
        if routes is None:
            routes = tomlkit.table(is_super_table=True)
            document["routes"] = routes
        table = routes.get(name)
        if table is None:
            table = tomlkit.table()
            routes[name] = table
        table["default"] = version
        ended: dict[str, Any] = {}
        for mode in ("shadow", "canary"):
            rollout = table.get(mode)
            if isinstance(rollout, (InlineTable, Table)) and rollout.get("version") == version:
                ended[mode] = rollout.unwrap()
                del table[mode]
        return tomlkit.dumps(document), ended
    except TOMLKitError as exc:  # read_service read it, so this is a file tomlkit cannot edit
        raise MlshipError(f"cannot edit {source}: {exc}",
                          hint=f'set it by hand: [routes.{name}] default = "{version}"') from None


def _replace(source: Path, text: str, before: Service) -> None:
    """Write `text` over `source` only when read_service reads it as the same models with the new default."""
    if not os.access(source, os.W_OK):
        raise MlshipError(f"cannot write {source}: permission denied", hint="run as a user who may change it")
    try:
        handle, name = tempfile.mkstemp(dir=source.parent, prefix=f".{source.name}.", suffix=".tmp")
    except OSError as exc:
        raise MlshipError(f"cannot write beside {source}: {exc.strerror or exc}",
                          hint="run as a user who may write in its folder (the file is replaced, not edited)") \
            from None
    temporary = Path(name)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, source.stat().st_mode & 0o7777)
        try:
            after = read_service(temporary)
        except ServiceError as exc:
            raise MlshipError(f"with the new default, {source} would not be served: "
                              f"{exc.message.replace(str(temporary), str(source))}; nothing changed",
                              hint=exc.hint) from None
        if [m.bundle for m in after.models] != [m.bundle for m in before.models]:
            raise MlshipError(f"the rewritten {source} would serve other models; nothing changed",
                              hint="report this; meanwhile set the default by hand")
        os.replace(temporary, source)
    finally:
        temporary.unlink(missing_ok=True)


# -- the history ------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked_history(source: Path) -> Iterator[IO[str]]:
    log = history_file_for(source)
    try:
        handle = log.open("a+", encoding="utf-8")
    except OSError as exc:
        raise MlshipError(f"cannot write the history {log}: {exc.strerror or exc}",
                          hint=f"every change of {source.name} is recorded there: run as a user who may write in "
                          f"{source.parent}") from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield handle


def _read_all(handle: IO[str]) -> str:
    handle.seek(0)
    return handle.read()


def _append(handle: IO[str], record: dict[str, Any]) -> None:
    handle.seek(0, os.SEEK_END)
    handle.write(json.dumps(record, sort_keys=False) + "\n")
    handle.flush()
    os.fsync(handle.fileno())


def _record(action: str, source: Path, name: str, before: str, after: str, report: Path | None,
            digest: str | None) -> dict[str, Any]:
    return {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "actor": actor(), "action": action,
            "file": str(source), "name": name, "from": before, "to": after,
            "report": None if report is None else str(report.absolute()), "report_sha256": digest}


def _parse_history(label: str, text: str) -> list[dict[str, Any]]:
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict) or not {"action", "name", "from", "to"} <= record.keys():
            raise MlshipError(f"{label} line {number} is not an audit record: {line[:80]!r}",
                              hint="the history is JSON lines written by mlship promote/rollback: fix or remove "
                              "that line")
        records.append(record)
    return records


def _promotes(records: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """The promotes of `name` still in effect, oldest first: each rollback undoes the latest one."""
    stack: list[dict[str, Any]] = []
    for record in records:
        if record["name"] != name:
            continue
        if record["action"] == "promote" and record["from"] != record["to"]:
            stack.append(record)
        elif record["action"] == "rollback" and stack:
            stack.pop()
    return stack


def _listing(items: tuple[str, ...]) -> str:
    return ", ".join(repr(item) for item in items) if items else "none"
