"""Run what the manifests say: the image `--target docker` built, started under the Docker engine with exactly the
container settings `--target k8s` rendered (no cluster is reachable here, and podman's `kube play` does not start
pods on these machines: docs/KUBERNETES.md).

From the rendered pod: user and group, read-only root, capabilities dropped, no privilege escalation, each
emptyDir as a tmpfs of its size limit, the ConfigMap's environment, command, args, port, CPU and memory limits.
Then the probe paths, the golden cases over HTTP, and SIGTERM within terminationGracePeriodSeconds.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlship.bundle.verify import verify_bundle
from mlship.targets._k8s_build import parse_cpu, parse_memory
from tests.support.docker import write_tiny_bundle
from tests.support.servers import wait_until_ready

pytestmark = [pytest.mark.e2e, pytest.mark.requires_docker]


@pytest.fixture(scope="module")
def image(base_image: str, wheel_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The tiny bundle's image (it builds in seconds on the session's base image), removed at the end."""
    import docker

    from mlship.targets.docker import DockerOptions, build_docker

    bundle = write_tiny_bundle(tmp_path_factory.mktemp("k8s") / "tiny")
    tag = f"mlship-e2e-k8s-tiny:{uuid.uuid4().hex[:10]}"
    result = build_docker(bundle, DockerOptions(base_image=base_image, tags=[tag], wheel_cache=wheel_cache,
                                                test=False))
    assert result.ok, result.rows()
    yield tag, bundle
    client = docker.from_env()
    client.api.remove_image(tag, force=True)
    client.close()


def rendered(cli: Any, bundle: Path, image: str, out: Path, *flags: str) -> dict[str, Any]:
    result = cli("build", "--target", "k8s", "--bundle", bundle, "--image", image, "-o", out, "--cpu", "2",
                 "--json", *flags)
    assert result.exit_code == 0, result.output
    return {obj["kind"]: obj for path in sorted(out.glob("*.yaml"))
            for obj in [yaml.safe_load(path.read_text(encoding="utf-8"))]}


def docker_settings(objects: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], int]:
    """docker run keyword arguments for the rendered pod's one container; (kwargs, container, grace seconds)."""
    workload = objects.get("Deployment")
    pod = workload["spec"]["template"]["spec"] if workload else objects["InferenceService"]["spec"]["predictor"]
    [container] = pod["containers"]
    security = {**pod["securityContext"], **container["securityContext"]}
    env = {}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        assert objects["ConfigMap"]["metadata"]["name"] == name
        env.update(objects["ConfigMap"]["data"])
    env.update({item["name"]: item["value"] for item in container.get("env", [])})
    volumes = {volume["name"]: volume["emptyDir"] for volume in pod["volumes"]}
    tmpfs = {mount["mountPath"]: f"size={parse_memory(volumes[mount['name']]['sizeLimit'])}"
             for mount in container["volumeMounts"]}
    assert len(tmpfs) == len(pod["volumes"]) == 2  # every volume is an emptyDir, mounted
    [port] = container["ports"]
    limits = container["resources"]["limits"]
    kwargs = {
        "user": f"{security['runAsUser']}:{security['runAsGroup']}",
        "read_only": security["readOnlyRootFilesystem"],
        "cap_drop": security["capabilities"]["drop"],
        "security_opt": [] if security["allowPrivilegeEscalation"] else ["no-new-privileges"],
        "tmpfs": tmpfs,
        "environment": env,
        "entrypoint": container["command"],
        "command": container["args"],
        "ports": {f"{port['containerPort']}/tcp": ("127.0.0.1", None)},
        "mem_limit": parse_memory(limits["memory"]),
        "nano_cpus": int(parse_cpu(limits["cpu"]) * 1e9),
    }
    return kwargs, container, pod["terminationGracePeriodSeconds"]


def get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.parametrize("flags", [(), ("--kserve",)], ids=["deployment", "kserve"])
def test_the_image_runs_as_the_manifest_says(image: tuple[str, Path], cli: Any, tmp_path: Path,
                                             flags: tuple[str, ...]) -> None:
    import docker

    tag, bundle = image
    objects = rendered(cli, bundle, tag, tmp_path / "k8s", *flags)
    kwargs, container_spec, grace = docker_settings(objects)
    assert kwargs["user"] == "10001:0" and kwargs["read_only"] is True and kwargs["cap_drop"] == ["ALL"]
    assert kwargs["environment"]["MLSHIP_WORKERS"] == "2"
    client = docker.from_env()
    container = client.containers.run(tag, detach=True, **kwargs)
    try:
        container.reload()
        port = container_spec["ports"][0]["containerPort"]
        url = f"http://127.0.0.1:{container.attrs['NetworkSettings']['Ports'][f'{port}/tcp'][0]['HostPort']}"
        host = container.attrs["HostConfig"]
        assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"]
        assert host["SecurityOpt"] == ["no-new-privileges"] and set(host["Tmpfs"]) == set(kwargs["tmpfs"])
        ready = container_spec["readinessProbe"]["httpGet"]["path"]
        wait_until_ready(url + ready, container, timeout=60, interval=0.2)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            status, _ = get(url + container_spec[probe]["httpGet"]["path"])
            assert status == 200, (probe, container.logs().decode()[-2000:])
        results = verify_bundle(bundle, url=url)
        assert results and all(r.ok for r in results), results
        if flags:  # a V2 client, unchanged
            body = json.dumps({"inputs": [{"name": "input-0", "shape": [2], "datatype": "BYTES",
                                           "data": ["ab", "abcd"]}]}).encode()
            request = urllib.request.Request(f"{url}/v2/models/tiny/infer", data=body,
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=10) as response:
                answer = json.loads(response.read())
            assert answer["model_name"] == "tiny" and answer["outputs"][0]["data"] == [2, 4], answer
        # The workers' metrics land in the emptyDir, as the ConfigMap says.
        code, output = container.exec_run(["/opt/venv/bin/python", "-c", "import os, sys; "
                                           f"print(len(os.listdir({kwargs['environment']['PROMETHEUS_MULTIPROC_DIR']!r})))"])
        assert code == 0 and int(output) > 0, output
        start = time.monotonic()
        container.kill(signal="SIGTERM")
        status = container.wait(timeout=grace + 5)
        elapsed = time.monotonic() - start
        assert status["StatusCode"] == 0, container.logs().decode()[-2000:]
        # It drains (MLSHIP_DRAIN_DELAY) then exits, well before the kubelet's SIGKILL.
        assert int(kwargs["environment"]["MLSHIP_DRAIN_DELAY"]) <= elapsed < grace, elapsed
    finally:
        container.remove(force=True)
        client.close()


def test_a_pushed_tag_is_pinned_to_the_digest_the_registry_holds(image: tuple[str, Path], cli: Any, registry: str,
                                                                 tmp_path: Path) -> None:
    import docker

    tag, bundle = image
    pushed = f"{registry}/mlship/k8s-tiny:{tag.rsplit(':', 1)[1]}"
    client = docker.from_env()
    try:
        client.images.get(tag).tag(pushed)
        for line in client.api.push(pushed, stream=True, decode=True):
            assert "error" not in line, line
        objects = rendered(cli, bundle, pushed, tmp_path / "k8s")
        image_ref = objects["Deployment"]["spec"]["template"]["spec"]["containers"][0]["image"]
        repository, digest = image_ref.split("@")
        assert repository == pushed.rsplit(":", 1)[0] and digest.startswith("sha256:")
        request = urllib.request.Request(f"http://{registry}/v2/mlship/k8s-tiny/manifests/{digest}", method="HEAD",
                                         headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.headers["Docker-Content-Digest"] == digest
    finally:
        client.api.remove_image(pushed, force=True)
        client.close()
