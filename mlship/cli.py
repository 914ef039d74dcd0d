"""The command line: each command parses its options, calls one core function, and prints the result."""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperCommand, TyperGroup

from . import __version__
from .console import console, display_error, display_success, display_warning, err_console, is_interactive
from .errors import MlshipError


class _HelpLikeClick:
    """Help that reads like hatch's (plain click): `Usage: mlship serve [OPTIONS] BUNDLE` rather than typer's
    `{bundle}`, and no `<bool>` beside a flag, which takes no value."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces: list[str] = [self.options_metavar] if self.options_metavar else []  # type: ignore[attr-defined]
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = param.metavar or param.name.upper()
                pieces.append(name if param.required else f"[{name}]")
        return pieces

    def get_params(self, ctx: Any) -> list[Any]:
        params: list[Any] = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
            if param.param_type_name == "argument" and param.nargs != 1:
                # typer shows a list argument's type as `<list[Path]>`; click says `<path>...`.
                shown = re.sub(r"list\[(\w+)\]", lambda m: m[1].lower(), param.display_type(ctx))
                param.display_type_rich = lambda ctx, shown=shown: f"{shown}..."
        return params


class _Command(_HelpLikeClick, TyperCommand):
    pass


class _Group(_HelpLikeClick, TyperGroup):
    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [*super().collect_usage_pieces(ctx), self.subcommand_metavar or "COMMAND [ARGS]..."]


app = typer.Typer(
    name="mlship",
    cls=_Group,
    help="Turn a Jupyter notebook into a verified, deployable model service.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

F = TypeVar("F", bound=Callable[..., Any])


def _boundary(fn: F) -> F:
    """The one place user-facing errors become `error:`/`hint:` lines and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MlshipError as exc:
            display_error(exc.message, exc.hint)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            display_error("interrupted; nothing was written")
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except Exception:
            from rich.traceback import Traceback

            err_console.print(Traceback(show_locals=os.environ.get("MLSHIP_DEBUG") == "1"))
            display_error("mlship failed unexpectedly (the traceback above is a bug in mlship)",
                          "please report it with the notebook if you can; MLSHIP_DEBUG=1 shows local variables")
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        console.print(f"mlship {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    import logging

    level = logging.DEBUG if os.environ.get("MLSHIP_DEBUG") == "1" else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


# -- package / inspect -----------------------------------------------------------------------------------------

NotebookArg = Annotated[Path, typer.Argument(metavar="NOTEBOOK", help="The notebook (.ipynb) to package, or a folder holding one.",
                                             show_default=False)]
ModelOpt = Annotated[str | None, typer.Option(
    "--model", help="Serve NAME.predict(X); NAME may be an expression like grid.best_estimator_.")]
PredictOpt = Annotated[str | None, typer.Option(
    "--predict", help='Serve this Python expression over the input, bound to X, e.g. "model.predict(X)".')]
PreprocessOpt = Annotated[str | None, typer.Option(
    "--preprocess", help="A notebook function applied to the input before the model.")]
SampleOpt = Annotated[str | None, typer.Option(
    "--sample", help="Expression whose value is the sample input (first rows become golden cases).")]
KernelOpt = Annotated[str | None, typer.Option(
    "--kernel", help="Installed Jupyter kernel to run the notebook in (default: mlship's own Python). "
    "[env var: MLSHIP_KERNEL]", envvar="MLSHIP_KERNEL")]
TimeoutOpt = Annotated[int | None, typer.Option(
    "--timeout", min=1, help="Seconds each cell may run (default 600). [env var: MLSHIP_TIMEOUT]",
    envvar="MLSHIP_TIMEOUT")]
SampleRowsOpt = Annotated[int | None, typer.Option("--sample-rows", min=1, max=1000,
                                                   help="Rows of the sample kept as golden cases (default 5).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object (for CI) instead of tables.")]
DenyLicensesOpt = Annotated[list[str] | None, typer.Option(
    "--deny-licenses", metavar="SPDX,...", help="Fail when a requirement's license needs one of these SPDX ids, e.g. "
    "GPL-3.0-only,AGPL-3.0-only (default: [tool.mlship] deny_licenses). [env var: MLSHIP_DENY_LICENSES]",
    envvar="MLSHIP_DENY_LICENSES")]
DenyUnknownOpt = Annotated[bool, typer.Option(
    "--deny-unknown-licenses", help="Fail, rather than warn, when a requirement has no recognizable license.")]


@app.command(cls=_Command)
@_boundary
def package(
    notebook: NotebookArg,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Bundle directory (default dist/NAME).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace the output directory if it exists.")] = False,
    name: Annotated[str | None, typer.Option("--name", help="Bundle name (default: the notebook's stem).")] = None,
    version: Annotated[str | None, typer.Option("--version", help="Bundle version (default 0.1.0).")] = None,
    model: ModelOpt = None,
    predict: PredictOpt = None,
    preprocess: PreprocessOpt = None,
    sample: SampleOpt = None,
    sample_rows: SampleRowsOpt = None,
    requirement: Annotated[list[str] | None, typer.Option(
        "--requirement", "-r", metavar="REQUIREMENT", help="Add or override a pinned requirement (repeatable), e.g. -r pandas==2.2.3.")] = None,
    kernel: KernelOpt = None,
    timeout: TimeoutOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be served and why; write nothing.")] = False,
    deny_licenses: DenyLicensesOpt = None,
    deny_unknown_licenses: DenyUnknownOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Execute NOTEBOOK and write a verified bundle: model, served code, pinned requirements, golden cases."""
    from .bundle.builder import BundleBuilder, PackageOptions
    from .notebook.extract import Choices

    options = PackageOptions(
        output=output, force=force, name=name, version=version, kernel=kernel, timeout=timeout,
        sample_rows=sample_rows, requirements=list(requirement or []), dry_run=dry_run,
        choices=Choices(model=model, predict=predict, preprocess=preprocess, sample=sample),
        deny_licenses=list(deny_licenses or []), deny_unknown_licenses=deny_unknown_licenses,
    )
    builder = BundleBuilder.from_notebook(_notebook_in(notebook), options)
    with _progress(builder.notebook.path.name, quiet=as_json) as (on_cell, on_step):
        result = builder.build(on_progress=on_cell, on_step=on_step)
    from .report import package_json, print_package_result

    if as_json:
        console.print(json.dumps(package_json(result), indent=2), soft_wrap=True)
    else:
        print_package_result(result)


@app.command(cls=_Command)
@_boundary
def inspect(
    notebook: NotebookArg,
    model: ModelOpt = None,
    predict: PredictOpt = None,
    preprocess: PreprocessOpt = None,
    sample: SampleOpt = None,
    sample_rows: SampleRowsOpt = None,
    kernel: KernelOpt = None,
    timeout: TimeoutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show what `mlship package` would serve from NOTEBOOK and why (same as package --dry-run)."""
    from .bundle.builder import BundleBuilder, PackageOptions
    from .notebook.extract import Choices
    from .report import package_json, print_package_result

    options = PackageOptions(kernel=kernel, timeout=timeout, dry_run=True, sample_rows=sample_rows,
                             choices=Choices(model=model, predict=predict, preprocess=preprocess, sample=sample))
    builder = BundleBuilder.from_notebook(_notebook_in(notebook), options)
    with _progress(builder.notebook.path.name, quiet=as_json) as (on_cell, on_step):
        result = builder.build(on_progress=on_cell, on_step=on_step)
    if as_json:
        console.print(json.dumps(package_json(result), indent=2), soft_wrap=True)
    else:
        print_package_result(result)


def _notebook_in(path: Path) -> Path:
    """`path` itself, or the one notebook in the folder `path` (an error naming them when it holds several)."""
    if not path.is_dir():
        return path
    found = sorted(p.name for p in path.glob("*.ipynb") if p.is_file())
    if len(found) == 1:
        return path / found[0]
    if not found:
        below = sorted(p.relative_to(path) for p in path.glob("*/*.ipynb") if p.is_file())
        if below:  # e.g. examples/: name the notebooks one folder down
            raise MlshipError(f"{path} holds no notebook itself; its folders hold {', '.join(map(str, below))}",
                              hint=f"pass one of them, e.g. mlship package {path / below[0].parent}")
        raise MlshipError(f"{path} is a folder with no notebook (.ipynb) in it",
                          hint="pass the notebook to package, e.g. mlship package path/to/model.ipynb")
    raise MlshipError(f"{path} holds {len(found)} notebooks: {', '.join(found)}",
                      hint=f"pass the one to package, e.g. mlship package {path / found[0]}")


def _doc(page: str) -> str:
    """A page of docs/ as the reader has it: in mlship's installed files (the wheel ships docs/)."""
    from ._paths import DOCS_DIR

    return str(DOCS_DIR / Path(page).name)


# -- serve / verify --------------------------------------------------------------------------------------------

BundleArg = Annotated[Path, typer.Argument(metavar="BUNDLE", help="A bundle directory written by `mlship package`.", show_default=False)]
VerifyArg = Annotated[Path, typer.Argument(metavar="BUNDLE", help="A bundle directory written by `mlship package`, "
                                           "or a service file (mlship.toml, docs/SERVICE.md).", show_default=False)]


ServeArg = Annotated[list[Path], typer.Argument(
    metavar="BUNDLE...", help="One or more bundle directories written by `mlship package`, or one service file "
    "(mlship.toml, docs/SERVICE.md).", show_default=False)]


@app.command(cls=_Command)
@_boundary
def serve(
    bundles: ServeArg,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on. [env var: MLSHIP_HOST]",
                                      envvar="MLSHIP_HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port. [env var: MLSHIP_PORT]",
                                      envvar="MLSHIP_PORT")] = 8080,
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="Worker processes (default: the CPUs "
                                                "available). [env var: MLSHIP_WORKERS]", envvar="MLSHIP_WORKERS")] = None,
    key: Annotated[Path | None, typer.Option("--key", "-k", help="Serve only if BUNDLE/mlship.sig is a signature of "
                                             "its mlship.json by this Minisign public key.")] = None,
    default: Annotated[list[str] | None, typer.Option(
        "--default", metavar="NAME=VERSION", help="With several bundles of one name: the version an unversioned "
        "request gets (default: the highest).")] = None,
) -> None:
    """Serve BUNDLE over HTTP with the same runtime the container and the on-prem install use; several bundles,
    or a service file, behind one server (/models/NAME/...)."""
    from .runtime._service import is_service_file

    if len(bundles) == 1 and not is_service_file(bundles[0]) and not default:
        _serve_bundle(bundles[0], host, port, workers, key)
    else:
        _serve_service(bundles, host, port, workers, key, default or [])


def _serve_bundle(bundle: Path, host: str, port: int, workers: int | None, key: Path | None) -> None:
    from .bundle.manifest import open_bundle

    if key is not None:
        from .bundle.signing import check_signature

        check_signature(bundle, key)
    path = bundle.resolve()
    # mlship's own copy of the checks first (every file listed and unchanged, no links): a bundle cannot skip them.
    manifest = open_bundle(path).manifest
    _check_port(host, port)
    console.print(f"serving {manifest.name} {manifest.version} on http://{host}:{port} "
                  f"(POST /predict, GET /readyz, GET /metadata; Ctrl-C stops)")
    args = ["serve", str(path), "--host", host, "--port", str(port)]
    if workers is not None:
        args += ["--workers", str(workers)]
    _exec_runtime(path, args)


def _serve_service(paths: list[Path], host: str, port: int, workers: int | None, key: Path | None,
                   defaults: list[str]) -> None:
    from .service import describe_models, front_command, prepare_service, service_file

    service = prepare_service(paths, defaults=defaults, key=key)
    _check_port(host, port)
    source = service_file(service)
    console.print(f"serving {service.name} on http://{host}:{port}: {describe_models(service)} "
                  f"(POST /models/NAME/predict, GET /models, GET /readyz; Ctrl-C stops)")
    argv = front_command(source, host=host, port=port, workers=workers)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv[0], argv, env)


@app.command(cls=_Command)
@_boundary
def reload(
    service: Annotated[Path, typer.Argument(metavar="SERVICE_FILE", help="The service file a running "
                                            "`mlship serve` serves (mlship.toml).")],
    pid_file: Annotated[Path | None, typer.Option("--pid-file", help="The server's pid file, if it was started "
                                                  "with one (default: the one `mlship serve` writes for this file). "
                                                  "[env var: MLSHIP_PID_FILE]", envvar="MLSHIP_PID_FILE")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for the server to say what it did.")] = True,
    timeout: Annotated[float, typer.Option("--timeout", min=1, help="Seconds to wait.")] = 300.0,
) -> None:
    """Apply a changed service file to its running server without downtime: new and changed models start and
    pass their golden cases before they take traffic; removed ones drain and stop. One that fails never takes
    traffic and the version before it keeps serving."""
    from .reload import reload_service

    result = reload_service(service, pid_file=pid_file, wait=wait, timeout=timeout)
    if result.status is None:
        display_success(f"asked the server of {service} (pid {result.pid}) to reload it")
        return
    summary = str(result.status.get("summary", result.status.get("result")))
    if not result.ok:
        raise MlshipError(f"reload of {service}: {summary}",
                          hint="the models that failed never took traffic (the versions before them keep serving); "
                          "POST /v2/repository/index shows each model's state and the server's log says more")
    display_success(f"reloaded {service}: {summary} ({result.status.get('seconds', 0):.1f} s)")


_SERVICE_FILE = typer.Argument(metavar="SERVICE_FILE", help="The service file (mlship.toml).")
_PID_FILE = typer.Option("--pid-file", help="The running server's pid file, if it was started with one. "
                         "[env var: MLSHIP_PID_FILE]", envvar="MLSHIP_PID_FILE")
_NO_RELOAD = typer.Option("--no-reload", help="Only write the file; do not tell a running server.")


@app.command(cls=_Command)
@_boundary
def promote(
    service: Annotated[Path, _SERVICE_FILE],
    name: Annotated[str, typer.Argument(help="The model's name.")],
    version: Annotated[str, typer.Argument(help="The version unversioned requests get from now on.")],
    require_report: Annotated[Path | None, typer.Option(
        "--require-report", help="Promote only if this `mlship compare --json` report passed, for exactly the "
        "current default's bundle (OLD) and this version's (NEW).")] = None,
    no_verify: Annotated[bool, typer.Option("--no-verify", help="Do not replay VERSION's golden cases first "
                                            "(the history records it).")] = False,
    no_reload: Annotated[bool, _NO_RELOAD] = False,
    pid_file: Annotated[Path | None, _PID_FILE] = None,
) -> None:
    """Make VERSION the default of model NAME once its bundle passes its golden cases: rewrites [routes.NAME]
    default in the file (comments kept), records it in the file's history, and reloads a running server with no
    failed request."""
    from .promote import promote as promote_route

    _applied(promote_route(service, name, version, report=require_report, verify=not no_verify), no_reload,
             pid_file)


@app.command(cls=_Command)
@_boundary
def rollback(
    service: Annotated[Path, _SERVICE_FILE],
    name: Annotated[str, typer.Argument(help="The model's name.")],
    no_reload: Annotated[bool, _NO_RELOAD] = False,
    pid_file: Annotated[Path | None, _PID_FILE] = None,
) -> None:
    """Set the default of NAME back to the version before its last promote (from the file's history)."""
    from .promote import rollback as rollback_route

    _applied(rollback_route(service, name), no_reload, pid_file)


@app.command(cls=_Command)
@_boundary
def history(
    service: Annotated[Path, _SERVICE_FILE],
    as_json: Annotated[bool, typer.Option("--json", help="Print the records as one JSON array.")] = False,
) -> None:
    """Print the service file's audit log: every promote and rollback, when, by whom, from -> to."""
    from .promote import history_file_for, read_history

    records = read_history(service)
    if as_json:
        typer.echo(json.dumps(records, indent=2))
        return
    if not records:
        typer.echo(f"no promote or rollback recorded for {service} ({history_file_for(service.absolute())})")
    for r in records:
        report = f"  report sha256:{r['report_sha256'][:12]}" if r.get("report_sha256") else ""
        unverified = "  not verified (--no-verify)" if r.get("verified") is False else ""
        typer.echo(f"{r.get('time', '?')}  {r.get('actor', '?')}  {r['action']:<8}  {r['name']} "
                   f"{r['from']} -> {r['to']}{report}{unverified}")


def _applied(change: Any, no_reload: bool, pid_file: Path | None) -> None:
    """Say what promote/rollback changed, then tell the running server (unless --no-reload)."""
    from .reload import NoServerRunning, reload_service

    what = f"{change.name}: {change.before} -> {change.after}"
    if not change.changed:
        display_success(f"{change.name} {change.after} is already the default in {change.source}; nothing changed")
        return
    if no_reload:
        display_success(f"wrote {change.source} ({what}); not reloaded (--no-reload)")
        return
    try:
        result = reload_service(change.source, pid_file=pid_file)
    except NoServerRunning:
        display_success(f"wrote {change.source} ({what}); no server is running for it, so none was reloaded")
        return
    except MlshipError as exc:  # the file is written: say so, then why its server was not told
        raise MlshipError(f"wrote {change.source} ({what}), but could not reload its server: {exc.message}",
                          hint=exc.hint) from None
    if not result.ok:
        summary = result.status.get("summary") if result.status else None
        raise MlshipError(f"wrote {change.source} ({what}), but its server's reload did not succeed: {summary}",
                          hint="the server keeps serving what it served; its log and POST /v2/repository/index "
                          "say why")
    routed = (result.status or {}).get("defaults", {}).get(change.name, change.after)
    if routed != change.after:
        raise MlshipError(f"wrote {change.source} ({what}), but its server still routes {change.name} to {routed}: "
                          f"version {change.after} is not running there",
                          hint="POST /v2/repository/index on the server says why; fix it and run mlship reload, "
                          f"or roll back with mlship rollback {change.source} {change.name}")
    display_success(f"{what} in {change.source}; its server (pid {result.pid}) reloaded")


def _check_port(host: str, port: int) -> None:
    """Fail before announcing anything when the runtime could not listen on HOST:PORT (it binds the same way:
    SO_REUSEADDR, so a port left in TIME_WAIT by a server just stopped is free, one another process listens on
    is not). Another process can still take it in the moment between; the runtime then logs why and exits 1."""
    import errno
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except socket.gaierror as exc:
        raise MlshipError(f"cannot serve on {host}: {exc.strerror}", hint=_HOST_HINT) from None
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            other = port + 1 if port < 65535 else 8080
            raise MlshipError(f"cannot serve on {host} port {port}: another process is listening on it",
                              hint=f"stop that process, or pass another port, e.g. --port {other}") from None
        if exc.errno == errno.EACCES:
            raise MlshipError(f"cannot serve on {host} port {port}: permission denied",
                              hint="ports below 1024 need root; pass --port 1024 or higher, e.g. --port 8080") from None
        raise MlshipError(f"cannot serve on {host} port {port}: {exc.strerror}", hint=_HOST_HINT) from None


_HOST_HINT = "pass --host an address of this machine, e.g. 127.0.0.1, or 0.0.0.0 for every interface"


def _exec_runtime(bundle: Path, args: list[str]) -> None:
    """Become the bundle's `python -m mlship_runtime ARGS`, started in the bundle directory through mlship's own
    copy of runtime/_boot.py: it checks the bundle again and imports the bundle's runtime only from digest-checked
    sources, with the bundle off sys.path and no bytecode read or written (docs/BUNDLE.md "Integrity"). Signals
    (Ctrl-C, a supervisor's SIGTERM) reach the runtime directly, and its exit code is ours."""
    from ._paths import RUNTIME_DIR

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.chdir(bundle)
    boot = str(RUNTIME_DIR / "_boot.py")
    os.execve(sys.executable, [sys.executable, "-B", "-P", boot, "--bundle", str(bundle), *args], env)


KeyEnv = "MLSHIP_KEY_PASSWORD"


def _password(what: str, *, confirm: bool) -> str | None:
    """The secret key's password: MLSHIP_KEY_PASSWORD, else asked on a terminal, else None."""
    if KeyEnv in os.environ:
        return os.environ[KeyEnv]
    if not sys.stdin.isatty():
        return None
    return str(typer.prompt(what, hide_input=True, confirmation_prompt=confirm))


@app.command(cls=_Command)
@_boundary
def keygen(
    output: Annotated[Path, typer.Option("--output", "-o", help="The secret key to write; the public key goes beside "
                                         "it as NAME.pub.")] = Path("mlship.key"),
    no_password: Annotated[bool, typer.Option("--no-password", help="Leave the secret key unencrypted (for CI "
                                              "secrets stores that protect it themselves).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace existing key files.")] = False,
) -> None:
    """Make a Minisign key pair for `mlship sign` (Ed25519; the secret key encrypted with a password, from
    MLSHIP_KEY_PASSWORD or asked). [env var: MLSHIP_KEY_PASSWORD]"""
    from .bundle.signing import generate_key

    password = None if no_password else _password("Password for the new secret key", confirm=True)
    if password is None and not no_password:
        raise MlshipError("no password for the new secret key", hint=f"set {KeyEnv}, run in a terminal, or pass "
                          "--no-password to leave the key unencrypted")
    secret, public = generate_key(output, password=password or None, force=force)
    display_success(f"wrote the secret key {secret} (keep it private) and the public key {public} (give it to "
                    "whoever verifies: mlship verify BUNDLE --key " + str(public) + ")")


@app.command(cls=_Command)
@_boundary
def sign(
    bundle: BundleArg,
    key: Annotated[Path, typer.Option("--key", "-k", help="The Minisign secret key (mlship keygen writes one).",
                                      show_default=False)],
) -> None:
    """Sign BUNDLE: check it, then sign its mlship.json (which pins every file's sha256) into BUNDLE/mlship.sig.
    [env var: MLSHIP_KEY_PASSWORD]"""
    from .bundle.signing import sign_bundle

    path = sign_bundle(bundle.resolve(), key, password=os.environ.get(KeyEnv) or _password_if_needed(key))
    display_success(f"signed {bundle}: {path}")


@app.command(cls=_Command)
@_boundary
def sbom(
    artifact: Annotated[Path, typer.Argument(metavar="BUNDLE|IMAGE.tar|TARBALL", show_default=False, help=(
        "A bundle directory, an image archive (docker save, or an OCI archive) or an on-prem tarball."))],
    fmt: Annotated[str, typer.Option("--format", "-f", help="cyclonedx (CycloneDX 1.6 JSON) or spdx (SPDX 2.3 "
                                     "JSON).")] = "cyclonedx",
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write it to FILE instead of printing "
                                                "it.")] = None,
) -> None:
    """Print or write the software bill of materials that a bundle, image or tarball carries."""
    from .sbom.artifacts import read_sbom

    data = read_sbom(artifact, fmt.lower())
    if output is None:
        sys.stdout.write(data.decode())
        sys.stdout.flush()
        return
    output.write_bytes(data)
    display_success(f"wrote the {fmt.lower()} SBOM of {artifact} to {output}")


def _password_if_needed(key: Path) -> str | None:
    from .bundle.signing import key_is_encrypted

    return _password(f"Password for {key}", confirm=False) if key_is_encrypted(key) else None


@app.command(cls=_Command)
@_boundary
def verify(
    bundle: VerifyArg,
    url: Annotated[str | None, typer.Option("--url", help="Replay against a running server instead, e.g. "
                                            "http://localhost:8080.")] = None,
    python: Annotated[str | None, typer.Option("--python", help="Interpreter to load the bundle with "
                                               "(default: mlship's own).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
    key: Annotated[Path | None, typer.Option("--key", "-k", help="Check first that BUNDLE/mlship.sig is a signature "
                                             "of its mlship.json by this Minisign public key.")] = None,
) -> None:
    """Replay the notebook's own predictions (golden cases) through BUNDLE and compare; BUNDLE may be a service
    file (mlship.toml): every model's cases, each model in a fresh interpreter, or against the server at --url."""
    from .bundle.verify import verify_bundle
    from .report import print_cases
    from .runtime._service import is_service_file

    if is_service_file(bundle):
        _verify_service(bundle, url=url, python=python, as_json=as_json, key=key)
        return
    if key is not None:
        from .bundle.signing import check_signature

        check_signature(bundle, key)
        if not as_json:
            display_success(f"{bundle}/mlship.sig is a valid signature of its mlship.json by {key}")
    results = verify_bundle(bundle, python=python, url=url)
    failed = [r for r in results if not r.ok]
    if as_json:
        console.print(json.dumps({"ok": not failed, "cases": [r.to_json() for r in results]}), soft_wrap=True)
    else:
        print_cases(results)
    if failed:
        raise MlshipError(f"{len(failed)} of {len(results)} golden cases differ from the notebook",
                          hint="the table above shows expected and actual values")
    if not as_json:
        display_success(f"{len(results)} golden cases match the notebook" + (f" at {url}" if url else ""))


def _verify_service(path: Path, *, url: str | None, python: str | None, as_json: bool, key: Path | None) -> None:
    from .report import print_model_verifications
    from .service import open_service, verify_service

    service = open_service([path])
    if key is not None:
        from .bundle.signing import check_signature

        for model in service.models:
            check_signature(model.bundle, key)
    results = verify_service(service, url=url, python=python)
    failed = [result for result in results if not result.ok]
    if as_json:
        console.print(json.dumps({"ok": not failed, "models": [r.to_json() for r in results]}), soft_wrap=True)
    else:
        print_model_verifications(results)
    if failed:
        raise MlshipError(f"{len(failed)} of {len(results)} models fail verification: "
                          + ", ".join(f"{r.model.name} {r.model.version}" for r in failed),
                          hint="the lines above say which cases differ, or why a model could not be verified; "
                          f"mlship verify {failed[0].model.bundle} shows one model's cases in full")
    if not as_json:
        display_success(f"{len(results)} models match the notebooks' golden cases" + (f" at {url}" if url else ""))


@app.command(cls=_Command, help=(
    "Run OLD and NEW, each in its own process with its own runtime, over both bundles' golden inputs and every "
    "row of --data; report agreement, label changes, |new - old|, metrics, latency, schema and requirement "
    "changes. Exit 0 when every gate passes, 1 when one fails, 2 when the comparison cannot run "
    f"({_doc('docs/COMPARE.md')})."))
@_boundary
def compare(
    old: Annotated[Path, typer.Argument(metavar="OLD", help="The bundle serving now.", show_default=False)],
    new: Annotated[Path, typer.Argument(metavar="NEW", help="The candidate bundle.", show_default=False)],
    data: Annotated[Path | None, typer.Option("--data", help="Also compare over every row of this .csv, .jsonl "
                                              "or .parquet file (read as `mlship predict` reads it).")] = None,
    data_format: Annotated[str | None, typer.Option("--data-format", metavar="csv|jsonl|parquet",
                                                    help="--data's format (default: from its extension).")] = None,
    label: Annotated[str | None, typer.Option("--label", metavar="COLUMN", help="The column of --data holding the "
                                              "true value: each bundle's metric and the delta.")] = None,
    metric: Annotated[str | None, typer.Option("--metric", metavar="NAME", help="accuracy, f1, precision, recall, "
                                               "roc_auc, rmse, mae or r2 (default: accuracy for labels, rmse for "
                                               "numbers).")] = None,
    method: Annotated[list[str] | None, typer.Option(
        "--method", metavar="METHOD", help="Compare only this method (repeatable; default: every method both "
        "have). The gates and the metric read the first (default: predict).")] = None,
    max_disagreement: Annotated[float | None, typer.Option(
        "--max-disagreement", min=0, max=1, help="Gate: fail when more than this fraction of rows disagree.")] = None,
    min_delta: Annotated[float | None, typer.Option(
        "--min-delta", help="Gate: fail unless NEW's metric is at least this much better than OLD's (-0.01: at "
        "most 0.01 worse; rmse and mae count lower as better).")] = None,
    tolerance: Annotated[float | None, typer.Option(
        "--tolerance", min=0, help="Floats agree within this absolute difference (default: OLD's golden "
        "tolerance).")] = None,
    allow_breaking: Annotated[bool, typer.Option(
        "--allow-breaking", help="Do not fail on input-schema changes that break OLD's clients.")] = False,
    diff_out: Annotated[Path | None, typer.Option("--diff-out", metavar="FILE.jsonl", help="Write every "
                                                  "disagreeing row (input, old, new) as JSON lines.")] = None,
    html: Annotated[Path | None, typer.Option("--html", metavar="FILE", help="Write one self-contained HTML "
                                              "page: the tables and plots.")] = None,
    old_python: Annotated[str | None, typer.Option("--old-python", help="Interpreter OLD runs in (default: "
                                                   "mlship's own).")] = None,
    new_python: Annotated[str | None, typer.Option("--new-python", help="Interpreter NEW runs in (default: "
                                                   "mlship's own).")] = None,
    chunk_rows: Annotated[int, typer.Option("--chunk-rows", min=1, help="Rows predicted at a time.")] = 10_000,
    as_json: JsonOpt = False,
) -> None:
    from .compare.engine import CompareOptions, compare_bundles
    from .compare.report import Gates

    gates = Gates(max_disagreement=max_disagreement, min_delta=min_delta, allow_breaking=allow_breaking)
    options = CompareOptions(data=data, data_format=data_format, label=label, metric=metric,
                             methods=tuple(method or ()), tolerance=tolerance, chunk_rows=chunk_rows,
                             old_python=old_python, new_python=new_python, diff_out=diff_out, gates=gates)
    report = compare_bundles(old, new, options)
    if html is not None:
        try:
            report.write_html(html)
        except OSError as exc:
            raise MlshipError(f"cannot write --html {html}: {exc.strerror}", exit_code=2) from None
    if as_json:
        console.print(json.dumps(report.to_json(), indent=2), soft_wrap=True)
    else:
        _print_compare(report)
    if not report.passed:
        failed = [r.name for r in report.results if not r.passed]
        raise MlshipError(f"{new} fails the comparison gates: {', '.join(failed)}",
                          hint="see the gate lines above" + ("; --allow-breaking accepts a schema change that "
                                                              "breaks clients" if "schema" in failed else ""))
    if not as_json:
        display_success(f"{new} passes every gate against {old}")


def _print_compare(report: Any) -> None:
    from .compare.text import report_rows

    rows = report_rows(report)
    if is_interactive():
        from .report import print_rows

        print_rows(rows)
        return
    for key, value in rows:
        console.print(f"{key}: {value}", soft_wrap=True)


@app.command("predict", cls=_Command)
@_boundary
def predict_batch(
    bundle: BundleArg,
    input_path: Annotated[Path, typer.Option("--input", "-i", show_default=False,
                                             help="A .csv, .jsonl or .parquet file (parquet needs pyarrow).")],
    output: Annotated[Path, typer.Option("--output", "-o", show_default=False,
                                         help="Where to write the predictions: .csv, .jsonl or .parquet.")],
    method: Annotated[str | None, typer.Option("--method", help="Method to call (default: predict).")] = None,
    chunk_rows: Annotated[int, typer.Option("--chunk-rows", min=1,
                                            help="Rows read, validated and predicted at a time.")] = 10_000,
    output_format: Annotated[str | None, typer.Option(
        "--format", metavar="csv|jsonl|parquet", help="Output format: csv, jsonl or parquet (default: from --output's extension).")] = None,
    input_format: Annotated[str | None, typer.Option(
        "--input-format", metavar="csv|jsonl|parquet", help="Input format: csv, jsonl or parquet (default: from --input's extension).")] = None,
    id_column: Annotated[list[str] | None, typer.Option(
        "--id-column", metavar="COLUMN", help="Copy this input column into the output, to join predictions back (repeatable).")] = None,
    skip_invalid: Annotated[bool, typer.Option(
        "--skip-invalid", help="Write rows that do not fit the input schema to OUTPUT_STEM.rejects.jsonl and go on, "
        "instead of stopping at the first.")] = False,
    engine: Annotated[str, typer.Option(
        "--engine", metavar="local|spark", help="local: this machine, one process; spark: a Spark job (needs "
        "mlship[spark]; docs/BATCH.md).")] = "local",
    master: Annotated[str | None, typer.Option(
        "--master", help="--engine spark: local[4], spark://HOST:7077, yarn, ... (default: the session's).")] = None,
    conf: Annotated[list[str] | None, typer.Option(
        "--conf", metavar="KEY=VALUE", help="--engine spark: a Spark setting, as spark-submit takes it (repeatable).")] = None,
    env: Annotated[str, typer.Option(
        "--env", metavar="shipped|executor", help="--engine spark: ship the bundle's locked wheels to the executors "
        "(shipped), or use the executors' Python as it is (executor; checked by the golden cases).")] = "shipped",
    wheel_cache: Annotated[Path | None, typer.Option(
        "--wheel-cache", envvar="MLSHIP_WHEEL_CACHE", help="--engine spark --env shipped: where downloaded wheels "
        "and packed environments are kept. [env var: MLSHIP_WHEEL_CACHE]")] = None,
) -> None:
    """Predict over a file with BUNDLE's own runtime: same validation and model as the server, bounded memory,
    one output row per input row in input order (`prediction`, or `METHOD_0..k` for several values per row).
    With --engine spark, over files on a Spark cluster into a folder of part files: one row per input row, in no
    particular order (use --id-column), `prediction` an array for several values per row (METHOD_0..k in CSV),
    `error` with --skip-invalid."""
    from .bundle.manifest import open_bundle

    if engine not in ("local", "spark"):
        raise MlshipError(f"--engine must be local or spark, got {engine!r}", exit_code=2,
                          hint="leave --engine out to predict on this machine")
    if engine == "spark":
        _predict_spark(bundle, str(input_path), str(output), method=method, master=master, conf=conf or [],
                       env=env, id_column=id_column or [], skip_invalid=skip_invalid, wheel_cache=wheel_cache,
                       formats=(input_format, output_format))
        return

    for flag, value in (("--format", output_format), ("--input-format", input_format)):
        if value not in (None, "csv", "jsonl", "parquet"):
            raise MlshipError(f"{flag} must be csv, jsonl or parquet, got {value!r}", exit_code=2,
                              hint=f"pass {flag} csv, {flag} jsonl or {flag} parquet, or leave it out")
    path = bundle.resolve()
    open_bundle(path)
    # Absolute paths: the runtime runs in the bundle directory, like `serve`.
    args = ["predict", str(path), "--input", str(input_path.resolve()), "--output", str(output.resolve()),
            "--chunk-rows", str(chunk_rows)]
    for flag, value in (("--method", method), ("--format", output_format), ("--input-format", input_format)):
        args += [flag, value] if value else []
    for name in id_column or []:
        args += ["--id-column", name]
    args += ["--skip-invalid"] if skip_invalid else []
    # Ctrl-C reaches the runtime, which removes its partial output.
    _exec_runtime(path, args)


def _predict_spark(bundle: Path, source: str, target: str, *, method: str | None, master: str | None,
                   conf: list[str], env: str, id_column: list[str], skip_invalid: bool,
                   wheel_cache: Path | None, formats: tuple[str | None, str | None]) -> None:
    from .spark_job import SparkJob, parse_conf, run_spark_job

    job = SparkJob(bundle.resolve(), source, target, master=master, conf=parse_conf(conf), method=method,
                   id_columns=tuple(id_column), skip_invalid=skip_invalid, env=env, wheel_cache=wheel_cache,
                   input_format=formats[0], output_format=formats[1])
    with _progress(bundle.name, quiet=False) as (_on_cell, on_step):
        result = run_spark_job(job, on_step=on_step)
    display_success(result.summary())


# -- build -----------------------------------------------------------------------------------------------------


def _with_target_options(fn: F) -> F:
    """Derive the build command from the table of targets (mlship/targets/__init__.py): its help, the --target
    option, and every target's options, declared once each as keyword parameters that `fn` takes as **options.
    typer reads a command's options from its signature, so the signature is generated here."""
    import inspect

    from .targets import TARGETS, all_options

    names = " or ".join(TARGETS)
    target = typer.Option("--target", "-t", metavar="|".join(TARGETS), envvar="MLSHIP_TARGET",
                          help=f"What to build: {names}. [env var: MLSHIP_TARGET]")
    params = [p.replace(annotation=Annotated[str, target]) if p.name == "target" else p
              for p in inspect.signature(fn, eval_str=True).parameters.values() if p.kind is not p.VAR_KEYWORD]
    for option, owners in all_options():
        # A repeatable option's value is one item: --tag TAG, not typer's <list[str]>.
        metavar = option.flags[-1].lstrip("-").upper() if "list[" in str(option.type) else None
        info = typer.Option(*option.flags, help=option.help_text, envvar=option.envvar, metavar=metavar,
                            rich_help_panel=f"Options of --target {' and '.join(owners)}")
        params.append(inspect.Parameter(option.param, inspect.Parameter.KEYWORD_ONLY, default=option.default,
                                        annotation=Annotated[option.type, info]))
    fn.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    made = "; ".join(f"--target {t.name}: {t.summary} ({_doc(t.docs)})" for t in TARGETS.values())
    fn.__doc__ = (f"Build a bundle (NOTEBOOK packaged first, or --bundle) into something that runs elsewhere. "
                  f"{made}.")
    return fn


@app.command(cls=_Command)
@_boundary
@_with_target_options
def build(
    ctx: typer.Context,
    notebook: Annotated[Path | None, typer.Argument(metavar="NOTEBOOK|mlship.toml", help="Package this notebook "
                                                    "first, then build its bundle; or build a service file's "
                                                    "models into one artifact (optional).",
                                                    show_default=False)] = None,
    target: str = "docker",  # its option is generated from the table of targets
    bundle: Annotated[Path | None, typer.Option("--bundle", help="Bundle directory (default: the newest under "
                                                "dist/).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object (for CI).")] = False,
    **options: Any,
) -> None:
    from .targets import TARGETS, get_target
    from .targets.options import find_bundle

    chosen = get_target(target)
    # By name: typer 0.2x vendors its own click, whose ParameterSource is not click's.
    sources = {name: getattr(ctx.get_parameter_source(name), "name", "") for name in options}
    # Only the options the user set reach the target (the rest keep its defaults); one typed on the command line
    # for another target is an error, one set through an env var is not (env vars are shared by every target).
    given = {name: value for name, value in options.items() if sources[name] in ("COMMANDLINE", "ENVIRONMENT")}
    typed = [name for name in options if sources[name] == "COMMANDLINE"]
    build_options = chosen.make_options(given, typed=typed, others=TARGETS)
    if notebook is not None and notebook.suffix == ".toml":
        _build_service(chosen, notebook, bundle, build_options, as_json)
        return
    if notebook is not None:
        from .bundle.builder import BundleBuilder, PackageOptions
        from .targets.options import WheelOptions

        # The license gate of the build applies to the packaging it starts with (the bundle's requirements) too.
        licenses = build_options if isinstance(build_options, WheelOptions) else WheelOptions()
        builder = BundleBuilder.from_notebook(_notebook_in(notebook), PackageOptions(
            force=True, deny_licenses=licenses.deny_licenses, deny_unknown_licenses=licenses.deny_unknown_licenses))
        with _progress(builder.notebook.path.name, quiet=as_json) as (on_cell, on_step):
            bundle = builder.build(on_progress=on_cell, on_step=on_step).bundle
    path = (bundle or find_bundle()).resolve()
    with _progress(path.name, quiet=as_json) as (_on_cell, on_step):
        build_options.on_step = on_step
        result = chosen.build(path, build_options)
    _print_result(result, as_json)
    if not result.ok:
        raise MlshipError(f"the {target} build of {path.name} failed its checks", hint="see the table above")


def _build_service(chosen: Any, service: Path, bundle: Path | None, options: Any, as_json: bool) -> None:
    """`mlship build --target T mlship.toml`: every model of the service file in one artifact (docs/SERVICE.md)."""
    if bundle is not None:
        raise MlshipError(f"--bundle and the service file {service} both name what to build",
                          hint="give one: the service file lists its bundles", exit_code=2)
    if chosen.build_service is None:
        from .targets import TARGETS

        able = " or ".join(f"--target {t.name}" for t in TARGETS.values() if t.build_service is not None)
        raise MlshipError(f"--target {chosen.name} builds one bundle, not a service file ({service})",
                          hint=f"build the service with {able}, or build each bundle with --bundle DIR", exit_code=2)
    with _progress(service.name, quiet=as_json) as (_on_cell, on_step):
        options.on_step = on_step
        result = chosen.build_service(service, options)
    _print_result(result, as_json)
    if not result.ok:
        raise MlshipError(f"the {chosen.name} build of {service.name} failed its checks", hint="see the table above")


def _print_result(result: Any, as_json: bool) -> None:
    if as_json:
        console.print(json.dumps(result.to_json(), indent=2), soft_wrap=True)
    else:
        from .report import print_rows

        print_rows(result.rows())


@app.command("base-image", cls=_Command, help=(
    "Make a Python base image from Debian packages (debootstrap, docker import), for engines that cannot pull from "
    f"Docker Hub; does nothing if TAG exists. Needs root and debootstrap ({_doc('docs/DOCKER.md')})."))
@_boundary
def base_image(
    tag: Annotated[str, typer.Argument(metavar="TAG", help="Tag of the image to make. [env var: MLSHIP_BASE_TAG]",
                                       envvar="MLSHIP_BASE_TAG")] = "mlship-base:bookworm-py311",
    suite: Annotated[str, typer.Option("--suite", help="Debian release; its python3 is the image's (bookworm: "
                                       "3.11, trixie: 3.13).")] = "bookworm",
    mirror: Annotated[str, typer.Option("--mirror", envvar="DEBIAN_MIRROR", help="Debian mirror. "
                                        "[env var: DEBIAN_MIRROR]")] = "http://deb.debian.org/debian",
    arch: Annotated[str | None, typer.Option("--arch", help="Debian architecture, e.g. arm64 (needs "
                                             "qemu-user-static); default the host's.")] = None,
    bundle: Annotated[Path | None, typer.Option("--bundle", help="Check that the image's Python is this "
                                                "bundle's.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object (for CI).")] = False,
) -> None:
    import logging

    from .targets.base_image import BaseImageOptions, bundle_python_of, make_base_image

    python = bundle_python_of(bundle) if bundle is not None else None
    options = BaseImageOptions(tag=tag, suite=suite, mirror=mirror, arch=arch, python=python)
    with _progress(tag, quiet=as_json) as (_on_cell, on_step):
        class StepHandler(logging.Handler):  # core code logs its progress; show it as progress steps
            def emit(self, record: logging.LogRecord) -> None:
                if on_step is not None:
                    on_step(record.getMessage())

        handler = StepHandler(logging.INFO)
        log = logging.getLogger("mlship.targets.base_image")
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
        try:
            result = make_base_image(options)
        finally:
            log.removeHandler(handler)
            log.propagate = True
    if as_json:
        console.print(json.dumps(result.to_json(), indent=2), soft_wrap=True)
    else:
        from .report import print_rows

        print_rows(result.rows())


# -- progress --------------------------------------------------------------------------------------------------


@contextmanager
def _progress(label: str, quiet: bool) -> Iterator[tuple[Any, Any]]:
    """A live `cell i/N` display on a terminal; plain lines in CI and pipes; nothing with --json."""
    import time

    start = time.perf_counter()
    if quiet:
        yield None, None
        return
    if not is_interactive():
        def on_cell(i: int, n: int, cell: Any, event: str) -> None:
            if event == "start":
                skipped = " (skipped: # mlship: skip)" if cell.skipped else ""
                err_console.print(f"[{time.perf_counter() - start:6.1f}s] cell {i}/{n} "
                                  f"(#{cell.number}) {cell.first_line[:60]}{skipped}")

        def on_step(msg: str) -> None:
            err_console.print(f"[{time.perf_counter() - start:6.1f}s] {msg}")

        yield on_cell, on_step
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as progress:
        task = progress.add_task(f"running {label}", total=None)

        def on_cell_live(i: int, n: int, cell: Any, event: str) -> None:
            progress.update(task, total=n, completed=i - (event == "start"),
                            description=f"cell {cell.number}: {cell.first_line[:40]}")

        def on_step_live(msg: str) -> None:
            progress.update(task, description=msg)

        yield on_cell_live, on_step_live


def main() -> None:
    try:
        app()
    except MlshipError as exc:  # raised outside a command (should not happen, but never show a traceback)
        display_error(exc.message, exc.hint)
        sys.exit(exc.exit_code)


__all__ = ["app", "main", "display_warning"]
