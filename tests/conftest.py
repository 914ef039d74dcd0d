from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "tests" / "samples" / "notebooks"
EXAMPLES = ROOT / "examples"
E2E_DIR = ROOT / "tests" / "e2e"
UNIT_DIR = ROOT / "tests" / "unit"

# The Docker fixtures (base_image, registry), defined once here for the whole run: a fixture imported into several
# test modules would be a separate session fixture in each.
pytest_plugins = ["tests.support.docker"]


@pytest.fixture(autouse=True, scope="session")
def _plain_console() -> Iterator[None]:
    # Plain output: no colours, no live displays, so assertions see the words.
    old = os.environ.get("MLSHIP_PLAIN")
    os.environ["MLSHIP_PLAIN"] = "1"
    yield
    if old is None:
        os.environ.pop("MLSHIP_PLAIN", None)
    else:
        os.environ["MLSHIP_PLAIN"] = old


@pytest.fixture(scope="session")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of tests/samples/notebooks: notebooks may write files beside themselves."""
    dest = tmp_path_factory.mktemp("samples") / "notebooks"
    shutil.copytree(SAMPLES, dest)
    return dest


@pytest.fixture(scope="session")
def examples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("examples") / "examples"
    shutil.copytree(EXAMPLES, dest, ignore=shutil.ignore_patterns("dist"))
    return dest


EXAMPLE_NAMES = ("iris", "reviews", "churn", "taxi")


@pytest.fixture(scope="session")
def example_bundles(examples: Path, cli: Cli, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every example packaged once per test run (the examples, docker and onprem tests all read them)."""
    out = tmp_path_factory.mktemp("bundles")
    for name in EXAMPLE_NAMES:
        result = cli("package", examples / name / f"{name}.ipynb", "-o", out / name)
        assert result.exit_code == 0, result.output
        assert "golden cases verified in a fresh interpreter" in result.output
    return {name: out / name for name in EXAMPLE_NAMES}


@pytest.fixture(scope="session")
def sample_bundle(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """A sample bundle of tests/samples/bundles/, built once per run: read it, never change it (make_bundle)."""
    from tests.unit.runtime.sample_bundles import build_bundle

    built: dict[str, Path] = {}

    def get(sample: str) -> Path:
        if sample not in built:
            built[sample] = build_bundle(sample, tmp_path_factory.mktemp(sample) / "bundle")
        return built[sample]

    return get


@pytest.fixture
def make_bundle(sample_bundle: Callable[[str], Path], tmp_path: Path) -> Callable[[str], Path]:
    """A private copy of a sample bundle in tmp_path, free to tamper with."""

    def make(sample: str) -> Path:
        return Path(shutil.copytree(sample_bundle(sample), tmp_path / sample))

    return make


@pytest.fixture(scope="session")
def wheel_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `--wheel-cache` for the run: the docker and onprem builds download each wheel once, not once each."""
    return tmp_path_factory.mktemp("wheel-cache")


class Cli:
    """typer's CliRunner around the real app; exceptions propagate so a bug is a traceback, not an exit code."""

    def __init__(self) -> None:
        from typer.testing import CliRunner

        self.runner = CliRunner()

    def __call__(self, *args: str | Path, cwd: Path | None = None) -> Any:
        from mlship.cli import app

        old = Path.cwd()
        if cwd is not None:
            os.chdir(cwd)
        try:
            return self.runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
        finally:
            os.chdir(old)


@pytest.fixture(scope="session")
def cli() -> Cli:
    return Cli()


def _docker_available() -> bool:
    try:
        import docker

        docker.from_env(timeout=5).ping()
        return True
    except Exception:
        return False


def _java_available() -> bool:
    """What pyspark's launcher runs: $JAVA_HOME/bin/java, else java on PATH."""
    home = os.environ.get("JAVA_HOME")
    java = os.path.join(home, "bin", "java") if home else shutil.which("java")
    return bool(java) and os.access(str(java), os.X_OK)


@pytest.hookimpl(tryfirst=True)  # before -m "not e2e" deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/e2e is e2e; nothing under tests/unit is (it must start no kernel, server or Docker)."""
    for item in items:
        if E2E_DIR in item.path.parents:
            item.add_marker(pytest.mark.e2e)
        elif UNIT_DIR in item.path.parents and item.get_closest_marker("e2e"):
            raise pytest.UsageError(f"{item.nodeid} is marked e2e: end-to-end tests live under tests/e2e")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("requires_docker") and not _docker_available():
        if os.environ.get("MLSHIP_REQUIRE_DOCKER") == "1":
            pytest.fail("MLSHIP_REQUIRE_DOCKER=1 but no Docker daemon is reachable")
        pytest.skip("no Docker daemon reachable (start dockerd, or set MLSHIP_REQUIRE_DOCKER=1 to make this fatal)")
    if item.get_closest_marker("requires_java") and not _java_available():
        if os.environ.get("MLSHIP_REQUIRE_JAVA") == "1":
            pytest.fail("MLSHIP_REQUIRE_JAVA=1 but no Java runtime is found (the Spark tests need one)")
        pytest.skip("no Java runtime (apt-get install openjdk-17-jre-headless, or set MLSHIP_REQUIRE_JAVA=1 to make "
                    "this fatal)")
