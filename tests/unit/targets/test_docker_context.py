"""The docker build context rendered into tmp_path and checked file by file; no Docker involved."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mlship.errors import BuildError
from mlship.runtime._contract import read_manifest
from mlship.targets import _docker_build as docker_target
from mlship.targets._docker_build import check_tag, default_tag, image_metadata
from mlship.targets._docker_context import (
    CONTEXT_HASH_LABEL,
    ImageMetadata,
    context_hash,
    dockerfile_string,
    write_context,
)
from mlship.targets.wheelhouse import LockedWheel, Platform, Wheelhouse, parse_platform
from tests.support.wheels import make_wheel
from tests.unit.runtime.sample_bundles import build_bundle

PY = f"{sys.version_info.major}.{sys.version_info.minor}"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bundle("iris_frame", tmp_path_factory.mktemp("bundle") / "iris-frame")


def fake_wheelhouse(directory: Path, names: tuple[str, ...] = ("alpha", "beta"),
                    platform: Platform | None = None) -> Wheelhouse:
    directory.mkdir(parents=True, exist_ok=True)
    lock = []
    for name in names:
        path = directory / f"{name}-1.0-py3-none-any.whl"
        path.write_bytes(make_wheel(name, "1.0", license_expression="MIT"))
        lock.append(LockedWheel(name, "1.0", path.name, hashlib.sha256(path.read_bytes()).hexdigest()))
    return Wheelhouse(directory, lock, PY, platform or parse_platform("linux/amd64"))


def meta(**changes: Any) -> ImageMetadata:
    fields: dict[str, Any] = {
        "name": "iris-frame", "version": "0.1.0", "created": "2026-11-27T10:00:00Z", "revision": "abc123",
        "source": "https://example.invalid/repo.git", "bundle_digest": "sha256:" + "1" * 64,
        "notebook_sha256": "0" * 64, "python": "3.11.7", "runtime_version": "1",
    }
    return ImageMetadata(**{**fields, **changes})


def write(dest: Path, bundle: Path, house: Wheelhouse, **meta_changes: Any) -> str:
    return write_context(dest, bundle, house, meta(**meta_changes), base_image="mlship-base:test", python=PY)


def tree(root: Path) -> dict[str, tuple[int, bytes]]:
    return {p.relative_to(root).as_posix(): (p.stat().st_mode & 0o777, p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file()}


def instructions(dockerfile: str) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", dockerfile)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.startswith("#")]


def test_same_inputs_give_the_same_bytes_and_hash(bundle: Path, tmp_path: Path) -> None:
    house = fake_wheelhouse(tmp_path / "wheels")
    first = write(tmp_path / "one", bundle, house)
    second = write(tmp_path / "two", bundle, house)
    assert first == second and first.startswith("sha256:")
    assert tree(tmp_path / "one") == tree(tmp_path / "two")
    assert context_hash(tmp_path / "one") == first


def test_hash_ignores_time_but_follows_content(bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    house = fake_wheelhouse(tmp_path / "wheels")
    baseline = write(tmp_path / "a", bundle, house)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    assert write(tmp_path / "b", bundle, house) == baseline
    assert {p.stat().st_mtime for p in (tmp_path / "b").rglob("*")} == {0}
    assert write(tmp_path / "c", bundle, house, revision="def456") != baseline
    changed = Path(shutil.copytree(bundle, tmp_path / "changed"))
    (changed / "golden.json").write_text((changed / "golden.json").read_text() + " ")
    assert write(tmp_path / "d", changed, house) != baseline


def test_layout_and_modes(bundle: Path, tmp_path: Path) -> None:
    (bundle / "__pycache__").mkdir(exist_ok=True)
    (bundle / "__pycache__" / "predictor.cpython-311.pyc").write_bytes(b"cache")
    house = fake_wheelhouse(tmp_path / "wheels")
    write(tmp_path / "ctx", bundle, house)
    files = tree(tmp_path / "ctx")
    assert "Dockerfile" in files and ".dockerignore" in files
    assert sorted(k for k in files if k.startswith("wheels/")) == [
        "wheels/alpha-1.0-py3-none-any.whl", "wheels/beta-1.0-py3-none-any.whl", "wheels/linux_x86_64-py311.txt"]
    assert files["wheels/linux_x86_64-py311.txt"][1].decode() == house.lock_text()
    bundled = {k.removeprefix("bundle/") for k in files if k.startswith("bundle/")}
    assert {"mlship.json", "predictor.py", "golden.json", "artifacts/values.pkl",
            "mlship_runtime/__main__.py"} <= bundled
    assert not [k for k in files if "__pycache__" in k or k.endswith(".pyc")]
    assert {mode for mode, _ in files.values()} <= {0o644, 0o755}
    # Group and others can read every file: an arbitrary UID in group 0 (OpenShift) reads the bundle.
    assert all(mode & 0o044 == 0o044 for mode, _ in files.values())


def test_dockerfile_is_multi_stage_non_root_and_offline(bundle: Path, tmp_path: Path) -> None:
    write(tmp_path / "ctx", bundle, fake_wheelhouse(tmp_path / "wheels"))
    lines = instructions((tmp_path / "ctx" / "Dockerfile").read_text())
    froms = [line for line in lines if line.startswith("FROM ")]
    assert froms == ["FROM mlship-base:test AS build", "FROM mlship-base:test"]
    build = lines[: lines.index(froms[1])]
    final = lines[lines.index(froms[1]):]
    install = next(line for line in build if line.startswith("RUN "))
    assert f"python{PY} -m venv /opt/venv" in install
    for flag in ("--no-index", "--require-hashes", "--no-cache-dir", "--only-binary=:all:"):
        assert flag in install
    assert "pip uninstall" in install and "rm -rf /tmp/wheels" in install
    # Installed packages' own test suites are dropped (only folders named tests inside a package).
    assert ("find /opt/venv/lib -depth -type d -name tests -path '*/site-packages/*/tests' -exec rm -rf {} +"
            in install)
    # The final stage copies the venv and the bundle; no wheels, no RUN.
    copies = [line for line in final if line.startswith("COPY ")]
    assert copies == ["COPY --from=build /etc/passwd /etc/passwd", "COPY --from=build /opt/venv/ /opt/venv/",
                      "COPY bundle/ /app/"]
    assert not [line for line in final if line.startswith("RUN ")]
    assert "USER 10001:0" in final and "EXPOSE 8080" in final
    entrypoint = next(line for line in final if line.startswith("ENTRYPOINT "))
    assert json.loads(entrypoint.removeprefix("ENTRYPOINT ")) == [
        "/opt/venv/bin/python", "-I", "-B", "-u", "/app/mlship_runtime/_boot.py"]
    cmd = json.loads(next(line for line in final if line.startswith("CMD ")).removeprefix("CMD "))
    assert cmd[:2] == ["serve", "/app"] and cmd[cmd.index("--port") + 1] == "8080"
    health = next(line for line in final if line.startswith("HEALTHCHECK "))
    probe = json.loads(health.split(" CMD ", 1)[1])
    assert probe[0] == "/opt/venv/bin/python" and "/readyz" in probe[-1] and "curl" not in health


def test_labels_come_last_so_they_never_invalidate_layers(bundle: Path, tmp_path: Path) -> None:
    digest = write(tmp_path / "ctx", bundle, fake_wheelhouse(tmp_path / "wheels"))
    lines = instructions((tmp_path / "ctx" / "Dockerfile").read_text())
    assert lines[-1].startswith("LABEL ")
    labels = dict(re.findall(r'([\w.-]+)="((?:[^"\\]|\\.)*)"', lines[-1]))
    for key in ("title", "version", "created", "revision", "source"):
        assert labels[f"org.opencontainers.image.{key}"]
    assert labels["org.opencontainers.image.title"] == "iris-frame"
    assert labels[CONTEXT_HASH_LABEL] == digest
    for key in ("io.mlship.bundle.digest", "io.mlship.notebook.sha256", "io.mlship.version"):
        assert labels[key]


def test_the_runtime_loads_from_the_copied_bundle(bundle: Path, tmp_path: Path) -> None:
    # Replay `COPY bundle/ /app/` and load the bundle the way the entrypoint does, from /app.
    write(tmp_path / "ctx", bundle, fake_wheelhouse(tmp_path / "wheels"))
    app = Path(shutil.copytree(tmp_path / "ctx" / "bundle", tmp_path / "app"))
    code = "from mlship_runtime._bundle import load_bundle; b = load_bundle('.'); print(sorted(b.methods))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=app, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(app)})
    assert proc.returncode == 0, proc.stderr
    assert "predict" in proc.stdout


def test_setuptools_stays_when_the_lock_has_it(bundle: Path, tmp_path: Path) -> None:
    write(tmp_path / "ctx", bundle, fake_wheelhouse(tmp_path / "wheels", names=("alpha", "setuptools")))
    install = next(line for line in instructions((tmp_path / "ctx" / "Dockerfile").read_text())
                   if line.startswith("RUN "))
    assert re.search(r"pip uninstall .* pip$", install.split(" && rm ")[0].strip())


def test_refuses_a_non_empty_directory(bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "keep.txt").write_text("mine")
    with pytest.raises(BuildError, match="not empty"):
        write(tmp_path / "ctx", bundle, fake_wheelhouse(tmp_path / "wheels"))


def test_dockerfile_strings_escape_quotes_and_variables() -> None:
    assert dockerfile_string('a "b" $HOME ü') == '"a \\"b\\" \\$HOME ü"'


@pytest.mark.parametrize(("name", "version", "tag"), [("iris", "0.1.0", "iris:0.1.0"),
                                                      ("My Model!", "1.0+local", "my-model:1.0-local"),
                                                      ("__", "", "model:latest")])
def test_default_tag(name: str, version: str, tag: str) -> None:
    assert default_tag(name, version) == tag
    check_tag(tag)


@pytest.mark.parametrize("tag", ["Iris:1", "iris:", "http://r/iris", "iris:-x", ""])
def test_check_tag_rejects(tag: str) -> None:
    with pytest.raises(BuildError, match="not a valid image reference"):
        check_tag(tag)


@pytest.mark.parametrize("tag", ["iris", "registry.local:5000/team/iris:1.2", "127.0.0.1:5000/iris:e2e"])
def test_check_tag_accepts(tag: str) -> None:
    check_tag(tag)


def test_image_metadata_from_the_bundle(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLSHIP_REVISION", raising=False)
    monkeypatch.setenv("MLSHIP_SOURCE", "https://git.example.invalid/models")
    manifest = json.loads((bundle / "mlship.json").read_text())
    found = image_metadata(bundle, read_manifest(bundle))
    assert found.bundle_digest == "sha256:" + hashlib.sha256((bundle / "mlship.json").read_bytes()).hexdigest()
    assert found.created == manifest["created_at"] and found.notebook_sha256 == "0" * 64
    assert found.revision == "0" * 64  # not in a git work tree: the notebook's digest
    assert found.source == "https://git.example.invalid/models"


def test_context_only_through_the_cli(bundle: Path, tmp_path: Path, cli: Any,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_build_wheelhouse(requirements: list[str], *, python: str, platform: Platform, dest: Path,
                              **_: Any) -> Wheelhouse:
        assert requirements == json.loads((bundle / "mlship.json").read_text())["requirements"]
        return fake_wheelhouse(dest, platform=platform)

    monkeypatch.setattr(docker_target, "build_wheelhouse", fake_build_wheelhouse)
    # No daemon is needed (or asked) for --context-only.
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    copy = Path(shutil.copytree(bundle, tmp_path / "bundle"))
    result = cli("build", "--target", "docker", "--bundle", copy, "--context-only", tmp_path / "ctx", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["ok"] and data["image"] is None and data["context_dir"] == str(tmp_path / "ctx")
    assert data["context_hash"] == context_hash(tmp_path / "ctx")
    assert (copy / "lock" / f"linux_x86_64-py{PY.replace('.', '')}.txt").is_file()
    assert data["lock"] == str(copy / "lock" / f"linux_x86_64-py{PY.replace('.', '')}.txt")


def test_no_daemon_is_a_clear_error(bundle: Path, cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # With --builder engine; --builder auto (the default) builds natively instead (tests/e2e/test_native_build.py).
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    result = cli("build", "--target", "docker", "--bundle", bundle, "--builder", "engine")
    assert result.exit_code == 1
    assert "error: no Docker daemon is reachable at unix:///nonexistent/docker.sock" in result.output
    assert "--builder native" in result.output
    assert "--context-only" in result.output and "--target onprem" in result.output
    assert "Traceback" not in result.output
