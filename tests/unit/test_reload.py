"""`mlship reload`'s refusals before any signal is sent, and what the front's reload decides without processes
(the reloads themselves: tests/e2e/test_service_reload.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from mlship.errors import MlshipError
from mlship.reload import reload_service
from mlship.runtime._contract import GoldenCase
from mlship.runtime._reload import Outcome, _defaults, over_http
from mlship.runtime._routes import RouteTable


def refusal(tmp_path: Path, pid_text: str | None, *, explicit: bool = True) -> MlshipError:
    service = tmp_path / "mlship.toml"
    service.write_text("")
    pid_file = tmp_path / "server.pid"
    if pid_text is not None:
        pid_file.write_text(pid_text)
    with pytest.raises(MlshipError) as caught:
        reload_service(service, pid_file=pid_file if explicit else None, timeout=1)
    return caught.value


def test_a_missing_pid_file_means_no_server(tmp_path: Path) -> None:
    error = refusal(tmp_path, None)
    assert error.message.startswith(f"no mlship server is running for {tmp_path / 'mlship.toml'} (no pid file")
    assert error.hint is not None and "--pid-file" in error.hint


def test_a_missing_default_pid_file_says_how_to_reach_a_server_that_could_not_write_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    error = refusal(tmp_path, None, explicit=False)
    assert error.hint is not None and "kill -HUP PID" in error.hint and "MLSHIP_PID_FILE" in error.hint


def test_without_a_temporary_directory_reload_says_how_to_find_the_server(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def nowhere() -> str:
        raise FileNotFoundError(2, "No usable temporary directory found")

    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(tempfile, "gettempdir", nowhere)
    error = refusal(tmp_path, None, explicit=False)
    assert error.message == (f"cannot find the server of {tmp_path / 'mlship.toml'}: there is no $XDG_RUNTIME_DIR "
                             "and no writable temporary directory, so it has no pid file to be found by")
    assert error.hint is not None and "kill -HUP PID" in error.hint and "MLSHIP_PID_FILE" in error.hint
    assert "--pid-file" in error.hint


def test_a_pid_file_without_a_number_is_named(tmp_path: Path) -> None:
    error = refusal(tmp_path, "not-a-pid\n")
    assert error.message == f"the pid file {tmp_path / 'server.pid'} does not hold a process id ('not-a-pid')"


def test_a_stale_pid_file_names_the_process_that_is_gone(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    error = refusal(tmp_path, f"{gone.pid}\n")
    assert f"the pid file names process {gone.pid}, which is not running" in error.message


def test_a_pid_that_is_not_a_front_is_never_signalled(tmp_path: Path) -> None:
    error = refusal(tmp_path, f"{os.getpid()}\n")  # this test process: alive, and no mlship server
    assert f"the pid file names process {os.getpid()}, which is not an mlship server" in error.message


class _Backend:
    def __init__(self, name: str, version: str) -> None:
        self.name, self.version = name, version


def test_a_default_that_failed_to_start_keeps_the_previous_default() -> None:
    old = RouteTable({("fraud", "1.0.0"): _Backend("fraud", "1.0.0")}, {"fraud": "1.0.0"})  # type: ignore[dict-item]
    served = {("fraud", "1.0.0"): old.backends[("fraud", "1.0.0")],
              ("churn", "0.2.0"): _Backend("churn", "0.2.0"), ("churn", "0.3.0"): _Backend("churn", "0.3.0")}
    # fraud 2.0.0 was declared the default but failed; churn's default is served
    defaults = _defaults({"fraud": "2.0.0", "churn": "0.3.0"}, served, old)  # type: ignore[arg-type]
    assert defaults == {"fraud": "1.0.0", "churn": "0.3.0"}


def test_the_summary_says_what_changed_and_what_failed() -> None:
    outcome = Outcome(3, "partial", added=["churn 0.2.0"], removed=["fraud 0.9.0"],
                      failed={"fraud 2.0.0": "golden case predict-0 does not match: at [0]: expected 1, got 0"})
    assert outcome.summary() == ("added churn 0.2.0; removed fraud 0.9.0; fraud 2.0.0 FAILED (golden case "
                                 "predict-0 does not match: at [0]: expected 1, got 0); nothing of it takes traffic")
    assert Outcome(4, "invalid", error="bad TOML").summary() == "refused: bad TOML; nothing changed"
    assert Outcome(5, "unchanged").summary() == "nothing changed"


_CASES = [GoldenCase(f"{method}-{index}", method, [[index]], [0]) for method in ("predict", "predict_proba")
          for index in range(3)]


def _reported(*startup: str) -> dict[str, Any]:
    """A backend's /metadata `golden` list: each case's id and its start-up result, in order."""
    return {"golden": [{"id": case.id, "method": case.method, "rows": 1, "startup": result}
                       for case, result in zip(_CASES, startup, strict=True)]}


def test_a_backend_that_passed_every_case_at_start_up_answers_one_per_method_over_http() -> None:
    assert [case.id for case in over_http(_CASES, _reported(*["passed"] * 6))] == ["predict-0", "predict_proba-0"]


def test_cases_a_backend_did_not_report_passed_go_over_http_too() -> None:
    # A bundle whose runtime replays one case at start-up reports the others "not replayed".
    old_runtime = _reported("passed", "not replayed", "not replayed", "not replayed", "not replayed", "not replayed")
    assert over_http(_CASES, old_runtime) == _CASES
    one_failed = _reported("passed", "passed", "failed", "passed", "passed", "passed")
    assert [case.id for case in over_http(_CASES, one_failed)] == ["predict-0", "predict-2", "predict_proba-0"]


_ALL_PASSED = _reported(*["passed"] * 6)["golden"]


@pytest.mark.parametrize("metadata", [None, {}, {"golden": "passed"}, {"golden": _ALL_PASSED[::-1]},
                                      {"golden": _ALL_PASSED[:5]}])
def test_without_a_report_that_matches_the_cases_every_case_goes_over_http(metadata: dict[str, Any] | None) -> None:
    assert over_http(_CASES, metadata) == _CASES
