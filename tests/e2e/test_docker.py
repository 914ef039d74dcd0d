"""`mlship build --target docker` with a real Docker engine: every example notebook -> image -> container -> golden
cases over HTTP; non-root, read-only, SIGTERM, layer reuse, push to a loopback registry, and the failure paths.

Images are built once per module and shared; the base image comes from `mlship base-image` (Docker Hub is
unreachable here). Everything this module tags carries a per-run token and is removed at the end.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlship.bundle.verify import verify_bundle
from mlship.sbom.document import validate_cyclonedx, validate_spdx
from tests.support.docker import run_ready, write_tiny_bundle
from tests.support.pip import distributions, pip_folder, pip_list_command, sbom_distributions
from tests.support.servers import check_page, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.requires_docker]

EXAMPLES = ["iris", "reviews", "churn", "taxi"]


@pytest.fixture(scope="module")
def token() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="module")
def client(token: str) -> Iterator[Any]:
    import docker

    client = docker.from_env()
    yield client
    for image in client.images.list():
        for tag in image.tags:
            if token in tag:
                client.api.remove_image(tag, force=True)
    client.close()


@pytest.fixture(scope="module")
def bundles(example_bundles: dict[str, Path]) -> dict[str, Path]:
    return example_bundles


def build(cli: Any, bundle: Path, base: str, cache: Path, *args: str | Path) -> tuple[int, dict[str, Any], str]:
    result = cli("build", "--target", "docker", "--bundle", bundle, "--base-image", base, "--wheel-cache", cache,
                 "--json", *args)
    data = json.loads(result.stdout) if result.stdout.strip().startswith("{") else {}
    return result.exit_code, data, result.output


@pytest.fixture(scope="module")
def built(bundles: dict[str, Path], base_image: str, wheel_cache: Path, token: str,
          client: Any) -> dict[str, dict[str, Any]]:
    """Every example built and smoke-tested, two at a time (pip and layer commits use one core each).

    In queue order, taxi (same dependencies as iris) starts only after iris or reviews is done, so it finds
    the dependency layers in the cache.
    """
    from concurrent.futures import ThreadPoolExecutor

    from mlship.targets.docker import DockerOptions, build_docker

    def run(name: str) -> dict[str, Any]:
        options = DockerOptions(base_image=base_image, tags=[f"mlship-e2e-{name}:{token}"], wheel_cache=wheel_cache)
        return build_docker(bundles[name], options).to_json()

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(EXAMPLES, pool.map(run, EXAMPLES), strict=True))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle needing only the runtime's dependencies: for tests of the machinery rather than of a model."""
    return write_tiny_bundle(tmp_path_factory.mktemp("tiny") / "tiny")


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_image_replays_the_golden_cases_over_http(built: dict[str, dict[str, Any]], client: Any,
                                                          name: str, token: str) -> None:
    data = built[name]
    parity = data["parity"]
    assert data["ok"] and parity["ok"], parity
    assert parity["passed"] == parity["total"] > 0
    assert 400 <= parity["malformed_status"] < 500
    assert parity["exit_code"] == 0 and parity["stop_seconds"] < 5
    assert data["image"]["tags"] == [f"mlship-e2e-{name}:{token}"]
    assert data["image"]["size"] > data["image"]["base_size"] > 0
    config = client.api.inspect_image(data["image"]["id"])["Config"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == name
    for key in ("version", "created", "revision", "source"):
        assert labels[f"org.opencontainers.image.{key}"], key
    assert labels["io.mlship.context-hash"] == data["context_hash"]
    manifest = json.loads((Path(data["bundle"]) / "mlship.json").read_text())
    assert labels["io.mlship.notebook.sha256"] == manifest["source"]["sha256"]
    assert labels["io.mlship.bundle.digest"].startswith("sha256:")
    assert config["User"] == "10001:0" and "8080/tcp" in config["ExposedPorts"]
    # The bundle's _boot.py checks the bundle before its runtime is imported (docs/BUNDLE.md "Integrity").
    assert config["Entrypoint"] == ["/opt/venv/bin/python", "-I", "-B", "-u", "/app/mlship_runtime/_boot.py"]
    assert config["Healthcheck"]["Test"][0] == "CMD"
    # The resolved set is recorded in the bundle.
    assert Path(data["lock"]).is_file() and Path(data["lock"]).parent.name == "lock"


def test_the_final_image_holds_the_venv_and_bundle_only(built: dict[str, dict[str, Any]], client: Any) -> None:
    script = ("import importlib.util, os, sys; "
              "wheels = [f for d in ('/opt', '/app', '/tmp', '/root') for _, _, fs in os.walk(d) for f in fs "
              "if f.endswith('.whl')]; "
              "print(wheels, importlib.util.find_spec('pip'), sys.prefix, os.listdir('/app'))")
    out = client.containers.run(built["iris"]["image"]["id"], entrypoint=["/opt/venv/bin/python", "-c"],
                                command=[script], remove=True, network_disabled=True).decode()
    assert out.startswith("[] None /opt/venv"), out
    assert "mlship.json" in out and "mlship_runtime" in out


def _read_from_image(client: Any, image: str, path: str) -> bytes:
    """A file of `image`, copied out of a created (never started) container: a container's log, which
    `containers.run` returns, can lose the end of a large output when the container exits at once."""
    container = client.containers.create(image, network_disabled=True)
    try:
        stream, _ = container.get_archive(path)
        data = b"".join(stream)
    finally:
        container.remove(force=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.next()
        handle = tar.extractfile(member) if member is not None else None
        assert handle is not None, f"{path} is not a file in {image}"
        return handle.read()


def test_the_image_sbom_lists_exactly_what_pip_lists_in_the_container(built: dict[str, dict[str, Any]], client: Any,
                                                                      bundles: dict[str, Path], tmp_path: Path) -> None:
    image = built["iris"]["image"]["id"]
    labels = client.api.inspect_image(image)["Config"]["Labels"]
    assert built["iris"]["sbom"] == {"cyclonedx": labels["io.mlship.sbom.cyclonedx"],
                                     "spdx": labels["io.mlship.sbom.spdx"]}
    docs = {fmt: _read_from_image(client, image, path) for fmt, path in built["iris"]["sbom"].items()}
    assert validate_cyclonedx(docs["cyclonedx"].decode()) is None
    assert validate_spdx(docs["spdx"].decode()) is None
    # pip list, run in the container (as root, to read the mounted copy of pip; the image has none of its own)
    folder = pip_folder(tmp_path / "pip")
    listed = client.containers.run(image, entrypoint=pip_list_command("/opt/venv/bin/python", "/pip"), user="0",
                                   volumes={str(folder): {"bind": "/pip", "mode": "ro"}}, remove=True,
                                   network_disabled=True).decode()
    assert sbom_distributions(docs["cyclonedx"]) == distributions(listed)
    sbom = json.loads(docs["cyclonedx"])
    kinds = {c["type"] for c in sbom["components"]}
    assert kinds == {"library", "container", "machine-learning-model"}
    base = next(c for c in sbom["components"] if c["type"] == "container")
    base_info = client.api.inspect_image(built["iris"]["base_image"])
    # a local base (mlship base-image) by its image id; one pulled from a registry by its manifest digest
    assert base["version"] in [base_info["Id"], *(d.split("@")[1] for d in base_info.get("RepoDigests") or [])]
    debs = [c for c in sbom["components"] if c.get("purl", "").startswith("pkg:deb/")]
    assert any(c["name"] == "python3" for c in debs) and any(c["name"] == "libc6" for c in debs)
    model = next(c for c in sbom["components"] if c["type"] == "machine-learning-model")
    props = {p["name"]: p["value"] for p in model["properties"]}
    golden = json.loads((bundles["iris"] / "golden.json").read_text())
    assert props["mlship:model:class"] == "sklearn.pipeline.Pipeline"
    assert props["mlship:model:golden-cases"] == str(len(golden["cases"]))
    assert sbom["metadata"]["component"]["type"] == "container"


def test_mlship_sbom_reads_a_saved_image(built: dict[str, dict[str, Any]], client: Any, cli: Any,
                                         tmp_path: Path) -> None:
    saved = tmp_path / "iris.tar"
    with saved.open("wb") as out:
        for chunk in client.images.get(built["iris"]["image"]["tags"][0]).save(named=True):
            out.write(chunk)
    result = cli("sbom", saved, "--format", "spdx")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["spdxVersion"] == "SPDX-2.3" and data["name"] == "iris-0.1.0-image"


def test_runs_as_a_non_root_user(built: dict[str, dict[str, Any]], client: Any) -> None:
    out = client.containers.run(built["iris"]["image"]["id"], entrypoint=["id"], remove=True).decode()
    assert out.startswith("uid=10001(mlship) gid=0(root)"), out


def test_read_only_root_and_an_arbitrary_uid(built: dict[str, dict[str, Any]], bundles: dict[str, Path],
                                            client: Any) -> None:
    # OpenShift style: a random UID in group 0, nothing writable, no capabilities.
    container, url = run_ready(client, built["taxi"]["image"]["id"], read_only=True, user="1000777:0",
                               cap_drop=["ALL"], security_opt=["no-new-privileges"])
    try:
        assert client.containers.get(container.id).attrs["HostConfig"]["ReadonlyRootfs"] is True
        results = verify_bundle(bundles["taxi"], url=url)
        assert results and all(r.ok for r in results), results
        # The page and the API docs, with Swagger UI's files from the image's venv, under the read-only root.
        loaded = check_page(url)
        assert loaded.keys() >= {"/", "/ui/page.js", "/docs", "/docs/swagger-ui-bundle.js"}, loaded
        # The image's own HEALTHCHECK command (python, no curl) passes.
        probe = client.api.inspect_image(built["taxi"]["image"]["id"])["Config"]["Healthcheck"]["Test"][1:]
        exit_code, output = container.exec_run(probe)
        assert exit_code == 0, output
    finally:
        container.remove(force=True)


def test_sigterm_stops_the_server_within_seconds(built: dict[str, dict[str, Any]], client: Any) -> None:
    container, _ = run_ready(client, built["reviews"]["image"]["id"])
    try:
        start = time.monotonic()
        container.kill(signal="SIGTERM")
        status = container.wait(timeout=30)
        elapsed = time.monotonic() - start
        assert status["StatusCode"] == 0, container.logs().decode()
        assert elapsed < 5, elapsed
    finally:
        container.remove(force=True)


def test_arguments_reach_the_runtime_through_the_entrypoint(built: dict[str, dict[str, Any]], client: Any) -> None:
    # `docker run IMAGE verify /app` replaces only CMD: the bundle verifies itself inside the image, offline.
    out = client.containers.run(built["churn"]["image"]["id"], command=["verify", "/app"], remove=True,
                                network_disabled=True).decode()
    assert "golden cases match" in out, out


def test_a_model_only_change_reuses_the_dependency_layers(built: dict[str, dict[str, Any]], examples: Path,
                                                           cli: Any, base_image: str, wheel_cache: Path,
                                                           token: str, tmp_path: Path) -> None:
    notebook_dir = Path(shutil.copytree(examples / "iris", tmp_path / "iris"))
    notebook = notebook_dir / "iris.ipynb"
    text = notebook.read_text()
    assert "LogisticRegression(max_iter=1000)" in text
    notebook.write_text(text.replace("LogisticRegression(max_iter=1000)", "LogisticRegression(max_iter=1000, C=0.3)"))
    packaged = cli("package", notebook, "-o", tmp_path / "bundle")
    assert packaged.exit_code == 0, packaged.output
    code, data, output = build(cli, tmp_path / "bundle", base_image, wheel_cache, "--tag", f"mlship-e2e-iris2:{token}")
    assert code == 0, output
    before, after = built["iris"], data
    assert after["context_hash"] != before["context_hash"]
    cached = after["build"]["cached"]
    assert any("pip install" in step for step in cached), cached
    assert any("COPY --from=build /opt/venv/" in step for step in cached), cached
    assert not any("COPY bundle/" in step for step in cached), cached
    # Same base, same passwd and venv layers; only the bundle layer and the SBOM's (it names the model's
    # digest) differ.
    assert after["image"]["layers"][:-2] == before["image"]["layers"][:-2]
    assert after["image"]["layers"][-2] != before["image"]["layers"][-2]
    assert after["image"]["layers"][-1] != before["image"]["layers"][-1]


def test_push_to_a_loopback_registry(tiny: Path, base_image: str, cli: Any, wheel_cache: Path, registry: str,
                                     token: str) -> None:
    tag = f"{registry}/mlship/tiny:{token}"
    code, data, output = build(cli, tiny, base_image, wheel_cache, "--tag", tag, "--push")
    assert code == 0, output
    digest = data["digests"][tag]
    assert digest.startswith("sha256:") and data["parity"]["ok"]
    request = urllib.request.Request(f"http://{registry}/v2/mlship/tiny/manifests/{token}", method="HEAD",
                                     headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Docker-Content-Digest"] == digest


def test_a_push_failure_is_a_clear_error(tiny: Path, base_image: str, cli: Any, wheel_cache: Path,
                                         token: str) -> None:
    tag = f"127.0.0.1:{free_port()}/tiny:{token}"
    code, _, output = build(cli, tiny, base_image, wheel_cache, "--tag", tag, "--push", "--no-test")
    assert code == 1
    assert f"error: pushing {tag} failed" in output and "docker login 127.0.0.1:" in output
    assert "Traceback" not in output


@pytest.fixture(scope="module")
def broken_bases(client: Any, base_image: str, token: str) -> dict[str, str]:
    """Derived base images: one without any python3, one whose Python lacks the venv module."""
    recipes = {"nopython": "RUN rm -f /usr/bin/python3*",
               "novenv": "RUN rm -rf /usr/lib/python3.11/venv /usr/lib/python3.11/ensurepip"}
    tags = {}
    for name, run in recipes.items():
        tag = f"mlship-e2e-{name}:{token}"
        client.images.build(fileobj=io.BytesIO(f"FROM {base_image}\n{run}\n".encode()), tag=tag, rm=True)
        tags[name] = tag
    return tags


def test_a_base_without_the_bundles_python_is_refused(tiny: Path, broken_bases: dict[str, str], cli: Any,
                                                      wheel_cache: Path) -> None:
    code, _, output = build(cli, tiny, broken_bases["nopython"], wheel_cache)
    assert code == 1
    assert f"error: the base image {broken_bases['nopython']} has no python3.11 on its PATH (no python3 at all)" \
        in output
    assert "pickled model loads only under the same major.minor" in output and "Traceback" not in output


def test_a_failed_build_shows_the_failing_step_and_its_log(tiny: Path, broken_bases: dict[str, str], cli: Any,
                                                           wheel_cache: Path) -> None:
    code, _, output = build(cli, tiny, broken_bases["novenv"], wheel_cache)
    assert code == 1
    assert "error: docker build failed at Step 3/" in output and "RUN python3.11 -m venv" in output
    assert "No module named venv" in output and "--context-only" in output


@pytest.fixture(scope="module")
def wrong_golden(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle whose last golden case expects what the model does not return: the server replays it at start-up
    and stays not ready, and the smoke test's replay over HTTP still names the difference."""
    return write_tiny_bundle(tmp_path_factory.mktemp("wrong") / "wrong", name="wrong", expected=[1, 2, 9999])


@pytest.mark.parametrize("keep", [False, True])
def test_a_parity_failure_exits_non_zero_and_removes_the_image(wrong_golden: Path, base_image: str, cli: Any,
                                                               wheel_cache: Path, client: Any, token: str,
                                                               keep: bool) -> None:
    import docker

    tag = f"mlship-e2e-wrong-{keep}:{token}".lower()
    code, data, output = build(cli, wrong_golden, base_image, wheel_cache, "--tag", tag,
                               *(["--keep-failed"] if keep else []))
    assert code == 1 and not data["ok"]
    parity = data["parity"]
    assert parity["passed"] == parity["total"] - 1
    assert "the server runs but is not ready: /readyz answered 503" in parity["failure"]
    assert "golden case predict-2 does not match" in parity["failure"]
    assert "the docker build of wrong failed its checks" in output
    assert data["image"]["kept"] is keep
    if keep:
        client.images.get(tag)
    else:
        with pytest.raises(docker.errors.ImageNotFound):
            client.images.get(tag)


def stage_images(client: Any, name: str) -> list[str]:
    """Every image (intermediates included) labelled as the build stage of model `name`."""
    return [image.id for image in client.images.list(all=True, filters={
        "label": ["dev.mlship.stage=build", f"dev.mlship.name={name}"]})]


def test_only_the_cache_stage_remains_and_no_build_cache_removes_it(built: dict[str, dict[str, Any]],
                                                                     bundles: dict[str, Path], tiny: Path,
                                                                     cli: Any, base_image: str, wheel_cache: Path,
                                                                     client: Any, token: str) -> None:
    # After the builds above, each model keeps one build stage, the one its result names as the layer cache; a
    # failed image's stage is gone (the parity failures of `wrong`).
    for name in EXAMPLES:
        stage = built[name]["build"]["stage"]
        assert stage["kept"] and stage["size"] > 0, stage
        assert stage_images(client, name) == [client.images.get(stage["id"]).id], name
    assert stage_images(client, "wrong") == []
    # --no-build-cache removes the stage too: then no image labelled as an mlship build stage of these models remains.
    for name, bundle in [*bundles.items(), ("tiny", tiny)]:
        code, data, output = build(cli, bundle, base_image, wheel_cache, "--tag", f"mlship-e2e-{name}-nc:{token}",
                                   "--no-build-cache", "--no-test")
        assert code == 0, output
        assert data["build"]["stage"]["kept"] is False and data["build"]["stage"]["reason"] == "--no-build-cache"
        assert data["image"]["size"] > data["image"]["base_size"] > 0
        client.images.get(data["image"]["id"])  # the final image stays
    for name in [*EXAMPLES, "tiny", "wrong"]:
        assert stage_images(client, name) == [], name
