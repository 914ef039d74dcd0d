"""The CLI's own messages (issue 16): each test asserts the command's whole output, as hatch's tests do."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mlship.cli import app

HINT_BUNDLE = "hint: pass the directory `mlship package` wrote (e.g. dist/iris)\n"


def test_serve_a_path_that_does_not_exist(cli: Any, tmp_path: Path) -> None:
    result = cli("serve", "dist/nope", cwd=tmp_path)
    assert (result.exit_code, result.output) == (1, f"error: {tmp_path}/dist/nope does not exist\n" + HINT_BUNDLE)


def test_serve_a_folder_of_bundles_names_them(cli: Any, tmp_path: Path) -> None:
    for name in ("iris", "churn"):
        (tmp_path / "dist" / name).mkdir(parents=True)
        (tmp_path / "dist" / name / "mlship.json").write_text("{}")
    result = cli("serve", "dist", cwd=tmp_path)
    dist = tmp_path / "dist"
    assert (result.exit_code, result.output) == (
        1,
        f"error: {dist} is not an mlship bundle; it holds 2 bundles: {dist}/churn, {dist}/iris\n"
        f"hint: pass one of them, e.g. {dist}/churn\n",
    )
    (dist / "churn" / "mlship.json").unlink()
    result = cli("serve", "dist", cwd=tmp_path)
    assert (result.exit_code, result.output) == (
        1, f"error: {dist} is not an mlship bundle; it holds the bundle {dist}/iris\nhint: pass it, e.g. {dist}/iris\n"
    )


def test_serve_a_folder_that_is_no_bundle(cli: Any, tmp_path: Path) -> None:
    result = cli("serve", tmp_path)
    assert (result.exit_code, result.output) == (
        1, f"error: {tmp_path} is not an mlship bundle: mlship.json is missing\n" + HINT_BUNDLE
    )


def test_serve_on_a_port_in_use_says_so_before_announcing(cli: Any, sample_bundle: Callable[[str], Path]) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = cli("serve", sample_bundle("iris_frame"), "--port", str(port))
    assert (result.exit_code, result.output) == (
        1,
        f"error: cannot serve on 127.0.0.1 port {port}: another process is listening on it\n"
        f"hint: stop that process, or pass another port, e.g. --port {port + 1}\n",
    )


def test_serve_on_a_host_that_is_not_this_machine(cli: Any, sample_bundle: Callable[[str], Path]) -> None:
    result = cli("serve", sample_bundle("iris_frame"), "--host", "192.0.2.1")  # TEST-NET-1: no machine has it
    assert (result.exit_code, result.output) == (
        1,
        "error: cannot serve on 192.0.2.1 port 8080: Cannot assign requested address\n"
        "hint: pass --host an address of this machine, e.g. 127.0.0.1, or 0.0.0.0 for every interface\n",
    )


@pytest.mark.parametrize("command", ["package", "inspect", "build"])
def test_a_folder_with_several_notebooks_names_them(cli: Any, tmp_path: Path, command: str) -> None:
    for name in ("train.ipynb", "explore.ipynb"):
        (tmp_path / name).write_text("{}")
    result = cli(command, tmp_path)
    assert (result.exit_code, result.output) == (
        1,
        f"error: {tmp_path} holds 2 notebooks: explore.ipynb, train.ipynb\n"
        f"hint: pass the one to package, e.g. mlship package {tmp_path}/explore.ipynb\n",
    )


def test_a_folder_without_notebooks(cli: Any, tmp_path: Path) -> None:
    result = cli("package", tmp_path)
    assert (result.exit_code, result.output) == (
        1,
        f"error: {tmp_path} is a folder with no notebook (.ipynb) in it\n"
        "hint: pass the notebook to package, e.g. mlship package path/to/model.ipynb\n",
    )


def test_a_folder_of_project_folders_names_their_notebooks(cli: Any, tmp_path: Path) -> None:
    for name in ("iris", "churn"):
        (tmp_path / name).mkdir()
        (tmp_path / name / f"{name}.ipynb").write_text("{}")
    result = cli("package", tmp_path)
    assert (result.exit_code, result.output) == (
        1,
        f"error: {tmp_path} holds no notebook itself; its folders hold churn/churn.ipynb, iris/iris.ipynb\n"
        f"hint: pass one of them, e.g. mlship package {tmp_path}/churn\n",
    )


def test_a_folder_with_one_notebook_reads_it(cli: Any, tmp_path: Path) -> None:
    # Not valid JSON: the error shows the folder's notebook was taken, and no kernel starts.
    (tmp_path / "model.ipynb").write_text("not json")
    result = cli("package", tmp_path)
    assert result.exit_code == 1
    assert result.output == (
        f"error: {tmp_path}/model.ipynb is not a notebook: it is not valid JSON (Expecting value: line 1 column 1 "
        "(char 0))\nhint: pass the .ipynb file saved by Jupyter, not a script or an export\n"
    )


def test_predict_bad_format_has_a_hint(cli: Any, sample_bundle: Callable[[str], Path], tmp_path: Path) -> None:
    result = cli("predict", sample_bundle("iris_frame"), "-i", tmp_path / "in.csv", "-o", tmp_path / "out.txt",
                 "--format", "xlsx")
    assert (result.exit_code, result.output) == (
        2,
        "error: --format must be csv, jsonl or parquet, got 'xlsx'\n"
        "hint: pass --format csv, --format jsonl or --format parquet, or leave it out\n",
    )


USAGE = {
    "package": "Usage: mlship package [OPTIONS] NOTEBOOK",
    "inspect": "Usage: mlship inspect [OPTIONS] NOTEBOOK",
    "serve": "Usage: mlship serve [OPTIONS] BUNDLE...",
    "verify": "Usage: mlship verify [OPTIONS] BUNDLE",
    "predict": "Usage: mlship predict [OPTIONS] BUNDLE",
    "sign": "Usage: mlship sign [OPTIONS] BUNDLE",
    "keygen": "Usage: mlship keygen [OPTIONS]",
    "build": "Usage: mlship build [OPTIONS] [NOTEBOOK|mlship.toml]",
    "base-image": "Usage: mlship base-image [OPTIONS] [TAG]",
}


@pytest.mark.parametrize("command", sorted(USAGE))
def test_help_reads_like_click(command: str) -> None:
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, [command, "--help"], prog_name="mlship", terminal_width=200)
    assert result.exit_code == 0, result.output
    lines = [line.strip() for line in result.output.splitlines() if line.strip()]
    assert lines[0] == USAGE[command]
    for typer_ism in ("<bool>", "{", "<list["):
        assert typer_ism not in result.output, f"{command} --help shows {typer_ism}:\n{result.output}"
    if command == "build":
        assert "docker|onprem" in result.output  # --target shows its choices
        assert "Build a bundle (NOTEBOOK packaged first, or --bundle)" in result.output


def test_root_help_usage() -> None:
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["--help"], prog_name="mlship")
    assert result.output.splitlines()[1].strip() == "Usage: mlship [OPTIONS] COMMAND [ARGS]..."
    assert "<bool>" not in result.output


def test_not_a_terminal_is_not_cut_at_80_columns(capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from mlship.console import UNBOUNDED_WIDTH, _make
    from mlship.runtime._contract import CaseResult

    out = _make(stderr=False)  # stdout is pytest's capture here: not a terminal
    assert out.width == UNBOUNDED_WIDTH
    import mlship.report as report

    long_id = "predict_log_proba_row_4_of_the_sample"
    case = CaseResult(id=long_id, method="predict_log_proba", ok=True, detail="", expected=[-0.01] * 3,
                      actual=[-0.01] * 3)
    monkeypatch.setattr(report, "console", out)
    report.print_cases([case])
    printed = capsys.readouterr().out
    assert long_id in printed and "predict_log_proba " in printed
    assert max(map(len, printed.splitlines())) > 80


# -- pointers name what the reader has ------------------------------------------------------------------------

POINTER = re.compile(r"FIELD-NOTES|field notes|\bissue \d+", re.I)


@pytest.mark.parametrize("command", ["build", "base-image", "compare"])
def test_help_names_docs_the_reader_has(command: str) -> None:
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, [command, "--help"], prog_name="mlship", terminal_width=1000)
    pages = re.findall(r"([^\s(]+\.md)\b", result.output)
    assert pages, result.output
    for page in pages:
        assert Path(page).is_absolute() and Path(page).is_file(), f"{command} --help names {page}"


def test_the_wheel_ships_the_docs_help_names() -> None:
    import tomllib

    from tests.conftest import ROOT

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]
    assert config["wheel"]["force-include"]["docs"] == "mlship/docs"
    assert "docs" in config["sdist"]["include"]


def test_shipped_text_names_no_internal_notes() -> None:
    """What a user reads (the docs, README, templates, and mlship's messages: string literals that are not
    docstrings) names no field notes or issue numbers, and the runtime, which ships alone in images and
    tarballs, no docs/ page."""
    import ast

    from tests.conftest import ROOT

    for path in [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "templates").glob("*")]:
        assert not POINTER.search(path.read_text()), f"{path}: {POINTER.search(path.read_text())}"
    for path in sorted((ROOT / "mlship").rglob("*.py")):
        tree = ast.parse(path.read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
                      and node.body and isinstance(node.body[0], ast.Expr)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                assert not POINTER.search(node.value), f"{path}:{node.lineno}: {node.value}"
                if "runtime" in path.parts:
                    assert "docs/" not in node.value, f"{path}:{node.lineno}: {node.value}"
