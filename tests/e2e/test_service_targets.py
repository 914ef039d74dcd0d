"""`mlship build --target docker|onprem mlship.toml` for real: one image and one tarball serving several models,
two of which pin different versions of six and so get an environment each (issue 11, "Targets").

The split pair are tiny bundles that answer with the version of six they find installed, and whose golden cases
expect their own pin: every replay proves the model ran on its own environment's Python. The image is built once
for the module (iris, reviews and the pair); a second build after a change to one model's artifacts proves that
only that model's layer changed. The onprem test installs the pair and a third tiny model offline, as a user,
and serves them through the installed launcher (the front).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from mlship.bundle.verify import verify_bundle
from mlship.sbom.document import validate_cyclonedx, validate_spdx
from tests.e2e import test_docker, test_onprem_install
from tests.support.docker import write_tiny_bundle
from tests.support.pip import distributions, pip_folder, pip_list_command
from tests.support.servers import free_port, shut_down, wait_until_ready

pytestmark = [pytest.mark.e2e]

# Fixtures of those modules, found here by name: the docker client and the token every tag of this module carries
# (removed at the end), and an install root that the service account (nobody, as root) can reach.
client, token, root_dir = test_docker.client, test_docker.token, test_onprem_install.root_dir
run_ready, PYTHON = test_docker.run_ready, test_onprem_install.PYTHON
read_from_image = test_docker._read_from_image

OLD, NEW = "six==1.16.0", "six==1.17.0"


# The image's service shadows pinned 2.0.0 with 1.0.0: answers come from 2.0.0 alone; the two disagree on every row.
SHADOW = 'shadow = { version = "1.0.0", percent = 100 }\n'


def write_service(path: Path, bundles: list[Path], default: str = "2.0.0", routes: str = "") -> Path:
    models = "".join(f'[[models]]\nbundle = "{bundle}"\n\n' for bundle in bundles)
    path.write_text(f'[service]\nname = "scoring"\n\n{models}[routes.pinned]\ndefault = "{default}"\n{routes}')
    return path


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pair")
    return {"1.0.0": write_tiny_bundle(root / "pinned-1", name="pinned", version="1.0.0", reports=OLD),
            "2.0.0": write_tiny_bundle(root / "pinned-2", name="pinned", version="2.0.0", reports=NEW)}


def post(url: str, body: Any) -> Any:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def sbom_environments(cyclonedx: bytes | str) -> dict[str, set[tuple[str, str]]]:
    """{environment: {(canonical name, version)}} of the Python packages a service's CycloneDX SBOM lists."""
    found: dict[str, set[tuple[str, str]]] = {}
    for c in json.loads(cyclonedx)["components"]:
        if c.get("purl", "").startswith("pkg:pypi/"):
            env = next(p["value"] for p in c["properties"] if p["name"] == "mlship:environment")
            found.setdefault(env, set()).add((c["purl"].split("/", 1)[1].split("@")[0], c["version"]))
    return found


def sbom_models(cyclonedx: bytes | str) -> dict[tuple[str, str], dict[str, str]]:
    """(name, version) -> the mlship properties of each machine-learning-model component."""
    return {(c["name"], c["version"]): {p["name"].removeprefix("mlship:model:"): p["value"] for p in c["properties"]}
            for c in json.loads(cyclonedx)["components"] if c["type"] == "machine-learning-model"}


def mlship(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The real `mlship` command, a process of its own (its exit code and output as a user sees them)."""
    return subprocess.run([sys.executable, "-m", "mlship", *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=cwd, stdin=subprocess.DEVNULL)


def answers_of_the_pair(url: str) -> dict[str, Any]:
    return {route: post(f"{url}/models/pinned{route}/predict", {"instances": ["a"]})["predictions"]
            for route in ("/versions/1.0.0", "/versions/2.0.0", "")}


# -- docker ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def service(example_bundles: dict[str, Path], pair: dict[str, Path],
            tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_service(tmp_path_factory.mktemp("service") / "mlship.toml",
                         [example_bundles["iris"], example_bundles["reviews"], pair["1.0.0"], pair["2.0.0"]],
                         routes=SHADOW)


@pytest.fixture(scope="module")
def image(service: Path, base_image: str, wheel_cache: Path, token: str, client: Any, cli: Any) -> dict[str, Any]:
    result = cli("build", "--target", "docker", service, "--base-image", base_image, "--wheel-cache", wheel_cache,
                 "--tag", f"mlship-e2e-scoring:{token}", "--json")
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


@pytest.mark.requires_docker
def test_one_image_serves_every_model_and_its_smoke_test_replayed_each(image: dict[str, Any]) -> None:
    parity = image["parity"]
    assert image["ok"] and parity["ok"], parity
    ids = {case["id"].split(":")[0] for case in parity["cases"]}
    assert ids == {"iris 0.1.0", "reviews 0.1.0", "pinned 1.0.0", "pinned 2.0.0"}
    assert parity["passed"] == parity["total"] and 400 <= parity["malformed_status"] < 500
    assert parity["exit_code"] == 0


@pytest.mark.requires_docker
def test_the_build_says_which_model_was_split_and_why(image: dict[str, Any]) -> None:
    service = image["service"]
    assert [env["models"] for env in service["environments"]] == [
        ["iris 0.1.0", "reviews 0.1.0", "pinned 1.0.0"], ["pinned 2.0.0"]]
    (split,) = service["splits"]
    assert split["model"] == "pinned 2.0.0"
    assert split["reason"] == "pinned 2.0.0 in env2 (env1: six==1.17.0 vs six==1.16.0 (pinned 1.0.0))"


@pytest.mark.requires_docker
def test_labels_list_the_models_and_versions(image: dict[str, Any], client: Any) -> None:
    labels = client.api.inspect_image(image["image"]["id"])["Config"]["Labels"]
    models = json.loads(labels["io.mlship.models"])
    assert [(m["name"], m["version"], m["environment"]) for m in models] == [
        ("iris", "0.1.0", "env1"), ("reviews", "0.1.0", "env1"), ("pinned", "1.0.0", "env1"),
        ("pinned", "2.0.0", "env2")]
    assert labels["org.opencontainers.image.title"] == "scoring"
    assert labels["io.mlship.context-hash"] == image["context_hash"]


@pytest.mark.requires_docker
def test_each_model_answers_from_its_own_environment_under_a_read_only_root_and_an_arbitrary_uid(
        image: dict[str, Any], example_bundles: dict[str, Path], client: Any) -> None:
    container, url = run_ready(client, image["image"]["id"], timeout=180, read_only=True, user="1000777:0",
                               cap_drop=["ALL"], security_opt=["no-new-privileges"])
    try:
        assert answers_of_the_pair(url) == {"/versions/1.0.0": ["1.16.0"], "/versions/2.0.0": ["1.17.0"],
                                            "": ["1.17.0"]}
        results = verify_bundle(example_bundles["iris"], url=f"{url}/models/iris/versions/0.1.0")
        assert results and all(r.ok for r in results), results
        # The interpreters are the environments' own.
        code, out = container.exec_run(["/opt/envs/env2/bin/python", "-c",
                                        "import importlib.metadata as m; print(m.version('six'))"])
        assert code == 0 and out.decode().strip() == "1.17.0"
    finally:
        container.remove(force=True)


@pytest.mark.requires_docker
def test_the_image_shadows_as_its_service_file_says(image: dict[str, Any], client: Any) -> None:
    container, url = run_ready(client, image["image"]["id"], timeout=180, read_only=True, user="1000777:0")
    try:
        for _ in range(5):
            request = urllib.request.Request(f"{url}/models/pinned/predict", data=b'{"instances": ["a"]}',
                                             method="POST", headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as response:
                assert response.headers["X-Model-Version"] == "2.0.0"
                assert json.loads(response.read())["predictions"] == ["1.17.0"]
        wanted = ('mlship_shadow_comparisons_total{candidate="1.0.0",model="pinned",result="disagree",'
                  'stable="2.0.0"} 5.0')
        deadline = time.monotonic() + 30
        while wanted not in (text := urllib.request.urlopen(f"{url}/metrics", timeout=30).read().decode()):
            assert time.monotonic() < deadline, text
            time.sleep(0.2)
        models = json.loads(urllib.request.urlopen(f"{url}/models", timeout=30).read())["models"]
        rollout = next(m for m in models if m["name"] == "pinned")["rollout"]
        assert rollout["mode"] == "shadow" and rollout["comparisons"]["disagree"] == 5
        # The read-only root: the disagreement log cannot be written, which is a warning, not a failure.
        assert "cannot write the shadow disagreement log" in container.logs().decode()
    finally:
        container.remove(force=True)


@pytest.mark.requires_docker
def test_a_change_to_one_models_artifacts_changes_only_that_models_layer(
        image: dict[str, Any], example_bundles: dict[str, Path], pair: dict[str, Path], base_image: str,
        wheel_cache: Path, token: str, cli: Any, tmp_path: Path) -> None:
    changed = write_tiny_bundle(tmp_path / "pinned-1", name="pinned", version="1.0.0", reports=OLD,
                                values={"retrained": True})
    service = write_service(tmp_path / "mlship.toml",
                            [example_bundles["iris"], example_bundles["reviews"], changed, pair["2.0.0"]],
                            routes=SHADOW)
    result = cli("build", "--target", "docker", service, "--base-image", base_image, "--wheel-cache", wheel_cache,
                 "--tag", f"mlship-e2e-scoring2:{token}", "--no-test", "--json")
    assert result.exit_code == 0, result.output
    after = json.loads(result.stdout)
    before_layers, after_layers = image["image"]["layers"], after["image"]["layers"]
    assert len(before_layers) == len(after_layers)
    differ = [i for i, (a, b) in enumerate(zip(before_layers, after_layers, strict=True)) if a != b]
    # base, passwd, env1, env2, iris, reviews, pinned 1.0.0, pinned 2.0.0, service, sbom: the 7th, and the SBOM
    # (it lists every model's digest).
    assert differ == [len(after_layers) - 4, len(after_layers) - 1], (before_layers, after_layers)
    # The environments' installs came from the cache.
    assert sum("pip install" in step for step in after["build"]["cached"]) == 2, after["build"]["cached"]


@pytest.mark.requires_docker
def test_the_image_sbom_lists_every_model_and_exactly_what_each_environment_holds(
        image: dict[str, Any], example_bundles: dict[str, Path], client: Any, tmp_path: Path) -> None:
    image_id = image["image"]["id"]
    labels = client.api.inspect_image(image_id)["Config"]["Labels"]
    assert image["sbom"] == {"cyclonedx": labels["io.mlship.sbom.cyclonedx"], "spdx": labels["io.mlship.sbom.spdx"]}
    docs = {fmt: read_from_image(client, image_id, path) for fmt, path in image["sbom"].items()}
    assert validate_cyclonedx(docs["cyclonedx"].decode()) is None
    assert validate_spdx(docs["spdx"].decode()) is None
    # pip list in each environment, run in the container (as root, to read the mounted copy of pip: no venv has one)
    folder = pip_folder(tmp_path / "pip")
    listed = {env: distributions(client.containers.run(
        image_id, entrypoint=pip_list_command(f"/opt/envs/{env}/bin/python", "/pip"), user="0",
        volumes={str(folder): {"bind": "/pip", "mode": "ro"}}, remove=True, network_disabled=True).decode())
        for env in ("env1", "env2")}
    assert sbom_environments(docs["cyclonedx"]) == listed
    assert ("six", "1.16.0") in listed["env1"] and ("six", "1.17.0") in listed["env2"]
    models = sbom_models(docs["cyclonedx"])
    assert {key: props["environment"] for key, props in models.items()} == {
        ("iris", "0.1.0"): "env1", ("reviews", "0.1.0"): "env1", ("pinned", "1.0.0"): "env1",
        ("pinned", "2.0.0"): "env2"}
    golden = json.loads((example_bundles["iris"] / "golden.json").read_text())
    iris = models[("iris", "0.1.0")]
    assert iris["class"] == "sklearn.pipeline.Pipeline" and iris["golden-cases"] == str(len(golden["cases"]))
    assert iris["bundle:digest"] == next(m["bundle_digest"] for m in json.loads(labels["io.mlship.models"])
                                         if m["name"] == "iris")
    sbom = json.loads(docs["cyclonedx"])
    depends = {d["ref"]: set(d.get("dependsOn", [])) for d in sbom["dependencies"]}
    assert "env2:pkg:pypi/six@1.17.0" in depends["model:pinned:2.0.0"]
    assert not any(ref.startswith("env1:") for ref in depends["model:pinned:2.0.0"])
    base = next(c for c in sbom["components"] if c["bom-ref"] == "base-image")
    base_info = client.api.inspect_image(image["base_image"])
    assert base["version"] in [base_info["Id"], *(d.split("@")[1] for d in base_info.get("RepoDigests") or [])]
    assert any(c["name"] == "libc6" for c in sbom["components"] if c.get("purl", "").startswith("pkg:deb/"))
    spdx = json.loads(docs["spdx"])
    assert sum(p.get("summary", "").startswith("machine-learning-model") for p in spdx["packages"]) == 4


@pytest.mark.requires_docker
def test_a_denied_license_fails_the_service_image_naming_package_environment_and_model(
        onprem_service: Path, base_image: str, wheel_cache: Path, token: str, client: Any, tmp_path: Path) -> None:
    import docker

    tag = f"mlship-e2e-denied:{token}"
    result = mlship("build", "--target", "docker", onprem_service, "--base-image", base_image, "--wheel-cache",
                    wheel_cache, "--tag", tag, "--deny-licenses", "MIT", "--no-test", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    text = " ".join((result.stdout + result.stderr).split())
    assert "six==1.16.0 (env1: tiny 0.1.0, pinned 1.0.0): MIT" in text, text
    assert "six==1.17.0 (env2: pinned 2.0.0): MIT" in text, text
    assert "Traceback" not in text
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get(tag)


# -- onprem ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def onprem_service(pair: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("onprem-service")
    tiny = write_tiny_bundle(root / "tiny")
    return write_service(root / "mlship.toml", [tiny, pair["1.0.0"], pair["2.0.0"]], default="1.0.0")


def test_the_onprem_tarball_installs_every_environment_offline_and_its_launcher_serves_them_all(
        onprem_service: Path, pair: dict[str, Path], wheel_cache: Path, cli: Any, tmp_path: Path,
        root_dir: Path) -> None:
    out = tmp_path / "dist"
    result = cli("build", "--target", "onprem", onprem_service, "--wheel-cache", wheel_cache, "-o", out, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [env["models"] for env in data["service"]["environments"]] == [["tiny 0.1.0", "pinned 1.0.0"],
                                                                         ["pinned 2.0.0"]]
    with tarfile.open(data["tarball"]) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    package = tmp_path / "unpacked" / "scoring"
    prefix = root_dir / "scoring"
    command = ["sh", str(package / "install.sh"), "--prefix", str(prefix), "--python", PYTHON]
    if os.geteuid() == 0:
        command += ["--user", "nobody"]  # don't create accounts on the test machine
    install = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stdout + install.stderr
    assert install.stdout.count("against its recorded predictions") == 3, install.stdout
    assert sorted(p.name for p in (prefix / "envs").iterdir()) == ["env1", "env2"]
    check_the_tarballs_sbom(Path(data["tarball"]), prefix, tmp_path)
    port = free_port()
    log = tmp_path / "front.log"
    with log.open("wb") as output:
        server = subprocess.Popen([str(prefix / "bin" / "scoring-serve"), "--port", str(port)], stdout=output,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(f"{url}/readyz", server, log=log, timeout=120, interval=0.3)
        assert answers_of_the_pair(url) == {"/versions/1.0.0": ["1.16.0"], "/versions/2.0.0": ["1.17.0"],
                                            "": ["1.16.0"]}
        for version, bundle in pair.items():
            results = verify_bundle(bundle, url=f"{url}/models/pinned/versions/{version}")
            assert results and all(r.ok for r in results), results
    finally:
        shut_down(server)


def check_the_tarballs_sbom(tarball: Path, prefix: Path, tmp_path: Path) -> None:
    """`mlship sbom TARBALL` prints valid JSON (both formats) that lists every model and, per environment, exactly
    what pip lists in the installed venv (install.sh leaves each venv = its lock)."""
    docs = {}
    for fmt in ("cyclonedx", "spdx"):
        result = mlship("sbom", tarball, "--format", fmt)
        assert result.returncode == 0, result.stderr
        docs[fmt] = result.stdout
        json.loads(result.stdout)
    assert validate_cyclonedx(docs["cyclonedx"].strip()) is None and validate_spdx(docs["spdx"]) is None
    folder = pip_folder(tmp_path / "pip")
    listed = {env: distributions(subprocess.run(pip_list_command(str(prefix / "envs" / env / "bin" / "python"),
                                                                 str(folder)),
                                                capture_output=True, text=True, check=True, timeout=120).stdout)
              for env in ("env1", "env2")}
    assert sbom_environments(docs["cyclonedx"]) == listed
    assert not any(name in ("pip", "setuptools") for env in listed.values() for name, _ in env)
    assert {key: props["environment"] for key, props in sbom_models(docs["cyclonedx"]).items()} == {
        ("tiny", "0.1.0"): "env1", ("pinned", "1.0.0"): "env1", ("pinned", "2.0.0"): "env2"}


def test_a_denied_license_fails_the_service_tarball_and_writes_none(onprem_service: Path, wheel_cache: Path,
                                                                     tmp_path: Path) -> None:
    out = tmp_path / "dist"
    result = mlship("build", "--target", "onprem", onprem_service, "--wheel-cache", wheel_cache, "-o", out,
                    "--deny-licenses", "MIT", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    text = " ".join((result.stdout + result.stderr).split())
    assert "six==1.17.0 (env2: pinned 2.0.0): MIT" in text and "Traceback" not in text, text
    assert not out.exists() or list(out.iterdir()) == []
