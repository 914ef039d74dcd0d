"""mlship/service.py and the CLI's service commands, up to the exec of the multi-model front: what `mlship serve`
checks and runs for several bundles or a service file, the environment check, and their messages."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mlship.errors import MlshipError
from mlship.runtime._service import read_service
from mlship.service import find_conflicts, open_service, parse_defaults, service_file
from tests.support.servers import free_port
from tests.support.services import bundle_copy

Make = Callable[..., Path]


@pytest.fixture
def bundle_as(sample_bundle: Callable[[str], Path], tmp_path: Path) -> Make:
    def make(folder: str, name: str, version: str = "0.1.0", **manifest: object) -> Path:
        return bundle_copy(sample_bundle("iris_frame"), tmp_path / "dist" / folder, name, version, **manifest)

    return make


@pytest.fixture
def fraud(bundle_as: Make) -> list[Path]:
    return [bundle_as("fraud-1", "fraud", "1.0.0"), bundle_as("fraud-2", "fraud", "2.0.0")]


class Exec:
    """os.execve recorded instead of run (the CLI's last step: becoming the front)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str], dict[str, str]]] = []

    def __call__(self, path: str, argv: list[str], env: dict[str, str]) -> None:
        self.calls.append((path, list(argv), dict(env)))


@pytest.fixture
def execve(monkeypatch: pytest.MonkeyPatch) -> Exec:
    recorder = Exec()
    monkeypatch.setattr(os, "execve", recorder)
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    return recorder


def test_serve_several_bundles_execs_the_front_with_a_service_file_of_them(
        cli: Any, fraud: list[Path], bundle_as: Make, execve: Exec, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    (tmp_path / "run").mkdir()
    churn = bundle_as("churn", "churn")
    port = free_port()
    result = cli("serve", churn, *fraud, "--port", str(port), "--workers", "2")
    assert result.exit_code == 0, result.output
    assert result.output == (f"serving mlship on http://127.0.0.1:{port}: churn 0.1.0; fraud 1.0.0, 2.0.0 (default) "
                             "(POST /models/NAME/predict, GET /models, GET /readyz; Ctrl-C stops)\n")
    [(path, argv, env)] = execve.calls
    assert path == sys.executable
    [written] = (tmp_path / "run").iterdir()
    assert argv == [sys.executable, "-B", "-m", "mlship.runtime", "serve-service", str(written),
                    "--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
    assert "PYTHONPATH" not in env and env["PYTHONDONTWRITEBYTECODE"] == "1"
    service = read_service(written)
    assert [(m.name, m.version, m.bundle) for m in service.models] == [
        ("churn", "0.1.0", churn), ("fraud", "1.0.0", fraud[0]), ("fraud", "2.0.0", fraud[1])]
    assert dict(service.defaults) == {"churn": "0.1.0", "fraud": "2.0.0"}
    # The same bundles again: the same file, nothing piles up.
    assert cli("serve", churn, *fraud, "--port", str(port), "--workers", "2").exit_code == 0
    assert list((tmp_path / "run").iterdir()) == [written]


def test_serve_a_service_file_execs_the_front_with_that_file(cli: Any, fraud: list[Path], execve: Exec,
                                                              tmp_path: Path) -> None:
    path = tmp_path / "mlship.toml"
    path.write_text('[service]\nname = "scoring"\n[[models]]\nbundle = "dist/fraud-1"\n'
                    '[[models]]\nbundle = "dist/fraud-2"\n[routes.fraud]\ndefault = "1.0.0"\n')
    port = free_port()
    result = cli("serve", "mlship.toml", "--port", str(port), cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"serving scoring on http://127.0.0.1:{port}: fraud 1.0.0 (default), 2.0.0 ")
    [(_, argv, _)] = execve.calls
    assert argv[4:7] == ["serve-service", str(path), "--host"]


def test_serve_default_chooses_the_version(cli: Any, fraud: list[Path], execve: Exec) -> None:
    result = cli("serve", *fraud, "--default", "fraud=1.0.0", "--port", str(free_port()))
    assert result.exit_code == 0, result.output
    assert read_service(execve.calls[0][1][5]).defaults["fraud"] == "1.0.0"


def test_one_bundle_keeps_the_single_model_server(cli: Any, fraud: list[Path], execve: Exec) -> None:
    port = free_port()
    result = cli("serve", fraud[0], "--port", str(port))
    assert result.output == (f"serving fraud 1.0.0 on http://127.0.0.1:{port} (POST /predict, GET /readyz, "
                             "GET /metadata; Ctrl-C stops)\n")
    [(_, argv, _)] = execve.calls
    assert argv[3:] == [argv[3], "--bundle", str(fraud[0]), "serve", str(fraud[0]), "--host", "127.0.0.1",
                        "--port", str(port)]
    assert argv[3].endswith("runtime/_boot.py")


# -- what it refuses, before anything starts ----------------------------------------------------------------------


def test_serve_refuses_a_bundle_whose_pins_this_python_lacks(cli: Any, fraud: list[Path], bundle_as: Make,
                                                             execve: Exec) -> None:
    old = bundle_as("old", "old", requirements=["numpy==0.0.1", "notapackage==1.2", "uvicorn==0.0.1"])
    result = cli("serve", fraud[0], old, "--port", str(free_port()))
    assert result.exit_code == 1 and not execve.calls
    import numpy

    assert result.output == (
        "error: 2 pinned requirements disagree with the Python that would serve them:\n"
        f"  model old 0.1.0 ({old}) pins numpy==0.0.1, but the serving Python ({sys.executable}) has "
        f"{numpy.__version__}\n"
        f"  model old 0.1.0 ({old}) pins notapackage==1.2, but the serving Python ({sys.executable}) does not "
        "have it\n"
        "hint: give each such model an environment of its own, e.g. python3 -m venv envs/old-0.1.0 && "
        f"envs/old-0.1.0/bin/pip install -r {old}/requirements.txt, then python = \"envs/old-0.1.0/bin/python\" in "
        "its [[models]] table in a service file (docs/SERVICE.md; bundle directories alone cannot say it); or "
        "build one image or tarball (mlship build --target docker|onprem mlship.toml), which makes one "
        "environment per set of pins\n"
    )


def test_a_model_with_its_own_python_is_checked_in_that_python(fraud: list[Path], bundle_as: Make,
                                                               tmp_path: Path) -> None:
    bundle_as("old", "old", requirements=["notapackage==1.2"])
    path = tmp_path / "mlship.toml"
    path.write_text(f'[[models]]\nbundle = "dist/old"\npython = "{sys.executable}"\n'
                    '[[models]]\nbundle = "dist/fraud-1"\n')
    [conflict] = find_conflicts(read_service(path))
    assert conflict.describe() == (f"model old 0.1.0 ({tmp_path / 'dist/old'}) pins notapackage==1.2, but "
                                   f"python = '{sys.executable}' does not have it")
    path.write_text('[[models]]\nbundle = "dist/old"\npython = "envs/none/bin/python"\n')
    with pytest.raises(MlshipError, match="cannot run python = '.*envs/none/bin/python'"):
        find_conflicts(read_service(path))


def test_serve_refuses_a_python_other_than_the_bundles(cli: Any, bundle_as: Make, fraud: list[Path]) -> None:
    other = bundle_as("py", "py", python={"version": "3.1.0", "implementation": "CPython"})
    result = cli("serve", other, fraud[0], "--port", str(free_port()))
    assert result.exit_code == 1
    assert f"model py 0.1.0 ({other}) pins Python 3.1, but the serving Python ({sys.executable}) has " \
           f"{sys.version_info.major}.{sys.version_info.minor}" in result.output


def test_serve_a_service_file_and_a_bundle_together(cli: Any, fraud: list[Path], tmp_path: Path) -> None:
    (tmp_path / "mlship.toml").write_text('[[models]]\nbundle = "dist/fraud-1"\n')
    result = cli("serve", "mlship.toml", "dist/fraud-2", cwd=tmp_path)
    assert (result.exit_code, result.output) == (
        1, "error: mlship.toml is a service file, and a service file is served alone\n"
        "hint: list the other bundles in it as [[models]] tables, or pass only bundle directories\n")


def test_serve_a_service_file_with_a_default_option(cli: Any, fraud: list[Path], tmp_path: Path) -> None:
    (tmp_path / "mlship.toml").write_text('[[models]]\nbundle = "dist/fraud-1"\n')
    result = cli("serve", "mlship.toml", "--default", "fraud=1.0.0", cwd=tmp_path)
    assert result.exit_code == 1
    assert "--default applies to bundle directories, not to a service file" in result.output


def test_serve_a_bundle_that_was_changed_after_packaging(cli: Any, fraud: list[Path]) -> None:
    (fraud[1] / "predictor.py").write_text("# changed\n")
    result = cli("serve", *fraud, "--port", str(free_port()))
    assert result.exit_code == 1
    assert "artifact predictor.py has sha256" in result.output and "the file changed after packaging" in result.output


def test_parse_defaults() -> None:
    assert parse_defaults(["fraud=1.0.0", " a = 2 "]) == {"fraud": "1.0.0", "a": "2"}
    with pytest.raises(MlshipError, match="--default 'fraud' is not NAME=VERSION"):
        parse_defaults(["fraud"])


def test_open_service_turns_refusals_into_mlship_errors(fraud: list[Path]) -> None:
    with pytest.raises(MlshipError) as caught:
        open_service([fraud[0], fraud[0]])
    assert "two bundles serve model 'fraud' version '1.0.0'" in caught.value.message
    assert caught.value.hint is not None and "rename one" in caught.value.hint


def test_the_service_file_of_a_given_file_is_that_file(fraud: list[Path], tmp_path: Path) -> None:
    path = tmp_path / "mlship.toml"
    path.write_text('[[models]]\nbundle = "dist/fraud-1"\n')
    assert service_file(read_service(path)) == path


def test_serve_refuses_a_bundle_whose_runtime_predates_multi_model_serving(
        cli: Any, fraud: list[Path], bundle_as: Make, execve: Exec) -> None:
    import hashlib
    import json

    old = bundle_as("old", "old")
    main = old / "mlship_runtime" / "__main__.py"
    main.write_text(main.read_text().replace("--listen-fd", "--not-known"))
    manifest = json.loads((old / "mlship.json").read_text())
    manifest["artifacts"]["mlship_runtime/__main__.py"] = hashlib.sha256(main.read_bytes()).hexdigest()
    (old / "mlship.json").write_text(json.dumps(manifest))
    result = cli("serve", fraud[0], old, "--port", str(free_port()))
    assert (result.exit_code, result.output) == (
        1, f"error: model old 0.1.0 ({old}) was packaged by an mlship whose runtime cannot run behind a multi-model "
        f"server\nhint: package its notebook again with this mlship (mlship package NOTEBOOK -o {old}), or serve it "
        f"alone: mlship serve {old}\n")
    assert not execve.calls
