"""The native image builder against the engine build of the same bundle, in one run (issue 14's speed targets).

For one example (default iris), on the same base and the same locked wheels (resolved once beforehand: network
time is no build time):
- cold: the engine's `docker build` with no layer cache, vs the native build with an empty OCI cache (the base
  pulled from a loopback registry, the venv installed, every layer written, the --output tar written);
- warm: the native build again with its cache (the venv layer reused);
- model-only: the notebook packaged again with another hyperparameter, then built natively and pushed to the
  registry that already holds the first image (what it uploads is counted), vs the engine's rebuild (layer cache)
  and `docker push`;
- sizes: compressed (what the registry stores: the manifest's layers) and uncompressed (`docker image inspect`'s
  Size, the native image loaded from its tar), and whether the native image serves the golden cases over HTTP.

Usage: python benchmarks/native_build.py [--example iris] [--base-image TAG]
Needs a Docker engine (for the engine build, to push the base and to run the native image once) and docker-registry.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mlship.bundle.verify import verify_bundle  # noqa: E402
from mlship.targets._docker_engine import build_image, connect, push_tag  # noqa: E402
from mlship.targets.docker import DockerOptions, build_docker  # noqa: E402
from mlship.targets.wheelhouse import parse_platform  # noqa: E402
from tests.support.docker import run_ready, start_registry  # noqa: E402

DEFAULT_BASE = "mlship-base:bookworm-py311"
# A model-only change per example: the notebook text replaced (same code, same dependencies, another model).
RETRAIN = {"iris": ("LogisticRegression(max_iter=1000)", "LogisticRegression(max_iter=1000, C=0.3)")}


def package(notebook: Path, out: Path) -> None:
    subprocess.run([sys.executable, "-m", "mlship", "package", str(notebook), "-o", str(out), "--force"],
                   check=True, capture_output=True)


def native(bundle: Path, base: str, oci: Path, *args: str) -> tuple[float, dict[str, Any]]:
    env = {"MLSHIP_OCI_CACHE": str(oci)}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mlship", "build", "--target", "docker", "--builder", "native",
                           "--bundle", str(bundle), "--base-image", base, "--json", *args],
                          capture_output=True, text=True, env={**os.environ, **env})
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"native build failed:\n{proc.stdout}\n{proc.stderr}")
    return elapsed, json.loads(proc.stdout)


def registry_layers(registry: str, repository: str, tag: str) -> tuple[int, list[int]]:
    """(the config's size, each layer's compressed size) as the registry stores them."""
    request = urllib.request.Request(f"http://{registry}/v2/{repository}/manifests/{tag}", headers={
        "Accept": "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        manifest = json.loads(response.read())
    return int(manifest["config"]["size"]), [int(layer["size"]) for layer in manifest["layers"]]


def overhead(elapsed: float, timings: dict[str, float]) -> float:
    """What a build's wall time spent outside its timed steps: starting Python, imports, reading the bundle."""
    return elapsed - timings.get("total", sum(timings.values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--example", default="iris", choices=sorted(RETRAIN))
    parser.add_argument("--base-image", default=DEFAULT_BASE)
    args = parser.parse_args()
    token = uuid.uuid4().hex[:8]
    client = connect()
    platform = parse_platform("linux/amd64")
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="mlship-bench-native-") as tmp_name:
        tmp = Path(tmp_name)
        notebook_dir = Path(shutil.copytree(ROOT / "examples" / args.example, tmp / "nb",
                                            ignore=shutil.ignore_patterns("dist")))
        notebook = notebook_dir / f"{args.example}.ipynb"
        bundle, retrained = tmp / "bundle", tmp / "retrained"
        package(notebook, bundle)
        old, new = RETRAIN[args.example]
        notebook.write_text(notebook.read_text().replace(old, new))
        package(notebook, retrained)
        (tmp / "registry").mkdir()
        with start_registry(tmp / "registry") as registry:
            base_ref = f"{registry}/mlship/base:py311"
            # The base pushed by the engine, so both images start from the same compressed base layers (skopeo
            # would compress them itself, a little differently): the sizes then compare what each builder adds.
            client.images.get(args.base_image).tag(base_ref)
            push_tag(client, base_ref, lambda _: None)
            # Wheels resolved once (both builders read the same cache), and the engine's context written.
            ctx = tmp / "ctx"
            build_docker(bundle, DockerOptions(base_image=args.base_image, context_only=ctx))
            engine_tag = f"{registry}/bench/engine-{args.example}:{token}"
            started = time.perf_counter()
            log = build_image(client, ctx, engine_tag, platform, lambda _: None, nocache=True)
            engine_cold = time.perf_counter() - started
            assert log.image_id
            native_tag = f"{registry}/bench/native-{args.example}:{token}"
            oci = tmp / "oci"
            cold, cold_data = native(bundle, base_ref, oci, "--tag", native_tag, "-o", str(tmp / "native.tar"))
            warm, _ = native(bundle, base_ref, oci, "--tag", native_tag, "-o", str(tmp / "native2.tar"))
            first_push, _ = native(bundle, base_ref, oci, "--tag", native_tag, "--push")
            retrained_tag = f"{registry}/bench/native-{args.example}:{token}-2"
            model_only, model_data = native(retrained, base_ref, oci, "--tag", retrained_tag, "--push")
            uploads = model_data["native"]["uploads"][retrained_tag]
            # The engine's side of a model-only change: rebuild (layer cache) and push.
            push_tag(client, engine_tag, lambda _: None)
            ctx2 = tmp / "ctx2"
            build_docker(retrained, DockerOptions(base_image=args.base_image, context_only=ctx2))
            started = time.perf_counter()
            log2 = build_image(client, ctx2, f"{engine_tag}-2", platform, lambda _: None)
            push_tag(client, f"{engine_tag}-2", lambda _: None)
            engine_model_only = time.perf_counter() - started
            # Sizes, and the native image serving its golden cases under the engine.
            with (tmp / "native.tar").open("rb") as handle:
                loaded = client.images.load(handle.read())[0]
            engine_size = int(client.api.inspect_image(log.image_id)["Size"])
            native_size = int(client.api.inspect_image(loaded.id)["Size"])
            engine_config, engine_layers = registry_layers(registry, f"bench/engine-{args.example}", token)
            native_config, native_layers = registry_layers(registry, f"bench/native-{args.example}", token)
            engine_pushed, native_pushed = engine_config + sum(engine_layers), native_config + sum(native_layers)
            container, url = run_ready(client, loaded.id, timeout=120, read_only=True, user="1000777:0")
            try:
                results = verify_bundle(bundle, url=url)
            finally:
                container.remove(force=True)
            for image in (log.image_id, log2.image_id, loaded.id):
                client.api.remove_image(image, force=True)
            timings = cold_data["timings"]
    rows += [
        ("cold build", f"engine {engine_cold:.1f}s (docker build, no cache)",
         f"native {cold:.1f}s = {cold / engine_cold:.2f}x (wheels {timings['wheels']:.1f}s from the cache, "
         f"base pull {timings['base']:.1f}s, layers {timings['layers']:.1f}s, tar {timings.get('output', 0):.1f}s)"),
        ("warm rebuild", "", f"native {warm:.1f}s (venv layer reused)"),
        ("model-only rebuild + push", f"engine {engine_model_only:.1f}s (layer cache + docker push)",
         f"native {model_only:.1f}s: {len(uploads['uploaded'])} blobs uploaded "
         f"({uploads['uploaded_bytes'] / 1e6:.2f} MB), {len(uploads['existing'])} already there; "
         + ", ".join(f"{k} {v:.2f}s" for k, v in model_data["timings"].items() if k != "total")
         + f", start and the rest {overhead(model_only, model_data['timings']):.2f}s"),
        ("first push", "", f"native {first_push:.1f}s (build from cache + push of every layer)"),
        ("image size, uncompressed", f"engine {engine_size / 1e6:.1f} MB", f"native {native_size / 1e6:.1f} MB"),
        ("image size, in the registry", f"engine {engine_pushed / 1e6:.1f} MB", f"native {native_pushed / 1e6:.1f} MB "
         f"= {native_pushed / engine_pushed:.4f}x"),
        ("layers in the registry, MB", " ".join(f"{size / 1e6:.2f}" for size in engine_layers),
         " ".join(f"{size / 1e6:.2f}" for size in native_layers)),
        ("golden cases over HTTP", "", f"native image: {sum(r.ok for r in results)}/{len(results)} match "
                                       "(read-only root, UID 1000777)"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"native builder vs engine, {args.example}, base {args.base_image} (times include process start)")
    for name, engine, native_text in rows:
        print(f"  {name:<{width}}  {engine:<44}  {native_text}")


if __name__ == "__main__":
    main()
