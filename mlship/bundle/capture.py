"""Packaging, step one: run the notebook in a kernel and take from it everything the bundle needs, as one value.

The kernel is the slow outside world (a real Jupyter kernel, seconds to start); the writer (writer.py) only turns
the Capture into files, so it is unit-tested with a fake one.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import ExtractionError
from ..notebook.analyze import CodeIndex, index_cells
from ..notebook.execute import KernelCodeError, KernelSession, ProgressCallback
from ..notebook.extract import Choices, CodePlan, ServePlan, choose, plan_code
from ..notebook.inspector import GoldenRecord, KernelInspector, KernelPython
from ..notebook.read import Notebook
from ..runtime._contract import Source

log = logging.getLogger(__name__)

StepCallback = Callable[[str], None]


@dataclass(frozen=True)
class Capture:
    """What the notebook's kernel said about the served path: the code to emit, the values captured by value
    (pickled into `values`, None when there are none or nothing was written), the sample's schema and golden
    cases, and the interpreter the bundle was made with. `requirements` are the pins asked for (config, then
    --requirement), applied over what the fresh interpreter finds."""

    name: str
    version: str
    source: Source
    notebook_dir: Path
    plan: ServePlan
    code: CodePlan
    golden: GoldenRecord
    python: KernelPython
    values: Path | None
    requirements: tuple[str, ...] = ()


@dataclass(frozen=True)
class CaptureRequest:
    """How to run and read the notebook: the merged choices and the kernel settings."""

    choices: Choices
    kernel: str | None = None
    timeout: int = 600
    sample_rows: int = 5
    name: str = ""
    version: str = "0.1.0"
    requirements: tuple[str, ...] = ()


class NotebookKernel:
    """A kernel that runs one notebook and is then asked what to serve (see open_kernel)."""

    def __init__(self, notebook: Notebook, request: CaptureRequest, session: KernelSession,
                 timings: dict[str, float], index: Future[CodeIndex]) -> None:
        self.notebook = notebook
        self.request = request
        self.session = session
        self.timings = timings
        self.index = index

    def executable(self) -> str:
        """The kernel's interpreter, asked without leaving a name in the notebook's namespace."""
        lines = self.session.run("print(__import__('sys').executable)").strip().splitlines()
        return lines[-1] if lines else sys.executable

    def capture(self, values: Path | None, on_step: StepCallback | None = None) -> Capture:
        """Run the notebook, then capture its served path; the captured values are pickled into `values`
        (None: only checked)."""
        step = on_step or log.info
        step("running the notebook")
        self.session.run_notebook()
        self.timings["notebook"] = self.session.execution_seconds
        mark = time.perf_counter()
        inspector = KernelInspector.install(self.session)
        step("choosing what to serve")
        capture = capture_served_path(self.notebook, self.request, self.index.result(), inspector, values, step)
        self.timings["capture"] = time.perf_counter() - mark
        return capture

    def stop(self) -> None:
        """Let the kernel shut down while the caller goes on (see KernelSession.request_stop)."""
        self.session.request_stop()


@contextmanager
def open_kernel(notebook: Notebook, request: CaptureRequest, *, on_progress: ProgressCallback | None = None,
                timings: dict[str, float] | None = None) -> Iterator[NotebookKernel]:
    """Start the kernel for `notebook`; it is stopped when the block ends. `timings` gets kernel_start and
    kernel_stop, and from NotebookKernel.capture notebook and capture (seconds)."""
    timings = {} if timings is None else timings
    started = time.perf_counter()
    session = KernelSession(notebook, kernel=request.kernel, timeout=request.timeout, on_progress=on_progress)
    try:
        with ThreadPoolExecutor(1) as pool:
            # The static analysis (and importing IPython's transformer for it) overlaps the kernel's start.
            index = pool.submit(_prepare, notebook)
            with session:
                timings["kernel_start"] = time.perf_counter() - started
                yield NotebookKernel(notebook, request, session, timings, index)
                mark = time.perf_counter()
            timings["kernel_stop"] = time.perf_counter() - mark
    except KernelCodeError as exc:
        raise ExtractionError(f"inspecting the notebook's objects failed: {exc.ename}: {exc.evalue}") from None


def _prepare(notebook: Notebook) -> CodeIndex:
    index = index_cells(notebook.cells)
    import jinja2  # noqa: F401 - imported here, off the critical path, for rendering predictor.py later

    return index


def capture_served_path(notebook: Notebook, request: CaptureRequest, index: CodeIndex, inspector: KernelInspector,
                        values: Path | None, step: StepCallback = log.info) -> Capture:
    """Ask the kernel (through `inspector`, after the notebook ran) what to serve and record it: the plan, the
    code, the golden cases, the interpreter, and the captured values pickled into `values`."""
    plan = choose(index, request.choices, inspector)
    code = plan_code(index, plan, inspector)
    step("recording golden cases")
    golden = inspector.golden(plan, request.sample_rows)
    for method in golden.dropped:
        plan.methods.pop(method, None)
    python = inspector.python()
    step("serializing the model in the kernel")
    values = values if code.by_value else None
    inspector.serialize(code, values)
    code = _define_main_references(index, plan, code, inspector, values)
    return Capture(
        name=request.name,
        version=request.version,
        source=Source(notebook.path.name, notebook.sha256),
        notebook_dir=notebook.path.parent,
        plan=plan,
        code=code,
        golden=golden,
        python=python,
        values=values,
        requirements=request.requirements,
    )


def _define_main_references(index: CodeIndex, plan: ServePlan, code: CodePlan, inspector: KernelInspector,
                            values: Path | None) -> CodePlan:
    """Load the pickled values back in the kernel to find the notebook classes and functions they look up in
    `__main__` (pickled by reference by a library: skorch, torch.save, joblib inside a __getstate__); the served
    code then defines them before loading the values. Their source may need more captured values: pickle again."""
    if not code.by_value:
        return code
    main_names: list[str] = []
    for _ in range(4):  # each round can only add names; real notebooks settle in one or two
        found = [ref.name for ref in inspector.main_references(code, values)]
        if set(found) <= set(main_names):
            return code
        main_names += [name for name in found if name not in main_names]
        replanned = plan_code(index, plan, inspector, main_names)
        if replanned.by_value == code.by_value:
            return replanned  # the same values: the same pickle, nothing new to look up
        inspector.serialize(replanned, values)
        code = replanned
    return code
