"""The table of build targets (mlship/targets/__init__.py) and the `mlship build` command derived from it."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import mlship.targets as targets
from mlship.errors import BuildError
from mlship.targets import TARGETS, all_options, get_target
from mlship.targets.docker import DockerOptions
from mlship.targets.onprem import OnpremOptions
from mlship.targets.options import BuildOptions, Option, Target

ROOT = Path(__file__).resolve().parents[3]


def _field_default(options_type: type[BuildOptions], name: str) -> Any:
    field = next(f for f in dataclasses.fields(options_type) if f.name == name)
    return field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default


@pytest.mark.parametrize("target", TARGETS.values(), ids=list(TARGETS))
def test_every_target_is_declared_and_documented(target: Target) -> None:
    assert TARGETS[target.name] is target and target.summary and target.options
    target.check()
    docs = (ROOT / target.docs).read_text(encoding="utf-8")
    assert f"--target {target.name}" in docs
    for option in target.options:
        assert option.help and option.flag.startswith("--")
        assert option.flag in docs, f"{target.docs} does not document {option.flag}"
        if option.envvar:
            assert option.envvar in docs, f"{target.docs} does not name {option.envvar}"
            assert option.help_text.endswith(f"[env var: {option.envvar}]")


@pytest.mark.parametrize("target", TARGETS.values(), ids=list(TARGETS))
def test_the_command_line_default_is_the_options_default(target: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLSHIP_WHEEL_CACHE", raising=False)
    for option in target.options:
        assert option.value(option.default) == _field_default(target.options_type, option.field), option.flag
    assert target.make_options({}) == target.options_type()


def test_options_reach_their_target_converted() -> None:
    docker = get_target("docker").make_options(
        {"tag": ["a:1", "b:2"], "no_test": True, "push": True, "platform": "linux/arm64"},
        typed=["tag", "no_test", "push", "platform"], others=TARGETS)
    assert isinstance(docker, DockerOptions)
    assert docker.tags == ["a:1", "b:2"] and docker.test is False and docker.push and docker.platform == "linux/arm64"
    onprem = get_target("onprem").make_options({"output": Path("out")}, typed=["output"], others=TARGETS)
    assert onprem == OnpremOptions(output=Path("out"))


@pytest.mark.parametrize(("target", "param", "message", "hint"), [
    ("onprem", "push", "--push is only for --target docker, not --target onprem",
     "drop --push, or build with --target docker"),
    ("onprem", "builder", "--builder is only for --target docker, not --target onprem",
     "drop --builder, or build with --target docker"),
])
def test_an_option_of_another_target_is_refused(target: str, param: str, message: str, hint: str) -> None:
    with pytest.raises(BuildError) as info:
        get_target(target).make_options({param: "x"}, typed=[param], others=TARGETS)
    assert (info.value.message, info.value.hint, info.value.exit_code) == (message, hint, 2)


def test_an_env_var_of_another_target_is_ignored() -> None:
    # MLSHIP_BASE_IMAGE exported for docker builds must not break an onprem build in the same shell.
    assert get_target("onprem").make_options({"base_image": "x"}, typed=[], others=TARGETS) == OnpremOptions()


def test_an_unknown_target_names_the_known_ones() -> None:
    with pytest.raises(BuildError, match="unknown target 'k9s'") as info:
        get_target("k9s")
    assert info.value.hint == "use " + " or ".join(f"--target {name}" for name in TARGETS)


def test_the_cli_is_derived_from_the_table(cli: Any) -> None:
    import typer.main

    from mlship.cli import app

    command = typer.main.get_command(app).commands["build"]  # type: ignore[attr-defined]
    params = {p.name: p for p in command.params}
    assert list(params["target"].metavar.split("|")) == list(TARGETS)
    declared = {option.param for option, _ in all_options()}
    assert declared == set(params) - {"notebook", "target", "bundle", "as_json"}
    for option, _owners in all_options():
        assert tuple(params[option.param].opts + params[option.param].secondary_opts) == option.flags
    result = cli("build", "--help")
    assert result.exit_code == 0
    for name, target in TARGETS.items():
        assert f"--target {name}: {target.summary}" in " ".join(result.output.split())
        # A panel per set of owners: "Options of --target docker and onprem and k8s" lists the shared ones.
        assert re.search(rf"Options of --target (?:\w+ and )*{name}\b", result.output), name


def test_the_cli_refuses_an_option_for_another_target(cli: Any, tmp_path: Path) -> None:
    result = cli("build", "--target", "onprem", "--push", "--bundle", tmp_path)
    assert result.exit_code == 2
    assert "error: --push is only for --target docker, not --target onprem" in result.output
    assert "hint: drop --push, or build with --target docker" in result.output


def test_the_cli_ignores_an_env_var_for_another_target(cli: Any, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLSHIP_BASE_IMAGE", "never-used:1")
    result = cli("build", "--target", "onprem", "--bundle", tmp_path / "absent")
    assert result.exit_code == 1 and "error: " in result.output and "--base-image" not in result.output


def _fake(name: str, *options: Option) -> Target:
    return Target(name, "a fake", "docs/BUILD.md", options, BuildOptions, lambda bundle, options: None)  # type: ignore[arg-type,return-value]


def test_targets_share_an_option_declared_the_same_way(monkeypatch: pytest.MonkeyPatch) -> None:
    shared = Option("on_step", ("--same",), str | None, "one")
    monkeypatch.setattr(targets, "TARGETS", {"a": _fake("a", shared),
                                             "b": _fake("b", dataclasses.replace(shared, help="two"))})
    [(option, owners)] = all_options()
    assert owners == ("a", "b") and option.help == "a: one; b: two"
    monkeypatch.setattr(targets, "TARGETS", {"a": _fake("a", shared),
                                             "b": _fake("b", dataclasses.replace(shared, default="out"))})
    [(option, owners)] = all_options()
    assert option.help == "a: one; b: one (default out)" and option.default is None
    monkeypatch.setattr(targets, "TARGETS", {"a": _fake("a", shared), "b": _fake("b", shared)})
    assert all_options() == [(shared, ("a", "b"))]
    monkeypatch.setattr(targets, "TARGETS", {"a": _fake("a", shared),
                                             "b": _fake("b", dataclasses.replace(shared, type=int))})
    with pytest.raises(TypeError, match="targets a and b declare --same differently"):
        all_options()


def test_an_option_must_set_a_field_of_its_options_type() -> None:
    with pytest.raises(TypeError, match="sets 'nothing', which BuildOptions does not have"):
        _fake("a", Option("nothing", ("--nothing",), bool, "x")).check()


def test_declaring_the_targets_stays_cheap() -> None:
    # `mlship --help` imports the table: the build steps' modules load only when a build starts.
    code = ("import sys, json, mlship.targets; print(json.dumps(sorted(m for m in ('tarfile', 'urllib.request', "
            "'jinja2', 'docker', 'mlship.runtime._contract', 'mlship.targets._docker_build', "
            "'mlship.targets._onprem_build') if m in sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(proc.stdout) == []
