"""`mlship verify`: replay a bundle's golden cases in a fresh interpreter, or over HTTP against a server.

The replay runs the bundle's own copy of the runtime (mlship_runtime/) in a child process, so what is checked is
exactly what will serve: the same loader, the same request decoding, a process that never saw the notebook.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .._paths import BUNDLE_RUNTIME_NAME
from ..errors import BundleError
from ..runtime._contract import CaseResult
from .fresh import TIMEOUT, FreshInterpreter
from .manifest import open_bundle


def verify_bundle(bundle: Path, *, python: str | None = None, url: str | None = None,
                  timeout: float = TIMEOUT) -> list[CaseResult]:
    """Replay every golden case; raises BundleError when the bundle cannot be loaded or the server not reached."""
    bundle = Path(bundle).resolve()
    # mlship's own copy of the checks (every file listed and unchanged, no links), before any code of the bundle
    # runs; the child checks again through mlship's runtime/_boot.py before it imports the bundle's runtime.
    manifest = open_bundle(bundle).manifest
    if not (bundle / BUNDLE_RUNTIME_NAME).is_dir():
        raise BundleError(f"{bundle} has no {BUNDLE_RUNTIME_NAME}/ folder", hint="package the notebook again")
    with FreshInterpreter(python or sys.executable, bundle, cwd=bundle, timeout=timeout) as child:
        return child.verify(manifest.name, url)
