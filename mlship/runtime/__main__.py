"""`python -m mlship_runtime serve BUNDLE` and `python -m mlship_runtime verify BUNDLE`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from ._app import BUNDLE_ENV, LOG_LEVEL_ENV, configure_logging, create_app
from ._bundle import PREDICTOR_MODULE, BundleLoadError, load_bundle
from ._codec import encode_json
from ._settings import Settings, SettingsError
from ._verify import CaseResult, ServerUnreachable, verify_bundle, verify_url

# Not __name__: under `python -m` that is "__main__", which says nothing in a log line.
logger = logging.getLogger(__package__ or __name__)

_LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return serve(
            Path(args.bundle), host=args.host, port=args.port, workers=args.workers, log_level=args.log_level
        )
    return verify(Path(args.bundle), url=args.url, as_json=args.json)


def serve(bundle_dir: Path, *, host: str, port: int, workers: int, log_level: str) -> int:
    """Load the bundle, then serve it until SIGINT/SIGTERM; return 1 after one log line if it cannot load."""
    configure_logging(log_level)
    try:
        settings = Settings.from_env()
        bundle = load_bundle(bundle_dir)
    except (BundleLoadError, SettingsError) as exc:
        logger.error("cannot serve %s: %s", bundle_dir, exc)
        return 1
    # loop/http "auto" picks uvloop and httptools when importable: several workers on plain asyncio leave
    # TCP_NODELAY off (44 ms per request) and pile connections onto one worker (FIELD-NOTES "Serving speed").
    if workers == 1:
        app = create_app(bundle_dir, bundle=bundle, settings=settings)
        uvicorn.run(app, host=host, port=port, log_level=log_level, loop="auto", http="auto")
        return 0
    # Worker processes are spawned, not forked: each loads the bundle itself, so the parent drops its copy,
    # which served only to fail early and cleanly.
    del bundle
    sys.modules.pop(PREDICTOR_MODULE, None)
    os.environ[BUNDLE_ENV] = str(bundle_dir.resolve())
    os.environ[LOG_LEVEL_ENV] = log_level
    factory = f"{__package__}._app:create_app_from_env"
    uvicorn.run(
        factory,
        factory=True,
        workers=workers,
        host=host,
        port=port,
        log_level=log_level,
        loop="auto",
        http="auto",
    )
    return 0


def verify(bundle_dir: Path, *, url: str | None, as_json: bool) -> int:
    """Replay the golden cases; 0 when all match, 1 on any mismatch, 2 when the check cannot run at all."""
    try:
        results = verify_url(url, bundle_dir) if url else verify_bundle(bundle_dir)
    except (BundleLoadError, ServerUnreachable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ok = all(result.ok for result in results)
    if as_json:
        report = {"ok": ok, "bundle": str(bundle_dir), "url": url, "cases": [r.to_dict() for r in results]}
        print(encode_json(report).decode())
    else:
        print(_table(results))
    return 0 if ok else 1


def _table(results: list[CaseResult]) -> str:
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
    parser = argparse.ArgumentParser(
        prog="python -m mlship_runtime", description="Serve or verify an mlship bundle."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve_cmd = commands.add_parser(
        "serve",
        help="serve the bundle over HTTP",
        epilog="Request limits come from the environment: MLSHIP_MAX_ROWS (default 10000 rows per request), "
        "MLSHIP_MAX_BODY_BYTES (default 20 MiB).",
    )
    serve_cmd.add_argument("bundle", help="the bundle directory (the one holding mlship.json)")
    serve_cmd.add_argument("--host", default="127.0.0.1", help="interface to bind (default: %(default)s)")
    serve_cmd.add_argument("--port", type=int, default=8080, help="port to bind (default: %(default)s)")
    serve_cmd.add_argument(
        "--workers",
        type=_positive,
        default=1,
        help="worker processes, each with its own copy of the model (default: %(default)s)",
    )
    serve_cmd.add_argument("--log-level", choices=_LOG_LEVELS, default="info", help="(default: %(default)s)")

    verify_cmd = commands.add_parser(
        "verify",
        help="replay golden.json and compare",
        description="Replay the bundle's golden cases in-process, or against a running server with --url. "
        "Exit status: 0 all match, 1 a case does not match, 2 the bundle or server is unusable.",
    )
    verify_cmd.add_argument("bundle", help="the bundle directory (the one holding mlship.json)")
    verify_cmd.add_argument("--url", help="base URL of a running server, e.g. http://127.0.0.1:8080")
    verify_cmd.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


if __name__ == "__main__":
    sys.exit(main())
