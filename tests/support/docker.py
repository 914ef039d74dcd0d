"""Fixtures for tests that need a Docker engine: the test base image and a loopback registry.

Docker Hub is unreachable on the machines that run these tests, so the base image is built from Debian packages
by `mlship base-image` (minutes, once per machine: it is cached by tag). MLSHIP_TEST_BASE_IMAGE names
another base to use instead (e.g. python:3.11-slim where Docker Hub is reachable).

tests/conftest.py registers this module as a plugin, so every test can ask for the session fixtures `base_image`
and `registry` by name; each is set up once per run.
`write_tiny_bundle` writes a bundle that needs only the runtime's own dependencies: its image builds in seconds and
pushes quickly, for tests about the build machinery rather than about a model.
"""

from __future__ import annotations

import os
import pickle
import platform
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from .servers import free_port, shut_down, wait_until_ready

ROOT = Path(__file__).resolve().parents[2]
BASE_TAG = f"mlship-base:bookworm-py{sys.version_info.major}{sys.version_info.minor}"

# Debian's docker-registry defaults to htpasswd auth; this config serves anonymously on loopback only (or with
# the htpasswd file given to start_registry).
_REGISTRY_CONFIG = """\
version: 0.1
log:
  level: {level}
  accesslog:
    disabled: {quiet}
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""
_HTPASSWD_AUTH = """\
auth:
  htpasswd:
    realm: mlship-test
    path: {path}
"""
_TOKEN_AUTH = """\
auth:
  token:
    realm: {realm}
    service: {service}
    issuer: {issuer}
    rootcertbundle: {bundle}
"""


def token_auth(realm: str, service: str, issuer: str, bundle: Path) -> str:
    """The registry config that asks for bearer tokens from REALM, signed by the certificate in BUNDLE."""
    return _TOKEN_AUTH.format(realm=realm, service=service, issuer=issuer, bundle=bundle)


_TINY_PREDICTOR = """\
# A model that needs no third-party package: the length of each string.
def predict(X):
    return [len(text) for text in X]


METHODS = {"predict": predict}
"""

# A model that answers with the version of a distribution installed beside it: which environment serves it.
_REPORTING_PREDICTOR = """\
import importlib.metadata


def predict(X):
    return [importlib.metadata.version({package!r}) for _ in X]


METHODS = {{"predict": predict}}
"""


def write_tiny_bundle(dest: Path, *, name: str = "tiny", version: str = "0.1.0", expected: list[int] | None = None,
                      values: dict[str, Any] | None = None, reports: str | None = None) -> Path:
    """A bundle (docs/BUNDLE.md) serving len() over a list of strings; `expected` overrides the golden outputs,
    `values` the pickled artifact (another "model" with the same code).

    `reports="six==1.16.0"` makes it pin that requirement and answer every string with the version of that
    distribution it finds installed: its golden cases pass only in an environment that has exactly that pin.
    """
    from mlship import __version__
    from mlship.bundle.manifest import runtime_pins
    from mlship.runtime import RUNTIME_VERSION
    from mlship.runtime import _contract as contract

    inputs = ["a", "bb", "ccc"]
    outputs: list[Any] = list(expected or [len(text) for text in inputs])
    predictor = _TINY_PREDICTOR
    requirements = sorted(f"{package}=={pin}" for package, pin in runtime_pins().items())
    if reports is not None:
        package, pin = reports.split("==")
        outputs, predictor = [pin] * len(inputs), _REPORTING_PREDICTOR.format(package=package)
        requirements = sorted([*requirements, reports])
    runtime = ROOT / "mlship" / "runtime"
    shutil.copytree(runtime, dest / "mlship_runtime", ignore=shutil.ignore_patterns("__pycache__"))
    (dest / "artifacts").mkdir()
    (dest / "artifacts" / "values.pkl").write_bytes(pickle.dumps(values or {}))
    (dest / "predictor.py").write_text(predictor)
    (dest / "requirements.txt").write_text("".join(f"{line}\n" for line in requirements))
    cases = tuple(contract.GoldenCase(f"predict-{i}", "predict", [text], [out])
                  for i, (text, out) in enumerate(zip(inputs, outputs, strict=True)))
    manifest = contract.Manifest(
        name=name, version=version, mlship_version=__version__, runtime_version=RUNTIME_VERSION,
        created_at="2026-11-27T10:00:00Z", source=contract.Source(f"{name}.ipynb", "0" * 64),
        python=contract.PythonInfo(platform.python_version(), "CPython"), requirements=tuple(requirements),
        methods=(contract.Method("predict", "[len(t) for t in X]"),), batch_safe=True,
        input=contract.InputSchema.from_json({"kind": "list", "type": "string", "example": inputs[0]}),
        selection=contract.Selection("auto", "test bundle"),
    )
    contract.write(dest, manifest, contract.Golden(cases, rtol=1e-6, atol=1e-9))
    return dest


def run_ready(client: Any, image: str, timeout: float = 60, **options: Any) -> tuple[Any, str]:
    """Start IMAGE on a free loopback port and wait for /readyz; returns (container, base URL)."""
    container = client.containers.run(image, detach=True, ports={"8080/tcp": ("127.0.0.1", None)}, **options)
    container.reload()
    url = f"http://127.0.0.1:{container.attrs['NetworkSettings']['Ports']['8080/tcp'][0]['HostPort']}"
    try:
        wait_until_ready(f"{url}/readyz", container, timeout=timeout, interval=0.2)
    except AssertionError as error:
        container.remove(force=True)
        pytest.fail(f"{image} did not get ready: {error}")
    return container, url


def _missing(what: str) -> None:
    """Fail under MLSHIP_REQUIRE_DOCKER=1 (CI must have everything), skip otherwise."""
    if os.environ.get("MLSHIP_REQUIRE_DOCKER") == "1":
        pytest.fail(f"MLSHIP_REQUIRE_DOCKER=1 but {what}")
    pytest.skip(what)


@pytest.fixture(scope="session")
def skopeo() -> str:
    """Debian's skopeo, which reads what the native builder pushes and writes."""
    found = shutil.which("skopeo")
    if found is None:
        _missing("skopeo is not installed (apt-get install -y skopeo)")
    return str(found)


@pytest.fixture(scope="session", name="base_image")
def base_image_fixture() -> str:
    """A local base image with this Python's major.minor; built once per machine, cached by tag."""
    override = os.environ.get("MLSHIP_TEST_BASE_IMAGE")
    if override:
        return override
    major_minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    if major_minor != "3.11":
        _missing(f"the Debian bookworm base image has Python 3.11, this is {major_minor}; set MLSHIP_TEST_BASE_IMAGE")
    if shutil.which("debootstrap") is None and not _image_exists(BASE_TAG):
        _missing("debootstrap is not installed (apt-get install -y debootstrap) and no cached base image exists")
    proc = subprocess.run([sys.executable, "-m", "mlship", "base-image", BASE_TAG], capture_output=True, text=True,
                          timeout=900)
    if proc.returncode != 0:
        pytest.fail(f"mlship base-image failed:\n{proc.stdout}\n{proc.stderr}")
    return BASE_TAG


def _image_exists(tag: str) -> bool:
    import docker

    try:
        docker.from_env().images.get(tag)
        return True
    except docker.errors.DockerException:
        return False


@pytest.fixture(scope="session", name="registry")
def registry_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real registry (Debian's docker-registry) on a loopback port, no auth; yields "127.0.0.1:PORT".

    The Docker engine trusts loopback registries without TLS, so `docker push 127.0.0.1:PORT/...` just works.
    """
    with start_registry(tmp_path_factory.mktemp("registry")) as address:
        yield address


@contextmanager
def start_registry(root: Path, *, access_log: bool = False, htpasswd: Path | None = None,
                   auth: str = "") -> Iterator[str]:
    """Run a registry storing its data in ROOT/data, logging to ROOT/registry.log (every request, with
    `access_log`); with `htpasswd` it asks for basic auth, with `auth` (token_auth()) for bearer tokens (a 401
    without them). Yields "127.0.0.1:PORT"."""
    binary = shutil.which("docker-registry")
    if binary is None:
        _missing("docker-registry is not installed (apt-get install -y docker-registry)")
        raise AssertionError  # unreachable: _missing raises
    port = free_port()
    config = root / "config.yml"
    text = _REGISTRY_CONFIG.format(root=root / "data", port=port, level="info" if access_log else "warn",
                                   quiet="false" if access_log else "true")
    auth = _HTPASSWD_AUTH.format(path=htpasswd) if htpasswd else auth
    config.write_text(text + auth)
    log = (root / "registry.log").open("wb")
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    try:
        # /v2/ answers 401 to anyone under auth: wait for the port then.
        ready = f"http://127.0.0.1:{port}/v2/"
        wait_until_ready(ready, proc, log=root / "registry.log", timeout=30, interval=0.2,
                         status=401 if auth else 200)
        yield f"127.0.0.1:{port}"
    finally:
        shut_down(proc, timeout=10)
        log.close()
