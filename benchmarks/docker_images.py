"""Figures for `mlship build --target docker`, per example notebook, against a plain one-stage Dockerfile.

For each example: image size, base image size, what the dependencies and mlship's own files add, cold build time
(no layer cache), rebuild time after a bundle-only change (the notebook packaged again: new mlship.json, same
dependencies), and container start-to-ready time (median of 3 runs, `docker run` to the first 200 from /readyz).

Comparison point, built in the same run on the same base from the same wheels: a plain one-stage Dockerfile as
commonly written, `COPY . /app` then `RUN pip install --no-index --find-links wheels -r requirements.txt` (the
containers have no network, so the wheels come from the context, as in mlship's image).

Usage: python benchmarks/docker_images.py [--base-image TAG] [--examples iris,taxi]
Needs a Docker engine; the default base is built by scripts/make-base-image when missing. Wheels come from the
default wheel cache (resolved once beforehand, so network time is not counted as build time).
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mlship.targets._docker_engine import build_image, connect  # noqa: E402
from mlship.targets.docker import DockerOptions, build_docker  # noqa: E402
from mlship.targets.wheelhouse import parse_platform  # noqa: E402
from tests.support.servers import wait_until_ready  # noqa: E402

EXAMPLES = ["iris", "reviews", "churn", "taxi"]
DEFAULT_BASE = "mlship-base:bookworm-py311"
PLAIN_DOCKERFILE = """\
FROM {base}
COPY . /app
RUN python{python} -m venv /venv && /venv/bin/pip install --no-index --find-links /app/wheels \\
    -r /app/bundle/requirements.txt
WORKDIR /app/bundle
EXPOSE 8080
CMD ["/venv/bin/python", "-m", "mlship_runtime", "serve", "/app/bundle", "--host", "0.0.0.0", "--port", "8080"]
"""


@dataclass
class Figures:
    size: int = 0
    deps: int = 0  # the layer(s) holding the installed dependencies
    own: int = 0  # everything else above the base: for mlship, the bundle and the passwd line
    cold: float = 0.0
    rebuild: float = 0.0
    ready: float = 0.0


def package(notebook: Path, out: Path) -> None:
    subprocess.run([sys.executable, "-m", "mlship", "package", str(notebook), "-o", str(out), "--force"],
                   cwd=notebook.parent, check=True, capture_output=True)


def layer_sizes(client: Any, image: str, base: str) -> tuple[int, list[tuple[int, str]]]:
    """The image's size and (size, instruction) of each non-empty layer above the base."""
    history = client.api.history(image)  # newest first; the base's own entries come last
    ours = history[: len(history) - len(client.api.history(base))]
    return int(client.api.inspect_image(image)["Size"]), [(int(h["Size"]), str(h["CreatedBy"])) for h in ours
                                                          if h["Size"]]


def start_to_ready(client: Any, image: str, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        container = client.containers.run(image, detach=True, ports={"8080/tcp": ("127.0.0.1", None)})
        try:
            container.reload()
            port = container.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"]
            wait_until_ready(f"http://127.0.0.1:{port}/readyz", container, timeout=120, interval=0.05)
            times.append(time.perf_counter() - start)
        finally:
            container.remove(force=True)
    return statistics.median(times)


def mlship_figures(client: Any, bundle: Path, rebundle: Path, base: str, tag: str) -> Figures:
    figures = Figures()
    platform = parse_platform("linux/amd64")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        build_docker(bundle, DockerOptions(base_image=base, context_only=Path(tmp) / "ctx"))
        log = build_image(client, Path(tmp) / "ctx", tag, platform, lambda _: None, nocache=True)
        figures.cold = time.perf_counter() - start
    assert log.image_id
    figures.size, layers = layer_sizes(client, tag, base)
    figures.deps = sum(size for size, created in layers if "/opt/venv" in created)
    figures.own = sum(size for size, _ in layers) - figures.deps
    figures.ready = start_to_ready(client, tag)
    start = time.perf_counter()
    build_docker(rebundle, DockerOptions(base_image=base, tags=[f"{tag}-rebuild"], test=False))
    figures.rebuild = time.perf_counter() - start
    return figures


def plain_figures(client: Any, bundle: Path, rebundle: Path, base: str, tag: str) -> Figures:
    """The comparison: mlship's own context (same wheels, same bundle) built by a one-stage Dockerfile."""
    figures = Figures()
    manifest = json.loads((bundle / "mlship.json").read_text())
    python = ".".join(manifest["python"]["version"].split(".")[:2])
    platform = parse_platform("linux/amd64")
    with tempfile.TemporaryDirectory() as tmp:
        for which, source in (("cold", bundle), ("rebuild", rebundle)):
            ctx = Path(tmp) / which
            build_docker(source, DockerOptions(base_image=base, context_only=ctx))
            (ctx / "Dockerfile").write_text(PLAIN_DOCKERFILE.format(base=base, python=python))
            start = time.perf_counter()
            build_image(client, ctx, tag if which == "cold" else f"{tag}-rebuild", platform, lambda _: None,
                        nocache=which == "cold")
            setattr(figures, which, time.perf_counter() - start)
    figures.size, layers = layer_sizes(client, tag, base)
    figures.deps = sum(size for size, created in layers if "pip install" in created)
    figures.own = sum(size for size, _ in layers) - figures.deps  # here: the COPY of wheels + bundle
    figures.ready = start_to_ready(client, tag)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-image", default=DEFAULT_BASE)
    parser.add_argument("--examples", default=",".join(EXAMPLES))
    args = parser.parse_args()
    if args.base_image == DEFAULT_BASE:
        subprocess.run([str(ROOT / "scripts" / "make-base-image"), DEFAULT_BASE], check=True, capture_output=True)
    client = connect()
    token = uuid.uuid4().hex[:8]
    base_size = int(client.api.inspect_image(args.base_image)["Size"])
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name in args.examples.split(","):
                notebook = ROOT / "examples" / name / f"{name}.ipynb"
                bundle, rebundle = Path(tmp) / name, Path(tmp) / f"{name}-again"
                package(notebook, bundle)
                package(notebook, rebundle)
                # Resolve (and cache) the wheels once, outside the timings.
                build_docker(bundle, DockerOptions(base_image=args.base_image, context_only=Path(tmp) / "warm"))
                subprocess.run(["rm", "-rf", str(Path(tmp) / "warm")], check=True)
                ours = mlship_figures(client, bundle, rebundle, args.base_image, f"bench-{name}:{token}")
                plain = plain_figures(client, bundle, rebundle, args.base_image, f"bench-plain-{name}:{token}")
                rows.append((name, ours, plain))
                print(f"measured {name}", file=sys.stderr)
    finally:
        for image in client.images.list():
            if any(token in tag for tag in image.tags):
                for tag in image.tags:
                    client.api.remove_image(tag, force=True)
        client.close()
    mb = 1e6
    print(f"base image {args.base_image}: {base_size / mb:.1f} MB; 2 cores; legacy builder; sizes uncompressed")
    print(f"{'example':8} {'build':7} {'image MB':>9} {'deps MB':>8} {'own MB':>7} {'cold s':>7} "
          f"{'rebuild s':>10} {'ready s':>8}")
    for name, ours, plain in rows:
        for label, f in (("mlship", ours), ("plain", plain)):
            print(f"{name:8} {label:7} {f.size / mb:9.1f} {f.deps / mb:8.1f} {f.own / mb:7.2f} {f.cold:7.1f} "
                  f"{f.rebuild:10.1f} {f.ready:8.2f}")
    print("deps MB: the layer with the installed dependencies; own MB: the rest above the base (mlship: bundle + "
          "passwd line; plain: the COPY of wheels and bundle, which a one-stage build cannot drop). cold s: "
          "context + docker build without cache (wheels already cached); rebuild s: the whole `mlship build "
          "--no-test` (plain: docker build) after packaging the notebook again; ready s: docker run to the first "
          "200 from /readyz, median of 3.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
