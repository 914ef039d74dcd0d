"""Run as a script, in a bundle's own Python, by `mlship compare`: load the bundle once with its own runtime and
predict every (method, input file) job through its batch code (`mlship predict`'s: the same decoding, chunks,
bounded memory), rows that do not fit written to a rejects file (--skip-invalid) so that one bad row does not stop
the comparison.

Usage: python -B -P _child.py BUNDLE_DIR JOBS.json; JOBS.json is {"jobs": [{"method", "input", "output",
"input_format", "chunk_rows", "id_columns"}]}. The last line on stdout, after RS (\\x1e), is the answer:
{"load_seconds", "jobs": [{"rows", "seconds", "rejects", "rejected", "error"?}]} or {"error": why it cannot load}.
Standard library only; the bundle's runtime is imported through mlship's own runtime/_boot.py (digest-checked
sources, the bundle off sys.path), exactly as `mlship predict` does.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

MARK = "\x1e"
RUNTIME_PACKAGE = "mlship_runtime"


def _host_boot() -> Any:
    path = Path(__file__).resolve().parent.parent / "runtime" / "_boot.py"
    spec = importlib.util.spec_from_file_location("_mlship_host_boot", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(bundle: Path, jobs: list[dict[str, Any]]) -> dict[str, Any]:
    os.chdir(bundle)
    boot = _host_boot()
    start = time.perf_counter()
    try:
        boot.prepare(bundle)
        batch = importlib.import_module(f"{RUNTIME_PACKAGE}._batch")
        loader = importlib.import_module(f"{RUNTIME_PACKAGE}._bundle")
        loaded = loader.load_bundle(bundle)
    except boot.BundleLoadError as exc:
        return {"error": exc.message}
    except Exception as exc:  # the bundle's own code failed to load: say what, as `mlship verify` would
        return {"error": f"loading the bundle raised {type(exc).__name__}: {exc}"}
    answer: dict[str, Any] = {"load_seconds": time.perf_counter() - start, "jobs": []}
    for job in jobs:
        options = batch.BatchOptions(method=job["method"], chunk_rows=job["chunk_rows"],
                                     id_columns=tuple(job["id_columns"]), input_format=job["input_format"],
                                     output_format="jsonl", skip_invalid=True)
        try:
            result = batch.predict_file(loaded, job["input"], job["output"], options)
        except batch.BatchError as exc:
            answer["jobs"].append({"error": exc.message, "hint": exc.hint})
            continue
        answer["jobs"].append({"rows": result.rows, "seconds": result.seconds, "rejected": result.rejected,
                               "rejects": None if result.rejects is None else str(result.rejects)})
    return answer


def main(argv: list[str]) -> int:
    sys.dont_write_bytecode = True
    bundle = Path(argv[1]).resolve()
    jobs = json.loads(Path(argv[2]).read_text(encoding="utf-8"))["jobs"]
    answer = run(bundle, jobs)
    sys.stdout.write(MARK + json.dumps(answer) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
