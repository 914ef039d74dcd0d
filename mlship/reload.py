"""`mlship reload mlship.toml`: tell the running server of a service file to read it again (SIGHUP), and wait
for what it did (mlship/runtime/_reload.py does the reload itself, inside the front)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import MlshipError
from .runtime._front import pid_file_for
from .runtime._reload import status_file_for

_POLL = 0.1


class NoServerRunning(MlshipError):
    """No mlship server runs for the service file (`mlship promote` then only writes the file)."""


@dataclass(frozen=True)
class ReloadResult:
    """What the server reported (None when not waited for): its `result` and a one-line `summary`."""

    pid: int
    status: dict[str, Any] | None

    @property
    def ok(self) -> bool:
        return self.status is None or self.status.get("result") in ("ok", "unchanged")


def reload_service(service_file: Path, *, pid_file: Path | None = None, wait: bool = True,
                   timeout: float = 300.0) -> ReloadResult:
    """Send SIGHUP to the front serving `service_file` (found through its pid file) and, with `wait`, return the
    outcome it writes beside the pid file. MlshipError when no server runs for the file, or none answered."""
    source = service_file.resolve()
    pid_path = pid_file or pid_file_for(source)
    if pid_path is None:
        raise MlshipError(f"cannot find the server of {source}: there is no $XDG_RUNTIME_DIR and no writable "
                          "temporary directory, so it has no pid file to be found by",
                          hint="send the server SIGHUP yourself (`kill -HUP PID`: its log names its pid), or start "
                          "it with MLSHIP_PID_FILE set to a writable path and give mlship reload the same "
                          "--pid-file (or MLSHIP_PID_FILE)")
    pid = _running_front(source, pid_path, explicit=pid_file is not None)
    status_path = status_file_for(pid_path)
    before = _generation(status_path, pid)
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise _no_server(source, pid_path, f"its process {pid} has just exited") from None
    except PermissionError:
        raise MlshipError(f"not allowed to signal the server of {source} (pid {pid})",
                          hint="run mlship reload as the user that runs the server") from None
    if not wait:
        return ReloadResult(pid, None)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = _read_status(status_path)
        if status is not None and status.get("pid") == pid and int(status.get("generation", 0)) > before:
            return ReloadResult(pid, status)
        if not _alive(pid):
            raise MlshipError(f"the server of {source} (pid {pid}) exited during the reload",
                              hint="its log says why; start it again with `mlship serve` on the file")
        time.sleep(_POLL)
    raise MlshipError(f"sent SIGHUP to the server of {source} (pid {pid}), but it reported no finished reload "
                      f"within {timeout:g} s",
                      hint="its log says what it is doing; POST /v2/repository/index shows each model's state "
                      "(--timeout waits longer)")


def _running_front(source: Path, pid_path: Path, *, explicit: bool) -> int:
    try:
        text = pid_path.read_text().strip()
    except FileNotFoundError:
        raise _no_server(source, pid_path, "no pid file", explicit=explicit) from None
    except OSError as exc:
        raise MlshipError(f"cannot read the pid file {pid_path}: {exc.strerror or exc}",
                          hint="check its permissions, or give the server's pid file with --pid-file") from None
    try:
        pid = int(text.splitlines()[0])
    except (ValueError, IndexError):
        raise MlshipError(f"the pid file {pid_path} does not hold a process id ({text[:40]!r})",
                          hint="give the pid file the server was started with (--pid-file)") from None
    if pid <= 0 or not _alive(pid):
        raise _no_server(source, pid_path, f"the pid file names process {pid}, which is not running",
                         explicit=explicit)
    command = _command_line(pid)
    if command is not None and "serve-service" not in command:
        raise _no_server(source, pid_path, f"the pid file names process {pid}, which is not an mlship server "
                         f"({' '.join(command)[:80]})", explicit=explicit)
    return pid


def _no_server(source: Path, pid_path: Path, why: str, *, explicit: bool = False) -> NoServerRunning:
    hint = (f"start it with `mlship serve {source}`" if not explicit else
            "give the --pid-file the server was started with")
    return NoServerRunning(f"no mlship server is running for {source} ({why}: {pid_path})",
                       hint=hint + "; a server started with --pid-file or MLSHIP_PID_FILE needs the same --pid-file "
                       "here; one that could not write its pid file says so in its log, with the pid to send SIGHUP "
                       "to (`kill -HUP PID`)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _command_line(pid: int) -> list[str] | None:
    """The process's argv, None where /proc cannot tell (not Linux, or hidden)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def _read_status(path: Path) -> dict[str, Any] | None:
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(path.read_text())
        if isinstance(data, dict):
            return data
    return None


def _generation(path: Path, pid: int) -> int:
    """The generation of the last reload this server (pid) reported; 0 before its first."""
    status = _read_status(path)
    if status is None or status.get("pid") != pid:
        return 0
    with contextlib.suppress(TypeError, ValueError):
        return int(status.get("generation", 0))
    return 0
