"""Where the size of an mlship docker image goes, and what the ideas to cut it would save.

For each example (default iris and reviews): the image, the base, the venv layer and the bundle layer (from the
image's history); the venv by distribution (`du` of each installed distribution's files, read inside the image);
then the ideas, each measured inside the image:
- `tests/` folders of installed packages: their bytes, and whether the golden cases still replay without them
  (`verify /app` in a container where they were deleted first);
- `__pycache__` folders (what `pip install --no-compile` would leave out): their bytes, and what they buy,
  the time of `verify /app` with and without them (median of 3; without them each start compiles every module);
- distributions the pins pull in that serving never imports: those not in sys.modules after `verify /app`.
The build stage mlship keeps as its layer cache is reported too (`--no-build-cache` removes it).

Usage: python benchmarks/image_size.py [--base-image TAG] [--examples iris,reviews]
Needs a Docker engine and the base image (`sudo mlship base-image`). Images it builds are removed at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mlship.targets._docker_engine import connect  # noqa: E402
from mlship.targets.docker import DockerOptions, build_docker  # noqa: E402

DEFAULT_BASE = "mlship-base:bookworm-py311"
BOOT = ["/opt/venv/bin/python", "-I", "-B", "-u", "/app/mlship_runtime/_boot.py"]

# Run inside the image by its venv's python: each distribution's bytes, split into tests/, __pycache__/ and the rest.
_DU = r"""
import json, os, importlib.metadata as md
out = {}
for dist in md.distributions():
    total = tests = cache = 0
    for f in dist.files or []:
        path = str(dist.locate_file(f))
        try:
            size = os.lstat(path).st_size
        except OSError:
            continue
        parts = str(f).split("/")
        total += size
        tests += size if "tests" in parts[1:-1] else 0
        cache += size if "__pycache__" in parts else 0
    tops = (dist.read_text("top_level.txt") or "").split() or sorted(
        {str(f).split("/")[0].removesuffix(".py") for f in dist.files or [] if "." not in str(f).split("/")[0]
         or str(f).split("/")[0].endswith(".py")})
    out[dist.metadata["Name"]] = {"bytes": total, "tests": tests, "pycache": cache, "top": tops}
print(json.dumps(out))
"""

# Run inside the image: replay the golden cases in-process, then name the top-level modules that were imported.
_USED = r"""
import json, runpy, sys
sys.argv = ["/app/mlship_runtime/_boot.py", "verify", "/app"]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as exc:
    code = exc.code
print("\n" + json.dumps({"exit": code, "modules": sorted({m.split(".")[0] for m in sys.modules})}))
"""

_DROP_TESTS = "find /opt/venv -depth -type d -name tests -path '*/site-packages/*/tests' -exec rm -rf {} +"
_DROP_PYCACHE = "find /opt/venv -depth -type d -name __pycache__ -exec rm -rf {} +"


def package(notebook: Path, out: Path) -> None:
    subprocess.run([sys.executable, "-m", "mlship", "package", str(notebook), "-o", str(out), "--force"],
                   cwd=notebook.parent, check=True, capture_output=True)


def run(client: Any, image: str, script: str, *, shell: bool = False) -> str:
    """Run a python script (or a shell command) in IMAGE as root, offline; its stdout."""
    entry = ["sh", "-c"] if shell else ["/opt/venv/bin/python", "-I", "-c"]
    return str(client.containers.run(image, entrypoint=entry, command=[script], remove=True, user="0",
                                     network_disabled=True).decode())


def verify_seconds(client: Any, image: str, prelude: str, runs: int = 3) -> tuple[bool, float]:
    """`verify /app` after `prelude` (a shell command) in one container per run: passed, median seconds of verify."""
    times, ok = [], True
    timed = (f"{prelude}; s=$(date +%s.%N); {' '.join(BOOT)} verify /app >/tmp/out 2>&1; rc=$?; "
             "e=$(date +%s.%N); tail -n 2 /tmp/out; echo rc=$rc $s $e")
    for _ in range(runs):
        out = run(client, image, timed, shell=True).strip().splitlines()[-1].split()
        ok &= out[0] == "rc=0"
        times.append(float(out[2]) - float(out[1]))
    return ok, statistics.median(times)


def layers(client: Any, image: str, base: str) -> dict[str, int]:
    history = client.api.history(image)
    ours = history[: len(history) - len(client.api.history(base))]
    sizes: dict[str, int] = {}
    for entry in ours:
        created = str(entry["CreatedBy"])
        key = "venv" if "/opt/venv" in created else "bundle" if "/app" in created and "COPY" in created \
            else "passwd" if "/etc/passwd" in created else None
        if key and entry["Size"]:
            sizes[key] = sizes.get(key, 0) + int(entry["Size"])
    return sizes


def measure(client: Any, name: str, bundle: Path, base: str, tag: str) -> dict[str, Any]:
    result = build_docker(bundle, DockerOptions(base_image=base, tags=[tag]))
    assert result.ok and result.image_id, result.rows()
    image = result.image_id
    dists = json.loads(run(client, image, _DU).strip().splitlines()[-1])
    used = json.loads(run(client, image, _USED).strip().splitlines()[-1])
    assert used["exit"] in (0, None), used
    imported = set(used["modules"])
    unused = {d: v["bytes"] for d, v in dists.items() if v["top"] and not imported & set(v["top"])}
    tests_ok, _ = verify_seconds(client, image, _DROP_TESTS, runs=1)
    _, with_cache = verify_seconds(client, image, "true")
    _, without_cache = verify_seconds(client, image, _DROP_PYCACHE)
    stage = result.stage
    return {
        "example": name, "image": result.size, "base": result.base_size, **layers(client, image, base),
        "stage": None if stage is None else {"size": stage.size, "kept": stage.kept},
        "venv_by_dist": dict(sorted(((d, v["bytes"]) for d, v in dists.items()), key=lambda kv: -kv[1])),
        "tests": sum(v["tests"] for v in dists.values()), "tests_removed_golden_ok": tests_ok,
        "pycache": sum(v["pycache"] for v in dists.values()),
        "verify_s_with_pycache": round(with_cache, 2), "verify_s_without_pycache": round(without_cache, 2),
        "unused": unused,
    }


def report(row: dict[str, Any]) -> None:
    mb = 1e6
    print(f"\n== {row['example']}: image {row['image'] / mb:.1f} MB = base {row['base'] / mb:.1f} + venv "
          f"{row.get('venv', 0) / mb:.1f} + bundle {row.get('bundle', 0) / mb:.2f} + passwd "
          f"{row.get('passwd', 0) / mb:.3f} MB")
    if row["stage"]:
        state = "kept as the layer cache" if row["stage"]["kept"] else "removed"
        print(f"   build stage {row['stage']['size'] / mb:.1f} MB with the base ({state})")
    print("   venv by distribution (MB):")
    for dist, size in list(row["venv_by_dist"].items())[:12]:
        print(f"     {dist:<24} {size / mb:7.1f}{'   not imported by verify /app' if dist in row['unused'] else ''}")
    print(f"   tests/ folders: {row['tests'] / mb:.1f} MB; golden cases without them: "
          f"{'replay' if row['tests_removed_golden_ok'] else 'FAIL'}")
    print(f"   __pycache__: {row['pycache'] / mb:.1f} MB; verify /app {row['verify_s_with_pycache']:.2f}s with, "
          f"{row['verify_s_without_pycache']:.2f}s without (each start compiles every module)")
    unused = sum(row["unused"].values())
    print(f"   not imported by verify /app (uvloop, h11: serve's HTTP stack): {unused / mb:.1f} MB ({', '.join(sorted(row['unused'])) or 'none'})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-image", default=DEFAULT_BASE)
    parser.add_argument("--examples", default="iris,reviews")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON list")
    args = parser.parse_args()
    client = connect()
    token = uuid.uuid4().hex[:8]
    rows, tags = [], []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name in args.examples.split(","):
                bundle = Path(tmp) / name
                package(ROOT / "examples" / name / f"{name}.ipynb", bundle)
                tags.append(f"mlship-bench-size-{name}:{token}")
                started = time.perf_counter()
                rows.append(measure(client, name, bundle, args.base_image, tags[-1]))
                rows[-1]["seconds"] = round(time.perf_counter() - started, 1)
    finally:
        for tag in tags:
            try:
                client.api.remove_image(tag, force=True)
            except Exception:  # noqa: BLE001 - best effort cleanup of our own tags
                pass
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            report(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
