"""The native builder's image on consumers and an architecture it was not tested with (docs/DOCKER.md "The native
builder"): a real `mlship` process with no engine reachable and neither --output nor --push picks the native
builder, says so and writes NAME-VERSION.image.tar beside the bundle; skopeo reads that tar both ways; podman
loads it (into a throwaway store) with the same config and digest and runs it read-only under any UID, the golden
cases replayed over HTTP inside the container. Then --platform linux/arm64 on a base made of Debian's arm64
packages: every ELF in the venv is aarch64, and the image runs under qemu-user (no binfmt_misc needed: the static
qemu is the container's first process) in podman, serving the golden cases to the host.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlship.bundle.verify import verify_bundle
from tests.support.arm64 import arm64_docker_archive, download_debs, make_arm64_rootfs, qemu
from tests.support.docker import _missing, write_tiny_bundle
from tests.support.servers import free_port, wait_until_ready

pytestmark = [pytest.mark.e2e, pytest.mark.requires_docker]

_EM_AARCH64 = 183  # e_machine of an ELF for arm64
# The sandbox's hard limits refuse podman's defaults (docs/DOCKER.md): ask for less.
_LIMITS = ("--ulimit", "nproc=4096:4096", "--ulimit", "nofile=4096:4096")


def mlship(*args: str | Path, oci: Path) -> subprocess.CompletedProcess[str]:
    """A real `mlship build --target docker ARGS` process with no engine reachable (DOCKER_HOST points at a port
    nothing listens on) and the native builder's cache in `oci`."""
    env = {**os.environ, "DOCKER_HOST": f"tcp://127.0.0.1:{free_port()}", "MLSHIP_OCI_CACHE": str(oci)}
    env.pop("MLSHIP_BUILDER", None)
    return subprocess.run([sys.executable, "-m", "mlship", "build", "--target", "docker", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=600)


class Podman:
    """podman with a store of its own under `root` (nothing leaks into the machine's), with the flags that work
    here: cgroupfs and runc (systemd and crun are refused), no event log."""

    def __init__(self, binary: str, root: Path) -> None:
        self.root = root
        self.base = [binary, "--root", str(root / "storage"), "--runroot", str(root / "run"),
                     "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--runtime", "runc",
                     "--events-backend", "none"]
        self.containers: list[str] = []

    def __call__(self, *args: str | Path, check: bool = True, timeout: float = 300) -> str:
        proc = subprocess.run([*self.base, *map(str, args)], capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            pytest.fail(f"podman {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
        return proc.stdout

    def start(self, *args: str | Path) -> str:
        """`podman run -d ARGS` (options, image, command) under a name of its own, removed by close()."""
        name = f"mlship-{uuid.uuid4().hex[:10]}"
        self.containers.append(name)
        self("run", "-d", "--name", name, *_LIMITS, *args)
        return name

    def close(self) -> None:
        """Remove the containers, then the whole store (vfs copies every layer: about 1 GB here)."""
        for name in self.containers:
            self("rm", "-f", "-t", "2", name, check=False)
        self("system", "reset", "--force", check=False)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    binary = shutil.which("podman")
    if binary is None:
        _missing("podman is not installed (apt-get install -y podman)")
    assert binary is not None
    tool = Podman(binary, tmp_path_factory.mktemp("podman"))
    yield tool
    tool.close()


@pytest.fixture(scope="module")
def amd64_base(base_image: str, skopeo: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The test base image (made by the engine from Debian packages) as an oci-archive: tar."""
    path = tmp_path_factory.mktemp("portable-base") / "base.tar"
    subprocess.run([skopeo, "copy", "--quiet", f"docker-daemon:{base_image}", f"oci-archive:{path}"], check=True,
                   timeout=300)
    return f"oci-archive:{path}"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bundle(tmp_path_factory.mktemp("portable-tiny") / "tiny")


@pytest.fixture(scope="module")
def default_build(tiny: Path, amd64_base: str, wheel_cache: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`mlship build --target docker` with neither --builder nor --output nor --push, and no engine: auto
    builds natively and writes the image beside the bundle."""
    proc = mlship("--bundle", tiny, "--base-image", amd64_base, "--wheel-cache", wheel_cache,
                  oci=tmp_path_factory.mktemp("portable-oci"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = dict(line.strip().split(None, 1) for line in proc.stdout.splitlines()
                if line.strip().startswith(("output ", "image ")))
    return {"stdout": proc.stdout, "stderr": proc.stderr, "rows": rows, "tar": tiny.parent / "tiny-0.1.0.image.tar",
            "digest": rows["image"].split()[0], "config": rows["image"].split()[-1]}


def test_without_an_engine_auto_builds_natively_and_says_so(default_build: dict[str, Any]) -> None:
    assert "no Docker daemon is reachable at tcp://127.0.0.1:" in default_build["stderr"]
    assert "building natively (--builder native)" in default_build["stderr"]
    assert "native (no engine)" in default_build["stdout"]


def test_without_output_or_push_the_image_is_written_beside_the_bundle(default_build: dict[str, Any],
                                                                       skopeo: str) -> None:
    tar = default_build["tar"]
    assert tar.is_file()
    assert default_build["rows"]["output"].startswith(f"{tar} (docker load -i FILE, podman load")
    oci = json.loads(subprocess.run([skopeo, "inspect", f"oci-archive:{tar}"], capture_output=True,
                                    check=True).stdout)
    assert oci["Digest"] == default_build["digest"] and oci["Architecture"] == "amd64"
    config = json.loads(subprocess.run([skopeo, "inspect", "--config", f"docker-archive:{tar}"],
                                       capture_output=True, check=True).stdout)
    assert config["config"]["Labels"]["org.opencontainers.image.title"] == "tiny"
    # The default tag NAME:VERSION, as docker load and podman load name the image.
    assert json.loads(_member(tar, "manifest.json"))[0]["RepoTags"] == ["docker.io/library/tiny:0.1.0"]


def test_podman_loads_the_tar_with_the_same_config_and_digest(default_build: dict[str, Any], podman: Podman,
                                                             skopeo: str) -> None:
    tar = default_build["tar"]
    assert "Loaded image: docker.io/library/tiny:0.1.0" in podman("load", "-i", tar)
    [image] = json.loads(podman("image", "inspect", "tiny:0.1.0"))
    config = json.loads(subprocess.run([skopeo, "inspect", "--config", f"oci-archive:{tar}"], capture_output=True,
                                       check=True).stdout)
    # podman keeps the manifest as written: the same digest as the build printed, the config as its id.
    assert image["Digest"] == default_build["digest"] and f"sha256:{image['Id']}" == default_build["config"]
    assert image["Architecture"] == config["architecture"] == "amd64" and image["Os"] == "linux"
    assert image["RootFS"]["Layers"] == config["rootfs"]["diff_ids"]
    assert image["Created"] == config["created"] == "2026-11-27T10:00:00Z"
    settings, loaded = config["config"], image["Config"]
    for key in ("User", "Entrypoint", "Cmd", "Env", "WorkingDir", "Labels", "ExposedPorts", "StopSignal"):
        assert loaded[key] == settings[key], key
    assert loaded["User"] == "10001:0" and loaded["Entrypoint"][0] == "/opt/venv/bin/python"


def _wait_ready(podman: Podman, name: str, probe: list[str], *, deadline: float = 60) -> None:
    """Until the image's own health probe passes inside the container (or the container has stopped)."""
    end = time.monotonic() + deadline
    while True:
        proc = subprocess.run([*podman.base, "exec", name, *probe], capture_output=True, text=True, timeout=30)
        if proc.returncode == 0:
            return
        state = podman("inspect", "--format", "{{.State.Status}}", name).strip()
        if state != "running" or time.monotonic() > end:
            pytest.fail(f"{name} is {state}, not ready: {proc.stdout}{proc.stderr}\n{podman('logs', name)}")
        time.sleep(0.5)


def test_podman_runs_it_read_only_under_any_uid_and_it_serves_the_golden_cases(
        default_build: dict[str, Any], podman: Podman) -> None:
    podman("load", "-i", default_build["tar"])
    name = podman.start("--network", "none", "--read-only", "--user", "1000777:0", "--cap-drop", "ALL",
                        "--security-opt", "no-new-privileges", "tiny:0.1.0")
    [image] = json.loads(podman("image", "inspect", "tiny:0.1.0"))
    # The image's own health probe, read from its config blob: podman (like skopeo) reads no Healthcheck from an
    # OCI image's config (docs/DOCKER.md).
    probe = _config_blob(default_build["tar"])["config"]["Healthcheck"]["Test"][1:]
    _wait_ready(podman, name, probe)
    # The runtime's own verify, over HTTP inside the container (no network: loopback only).
    out = podman("exec", name, *image["Config"]["Entrypoint"], "verify", "/app", "--url", "http://127.0.0.1:8080",
                 "--json")
    results = json.loads(out)
    assert results["ok"] is True and len(results["cases"]) == 3 and all(c["ok"] for c in results["cases"]), out
    assert podman("exec", name, "id", "-u").strip() == "1000777"


def _member(tar: Path, name: str) -> bytes:
    with tarfile.open(tar) as archive:
        member = archive.extractfile(name)
        assert member is not None, name
        return member.read()


def _config_blob(tar: Path) -> dict[str, Any]:
    """The image config as written (every field, not what a tool's parser keeps)."""
    return dict(json.loads(_member(tar, json.loads(_member(tar, "manifest.json"))[0]["Config"])))


@pytest.fixture(scope="module")
def arm64_base(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A linux/arm64 base of Debian bookworm's arm64 packages (python3.11-minimal and its libraries) as a
    docker-archive: tar; the .debs are downloaded once per machine into pytest's cache (tests/support/arm64.py)."""
    cache = getattr(request.config, "cache", None)
    folder = Path(cache.mkdir("mlship-arm64-base")) if cache is not None else tmp_path_factory.mktemp("arm64-debs")
    debs = download_debs(folder)
    work = tmp_path_factory.mktemp("arm64-base")
    packages = make_arm64_rootfs(debs, work / "rootfs")
    assert {"libc6", "python3.11-minimal", "libpython3.11-stdlib"} <= set(packages)
    return f"docker-archive:{arm64_docker_archive(work / 'rootfs', 'mlship-test/arm64:py311', work / 'arm64.tar')}"


@pytest.fixture(scope="module")
def arm64_build(tiny: Path, arm64_base: str, wheel_cache: Path,
                tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny bundle built natively for linux/arm64 on the arm64 base, written as a tar."""
    out = tmp_path_factory.mktemp("arm64-out")
    proc = mlship("--bundle", tiny, "--builder", "native", "--platform", "linux/arm64", "--base-image", arm64_base,
                  "--wheel-cache", wheel_cache, "--tag", "mlship-test/tiny-arm64:0.1.0", "-o", out / "arm64.tar",
                  "--json", oci=out / "oci")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {"data": json.loads(proc.stdout), "tar": out / "arm64.tar", "tag": "mlship-test/tiny-arm64:0.1.0"}


def _layer_files(tar: Path, digest: str) -> Iterator[tuple[str, bytes]]:
    """(path, content) of every regular file in the layer blob DIGEST of the image tar."""
    with tarfile.open(tar) as archive:
        blob = archive.extractfile(f"blobs/sha256/{digest.removeprefix('sha256:')}")
        assert blob is not None
        with tarfile.open(fileobj=blob, mode="r:gz") as layer:
            for member in layer:
                handle = layer.extractfile(member) if member.isfile() else None
                if handle is not None:
                    yield member.name, handle.read()


def test_an_arm64_build_is_arm64_through_and_through(arm64_build: dict[str, Any], skopeo: str) -> None:
    data, tar = arm64_build["data"], arm64_build["tar"]
    config = json.loads(subprocess.run([skopeo, "inspect", "--config", f"oci-archive:{tar}"], capture_output=True,
                                       check=True).stdout)
    assert (config["architecture"], config.get("variant"), config["os"]) == ("arm64", "v8", "linux")
    assert Path(data["lock"]).name == "linux_aarch64-py311.txt"
    machines: dict[str, int] = {}
    tags: list[str] = []
    for path, content in _layer_files(tar, data["native"]["layers"][-3]["digest"]):
        if content.startswith(b"\x7fELF"):
            # e_machine: the little-endian half-word at offset 18 of the ELF header.
            machines[path] = int.from_bytes(content[18:20], "little")
        elif path.endswith(".dist-info/WHEEL"):
            tags += [line.split(":", 1)[1].strip() for line in content.decode().splitlines()
                     if line.startswith("Tag:")]
    # The compiled extensions (orjson, uvloop, httptools, ...) are all aarch64; no x86-64 binary slipped in.
    assert len(machines) >= 3 and set(machines.values()) == {_EM_AARCH64}, machines
    assert tags and all(tag.endswith(("-any", "aarch64")) for tag in tags), tags
    assert any("manylinux" in tag and tag.endswith("aarch64") for tag in tags), tags


def test_the_arm64_image_runs_under_qemu_in_podman_and_serves_the_golden_cases(
        arm64_build: dict[str, Any], podman: Podman, tiny: Path) -> None:
    emulator = qemu()
    tag = arm64_build["tag"]
    podman("load", "-i", arm64_build["tar"])
    [image] = json.loads(podman("image", "inspect", tag))
    assert image["Architecture"] == "arm64" and image["Digest"] == arm64_build["data"]["native"]["manifest_digest"]
    # No binfmt_misc: the static x86-64 qemu is the container's first process and runs the image's aarch64 Python.
    emulated = ("-v", f"{emulator}:/qemu-aarch64:ro", "--entrypoint", "/qemu-aarch64")
    machine = podman("run", "--rm", "--network", "none", *_LIMITS, *emulated, tag, "/opt/venv/bin/python", "-c",
                     "import platform, orjson; print(platform.machine(), orjson.dumps([1]).decode())")
    assert machine.split() == ["aarch64", "[1]"]
    port = free_port()
    name = podman.start("--network", "host", "--read-only", "--user", "1000777:0", "--cap-drop", "ALL",
                        "--security-opt", "no-new-privileges", *emulated, tag, *image["Config"]["Entrypoint"],
                        "serve", "/app", "--host", "127.0.0.1", "--port", str(port))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(f"{url}/readyz", timeout=120, interval=0.5)
    except AssertionError as error:
        pytest.fail(f"the arm64 image did not get ready under qemu: {error}\n{podman('logs', name, check=False)}")
    results = verify_bundle(tiny, url=url)
    assert len(results) == 3 and all(r.ok for r in results), results


@pytest.mark.parametrize(("platform", "base", "message"), [
    ("linux/arm64", "amd64", "is for linux/amd64, but the target platform is linux/arm64 (aarch64)"),
    ("linux/amd64", "arm64", "is for linux/arm64, but the target platform is linux/amd64 (x86_64)"),
])
def test_a_base_of_the_other_architecture_is_refused(request: pytest.FixtureRequest, tiny: Path, wheel_cache: Path,
                                                     tmp_path: Path, platform: str, base: str, message: str) -> None:
    reference = request.getfixturevalue(f"{base}_base")
    proc = mlship("--bundle", tiny, "--builder", "native", "--platform", platform, "--base-image", reference,
                  "--wheel-cache", wheel_cache, "-o", tmp_path / "never.tar", oci=tmp_path / "oci")
    assert proc.returncode == 1
    assert f"error: the base image {reference} {message}" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr and not (tmp_path / "never.tar").exists()
