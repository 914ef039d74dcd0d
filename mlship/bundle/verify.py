"""`mlship verify`: replay a bundle's golden cases in a fresh interpreter, or over HTTP against a server.

The replay runs the bundle's own copy of the runtime (mlship_runtime/) in a child process, so what is checked is
exactly what will serve: the same loader, the same request decoding, a process that never saw the notebook.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._paths import BUNDLE_RUNTIME_NAME
from ..errors import BundleError
from .manifest import read_manifest

_SCRIPT = f"""
import json, sys
sys.path.insert(0, sys.argv[1])
from {BUNDLE_RUNTIME_NAME}._bundle import BundleLoadError
from {BUNDLE_RUNTIME_NAME}._verify import ServerUnreachable, verify_bundle, verify_url
try:
    results = verify_url(sys.argv[2], sys.argv[1]) if len(sys.argv) > 2 else verify_bundle(sys.argv[1])
except (BundleLoadError, ServerUnreachable) as exc:
    sys.stderr.write(str(exc) + "\\n")
    sys.exit(2)
sys.stdout.write("\\x1e" + json.dumps([r.to_dict() for r in results]) + "\\n")
"""


@dataclass(frozen=True)
class CaseResult:
    id: str
    method: str
    ok: bool
    detail: str
    expected: Any
    actual: Any


def verify_bundle(bundle: Path, *, python: str | None = None, url: str | None = None,
                  timeout: float = 600) -> list[CaseResult]:
    """Replay every golden case; raises BundleError when the bundle cannot be loaded or the server not reached."""
    bundle = Path(bundle).resolve()
    manifest = read_manifest(bundle)
    if not (bundle / BUNDLE_RUNTIME_NAME).is_dir():
        raise BundleError(f"{bundle} has no {BUNDLE_RUNTIME_NAME}/ folder", hint="package the notebook again")
    args = [python or sys.executable, "-c", _SCRIPT, str(bundle)] + ([url] if url else [])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(args, capture_output=True, text=True, cwd=str(bundle), env=env, timeout=timeout)
    if proc.returncode == 2:
        reason = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "unknown reason"
        raise BundleError(
            f"cannot verify {manifest.get('name', bundle.name)}: {reason}",
            hint="start the server first (mlship serve BUNDLE) or check --url" if url else
            "package the notebook again; if it keeps failing, run with MLSHIP_DEBUG=1",
        )
    if "\x1e" not in proc.stdout:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:]) or "(no output)"
        raise BundleError(
            f"loading {bundle.name} in a fresh Python failed:\n{tail}",
            hint="an object in the bundle needs something that existed only in the notebook's session, or a "
            "package missing from this environment",
        )
    data = json.loads(proc.stdout.rsplit("\x1e", 1)[1])
    return [CaseResult(d["id"], d["method"], d["ok"], d["detail"], d["expected"], d["actual"]) for d in data]
