"""`mlship build --target onprem` for every example, installed and served with no network.

- In Docker (the test base image, Debian's own python3, `--network none`): install.sh as root creates the service
  account, the launcher serves as that account, the golden cases are replayed over HTTP with the bundle's runtime,
  SIGTERM stops it cleanly; a tampered package and a machine without Python are refused.
- On this host, without Docker: install.sh into a temporary prefix with pip's index disabled, proxies pointing
  nowhere and (as root) in a network namespace with no interfaces; serve, replay over HTTP from the host with
  `mlship verify --url`, second run, tamper, upgrade, uninstall.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlship.bundle.archive import unsafe_members
from mlship.sbom.document import validate_cyclonedx, validate_spdx
from tests.support.pip import distributions, pip_folder, pip_list_command, sbom_distributions
from tests.support.servers import check_page, free_port, shut_down, wait_until_ready

pytestmark = pytest.mark.e2e

EXAMPLES = ["iris", "reviews", "churn", "taxi"]
MAJOR_MINOR = f"{sys.version_info.major}.{sys.version_info.minor}"
PY_TAG = f"py{sys.version_info.major}{sys.version_info.minor}"


@pytest.fixture(scope="module")
def bundles(example_bundles: dict[str, Path]) -> dict[str, Path]:
    return example_bundles


@pytest.fixture(scope="module")
def tarballs(bundles: dict[str, Path], cli: Any, wheel_cache: Path,
             tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    out = tmp_path_factory.mktemp("dist")
    built = {}
    for name, bundle in bundles.items():
        result = cli("build", "--target", "onprem", "--bundle", bundle, "-o", out, "--wheel-cache", wheel_cache,
                     "--json")
        assert result.exit_code == 0, result.output
        built[name] = json.loads(result.output)
    return built


def unpack(tarball: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball) as tar:
        top = tar.getnames()[0]
        tar.extractall(dest, filter="data")
    return dest / top


def snapshot(path: Path) -> dict[str, tuple[int, int, str]]:
    """Every entry under path with its mode, mtime and content hash: 'changes nothing' means this is equal."""
    if not path.exists():
        return {}
    return {p.relative_to(path).as_posix(): (p.lstat().st_mode, p.lstat().st_mtime_ns,
                                               hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "")
            for p in sorted(path.rglob("*")) if not p.is_symlink()}


# -- the tarballs -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", EXAMPLES)
def test_tarball_is_named_complete_and_safe(tarballs: dict[str, dict[str, Any]], bundles: dict[str, Path],
                                            name: str) -> None:
    info = tarballs[name]
    tarball = Path(info["tarball"])
    assert info["ok"] and tarball.name == f"{name}-0.1.0-{PY_TAG}-linux_x86_64.tar.gz"
    assert hashlib.sha256(tarball.read_bytes()).hexdigest() == info["sha256"]
    assert unsafe_members(tarball) == []
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
        lock = tar.extractfile(f"{name}-0.1.0/requirements.lock").read().decode()  # type: ignore[union-attr]
    wheels = [n for n in names if n.startswith(f"{name}-0.1.0/wheels/")]
    assert len(wheels) == lock.count("--hash=sha256:") == info["wheels"]
    for requirement in (bundles[name] / "requirements.txt").read_text().split():
        assert requirement.lower().replace("_", "-") in lock.lower().replace("_", "-"), requirement
    assert (bundles[name] / "lock" / f"linux_x86_64-{PY_TAG}.txt").read_text() == lock  # BUILD.md: lock in bundle


def test_building_again_gives_the_same_bytes_and_prints_the_sha256(tarballs: dict[str, dict[str, Any]],
                                                                  bundles: dict[str, Path], cli: Any,
                                                                  wheel_cache: Path, tmp_path: Path) -> None:
    result = cli("build", "--target", "onprem", "--bundle", bundles["iris"], "-o", tmp_path, "--wheel-cache",
                 wheel_cache)
    assert result.exit_code == 0, result.output
    first = tarballs["iris"]
    assert first["sha256"] in result.output  # printed whole, never cut short
    again = tmp_path / Path(first["tarball"]).name
    assert hashlib.sha256(again.read_bytes()).hexdigest() == first["sha256"]
    assert again.read_bytes() == Path(first["tarball"]).read_bytes()


# -- in a container with no network -------------------------------------------------------------------------------

_WAIT_READY = """\
import sys, time, urllib.request
start = time.monotonic()
while time.monotonic() - start < 120:
    try:
        with urllib.request.urlopen("http://127.0.0.1:8080/readyz", timeout=2) as r:
            if r.status == 200:
                print(f"@@ready seconds={time.monotonic() - start:.2f}")
                sys.exit(0)
    except OSError:
        time.sleep(0.1)
print("@@ready never")
"""

_SERVE_SCRIPT = """\
set -u
cd /tmp && tar xzf /pkg/{tarball} && cd {top}
t0=$(date +%s.%N)
./install.sh >/tmp/install.log 2>&1
rc=$?
t1=$(date +%s.%N)
cat /tmp/install.log
echo "@@install rc=$rc seconds=$(python3 -c "print(round($t1 - $t0, 2))")"
[ "$rc" -eq 0 ] || exit 1
./install.sh
echo "@@again rc=$?"
setpriv --reuid={service} --regid={service} --init-groups /opt/{service}/bin/{service}-serve --port 8080 \\
    >/tmp/serve.log 2>&1 &
pid=$!
python3 /pkg/wait_ready.py
echo "@@user $(stat -c %U /proc/$pid)"
(cd /opt/{service}/app && ../venv/bin/python -I -B mlship_runtime/_boot.py verify . --url http://127.0.0.1:8080)
echo "@@verify rc=$?"
(sleep 30; kill -KILL $pid 2>/dev/null) &
kill -TERM $pid
wait $pid
echo "@@server rc=$?"
cat /tmp/serve.log
"""

_REFUSE_SCRIPT = """\
set -u
cd /tmp && tar xzf /pkg/{tarball} && cd {top}
echo '# injected' >> app/predictor.py
./install.sh; echo "@@tampered rc=$?"
ls -A /opt; id {service} >/dev/null 2>&1 && echo "@@account created" || echo "@@account absent"
cd /tmp && rm -rf {top} && tar xzf /pkg/{tarball} && cd {top}
rm -f /usr/bin/python3*
./install.sh; echo "@@nopython rc=$?"
ls -A /opt
"""


def run_in_container(image: str, folder: Path, script: str, timeout: int = 600) -> str:
    import docker

    client = docker.from_env(timeout=900)  # a loaded machine can take minutes
    container = client.containers.run(image, ["sh", "-c", script], network_mode="none", detach=True,
                                      volumes={str(folder): {"bind": "/pkg", "mode": "ro"}})
    try:
        status = container.wait(timeout=timeout)
        logs: bytes = container.logs(stdout=True, stderr=True)
        output = logs.decode()
        assert isinstance(status, dict)
        return output
    finally:
        container.remove(force=True)


def markers(output: str) -> dict[str, str]:
    found = {}
    for line in output.splitlines():
        if line.startswith("@@"):
            key, _, value = line[2:].partition(" ")
            found[key] = value
    return found


@pytest.fixture(scope="module")
def package_folder(tarballs: dict[str, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pkg")
    for info in tarballs.values():
        shutil.copy(info["tarball"], folder)
    (folder / "wait_ready.py").write_text(_WAIT_READY)
    return folder


@pytest.mark.requires_docker
@pytest.mark.parametrize("name", EXAMPLES)
def test_installs_and_serves_in_a_container_without_network(tarballs: dict[str, dict[str, Any]],
                                                            package_folder: Path, base_image: str,
                                                            name: str) -> None:
    tarball = Path(tarballs[name]["tarball"]).name
    output = run_in_container(base_image, package_folder,
                              _SERVE_SCRIPT.format(tarball=tarball, top=f"{name}-0.1.0", service=name))
    found = markers(output)
    assert found.get("install", "").startswith("rc=0"), output
    assert f"created the service account {name}" in output and f"installed {name} 0.1.0 in /opt/{name}" in output
    assert found["again"] == "rc=0" and f"{name} 0.1.0 is already installed in /opt/{name}; nothing to do" in output
    assert found["ready"].startswith("seconds="), output
    assert found["user"] == name  # the server runs as the service account, not root
    assert found["verify"] == "rc=0", output
    assert " golden cases match" in output and "FAIL" not in output
    # uvicorn shuts down, then re-raises SIGTERM: 143 (or 0) after a clean shutdown, not a kill after 30 s.
    assert found["server"] in ("rc=0", "rc=143"), output
    assert "Application shutdown complete." in output and "Finished server process" in output


@pytest.mark.requires_docker
def test_a_container_refuses_a_tampered_package_and_a_missing_python(tarballs: dict[str, dict[str, Any]],
                                                                     package_folder: Path,
                                                                     base_image: str) -> None:
    tarball = Path(tarballs["iris"]["tarball"]).name
    output = run_in_container(base_image, package_folder,
                              _REFUSE_SCRIPT.format(tarball=tarball, top="iris-0.1.0", service="iris"))
    found = markers(output)
    assert found["tampered"] == "rc=1", output
    assert "app/predictor.py: FAILED" in output and "nothing was installed" in output
    assert found["account"] == "absent"
    assert found["nopython"] == "rc=3", output
    assert "error: Python 3.11 is required, and none was found" in output
    assert "apt-get install python3.11 python3.11-venv" in output
    assert "iris" not in output.split("@@nopython")[1]  # /opt stayed empty


# -- on this host, offline ----------------------------------------------------------------------------------------


def offline_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "MLSHIP_")) and k != "PYTHONPATH"}
    nowhere = "http://127.0.0.1:9"  # the discard port: any connection attempt fails at once
    env.update(PIP_NO_INDEX="1", PIP_INDEX_URL=f"{nowhere}/simple", http_proxy=nowhere, https_proxy=nowhere,
               HTTP_PROXY=nowhere, HTTPS_PROXY=nowhere, no_proxy="", NO_PROXY="")
    return env


def _can_unshare() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode == 0


def target_python() -> str:
    """The OS's own python3.X when there is one (as on a target host), else this one.

    As root, install.sh checks the model as the service account, which must be able to run the interpreter: one
    under /root (pyenv) is closed to it.
    """
    for path in (f"/usr/bin/python{MAJOR_MINOR}", f"/usr/local/bin/python{MAJOR_MINOR}"):
        probe = subprocess.run([path, "-c", "import venv, ensurepip"], capture_output=True) \
            if os.access(path, os.X_OK) else None
        if probe is not None and probe.returncode == 0:
            return path
    return sys.executable


def install_sh(package: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """install.sh with no network: in a network namespace with no interfaces when possible."""
    cmd = [str(package / "install.sh"), "--python", target_python(), *map(str, args)]
    if os.geteuid() == 0:
        cmd += ["--user", "nobody"]  # don't create accounts on the test machine
    if _can_unshare():
        cmd = ["unshare", "--net", *cmd]
    return subprocess.run(cmd, env=offline_env(), capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def host_install(tarballs: dict[str, dict[str, Any]],
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    package = unpack(Path(tarballs["iris"]["tarball"]), tmp_path_factory.mktemp("host"))
    # As root, install.sh runs the model check as the service account (nobody here), which must reach the
    # prefix: pytest's own temporary folders are private (0700), so the prefix lives in a folder of its own.
    root = Path(tempfile.mkdtemp(prefix="mlship-onprem-"))
    root.chmod(0o755)
    prefix = root / "opt" / "iris"
    try:
        result = install_sh(package, "--prefix", prefix)
        assert result.returncode == 0, result.stdout + result.stderr
        listed = subprocess.run(pip_list_command(str(prefix / "venv/bin/python"), str(pip_folder(root / "pip"))),
                                capture_output=True, text=True, env=offline_env(), check=True).stdout
        yield {"package": package, "prefix": prefix, "output": result.stdout, "installed": distributions(listed)}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_host_install_layout(host_install: dict[str, Any]) -> None:
    prefix: Path = host_install["prefix"]
    assert "installed iris 0.1.0 in" in host_install["output"]
    assert os.access(prefix / "bin/iris-serve", os.X_OK) and (prefix / "venv/bin/python").exists()
    unit = (prefix / "lib/systemd/iris.service").read_text()
    assert f"ExecStart={prefix}/bin/iris-serve\n" in unit and "@" not in unit.split("[Unit]")[1]
    marker = (prefix / ".mlship-install").read_text()
    assert "name=iris\nversion=0.1.0\n" in marker
    assert not [p.name for p in prefix.iterdir() if p.name.startswith((".staging", ".venv.old", ".app.old"))]
    # exactly the locked wheels, nothing from this machine's pip configuration or index, and not even pip (which
    # install.sh removes once it has installed them)
    lock = (host_install["package"] / "requirements.lock").read_text()
    locked = {(m[1].lower().replace("_", "-"), m[2]) for m in re.finditer(r"^(\S+)==(\S+) ", lock, re.M)}
    assert host_install["installed"] == locked


def test_the_tarball_sbom_lists_exactly_what_pip_lists_in_the_installed_venv(host_install: dict[str, Any],
                                                                             tarballs: dict[str, dict[str, Any]],
                                                                             cli: Any, tmp_path: Path) -> None:
    tarball = Path(tarballs["iris"]["tarball"])
    assert tarballs["iris"]["sbom"]["cyclonedx"] == "iris-0.1.0/sbom/sbom.cdx.json"
    result = cli("sbom", tarball, "-o", tmp_path / "sbom.cdx.json")
    assert result.exit_code == 0, result.output
    cyclonedx = (tmp_path / "sbom.cdx.json").read_bytes()
    assert validate_cyclonedx(cyclonedx.decode()) is None
    assert cyclonedx == (host_install["package"] / "sbom/sbom.cdx.json").read_bytes()
    assert sbom_distributions(cyclonedx) == host_install["installed"]
    spdx = cli("sbom", tarball, "--format", "spdx")
    assert spdx.exit_code == 0 and validate_spdx(spdx.stdout) is None


def test_host_serves_the_golden_cases_and_stops_on_sigterm(host_install: dict[str, Any], bundles: dict[str, Path],
                                                           cli: Any, tmp_path: Path) -> None:
    prefix: Path = host_install["prefix"]
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    env = {**offline_env(), "MLSHIP_PORT": str(port)}
    proc = subprocess.Popen([str(prefix / "bin/iris-serve")], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/readyz", proc, log=tmp_path / "serve.log")
        result = cli("verify", bundles["iris"], "--url", f"http://127.0.0.1:{port}")
        assert result.exit_code == 0, result.output
        assert "golden cases match the notebook" in result.output
        loaded = check_page(f"http://127.0.0.1:{port}")  # the page and Swagger UI from the installed venv
        assert loaded.keys() >= {"/", "/ui/page.js", "/docs", "/docs/swagger-ui-bundle.js"}, loaded
    finally:
        [code] = shut_down(proc)
        log.close()
    text = (tmp_path / "serve.log").read_text()
    assert code in (0, -signal.SIGTERM), text
    assert "Application shutdown complete." in text and "Finished server process" in text
    assert f"127.0.0.1:{port}" in text  # the port came from MLSHIP_PORT


def test_host_second_run_changes_nothing(host_install: dict[str, Any]) -> None:
    prefix: Path = host_install["prefix"]
    before = snapshot(prefix)
    start = time.perf_counter()
    result = install_sh(host_install["package"], "--prefix", prefix)
    assert result.returncode == 0, result.stderr
    assert "iris 0.1.0 is already installed in" in result.stdout and "nothing to do" in result.stdout
    assert snapshot(prefix) == before
    assert time.perf_counter() - start < 15


def test_host_tampered_package_changes_nothing(host_install: dict[str, Any], tmp_path: Path) -> None:
    prefix: Path = host_install["prefix"]
    copy = tmp_path / "iris-0.1.0"
    shutil.copytree(host_install["package"], copy)
    wheel = next((copy / "wheels").glob("scikit_learn-*.whl"))
    data = bytearray(wheel.read_bytes())
    data[len(data) // 2] ^= 0xFF
    wheel.write_bytes(bytes(data))
    before = snapshot(prefix)
    result = install_sh(copy, "--prefix", prefix)
    assert result.returncode == 1
    assert f"wheels/{wheel.name}: FAILED" in result.stderr
    assert "this package is damaged or was modified; nothing was installed" in result.stderr
    assert snapshot(prefix) == before


def test_host_upgrade_then_uninstall(host_install: dict[str, Any], bundles: dict[str, Path], cli: Any,
                                     wheel_cache: Path, tmp_path: Path) -> None:
    # Version 0.2.0 of the same bundle: mlship.json is not among its own digests, so only it changes.
    bundle = tmp_path / "iris"
    shutil.copytree(bundles["iris"], bundle, ignore=shutil.ignore_patterns("lock", "__pycache__"))
    manifest = json.loads((bundle / "mlship.json").read_text())
    manifest["version"] = "0.2.0"
    (bundle / "mlship.json").write_text(json.dumps(manifest))
    result = cli("build", "--target", "onprem", "--bundle", bundle, "-o", tmp_path / "dist", "--wheel-cache",
                 wheel_cache, "--json")
    assert result.exit_code == 0, result.output
    package = unpack(Path(json.loads(result.output)["tarball"]), tmp_path / "unpacked")
    prefix: Path = host_install["prefix"]
    settings = prefix / "etc/iris.env"
    settings.write_text(settings.read_text() + "MLSHIP_WORKERS=4\n")  # the admin's edit survives upgrades

    result = install_sh(package, "--prefix", prefix)
    assert result.returncode == 0, result.stderr
    assert "installed iris 0.2.0 in" in result.stdout
    assert json.loads((prefix / "app/mlship.json").read_text())["version"] == "0.2.0"
    assert "version=0.2.0\n" in (prefix / ".mlship-install").read_text()
    assert settings.read_text().endswith("MLSHIP_WORKERS=4\n")
    # Releases (docs/ONPREM.md, "Releases"): the live one and the one it replaced; the rest are fixed symlinks.
    assert sorted(p.name for p in prefix.iterdir()) == [".current", ".installed-files", ".mlship-install",
                                                        ".releases", "app", "bin", "etc", "lib", "venv"]
    assert len(list((prefix / ".releases").glob("r.*"))) == 2
    assert all((prefix / name).is_symlink() for name in ("app", "venv", "bin", "lib", ".mlship-install"))
    check = subprocess.run([str(prefix / "venv/bin/python"), "-m", "mlship_runtime", "verify", "."],
                           cwd=prefix / "app", capture_output=True, text=True, env=offline_env())
    assert check.returncode == 0, check.stdout + check.stderr

    result = install_sh(package, "--uninstall", "--prefix", prefix)
    assert result.returncode == 0, result.stderr
    assert f"removed iris from {prefix}" in result.stdout
    assert not prefix.exists()
