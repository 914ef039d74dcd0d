from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette

from mlship.runtime import __main__ as cli
from mlship.runtime import _verify
from mlship.runtime._app import create_app_from_env
from mlship.runtime._verify import ServerUnreachable

from .sample_bundles import edit_golden, edit_manifest

MakeBundle = Callable[[str], Path]


@pytest.fixture
def uvicorn_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, dict[str, Any]]]:
    calls: list[tuple[Any, dict[str, Any]]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: calls.append((app, options)))
    for name in ("MLSHIP_BUNDLE", "MLSHIP_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)  # so that monkeypatch restores what serve sets
    return calls


def test_verify_prints_a_table(sample_bundle: MakeBundle, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["verify", str(sample_bundle("raises"))]) == 0
    assert capsys.readouterr().out == (
        "case       method   result  detail\npredict-0  predict  ok\n1 of 1 golden cases match\n"
    )


def test_verify_json(sample_bundle: MakeBundle, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = sample_bundle("iris_frame")
    assert cli.main(["verify", str(bundle), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["url"] is None and report["bundle"] == str(bundle)
    assert len(report["cases"]) == 6
    assert report["cases"][0] == {
        "id": "predict-0",
        "method": "predict",
        "ok": True,
        "detail": "",
        "expected": [0],
        "actual": [0],
    }


def test_verify_mismatch_exits_1(make_bundle: MakeBundle, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = make_bundle("raises")
    edit_golden(bundle, lambda golden: golden["cases"][0].update(expected=[3.5]))
    assert cli.main(["verify", str(bundle)]) == 1
    out = capsys.readouterr().out
    assert "predict-0  predict  FAIL    at [0]: expected 3.5, got 3.0" in out
    assert out.endswith("0 of 1 golden cases match\n")


def test_verify_bad_bundle_exits_2_with_the_reason(
    make_bundle: MakeBundle, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = make_bundle("raises")
    edit_manifest(bundle, python={"version": "3.9.1"})
    assert cli.main(["verify", str(bundle), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: the bundle was packaged with Python 3.9.1 and must be served by")
    assert "Traceback" not in captured.err and captured.err.count("\n") == 1


def test_verify_url_unreachable_exits_2(
    sample_bundle: MakeBundle, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def unreachable(url: str, body: Any, timeout: float) -> Any:
        raise ServerUnreachable(f"cannot reach {url}: Connection refused")

    monkeypatch.setattr(_verify, "_post", unreachable)
    assert cli.main(["verify", str(sample_bundle("raises")), "--url", "http://127.0.0.1:9"]) == 2
    assert capsys.readouterr().err == "error: cannot reach http://127.0.0.1:9/predict: Connection refused\n"


def test_serve_one_worker_runs_the_loaded_app(
    sample_bundle: MakeBundle, uvicorn_calls: list[tuple[Any, dict[str, Any]]]
) -> None:
    assert cli.main(["serve", str(sample_bundle("raises")), "--port", "9000"]) == 0
    [(app, options)] = uvicorn_calls
    assert isinstance(app, Starlette)
    assert options == {"host": "127.0.0.1", "port": 9000, "log_level": "info", "loop": "auto", "http": "auto"}


def test_serve_several_workers_uses_the_factory(
    sample_bundle: MakeBundle, uvicorn_calls: list[tuple[Any, dict[str, Any]]]
) -> None:
    bundle = sample_bundle("raises")
    assert (
        cli.main(["serve", str(bundle), "--workers", "3", "--host", "0.0.0.0", "--log-level", "warning"]) == 0
    )
    [(app, options)] = uvicorn_calls
    assert app == "mlship.runtime._app:create_app_from_env"
    assert options == {
        "factory": True,
        "workers": 3,
        "host": "0.0.0.0",
        "port": 8080,
        "log_level": "warning",
        "loop": "auto",
        "http": "auto",
    }
    assert isinstance(create_app_from_env(), Starlette)  # what each worker does, from the environment


def test_factory_needs_the_bundle_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLSHIP_BUNDLE", raising=False)
    with pytest.raises(RuntimeError, match="MLSHIP_BUNDLE is not set"):
        create_app_from_env()


def test_serve_bad_bundle_logs_one_line_and_exits_1(
    make_bundle: MakeBundle, caplog: pytest.LogCaptureFixture, uvicorn_calls: list[tuple[Any, dict[str, Any]]]
) -> None:
    bundle = make_bundle("raises")
    (bundle / "golden.json").write_text("{}")
    with caplog.at_level(logging.INFO):
        assert cli.main(["serve", str(bundle)]) == 1
    [record] = caplog.records
    assert record.levelno == logging.ERROR and record.exc_info is None
    assert record.getMessage().startswith(f"cannot serve {bundle}: artifact golden.json has sha256 ")
    assert uvicorn_calls == []


def test_serve_bad_limit_setting_exits_1(
    sample_bundle: MakeBundle, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLSHIP_MAX_ROWS", "lots")
    assert cli.main(["serve", str(sample_bundle("raises"))]) == 1
    assert caplog.messages[-1].endswith("MLSHIP_MAX_ROWS='lots' is not a whole number")


@pytest.mark.parametrize("argv", [["serve", "b", "--workers", "0"], ["verify"], ["explode", "b"]])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert "usage: python -m mlship_runtime" in capsys.readouterr().err
