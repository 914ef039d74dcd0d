"""The host side of _fresh.py: one fresh interpreter that probes a staged bundle's dependencies and then loads the
finished bundle and replays its golden cases.

The child speaks JSON lines (see _fresh.py); its stderr goes to a file, so a chatty library can never fill a pipe
and stall it, and the file's last lines explain a crash.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import queue
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from ..errors import BundleError
from ..notebook.analyze import CodeIndex, find_candidates, free_names
from ..runtime._contract import CaseResult
from . import _fresh
from ._fresh import import_modules

log = logging.getLogger(__name__)

SCRIPT = Path(_fresh.__file__)
TIMEOUT = 600.0


@dataclass(frozen=True)
class Dependencies:
    """What the captured values and the served code import, as the fresh interpreter resolved it."""

    distributions: dict[str, str]  # distribution name -> installed version
    local: dict[str, str]  # top-level module found beside the notebook -> its file or folder
    unknown: tuple[str, ...] = ()
    preloaded: tuple[str, ...] = ()  # the packages the probing snapshot had imported before (none: it was cold)


def notebook_search_path(notebook_dir: Path) -> list[str]:
    """sys.path entries the kernel had and a fresh interpreter lacks: the notebook's folder, then PYTHONPATH."""
    extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return [str(notebook_dir), *extra]


def preload_order(index: CodeIndex) -> list[str]:
    """The notebook's imported top-level modules, those the model's construction reaches first: the names the
    inference-looking calls use (their receiver and arguments), followed through the notebook's definitions to the
    imports. The rest (plotting, metrics) come last. Only an ordering for speed: the fresh interpreter uses a
    pre-import only when the bundle turns out to import it anyway."""
    order: list[str] = []
    for statement in index.statements:
        node = statement.node
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        order += [top for top in (n.split(".")[0] for n in names) if top not in order]
    reached: set[str] = set()
    todo = [name for c in find_candidates(index) for node in (c.call.func, *c.call.args) for name in _names(node)]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        definition = index.definitions.get(name)
        if name in seen or definition is None:
            continue
        seen.add(name)
        if definition.kind == "import":
            reached |= {m.split(".")[0] for m in import_modules(definition.source)}
        else:
            try:
                todo.extend(free_names(definition.statement.segment()))
            except SyntaxError:
                continue
    return [m for m in order if m in reached] + [m for m in order if m not in reached]


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


class ChildFailed(Exception):
    """The child ended without answering; `tail` holds the last lines it wrote to stderr."""

    def __init__(self, tail: list[str]) -> None:
        super().__init__("\n".join(tail))
        self.tail = tail


class FreshInterpreter:
    """`python _fresh.py BUNDLE` started in `cwd`, with no PYTHONPATH: a process that never saw the notebook.

    `search_path` (see notebook_search_path) readies it to probe; `preload` (see preload_order) are the packages
    it may pre-import in snapshots while the notebook runs (see _fresh.py: only those the bundle imports anyway are
    ever used). Use as a context manager; the process, and every process it started, is stopped on exit."""

    def __init__(self, python: str, bundle: Path, *, cwd: Path, search_path: list[str] | None = None,
                 preload: list[str] | None = None, timeout: float = TIMEOUT) -> None:
        self.python = python
        self.bundle = bundle
        self.timeout = timeout
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        # No bytecode read from or written into the bundle (the child imports the bundle's code through mlship's
        # own runtime/_boot.py, from digest-checked sources).
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        self._stderr: IO[bytes] = tempfile.TemporaryFile()
        args = [python, "-B", str(SCRIPT), str(bundle)]
        if preload and search_path is not None:
            args += ["--preload", ",".join(preload)]
        if search_path is not None:
            args += ["--probe", *search_path]
        self._proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, cwd=str(cwd), env=env,
            text=True, encoding="utf-8",
            # Its own process group: whatever happens, the child and its snapshots can be ended together.
            start_new_session=hasattr(os, "killpg"),
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
            self._kill()
        self._kill_group()  # normally empty: the child collects its snapshots before it exits
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
        return Dependencies(dict(answer["distributions"]), dict(answer["local"]), tuple(answer["unknown"]),
                            tuple(answer.get("preloaded", ())))

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
            self._kill()
            raise BundleError(
                f"the fresh Python ({self.python}) checking the bundle did not answer within {self.timeout:.0f} s",
                hint="loading the captured objects hangs outside the kernel; run with MLSHIP_DEBUG=1",
            ) from None
        if line is None:
            self._proc.wait()
            raise ChildFailed(self._tail())
        return json.loads(line)

    def _kill(self) -> None:
        self._kill_group()
        self._proc.kill()
        self._proc.wait()

    def _kill_group(self) -> None:
        if hasattr(os, "killpg"):
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def _tail(self) -> list[str]:
        self._stderr.seek(0)
        text = self._stderr.read().decode("utf-8", "replace")
        log.debug("the fresh interpreter's stderr:\n%s", text)
        return text.strip().splitlines() or ["(no output)"]
