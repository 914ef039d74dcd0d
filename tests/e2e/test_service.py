"""Service files end to end (docs/SERVICE.md): `mlship verify mlship.toml` on real example bundles, and every bad
input of the issue as a real `mlship` process: a clear error and hint, exit 1, no traceback, nothing started."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mlship.runtime._contract import FORMAT
from tests.support.servers import free_port, shut_down, wait_until_ready
from tests.support.services import bundle_copy


def mlship(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mlship", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "MLSHIP_PLAIN": "1"}, check=False)


@pytest.fixture(scope="module")
def service_dir(example_bundles: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dist/iris, dist/churn, and dist/iris-2 (iris again as version 2.0.0), beside a service file of the three."""
    root = tmp_path_factory.mktemp("service")
    for name in ("iris", "churn"):
        bundle_copy(example_bundles[name], root / "dist" / name, name)
    bundle_copy(example_bundles["iris"], root / "dist" / "iris-2", "iris", "2.0.0")
    (root / "mlship.toml").write_text(SERVICE)
    return root


SERVICE = """\
[service]
name = "scoring"

[[models]]
bundle = "dist/iris"

[[models]]
bundle = "dist/churn"

[[models]]
bundle = "dist/iris-2"

[routes.iris]
default = "0.1.0"
"""


def test_verify_a_service_file_replays_every_model_in_its_own_process(service_dir: Path) -> None:
    result = mlship("verify", "mlship.toml", cwd=service_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:3]] == ["PASS  iris 0.1.0", "PASS  churn 0.1.0", "PASS  iris 2.0.0"]
    assert all(line.endswith("golden cases match") for line in lines[:3])
    assert "3 models match the notebooks' golden cases" in result.stdout + result.stderr
    # The service contract travels in every bundle's runtime, digest-listed like the rest of it.
    artifacts = json.loads((service_dir / "dist/iris/mlship.json").read_text())["artifacts"]
    assert "mlship_runtime/_service.py" in artifacts


def test_verify_a_service_file_says_which_model_fails(service_dir: Path, tmp_path: Path) -> None:
    for name in ("iris", "churn"):
        (tmp_path / "dist").mkdir(exist_ok=True)
        (tmp_path / "dist" / name).symlink_to(service_dir / "dist" / name)
    bundle_copy(service_dir / "dist" / "churn", tmp_path / "dist" / "churn-2", "churn", "2.0.0")
    (tmp_path / "dist" / "churn-2" / "predictor.py").write_text("raise SystemExit('changed')\n")
    # iris on a Python named in the file (this one): verified in that interpreter.
    (tmp_path / "mlship.toml").write_text(f'[[models]]\nbundle = "dist/iris"\npython = "{sys.executable}"\n'
                                          '[[models]]\nbundle = "dist/churn-2"\n')
    result = mlship("verify", "mlship.toml", "--json", cwd=tmp_path)
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert [(m["name"], m["version"], m["ok"]) for m in report["models"]] == [("iris", "0.1.0", True),
                                                                               ("churn", "2.0.0", False)]
    assert "artifact predictor.py has sha256" in report["models"][1]["error"]
    assert "error: 1 of 2 models fail verification: churn 2.0.0" in result.stderr
    assert "Traceback" not in result.stderr


@contextmanager
def mlship_serve(*args: str | Path, cwd: Path, log: Path) -> Iterator[str]:
    """A real `mlship serve ARGS` (one worker per model), ready; its base URL. Stopped with SIGTERM."""
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "mlship", "serve", *map(str, args), "--port", str(port),
                                    "--workers", "1"], cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, "MLSHIP_PLAIN": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(f"{url}/readyz", process, log=log, timeout=180, interval=0.3)
        yield url
    finally:
        shut_down(process)


def models(url: str) -> dict[str, dict[str, object]]:
    with urllib.request.urlopen(f"{url}/models", timeout=10) as response:
        listing = json.load(response)
    entries = listing["models"] if isinstance(listing, dict) else listing
    return {entry["name"]: entry for entry in entries}


def test_serve_a_service_file_and_verify_it_over_http(service_dir: Path, tmp_path: Path) -> None:
    with mlship_serve("mlship.toml", cwd=service_dir, log=tmp_path / "serve.log") as url:
        result = mlship("verify", "mlship.toml", "--url", url, cwd=service_dir)
        assert result.returncode == 0, result.stdout + result.stderr
        assert [line.split(":")[0] for line in result.stdout.splitlines()[:3]] == [
            "PASS  iris 0.1.0", "PASS  churn 0.1.0", "PASS  iris 2.0.0"]
        assert f"3 models match the notebooks' golden cases at {url}" in result.stdout + result.stderr
        # One bundle's cases against its routes on the multi-model server: the single-bundle --url mode.
        single = mlship("verify", "dist/churn", "--url", f"{url}/models/churn", cwd=service_dir)
        assert single.returncode == 0, single.stdout + single.stderr
        # A model the server does not have: a FAIL line naming the answer, exit 1.
        (tmp_path / "other.toml").write_text(f'[[models]]\nbundle = "{service_dir}/dist/iris"\n'
                                             f'[[models]]\nbundle = "{service_dir}/dist/iris-2"\nname = "iris-new"\n')
        missing = mlship("verify", tmp_path / "other.toml", "--url", url, cwd=tmp_path)
        assert missing.returncode == 1
        lines = missing.stdout.splitlines()
        assert lines[0].startswith("PASS  iris 0.1.0") and lines[1].startswith("FAIL  iris-new 2.0.0: "), lines
        assert "HTTP 404" in lines[1]
        assert "error: 1 of 2 models fail verification: iris-new 2.0.0" in missing.stderr
    assert "serving scoring on " in (tmp_path / "serve.log").read_text()


def test_serve_bundle_directories_behind_one_server(service_dir: Path, tmp_path: Path) -> None:
    with mlship_serve("dist/iris", "dist/iris-2", "dist/churn", cwd=service_dir, log=tmp_path / "serve.log") as url:
        served = models(url)
        assert set(served) == {"iris", "churn"}
        body = json.dumps({"instances": json.loads((service_dir / "dist/iris/golden.json").read_text())["cases"][0]
                           ["instances"]}).encode()
        for path in ("/models/iris/predict", "/models/iris/versions/0.1.0/predict", "/models/iris/versions/2.0.0/predict"):
            request = urllib.request.Request(url + path, data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as response:
                assert response.status == 200 and "predictions" in json.load(response)
    log = (tmp_path / "serve.log").read_text()
    assert "serving mlship on " in log and "iris 0.1.0, 2.0.0 (default); churn 0.1.0" in log


# -- bad input: each a real `mlship serve` / `mlship verify` that refuses before anything starts ------------------


BAD = {
    "two bundles with the same name and version": (
        SERVICE + '\n[[models]]\nbundle = "dist/iris-copy"\n',
        "two bundles serve model 'iris' version '0.1.0'", "rename one"),
    "a missing bundle": (
        SERVICE.replace("dist/churn", "dist/chrun"), "the bundle {root}/dist/chrun does not exist", "mlship package"),
    "an unknown key": (
        SERVICE.replace('[service]\n', '[service]\nport = 8080\n'), "unknown key 'port' in [service]",
        "[service] takes 'name'"),
    "a default naming a version that does not exist": (
        SERVICE.replace('default = "0.1.0"', 'default = "3.0.0"'),
        "[routes.iris] default = '3.0.0', but model 'iris' has no such version (it has '0.1.0', '2.0.0')",
        "set default to one of"),
    "two versions of a name and no default": (
        SERVICE.split("[routes.iris]")[0], "model 'iris' has versions '0.1.0', '2.0.0' and no default",
        '[routes.iris] default = "2.0.0"'),
    "a bundle written by a newer bundle format": (
        SERVICE + '\n[[models]]\nbundle = "dist/future"\n', f"is in bundle format {FORMAT + 1}, written by mlship 99.0",
        "pip install -U mlship"),
    "not a bundle directory": (
        SERVICE + '\n[[models]]\nbundle = "dist"\n', "{root}/dist is not a bundle: it has no mlship.json",
        "name the folder `mlship package` wrote"),
    "pins this Python lacks": (
        SERVICE + '\n[[models]]\nbundle = "dist/old"\n', "model old 0.1.0 ({root}/dist/old) pins scikit-learn==0.20.0",
        'python = "envs/old-0.1.0/bin/python" in its [[models]] table in {root}/mlship.toml'),
}


@pytest.fixture(scope="module")
def bad_dir(service_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bad")
    (root / "dist").mkdir()
    for name in ("iris", "churn", "iris-2"):
        (root / "dist" / name).symlink_to(service_dir / "dist" / name)
    bundle_copy(service_dir / "dist" / "iris", root / "dist" / "iris-copy", "iris")
    bundle_copy(service_dir / "dist" / "iris", root / "dist" / "future", "future", format=FORMAT + 1,
                mlship_version="99.0")
    bundle_copy(service_dir / "dist" / "iris", root / "dist" / "old", "old", requirements=["scikit-learn==0.20.0"])
    return root


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_refused_by_name_with_the_fix(bad_dir: Path, case: str) -> None:
    text, message, hint = BAD[case]
    (bad_dir / "mlship.toml").write_text(text)
    commands = [("serve", "mlship.toml", "--port", "1")]  # a port it must never get to bind
    if case != "pins this Python lacks":  # verify runs each model in its own process: the pins are pip's to check
        commands.append(("verify", "mlship.toml"))
    for command in commands:
        result = mlship(*command, cwd=bad_dir)
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        assert f"error: {bad_dir / 'mlship.toml'}" in result.stderr or case == "pins this Python lacks"
        assert message.format(root=bad_dir) in result.stderr, result.stderr
        assert "hint: " in result.stderr and hint.format(root=bad_dir) in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and "serving" not in result.stdout
