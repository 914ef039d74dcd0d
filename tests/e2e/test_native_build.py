"""`mlship build --target docker --builder native`: the image written by mlship itself, with no engine reachable
(DOCKER_HOST pointing nowhere), pushed to a real loopback registry (Debian's docker-registry) holding the test base;
then checked by the tools that did not make it: skopeo reads the registry and the --output tar both ways, the
Docker engine pulls the image and runs it (golden cases over HTTP, read-only root, an arbitrary UID) and loads the
tar. Two builds give the same digest; a model-only change uploads one new layer (the registry's own access log
says so); bad bases and registries fail with the registry, the HTTP status and the fix.

One cold build is shared by the module; the second cold build (the reproducibility check) has its own cache.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlship.bundle.verify import verify_bundle
from mlship.sbom.document import validate_cyclonedx, validate_spdx
from mlship.targets._native_build import push_image
from mlship.targets._oci import BlobStore, Entry, make_image, write_archive, write_layer
from mlship.targets._oci_base import resolve_base
from mlship.targets.wheelhouse import parse_platform
from tests.support.docker import run_ready, start_registry, token_auth, write_tiny_bundle
from tests.support.pip import sbom_distributions
from tests.support.servers import free_port
from tests.support.token_service import TokenService

pytestmark = [pytest.mark.e2e, pytest.mark.requires_docker]

# bcrypt of "right-password" (the registry's htpasswd backend takes bcrypt only).
_HTPASSWD = "mlship:$2b$04$Uv.ROGhcqcei3pJjYwsoJ.wC68b26Z7g8DOC2wGyHkqB/rYPkEDsW\n"


@pytest.fixture(scope="module")
def token() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="module")
def registry_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("native-registry")


@pytest.fixture(scope="module")
def reg(registry_dir: Path) -> Iterator[str]:
    """A registry of this module's own, logging every request (the upload counts are read from its log)."""
    with start_registry(registry_dir, access_log=True) as address:
        yield address


@pytest.fixture(scope="module")
def base_ref(reg: str, base_image: str, skopeo: str) -> str:
    """The test base image (built by the engine from Debian packages) in the loopback registry."""
    ref = f"{reg}/mlship/base:py311"
    subprocess.run([skopeo, "copy", "--quiet", "--dest-tls-verify=false", f"docker-daemon:{base_image}",
                    f"docker://{ref}"], check=True, timeout=300)
    return ref


@pytest.fixture(scope="module")
def client(token: str) -> Iterator[Any]:
    import docker

    client = docker.from_env()
    yield client
    for image in client.images.list():
        if any(token in tag for tag in image.tags):
            client.api.remove_image(image.id, force=True)
    client.close()


def native(cli: Any, bundle: Path, base: str, cache: Path, oci: Path, *args: str | Path,
           env: dict[str, str] | None = None) -> tuple[int, dict[str, Any], str]:
    """`mlship build --target docker --bundle BUNDLE` with no engine reachable (without_engine)."""
    return without_engine(cli, oci, "--bundle", bundle, "--base-image", base, "--wheel-cache", cache, *args, env=env)


def without_engine(cli: Any, oci: Path, *args: str | Path,
                   env: dict[str, str] | None = None) -> tuple[int, dict[str, Any], str]:
    """`mlship build --target docker --json ARGS` with DOCKER_HOST pointing at a port nothing listens on (no
    engine is reachable) and the native builder's cache in `oci`: (exit code, the JSON, the output)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {"DOCKER_HOST": f"tcp://127.0.0.1:{free_port()}", "MLSHIP_OCI_CACHE": str(oci),
                            **(env or {})}.items():
            patch.setenv(name, value)
        result = cli("build", "--target", "docker", "--json", *args)
    data = json.loads(result.stdout) if result.stdout.strip().startswith("{") else {}
    return result.exit_code, data, result.output


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bundle(tmp_path_factory.mktemp("native-tiny") / "tiny")


@pytest.fixture(scope="module")
def built(cli: Any, tiny: Path, base_ref: str, wheel_cache: Path, reg: str, token: str,
          tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The shared cold build: --builder auto with no engine reachable, pushed and written as a tar."""
    out = tmp_path_factory.mktemp("native-out")
    tag = f"{reg}/mlship/tiny:{token}"
    code, data, output = native(cli, tiny, base_ref, wheel_cache, out / "oci", "--tag", tag, "--push",
                                "-o", out / "tiny.tar")
    assert code == 0, output
    return {"data": data, "output": output, "tag": tag, "tar": out / "tiny.tar", "oci": out / "oci"}


def test_without_an_engine_the_build_is_native_and_pushed(built: dict[str, Any], reg: str) -> None:
    data, tag = built["data"], built["tag"]
    assert data["builder"] == "native" and data["ok"]
    digest = data["native"]["manifest_digest"]
    assert data["digests"] == {tag: digest} and data["native"]["pushed"] == {tag: digest}
    repository, reference = tag.removeprefix(f"{reg}/").split(":")
    request = urllib.request.Request(f"http://{reg}/v2/{repository}/manifests/{reference}", method="GET",
                                     headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Docker-Content-Digest"] == digest
        assert response.headers["Content-Type"] == "application/vnd.oci.image.manifest.v1+json"
        manifest = json.loads(response.read())
    # The base's layers as the registry has them, then venv, code and model.
    assert [layer["digest"] for layer in manifest["layers"][:-3]] == data["native"]["base"]["layers"]
    assert all(layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip" for layer in manifest["layers"])


def test_skopeo_reads_the_config_from_the_registry(built: dict[str, Any], skopeo: str) -> None:
    config = json.loads(subprocess.run([skopeo, "inspect", "--config", "--tls-verify=false",
                                        f"docker://{built['tag']}"], capture_output=True, check=True).stdout)
    settings = config["config"]
    assert settings["User"] == "10001:0" and "8080/tcp" in settings["ExposedPorts"]
    assert settings["Entrypoint"] == ["/opt/venv/bin/python", "-I", "-B", "-u", "/app/mlship_runtime/_boot.py"]
    assert settings["Cmd"] == ["serve", "/app", "--host", "0.0.0.0", "--port", "8080"]
    assert settings["WorkingDir"] == "/app" and settings["StopSignal"] == "SIGTERM"
    env = dict(entry.split("=", 1) for entry in settings["Env"])
    assert env["PATH"].startswith("/opt/venv/bin:") and env["HOME"] == "/tmp" and env["PYTHONPATH"] == "/app"
    labels = settings["Labels"]
    assert labels["org.opencontainers.image.title"] == "tiny"
    assert labels["org.opencontainers.image.base.digest"] == built["data"]["native"]["base"]["digest"]
    assert labels["io.mlship.context-hash"] == built["data"]["context_hash"]
    assert config["architecture"] == "amd64" and config["created"] == "2026-11-27T10:00:00Z"


def test_the_engine_pulls_and_runs_it_read_only_with_any_uid(built: dict[str, Any], client: Any,
                                                               tiny: Path) -> None:
    client.images.pull(built["tag"])
    container, url = run_ready(client, built["tag"], read_only=True, user="1000777:0", cap_drop=["ALL"],
                               security_opt=["no-new-privileges"])
    try:
        results = verify_bundle(tiny, url=url)
        assert results and all(r.ok for r in results), results
        probe = client.api.inspect_image(built["tag"])["Config"]["Healthcheck"]["Test"][1:]
        exit_code, output = container.exec_run(probe)
        assert exit_code == 0, output
        exit_code, output = container.exec_run(["id", "-u"])
        assert output.decode().strip() == "1000777"
    finally:
        container.remove(force=True)
    # The default user is the service's own, named in /etc/passwd; no pip, no wheels in the image.
    script = "import importlib.util, os; print(os.getuid(), importlib.util.find_spec('pip'), os.listdir('/opt/venv'))"
    out = client.containers.run(built["tag"], entrypoint=["/opt/venv/bin/python", "-c"], command=[script],
                                remove=True, network_disabled=True).decode()
    assert out.startswith("10001 None ") and "pyvenv.cfg" in out, out


def test_the_output_tar_loads_in_docker_and_skopeo_reads_it_both_ways(built: dict[str, Any], client: Any,
                                                                      skopeo: str) -> None:
    data, tar = built["data"], built["tar"]
    with tar.open("rb") as handle:
        loaded = client.images.load(handle.read())
    assert loaded[0].id == data["native"]["config_digest"] and built["tag"] in loaded[0].tags
    oci = json.loads(subprocess.run([skopeo, "inspect", f"oci-archive:{tar}"], capture_output=True,
                                    check=True).stdout)
    assert oci["Digest"] == data["native"]["manifest_digest"]
    docker_archive = json.loads(subprocess.run([skopeo, "inspect", "--config", f"docker-archive:{tar}"],
                                               capture_output=True, check=True).stdout)
    assert docker_archive["rootfs"]["diff_ids"] == data["image"]["layers"]


def test_the_native_image_carries_its_sbom(built: dict[str, Any], cli: Any) -> None:
    data = built["data"]
    assert data["sbom"] == {"cyclonedx": "/opt/mlship/sbom.cdx.json", "spdx": "/opt/mlship/sbom.spdx.json"}
    result = cli("sbom", built["tar"])
    assert result.exit_code == 0, result.output
    assert validate_cyclonedx(result.stdout) is None
    # The venv holds exactly the lock (installed by mlship, without pip), so the SBOM lists exactly its wheels.
    lock = Path(data["lock"]).read_text()
    assert sbom_distributions(result.stdout) == {(m[1], m[2]) for m in re.finditer(r"^(\S+)==(\S+) ", lock, re.M)}
    components = json.loads(result.stdout)["components"]
    base = next(c for c in components if c["type"] == "container")
    assert base["version"] == data["native"]["base"]["digest"] and base["purl"].startswith("pkg:oci/base@sha256:")
    assert any(c["name"] == "python3" and c["purl"].startswith("pkg:deb/debian/") for c in components)
    spdx = cli("sbom", built["tar"], "--format", "spdx")
    assert spdx.exit_code == 0 and validate_spdx(spdx.stdout) is None


def test_two_builds_give_the_same_digest(built: dict[str, Any], cli: Any, tiny: Path, base_ref: str,
                                         wheel_cache: Path, tmp_path: Path) -> None:
    # A cache of its own: the venv is installed and every layer written again, not taken from the first build.
    code, data, output = native(cli, tiny, base_ref, wheel_cache, tmp_path / "oci", "--builder", "native",
                                "--tag", built["tag"], "-o", tmp_path / "again.tar")
    assert code == 0, output
    assert data["native"]["reused"] == []
    assert data["native"]["manifest_digest"] == built["data"]["native"]["manifest_digest"]
    assert _sha256(tmp_path / "again.tar") == _sha256(built["tar"])


def test_a_model_only_change_uploads_one_new_layer(built: dict[str, Any], cli: Any, base_ref: str, wheel_cache: Path,
                                                   reg: str, registry_dir: Path, token: str, tmp_path: Path) -> None:
    retrained = write_tiny_bundle(tmp_path / "tiny", values={"retrained": 1})
    log = registry_dir / "registry.log"
    before = log.read_text(errors="replace")
    tag = f"{reg}/mlship/tiny:{token}-2"
    code, data, output = native(cli, retrained, base_ref, wheel_cache, built["oci"], "--tag", tag, "--push")
    assert code == 0, output
    first, second = built["data"]["native"]["layers"], data["native"]["layers"]
    assert [layer["digest"] for layer in second[:-1]] == [layer["digest"] for layer in first[:-1]]
    assert second[-1]["digest"] != first[-1]["digest"]
    assert data["native"]["reused"] == ["venv"]
    config = data["native"]["config_digest"]
    uploads = data["native"]["uploads"][tag]
    assert sorted(uploads["uploaded"]) == sorted([second[-1]["digest"], config])
    # What the registry itself saw: exactly two blob uploads completed, the new model layer and the new config.
    requests = log.read_text(errors="replace")[len(before):]
    put = re.findall(r'"PUT /v2/mlship/tiny/blobs/uploads/[^"]*digest=(sha256(?::|%3A)[0-9a-f]{64})', requests)
    assert sorted(d.replace("%3A", ":") for d in put) == sorted([second[-1]["digest"], config]), requests


def test_an_unreachable_registry_is_a_clear_error(cli: Any, tiny: Path, wheel_cache: Path,
                                                  tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    code, _, output = native(cli, tiny, f"{address}/mlship/base:py311", wheel_cache, tmp_path / "oci",
                             "--builder", "native")
    assert code == 1
    assert f"error: registry {address} is unreachable at http://{address}/v2/" in output
    assert "check the registry's host and port" in output and "Traceback" not in output
    assert "offline, give the base as a file: --base-image docker-archive:FILE" in output  # the base's registry


def test_a_refused_login_names_the_registry_and_the_status(cli: Any, tiny: Path, wheel_cache: Path,
                                                          tmp_path: Path) -> None:
    (tmp_path / "htpasswd").write_text(_HTPASSWD)
    (tmp_path / "reg").mkdir()
    with start_registry(tmp_path / "reg", htpasswd=tmp_path / "htpasswd") as address:
        base = f"{address}/mlship/base:py311"
        code, _, output = native(cli, tiny, base, wheel_cache, tmp_path / "oci", "--builder", "native",
                                 "--registry-auth", "mlship:wrong-password")
        assert code == 1, output
        assert f"error: registry {address} refused GET manifest mlship/base:py311 for mlship/base (HTTP 401): the " \
            "credentials given were refused" in output
        assert f"docker login {address}" in output and "Traceback" not in output
        # The right password passes: the registry then says it has no such image.
        code, _, output = native(cli, tiny, base, wheel_cache, tmp_path / "oci", "--builder", "native",
                                 env={"MLSHIP_REGISTRY_AUTH": "mlship:right-password"})
        assert code == 1 and f"error: registry {address} has no image mlship/base:py311 (HTTP 404)" in output


def test_a_push_to_a_registry_with_bearer_tokens(built: dict[str, Any], cli: Any, tiny: Path, base_ref: str,
                                                 wheel_cache: Path, token: str, tmp_path: Path) -> None:
    tokens = TokenService(tmp_path)
    server, realm = tokens.serve()
    (tmp_path / "reg").mkdir()
    auth = token_auth(realm, "mlship-test", "mlship-test-issuer", tokens.bundle)
    try:
        with start_registry(tmp_path / "reg", auth=auth) as address:
            tag = f"{address}/mlship/tiny:{token}"
            code, _, output = native(cli, tiny, base_ref, wheel_cache, built["oci"], "--builder", "native",
                                     "--tag", tag, "--push", env={"MLSHIP_REGISTRY_AUTH": "mlship:wrong"})
            assert code == 1, output
            assert f"error: registry {address} refused token for repository:mlship/tiny:pull for mlship/tiny " \
                "(HTTP 401): the credentials given were refused" in output
            code, data, output = native(cli, tiny, base_ref, wheel_cache, built["oci"], "--builder", "native",
                                        "--tag", tag, "--push", env={"MLSHIP_REGISTRY_AUTH": "mlship:right-password"})
            assert code == 0, output
            # The same image as the shared build, every blob uploaded under a token for the push scope.
            assert data["native"]["manifest_digest"] == built["data"]["native"]["manifest_digest"]
            assert len(data["native"]["uploads"][tag]["uploaded"]) == len(data["native"]["layers"]) + 1
            assert {"pull", "push"} in tokens.granted("mlship/tiny")
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def bad_bases(base_ref: str, reg: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | str]:
    """Bases made from the real one: for arm64 (its config says so), without Python (a whiteout layer deletes
    it), and one in the registry whose config blob is then damaged in the registry's storage."""
    out = tmp_path_factory.mktemp("bad-bases")
    store = BlobStore(out / "store")
    base = resolve_base(base_ref, store, parse_platform("linux/amd64"))
    layers = [layer.descriptor for layer in base.layers]
    arm = make_image(store, {**base.config, "architecture": "arm64"}, layers)
    gone = write_layer(store, [Entry("usr", "dir", 0o755), Entry("usr/bin", "dir", 0o755),
                               Entry("usr/bin/.wh.python3.11", "file")], "rm python3.11")
    config = json.loads(json.dumps(base.config))
    config["rootfs"]["diff_ids"].append(gone.diff_id)
    config.setdefault("history", []).append({"created_by": "rm python3.11"})
    nopython = make_image(store, config, [*layers, gone.descriptor])
    damaged = make_image(store, {**base.config, "config": {**base.config["config"], "Labels": {"damaged": "yes"}}},
                         layers)
    push_image(damaged, f"{reg}/mlship/damaged:1", base, auth=None, step=lambda message: None)
    return {"arm64": write_archive(arm, out / "arm64.tar", []), "nopython": write_archive(nopython, out / "np.tar", []),
            "damaged": f"{reg}/mlship/damaged:1", "damaged_config": damaged.config.digest}


@pytest.mark.parametrize(("bad", "message", "hint"), [
    ("arm64", "is for linux/arm64, but the target platform is linux/amd64", "pass --platform to match the base"),
    ("nopython", "has no python3.11 on its PATH (no python3 at all)",
     "pickled model loads only under the same major.minor"),
])
def test_a_base_for_another_architecture_or_without_python_is_refused(
        bad_bases: dict[str, Any], cli: Any, tiny: Path, wheel_cache: Path, tmp_path: Path, bad: str, message: str,
        hint: str) -> None:
    base = f"oci-archive:{bad_bases[bad]}"
    code, _, output = native(cli, tiny, base, wheel_cache, tmp_path / "oci", "--builder", "native")
    assert code == 1
    assert f"error: the base image {base} {message}" in output
    assert hint in output and "Traceback" not in output


def test_a_blob_whose_digest_does_not_match_is_refused(bad_bases: dict[str, Any], registry_dir: Path, cli: Any,
                                                       tiny: Path, wheel_cache: Path, reg: str,
                                                       tmp_path: Path) -> None:
    digest = bad_bases["damaged_config"].removeprefix("sha256:")
    stored = registry_dir / "data" / "docker" / "registry" / "v2" / "blobs" / "sha256" / digest[:2] / digest / "data"
    stored.write_bytes(stored.read_bytes().replace(b'"damaged":"yes"', b'"damaged":"no!"'))
    code, _, output = native(cli, tiny, bad_bases["damaged"], wheel_cache, tmp_path / "oci",
                             "--builder", "native")
    assert code == 1
    assert f"error: blob sha256:{digest} (from {reg}/mlship/damaged) has digest sha256:" in output
    assert "its content is not what was announced" in output and "Traceback" not in output


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
