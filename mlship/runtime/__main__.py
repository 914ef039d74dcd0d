"""`python -m mlship_runtime serve BUNDLE`, `... verify BUNDLE` and `... predict BUNDLE --input F --output F`.

Nothing of the runtime is imported at module level: under `python -m` this module runs before any check, so it
first has _boot check the whole bundle and install the importer that loads the rest of the runtime from
digest-checked sources (docs/BUNDLE.md "Integrity"). mlship's own launchers run `_boot.py` as a script instead,
which checks this file too before it runs.
"""

# No `from __future__ import annotations` (that imports a module too, before the line below can run): the
# annotations that name lazily imported types are strings.
import os
import sys

if __name__ == "__main__":
    # `python -m` put the bundle folder (the working directory, or PYTHONPATH) on sys.path: drop it before the
    # next import, so that a stray argparse.py or json.py in it cannot shadow the standard library.
    _bundle_root = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    sys.path[:] = [entry for entry in sys.path if os.path.realpath(entry or os.curdir) != _bundle_root]
    sys.dont_write_bytecode = True

import argparse  # noqa: E402
import logging  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

if TYPE_CHECKING:
    from ._batch import BatchOptions
    from ._verify import CaseResult

# Not __name__: under `python -m` that is "__main__", which says nothing in a log line.
logger = logging.getLogger(__package__ or __name__)

_LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def main(argv: Sequence[str] | None = None) -> int:
    from . import _server

    args = _parser().parse_args(argv)
    if args.command == "predict":
        return predict(Path(args.bundle), args.input, args.output, _batch_options(args))
    if args.command == "serve":
        workers = len(args.listen_fd) or args.workers or _server.available_cpus()
        return _server.serve(Path(args.bundle), host=args.host, port=args.port, workers=workers,
                             log_level=args.log_level, listen_fds=tuple(args.listen_fd),
                             lifeline_fd=args.lifeline_fd)
    if args.command == "serve-service":
        from . import _front

        return _front.serve_service(Path(args.service), host=args.host, port=args.port, workers=args.workers,
                                    log_level=args.log_level, pid_file=args.pid_file)
    return verify(Path(args.bundle), url=args.url, as_json=args.json)


def serve(bundle_dir: Path, *, host: str, port: int, workers: int, log_level: str) -> int:
    """Load the bundle, then serve it until SIGINT/SIGTERM; return 1 after one log line if it cannot start.

    See _server: the model loads once, then `workers` processes fork from this one (or this one serves).
    """
    from . import _server

    return _server.serve(bundle_dir, host=host, port=port, workers=workers, log_level=log_level)


def verify(bundle_dir: Path, *, url: str | None, as_json: bool) -> int:
    """Replay the golden cases; 0 when all match, 1 on any mismatch, 2 when the check cannot run at all."""
    from ._bundle import BundleLoadError
    from ._codec import encode_json
    from ._verify import ServerUnreachable, verify_bundle, verify_url

    try:
        results = verify_url(url, bundle_dir) if url else verify_bundle(bundle_dir)
    except (BundleLoadError, ServerUnreachable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ok = all(result.ok for result in results)
    if as_json:
        report = {"ok": ok, "bundle": str(bundle_dir), "url": url, "cases": [r.to_json() for r in results]}
        print(encode_json(report).decode())
    else:
        print(_table(results))
    return 0 if ok else 1


def predict(bundle_dir: Path, source: Path, target: Path, options: "BatchOptions") -> int:
    """Run a batch job; 0 when every row was predicted (or rejected), 1 when the job failed, 2 for a bad bundle.

    Progress goes to stderr: a live line on a terminal, else only the final summary line.
    """
    from ._batch import BatchError, predict_file
    from ._bundle import BundleLoadError, load_bundle
    from ._progress import ProgressLine

    try:
        bundle = load_bundle(bundle_dir)
    except BundleLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    label = bundle.manifest.name
    if not bundle.manifest.batch_safe:
        label += " (row by row: not batch-safe)"
    progress = ProgressLine(sys.stderr, label)
    try:
        result = predict_file(bundle, source, target, options, on_progress=progress.update)
    except BatchError as exc:
        progress.finish(f"error: {exc.message}" + (f"\nhint: {exc.hint}" if exc.hint else ""))
        return 1
    except KeyboardInterrupt:
        progress.finish(f"interrupted; {target} was not written")
        return 130
    progress.finish(result.summary())
    return 0


def _batch_options(args: argparse.Namespace) -> "BatchOptions":
    from ._batch import BatchOptions

    return BatchOptions(
        method=args.method,
        chunk_rows=args.chunk_rows,
        id_columns=tuple(args.id_column),
        input_format=args.input_format,
        output_format=args.format,
        skip_invalid=args.skip_invalid,
        strict_columns=_env_flag("MLSHIP_STRICT_COLUMNS"),
    )


def _table(results: "list[CaseResult]") -> str:
    id_width = max(len("case"), *(len(result.id) for result in results))
    method_width = max(len("method"), *(len(result.method) for result in results))
    lines = [f"{'case':<{id_width}}  {'method':<{method_width}}  result  detail"]
    for result in results:
        verdict = "ok" if result.ok else "FAIL"
        row = f"{result.id:<{id_width}}  {result.method:<{method_width}}  {verdict:<6}  {result.detail}"
        lines.append(row.rstrip())
    matched = sum(result.ok for result in results)
    lines.append(f"{matched} of {len(results)} golden cases match")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    from . import _server
    from ._app import PROTOCOLS
    from ._batch import DEFAULT_CHUNK_ROWS

    parser = argparse.ArgumentParser(
        prog="python -m mlship_runtime", description="Serve or verify an mlship bundle."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve_cmd = commands.add_parser(
        "serve",
        help="serve the bundle over HTTP",
        description="Serve the bundle: " + "; ".join(protocol.blurb for protocol in PROTOCOLS) + "; GET "
        "/openapi.json documents them all. The model loads once; the worker processes fork from the loaded one "
        "and share its memory.",
        epilog="More settings come from the environment: MLSHIP_MAX_ROWS (rows per request, "
        "default 10000), MLSHIP_MAX_BODY_BYTES (default 20 MiB), MLSHIP_TIMEOUT (seconds per request, default "
        "60), MLSHIP_MAX_BATCH_ROWS (micro-batch bound, default 128; 1 turns batching off), MLSHIP_MAX_IN_FLIGHT "
        "(per worker, default 1024), MLSHIP_DRAIN_DELAY (seconds not-ready before the listener closes on "
        "SIGTERM, default 0), MLSHIP_GRACE_PERIOD (seconds for in-flight requests, default 30), "
        "MLSHIP_ACCESS_LOG (1/0), MLSHIP_LOG_FORMAT (json/text).",
    )
    serve_cmd.add_argument("bundle", help="the bundle directory (the one holding mlship.json)")
    serve_cmd.add_argument(
        "--host",
        default=os.environ.get("MLSHIP_HOST", "127.0.0.1"),
        help="interface to bind (default: %(default)s) [env var: MLSHIP_HOST]",
    )
    serve_cmd.add_argument(
        "--port",
        type=int,
        default=_env_int("MLSHIP_PORT", 8080),
        help="port to bind (default: %(default)s) [env var: MLSHIP_PORT]",
    )
    serve_cmd.add_argument(
        "--workers",
        type=_positive,
        default=_env_int("MLSHIP_WORKERS", None),
        help="worker processes, forked once the model has loaded so that they share its memory (default: the "
        f"CPUs available, {_server.available_cpus()} here) [env var: MLSHIP_WORKERS]",
    )
    serve_cmd.add_argument("--log-level", choices=_LOG_LEVELS, default=_env_choice("MLSHIP_LOG_LEVEL", _LOG_LEVELS, "info"),
                           help="(default: %(default)s) [env var: MLSHIP_LOG_LEVEL]")
    # How a multi-model front starts a model's backend (see _backends): sockets it bound, one per worker, and the
    # read end of a pipe whose end-of-file means the front is gone. Not for people.
    serve_cmd.add_argument("--listen-fd", type=int, action="append", default=[], help=argparse.SUPPRESS)
    serve_cmd.add_argument("--lifeline-fd", type=int, default=None, help=argparse.SUPPRESS)

    service_cmd = commands.add_parser(
        "serve-service",
        help="serve every model of a service file behind one address",
        description="Serve the models of a service file (mlship.toml): one backend process per model (its "
        "bundle's own server, run by its own Python), behind one front that routes /models/{name}[/versions/"
        "{version}]/... and /v2/models/{name}[/versions/{version}]/... to it, and answers GET /models, POST "
        "/v2/repository/index, /openapi.json (every model's routes), /metrics (labelled by model and version), "
        "/readyz (ready when every model is) and GET / (a page listing the models).",
    )
    service_cmd.add_argument("service", help="the service file (mlship.toml)")
    service_cmd.add_argument("--host", default=os.environ.get("MLSHIP_HOST", "127.0.0.1"),
                             help="interface to bind (default: %(default)s) [env var: MLSHIP_HOST]")
    service_cmd.add_argument("--port", type=int, default=_env_int("MLSHIP_PORT", 8080),
                             help="port to bind (default: %(default)s) [env var: MLSHIP_PORT]")
    service_cmd.add_argument("--workers", type=_positive, default=_env_int("MLSHIP_WORKERS", None),
                             help="worker processes per model, unless the service file says (default: the CPUs "
                             f"available, {_server.available_cpus()} here) [env var: MLSHIP_WORKERS]")
    service_cmd.add_argument("--log-level", choices=_LOG_LEVELS,
                             default=_env_choice("MLSHIP_LOG_LEVEL", _LOG_LEVELS, "info"),
                             help="(default: %(default)s) [env var: MLSHIP_LOG_LEVEL]")
    service_cmd.add_argument("--pid-file", type=Path, default=os.environ.get("MLSHIP_PID_FILE") or None,
                             help="where to write the front's pid, for `mlship reload` (default: one per service "
                             "file in $XDG_RUNTIME_DIR or the temporary directory) [env var: MLSHIP_PID_FILE]")

    verify_cmd = commands.add_parser(
        "verify",
        help="replay golden.json and compare",
        description="Replay the bundle's golden cases in-process, or against a running server with --url. "
        "Exit status: 0 all match, 1 a case does not match, 2 the bundle or server is unusable.",
    )
    verify_cmd.add_argument("bundle", help="the bundle directory (the one holding mlship.json)")
    verify_cmd.add_argument("--url", help="base URL of a running server, e.g. http://127.0.0.1:8080")
    verify_cmd.add_argument("--json", action="store_true", help="print one JSON object instead of a table")

    formats = ("csv", "jsonl", "parquet")
    predict_cmd = commands.add_parser(
        "predict",
        help="predict over a CSV, JSONL or parquet file",
        description="Run the server's input validation, preprocessing and model over a file, in chunks (memory "
        "stays bounded), and write one output row per input row, in input order: the --id-column values, then "
        "`prediction`, or `<method>_0`..`<method>_k` for methods returning k values per row. Exit status: 0 "
        "done, 1 the job failed (a bad row, a model error), 2 the bundle is unusable.",
    )
    predict_cmd.add_argument(
        "bundle", nargs="?", default=".", help="the bundle directory (default: the current directory)"
    )
    predict_cmd.add_argument(
        "--input", "-i", type=Path, required=True, help="a .csv, .jsonl or .parquet file"
    )
    predict_cmd.add_argument(
        "--output", "-o", type=Path, required=True, help="where to write the predictions"
    )
    predict_cmd.add_argument(
        "--method", help="the method to call (default: predict, else the bundle's first)"
    )
    predict_cmd.add_argument(
        "--chunk-rows",
        type=_positive,
        default=DEFAULT_CHUNK_ROWS,
        help="rows read, validated and predicted at a time (default: %(default)s)",
    )
    predict_cmd.add_argument(
        "--format", choices=formats, help="output format (default: from --output's extension)"
    )
    predict_cmd.add_argument("--input-format", choices=formats, help="(default: from --input's extension)")
    predict_cmd.add_argument(
        "--id-column",
        action="append",
        default=[],
        metavar="NAME",
        help="copy this input column into the output, to join predictions back (repeatable)",
    )
    predict_cmd.add_argument(
        "--skip-invalid",
        action="store_true",
        help="write rows that do not fit the input schema to OUTPUT_STEM.rejects.jsonl and go on, instead of "
        "stopping at the first",
    )
    return parser


def _env_choice(name: str, choices: Sequence[str], default: str) -> str:
    raw = os.environ.get(name, "").strip().lower()
    if raw and raw not in choices:
        raise SystemExit(f"error: {name}={raw!r} must be one of {', '.join(choices)}")
    return raw or default


def _env_flag(name: str) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if raw not in ("", "0", "1", "true", "false", "yes", "no", "on", "off"):
        raise SystemExit(f"error: {name}={raw!r} must be 1 or 0")
    return raw in ("1", "true", "yes", "on")


def _env_int(name: str, default: int | None) -> int | None:
    raw = os.environ.get(name, "").strip()
    try:
        return _positive(raw) if raw else default
    except (ValueError, argparse.ArgumentTypeError):
        raise SystemExit(f"error: {name}={raw!r} must be a whole number of at least 1") from None


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


if __name__ == "__main__":
    from . import _boot

    if sys.argv[1:2] == ["serve-service"]:
        # No bundle to check: the front imports no bundle's code. Each model's backend is started through this
        # runtime's _boot.py, which checks that bundle before any of it runs (see _backends).
        sys.exit(main())
    try:
        _boot.check_started(sys.modules[__package__ or "mlship_runtime"])
    except _boot.BundleLoadError as exc:
        command = sys.argv[1] if len(sys.argv) > 1 else "load"
        sys.stderr.write(f"error: cannot {command} this bundle: {exc.message}\n")
        sys.exit(1 if command == "serve" else 2)
    sys.exit(main())
