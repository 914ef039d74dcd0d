"""The host side of _fresh.py: one fresh interpreter that probes a staged bundle's dependencies and then loads the
finished bundle and replays its golden cases.

The child speaks JSON lines (see _fresh.py); its stderr goes to a file, so a chatty library can never fill a pipe
and stall it, and the file's last lines explain a crash.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from ..errors import BundleError
from ..runtime._contract import CaseResult
from . import _fresh

log = logging.getLogger(__name__)

SCRIPT = Path(_fresh.__file__)
TIMEOUT = 600.0


@dataclass(frozen=True)
class Dependencies:
    """What the captured values and the served code import, as the fresh interpreter resolved it."""

    distributions: dict[str, str]  # distribution name -> installed version
    local: dict[str, str]  # top-level module found beside the notebook -> its file or folder
    unknown: tuple[str, ...] = ()


def notebook_search_path(notebook_dir: Path) -> list[str]:
    """sys.path entries the kernel had and a fresh interpreter lacks: the notebook's folder, then PYTHONPATH."""
    extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return [str(notebook_dir), *extra]


class ChildFailed(Exception):
    """The child ended without answering; `tail` holds the last lines it wrote to stderr."""

    def __init__(self, tail: list[str]) -> None:
        super().__init__("\n".join(tail))
        self.tail = tail


class FreshInterpreter:
    """`python _fresh.py BUNDLE` started in `cwd`, with no PYTHONPATH: a process that never saw the notebook.

    `search_path` (see notebook_search_path) readies it to probe. Use as a context manager; the process is
    stopped on exit."""

    def __init__(self, python: str, bundle: Path, *, cwd: Path, search_path: list[str] | None = None,
                 timeout: float = TIMEOUT) -> None:
        self.python = python
        self.bundle = bundle
        self.timeout = timeout
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        # No bytecode read from or written into the bundle (the child imports the bundle's code through mlship's
        # own runtime/_boot.py, from digest-checked sources).
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        self._stderr: IO[bytes] = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(
            [python, "-B", str(SCRIPT), str(bundle), *([] if search_path is None else ["--probe", *search_path])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._stderr, cwd=str(cwd), env=env, text=True, encoding="utf-8",
        )
        self._answers: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def __enter__(self) -> FreshInterpreter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def finish(self) -> None:
        """No more requests: the child starts exiting (tearing down numpy and friends takes a while), and close()
        only collects it."""
        if self._proc.stdin is not None and not self._proc.stdin.closed:
            try:
                self._proc.stdin.close()
            except OSError:
                pass

    def close(self) -> None:
        self.finish()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._reader.join(timeout=10)
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._stderr.close()

    def probe(self, modules: list[str]) -> Dependencies:
        """Which distributions the staged values.pkl and `modules` need, with the search path in front of
        sys.path; BundleError if the values do not load."""
        return self.start_probe(modules)()

    def start_probe(self, modules: list[str]) -> Callable[[], Dependencies]:
        """Send the probe and return at once; calling the result waits for the answer (see probe)."""
        self._send({"probe": {"modules": modules}})
        return self._probe_answer

    def _probe_answer(self) -> Dependencies:
        try:
            answer = self._receive()
        except ChildFailed as exc:
            raise BundleError(
                f"the captured objects do not load in a fresh Python ({self.python}): {exc.tail[-1]}",
                hint="this is the classic pickle problem: an object refers to something that only existed in the "
                "notebook's session; run with MLSHIP_DEBUG=1 for the full output",
            ) from None
        return Dependencies(dict(answer["distributions"]), dict(answer["local"]), tuple(answer["unknown"]))

    def verify(self, name: str, url: str | None = None) -> list[CaseResult]:
        """Load the bundle with its own runtime and replay every golden case (against `url`, if given)."""
        try:
            self._send({"verify": {"url": url}})
            answer = self._receive()
        except ChildFailed as exc:
            raise BundleError(
                f"loading {self.bundle.name} in a fresh Python failed:\n" + "\n".join(exc.tail[-5:]),
                hint="an object in the bundle needs something that existed only in the notebook's session, or a "
                "package missing from this environment",
            ) from None
        if "error" in answer:
            raise BundleError(
                f"cannot verify {name}: {answer['error']}",
                hint="start the server first (mlship serve BUNDLE) or check --url" if url else
                "package the notebook again; if it keeps failing, run with MLSHIP_DEBUG=1",
            )
        return [CaseResult.from_json(case) for case in answer["cases"]]

    # -- the line protocol -------------------------------------------------------------------------------------

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            if line.startswith(_fresh.MARK):
                self._answers.put(line[len(_fresh.MARK):])
        self._answers.put(None)

    def _send(self, request: dict[str, Any]) -> None:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()
        except OSError:
            pass  # the child is gone: _receive says so

    def _receive(self) -> Any:
        try:
            line = self._answers.get(timeout=self.timeout)
        except queue.Empty:
            self._proc.kill()
            raise BundleError(
                f"the fresh Python ({self.python}) checking the bundle did not answer within {self.timeout:.0f} s",
                hint="loading the captured objects hangs outside the kernel; run with MLSHIP_DEBUG=1",
            ) from None
        if line is None:
            self._proc.wait()
            raise ChildFailed(self._tail())
        return json.loads(line)

    def _tail(self) -> list[str]:
        self._stderr.seek(0)
        text = self._stderr.read().decode("utf-8", "replace")
        log.debug("the fresh interpreter's stderr:\n%s", text)
        return text.strip().splitlines() or ["(no output)"]
