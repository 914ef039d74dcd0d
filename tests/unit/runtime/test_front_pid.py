"""The front's pid file (how `mlship reload` finds the front): where it goes, and a front with nowhere to write one
(a read-only root without a writable /tmp, or an unwritable path) that serves anyway and says in one log line how
to reach it. The server itself is replaced: only what serve_service decides before it runs is under test."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mlship.runtime import _front
from mlship.runtime._front import pid_file_for, serve_service, shadow_log_for


class _Ran:
    """Stands in for FrontServer: records the front it was given (and the text of `watched`, the pid file, while it
    runs) and returns at once, closing the backends' sockets (the real one stops its backends)."""

    fronts: list[Any] = []
    watched: Path | None = None
    pid_text: list[str] = []

    def __init__(self, config: Any, front: Any) -> None:
        self.front = front
        self.started = False

    def run(self) -> None:
        self.fronts.append(self.front)
        if self.watched is not None:
            self.pid_text.append(self.watched.read_text())
        for backend in self.front.table.backends.values():
            for sock in backend.sockets:
                sock.close()
        self.started = True


@pytest.fixture
def no_temporary_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    """What tempfile says when none of TMPDIR, /tmp, /var/tmp, /usr/tmp and the working directory is writable."""
    def nowhere() -> str:
        raise FileNotFoundError(2, "No usable temporary directory found in ['/tmp', '/var/tmp', '/usr/tmp', '/']")

    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.delenv("MLSHIP_SHADOW_LOG", raising=False)
    monkeypatch.setattr(tempfile, "gettempdir", nowhere)


@pytest.fixture
def served(sample_bundle: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
           caplog: pytest.LogCaptureFixture) -> Callable[[Path | None], tuple[int, Any, list[str]]]:
    """serve_service on a one-model service file with the server replaced: (exit code, the front, the pid-file
    log lines)."""
    service = tmp_path / "mlship.toml"
    service.write_text(f'[service]\nname = "scoring"\n\n[[models]]\nbundle = "{sample_bundle("iris_frame")}"\n')
    monkeypatch.setattr(_front, "FrontServer", _Ran)
    monkeypatch.setattr(_Ran, "fronts", [])
    monkeypatch.setattr(_Ran, "pid_text", [])

    def serve(pid_file: Path | None) -> tuple[int, Any, list[str]]:
        with caplog.at_level(logging.INFO):
            code = serve_service(service, host="127.0.0.1", port=8080, workers=1, log_level="info",
                                 pid_file=pid_file)
        lines = [r.getMessage() for r in caplog.records if r.name == _front.logger.name and "pid" in r.getMessage()]
        assert len(_Ran.fronts) == 1, "the front did not run"
        return code, _Ran.fronts[0], lines

    return serve


def test_the_pid_file_is_in_the_runtime_directory_one_per_service_file(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    first, second = pid_file_for(tmp_path / "a.toml"), pid_file_for(tmp_path / "b.toml")
    assert first is not None and second is not None and first != second
    assert first.parent == tmp_path and first.name.startswith("mlship-") and first.suffix == ".pid"
    assert pid_file_for(tmp_path / "a.toml") == first


@pytest.mark.usefixtures("no_temporary_directory")
def test_without_a_temporary_directory_there_is_no_pid_file_and_no_shadow_log_beside_it(tmp_path: Path) -> None:
    assert pid_file_for(tmp_path / "mlship.toml") is None
    assert shadow_log_for(None) is None


@pytest.mark.usefixtures("no_temporary_directory")
def test_the_front_serves_without_a_pid_file_and_says_how_to_reach_it(
        served: Callable[[Path | None], tuple[int, Any, list[str]]]) -> None:
    code, front, lines = served(None)
    assert code == 0
    assert front.reloader.status_file is None and front.shadow_log.path is None
    assert lines == [f"no pid file (no $XDG_RUNTIME_DIR and no writable temporary directory): `mlship reload` "
                     f"cannot find this server: send SIGHUP to pid {os.getpid()} to reload it, or set "
                     "MLSHIP_PID_FILE (--pid-file) to a writable path"]


def test_a_pid_file_that_cannot_be_written_is_one_warning(
        served: Callable[[Path | None], tuple[int, Any, list[str]]], tmp_path: Path) -> None:
    unwritable = tmp_path / "missing" / "front.pid"
    code, _, lines = served(unwritable)
    assert code == 0 and not unwritable.exists()
    assert len(lines) == 1 and lines[0].startswith(f"cannot write the pid file {unwritable} (")
    assert f"send SIGHUP to pid {os.getpid()}" in lines[0] and "MLSHIP_PID_FILE" in lines[0]


def test_a_written_pid_file_holds_the_pid_while_serving_and_is_removed_after(
        served: Callable[[Path | None], tuple[int, Any, list[str]]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    pid_file = tmp_path / "front.pid"
    monkeypatch.setattr(_Ran, "watched", pid_file)
    code, front, lines = served(pid_file)
    assert code == 0 and lines == [] and _Ran.pid_text == [f"{os.getpid()}\n"] and not pid_file.exists()
    assert front.reloader.status_file == tmp_path / "front.pid.reload.json"
