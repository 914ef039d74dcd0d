"""`mlship build --target docker mlship.toml --builder native`: the image of a service file (three models, two
environments) written by mlship with no engine reachable (DOCKER_HOST pointing nowhere), pushed to a loopback
registry holding the test base and written as one tar; then checked by the tools that did not make it: skopeo reads
the config, the Docker engine pulls the image and runs it read-only under an arbitrary UID (every model's golden
cases over HTTP through /models/NAME/versions/VERSION, each model on its own environment) and loads the tar; the
engine's own build of the same service has the same config and files. Two builds give the same digest; a change
to one model's artifacts uploads only that model's layer (and the config), as the registry's access log says.

The models are the split pair of test_service_targets.py (each answers with the version of six its environment
holds) and a tiny one: environments of the runtime's own wheels, so the cold build takes seconds.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from mlship.bundle.verify import verify_bundle
from mlship.sbom.document import validate_cyclonedx, validate_spdx
from tests.e2e import test_native_build, test_service_targets
from tests.support.docker import run_ready, write_tiny_bundle
from tests.support.pip import distributions, pip_folder, pip_list_command

pytestmark = [pytest.mark.e2e, pytest.mark.requires_docker]

# Fixtures of those modules, found here by name (module-scoped: this module gets its own registry and token);
# skopeo is tests/support/docker.py's.
token, registry_dir, reg, base_ref = (test_native_build.token, test_native_build.registry_dir,
                                      test_native_build.reg, test_native_build.base_ref)
client, pair = test_native_build.client, test_service_targets.pair
write_service, answers_of_the_pair, OLD = (test_service_targets.write_service, test_service_targets.answers_of_the_pair,
                                           test_service_targets.OLD)
LABELS = {"tiny 0.1.0": "tiny/versions/0.1.0", "pinned 1.0.0": "pinned/versions/1.0.0",
          "pinned 2.0.0": "pinned/versions/2.0.0"}


def build(cli: Any, service: Path, base: str, cache: Path, oci: Path, *args: str | Path) -> tuple[int, dict[str, Any], str]:
    """`mlship build --target docker SERVICE` with no engine reachable and the native builder's cache in `oci`."""
    return test_native_build.without_engine(cli, oci, service, "--base-image", base, "--wheel-cache", cache, *args)


@pytest.fixture(scope="module")
def models(pair: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {"tiny 0.1.0": write_tiny_bundle(tmp_path_factory.mktemp("nsvc-tiny") / "tiny"),
            "pinned 1.0.0": pair["1.0.0"], "pinned 2.0.0": pair["2.0.0"]}


@pytest.fixture(scope="module")
def service(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_service(tmp_path_factory.mktemp("nsvc") / "mlship.toml", list(models.values()))


@pytest.fixture(scope="module")
def built(cli: Any, service: Path, base_ref: str, wheel_cache: Path, reg: str, token: str,
          tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The shared cold build: --builder auto with no engine reachable, pushed and written as a tar."""
    out = tmp_path_factory.mktemp("nsvc-out")
    tag = f"{reg}/mlship/scoring:{token}"
    code, data, output = build(cli, service, base_ref, wheel_cache, out / "oci", "--tag", tag, "--push",
                               "-o", out / "scoring.tar")
    assert code == 0, output
    return {"data": data, "tag": tag, "tar": out / "scoring.tar", "oci": out / "oci"}


def test_without_an_engine_the_service_is_built_natively_layer_by_layer(built: dict[str, Any]) -> None:
    data = built["data"]
    assert data["builder"] == "native" and data["ok"]
    native = data["native"]
    assert data["digests"] == {built["tag"]: native["manifest_digest"]} == native["pushed"]
    assert [env["models"] for env in data["service"]["environments"]] == [["tiny 0.1.0", "pinned 1.0.0"],
                                                                         ["pinned 2.0.0"]]
    # The base's layers as the registry has them, then env1, env2, the three models, the service layer, the SBOM.
    ours = [layer["digest"] for layer in native["layers"]][len(native["base"]["layers"]):]
    assert len(ours) == 7 and len(set(ours)) == 7


def test_skopeo_reads_the_config_from_the_registry(built: dict[str, Any], skopeo: str) -> None:
    config = json.loads(subprocess.run([skopeo, "inspect", "--config", "--tls-verify=false",
                                        f"docker://{built['tag']}"], capture_output=True, check=True).stdout)
    settings = config["config"]
    assert settings["User"] == "10001:0" and "8080/tcp" in settings["ExposedPorts"]
    assert settings["Entrypoint"] == ["/opt/envs/env1/bin/python", "-B", "-m", "mlship_runtime", "serve-service",
                                      "/app/mlship.toml"]
    assert settings["Cmd"] == ["--host", "0.0.0.0", "--port", "8080"] and settings["WorkingDir"] == "/app"
    env = dict(entry.split("=", 1) for entry in settings["Env"])
    assert env["PATH"].startswith("/opt/envs/env1/bin:") and env["MLSHIP_PID_FILE"] == "/tmp/mlship.pid"
    labels = settings["Labels"]
    assert [(m["name"], m["version"], m["environment"]) for m in json.loads(labels["io.mlship.models"])] == [
        ("tiny", "0.1.0", "env1"), ("pinned", "1.0.0", "env1"), ("pinned", "2.0.0", "env2")]
    assert json.loads(labels["io.mlship.environments"]) == {"env1": ["tiny 0.1.0", "pinned 1.0.0"],
                                                            "env2": ["pinned 2.0.0"]}
    assert labels["org.opencontainers.image.title"] == "scoring"
    assert labels["org.opencontainers.image.base.digest"] == built["data"]["native"]["base"]["digest"]
    assert labels["io.mlship.context-hash"] == built["data"]["context_hash"]


def test_the_engine_pulls_it_and_every_model_answers_read_only_under_any_uid(
        built: dict[str, Any], client: Any, models: dict[str, Path]) -> None:
    client.images.pull(built["tag"])
    container, url = run_ready(client, built["tag"], timeout=180, read_only=True, user="1000777:0",
                               cap_drop=["ALL"], security_opt=["no-new-privileges"])
    try:
        for label, bundle in models.items():
            results = verify_bundle(bundle, url=f"{url}/models/{LABELS[label]}")
            assert results and all(r.ok for r in results), (label, results)
        # Each of the pair on its own environment's six; the unversioned route goes to the default, 2.0.0.
        assert answers_of_the_pair(url) == {"/versions/1.0.0": ["1.16.0"], "/versions/2.0.0": ["1.17.0"],
                                            "": ["1.17.0"]}
        probe = client.api.inspect_image(built["tag"])["Config"]["Healthcheck"]["Test"][1:]
        code, output = container.exec_run(probe)
        assert code == 0, output
    finally:
        container.remove(force=True)


def test_the_output_tar_loads_in_docker_and_skopeo_reads_it(built: dict[str, Any], client: Any,
                                                            skopeo: str) -> None:
    with built["tar"].open("rb") as handle:
        loaded = client.images.load(handle.read())
    assert loaded[0].id == built["data"]["native"]["config_digest"] and built["tag"] in loaded[0].tags
    oci = json.loads(subprocess.run([skopeo, "inspect", f"oci-archive:{built['tar']}"], capture_output=True,
                                    check=True).stdout)
    assert oci["Digest"] == built["data"]["native"]["manifest_digest"]


@pytest.fixture(scope="module")
def engine_image(cli: Any, service: Path, base_image: str, wheel_cache: Path, token: str) -> str:
    tag = f"mlship-e2e-nsvc-engine:{token}"
    result = cli("build", "--target", "docker", service, "--base-image", base_image, "--wheel-cache", wheel_cache,
                 "--builder", "engine", "--no-test", "--tag", tag, "--json")
    assert result.exit_code == 0, result.output
    return tag


def _listing(client: Any, image: str) -> set[str]:
    """Every path under /app, /opt/envs and /opt/mlship with its type and mode, and /etc/passwd's last line."""
    script = ("import os, stat\nfor top in ('/app', '/opt/envs', '/opt/mlship'):\n for d, ds, fs in os.walk(top):\n"
              "  for n in ds + fs:\n   p = os.path.join(d, n); s = os.lstat(p)\n"
              "   print(p, stat.filemode(s.st_mode), s.st_uid, s.st_gid)\n"
              "print(open('/etc/passwd').read().splitlines()[-1])\n")
    out = client.containers.run(image, entrypoint=["/opt/envs/env1/bin/python", "-c"], command=[script],
                                remove=True, network_disabled=True).decode()
    return set(out.splitlines())


def test_the_engines_build_of_the_same_service_has_the_same_config_and_files(
        built: dict[str, Any], engine_image: str, client: Any) -> None:
    native_tag = built["tag"]
    client.images.pull(native_tag)
    ours, theirs = (client.api.inspect_image(image)["Config"] for image in (native_tag, engine_image))
    for key in ("User", "Entrypoint", "Cmd", "Env", "WorkingDir", "ExposedPorts", "Healthcheck", "StopSignal"):
        assert ours[key] == theirs[key], key
    differ = {k for k in {*ours["Labels"], *theirs["Labels"]} if ours["Labels"].get(k) != theirs["Labels"].get(k)}
    # The base: the same image, by its registry reference here and as a local image (which has no manifest digest)
    # there; the hash: of our layers here, of the build context there.
    assert differ == {"org.opencontainers.image.base.name", "org.opencontainers.image.base.digest",
                      "io.mlship.context-hash"}, differ
    native_files, engine_files = _listing(client, native_tag), _listing(client, engine_image)
    assert native_files <= engine_files, sorted(native_files - engine_files)[:20]
    # What `python -m venv` and pip write beside the packages and nothing in the image runs (the one-bundle
    # native image leaves them out too, _native_venv.py): the activate scripts, include/python3.X, pip's
    # REQUESTED markers. Every other file, folder, mode and owner is the same, /etc/passwd's user included.
    unused = re.compile(r"^/opt/envs/env\d/(bin/activate\S*|bin/Activate\.ps1|include/python3\.\d+|"
                        r"lib/python3\.\d+/site-packages/[^/]+\.dist-info/REQUESTED) ")
    assert {line for line in engine_files - native_files if not unused.match(line)} == set()
    assert any(line.startswith("/app/models/pinned/2.0.0/mlship.json ") for line in native_files)


def _environment(component: dict[str, Any]) -> str:
    """The environment a CycloneDX component is in (a library) or served by (a model)."""
    return next((p["value"] for p in component.get("properties", [])
                 if p["name"] in ("mlship:environment", "mlship:model:environment")), "")


def test_the_sbom_lists_every_environments_packages_as_pip_lists_them_in_the_container(
        built: dict[str, Any], cli: Any, client: Any, tmp_path: Path) -> None:
    data = built["data"]
    assert data["sbom"] == {"cyclonedx": "/opt/mlship/sbom.cdx.json", "spdx": "/opt/mlship/sbom.spdx.json"}
    result = cli("sbom", built["tar"])
    assert result.exit_code == 0, result.output
    assert validate_cyclonedx(result.stdout) is None
    spdx = cli("sbom", built["tar"], "--format", "spdx")
    assert spdx.exit_code == 0 and validate_spdx(spdx.stdout) is None
    components = json.loads(result.stdout)["components"]
    client.images.pull(built["tag"])
    folder = pip_folder(tmp_path / "pip")
    for env in ("env1", "env2"):
        listed = client.containers.run(built["tag"], entrypoint=pip_list_command(f"/opt/envs/{env}/bin/python", "/pip"),
                                       user="0", volumes={str(folder): {"bind": "/pip", "mode": "ro"}}, remove=True,
                                       network_disabled=True).decode()
        sbom = {(c["purl"].split("/", 1)[1].split("@")[0], c["version"]) for c in components
                if c.get("purl", "").startswith("pkg:pypi/") and _environment(c) == env}
        assert sbom == distributions(listed), env
    models = [(c["name"], c["version"], _environment(c)) for c in components if c["type"] == "machine-learning-model"]
    assert sorted(models) == [("pinned", "1.0.0", "env1"), ("pinned", "2.0.0", "env2"), ("tiny", "0.1.0", "env1")]
    base = next(c for c in components if c["type"] == "container")
    assert base["version"] == data["native"]["base"]["digest"]
    assert any(c["name"] == "python3" and c["purl"].startswith("pkg:deb/debian/") for c in components)


def test_a_denied_license_fails_the_build_naming_the_environments_and_models(
        cli: Any, service: Path, base_ref: str, wheel_cache: Path, tmp_path: Path) -> None:
    # six is MIT-licensed, in both environments.
    code, _, output = build(cli, service, base_ref, wheel_cache, tmp_path / "oci", "--builder", "native",
                            "--deny-licenses", "MIT")
    assert code == 1 and "six==1.16.0 (env1: tiny 0.1.0, pinned 1.0.0)" in output, output
    assert "six==1.17.0 (env2: pinned 2.0.0)" in output and "Traceback" not in output
    assert not list(tmp_path.glob("*.tar")) and not (service.parent / "scoring-latest.image.tar").exists()


def test_two_builds_give_the_same_digest(built: dict[str, Any], cli: Any, service: Path, base_ref: str,
                                         wheel_cache: Path, tmp_path: Path) -> None:
    # A cache of its own: both venvs are installed and every layer written again.
    code, data, output = build(cli, service, base_ref, wheel_cache, tmp_path / "oci", "--builder", "native",
                               "--tag", built["tag"], "-o", tmp_path / "again.tar")
    assert code == 0, output
    assert data["native"]["reused"] == []
    assert data["native"]["manifest_digest"] == built["data"]["native"]["manifest_digest"]


def test_a_change_to_one_models_artifacts_uploads_only_its_layer_and_the_sboms(
        built: dict[str, Any], cli: Any, models: dict[str, Path], pair: dict[str, Path], base_ref: str,
        wheel_cache: Path, reg: str, registry_dir: Path, token: str, tmp_path: Path) -> None:
    retrained = write_tiny_bundle(tmp_path / "pinned-1", name="pinned", version="1.0.0", reports=OLD,
                                  values={"retrained": True})
    service = write_service(tmp_path / "mlship.toml", [models["tiny 0.1.0"], retrained, pair["2.0.0"]])
    log = registry_dir / "registry.log"
    before = log.read_text(errors="replace")
    tag = f"{reg}/mlship/scoring:{token}-2"
    code, data, output = build(cli, service, base_ref, wheel_cache, built["oci"], "--tag", tag, "--push")
    assert code == 0, output
    first, second = built["data"]["native"]["layers"], data["native"]["layers"]
    differ = [i for i, (a, b) in enumerate(zip(first, second, strict=True)) if a["digest"] != b["digest"]]
    # base..., env1, env2, tiny, pinned 1.0.0, pinned 2.0.0, service, SBOM: pinned 1.0.0's and the SBOM (which
    # lists every model's digest).
    assert differ == [len(second) - 4, len(second) - 1], differ
    assert data["native"]["reused"] == ["venv env1", "venv env2"]
    expected = sorted([second[-4]["digest"], second[-1]["digest"], data["native"]["config_digest"]])
    assert sorted(data["native"]["uploads"][tag]["uploaded"]) == expected
    requests = log.read_text(errors="replace")[len(before):]
    put = re.findall(r'"PUT /v2/mlship/scoring/blobs/uploads/[^"]*digest=(sha256(?::|%3A)[0-9a-f]{64})', requests)
    assert sorted(d.replace("%3A", ":") for d in put) == expected, requests


@pytest.fixture
def other_python(models: dict[str, Path], tmp_path: Path) -> Path:
    """A service whose second model was packaged under Python 3.12 (only mlship.json says so)."""
    from tests.support.services import bundle_copy

    newer = bundle_copy(models["tiny 0.1.0"], tmp_path / "newer", "newer",
                        python={"version": "3.12.1", "implementation": "CPython"})
    path = tmp_path / "mlship.toml"
    path.write_text(f'[service]\nname = "mixed"\n\n[[models]]\nbundle = "{models["tiny 0.1.0"]}"\n\n'
                    f'[[models]]\nbundle = "{newer}"\n')
    return path


def test_models_of_two_pythons_are_refused_with_a_hint(cli: Any, other_python: Path, base_ref: str,
                                                       wheel_cache: Path, tmp_path: Path) -> None:
    code, _, output = build(cli, other_python, base_ref, wheel_cache, tmp_path / "oci", "--builder", "native")
    assert code == 1
    assert "were packaged under different Pythons (Python 3.11: tiny 0.1.0; Python 3.12: newer 0.1.0)" in output
    assert "hint: package them again under one Python" in output and "Traceback" not in output


def test_the_engine_asked_for_and_unreachable_is_a_clear_error(cli: Any, service: Path, base_ref: str,
                                                               wheel_cache: Path, tmp_path: Path) -> None:
    code, _, output = build(cli, service, base_ref, wheel_cache, tmp_path / "oci", "--builder", "engine")
    assert code == 1 and "error: no Docker daemon is reachable at tcp://127.0.0.1:" in output, output
    assert "build the image with --builder native" in output
    assert "Traceback" not in output

