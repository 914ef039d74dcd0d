"""Run a notebook top to bottom in a real Jupyter kernel (nbclient), then keep the kernel for inspection.

The kernel stays alive after the last cell so that extraction can ask it questions (what is `clf`? what does
`clf.predict(X_test[:5])` return?) and serialize objects *inside* it, where the notebook's classes live.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from ..errors import NotebookError
from .read import Cell, Notebook

log = logging.getLogger(__name__)

# The kernel that runs in mlship's own environment (its interpreter, its packages), whatever kernelspecs exist.
SAME_ENV_KERNEL = "mlship-same-env"
_RESULT_MARK = "\x1emlship-result\x1e"

# Run in the kernel before the notebook. ipykernel names cells after the kernel's pid
# (/tmp/ipykernel_<pid>/<hash>.py); that name is stored in every code object cloudpickle serializes by value, so
# the bundle would change bytes on every run. A name from the cell's content alone keeps the bundle reproducible.
_SETUP_CODE = """
def __mlship_setup():
    import hashlib
    ip = get_ipython()
    def get_code_name(raw_code, transformed_code, number):
        return "<notebook-cell-%s>" % hashlib.sha256(raw_code.encode()).hexdigest()[:12]
    ip.compile.get_code_name = get_code_name
__mlship_setup()
del __mlship_setup
"""

ProgressCallback = Callable[[int, int, Cell, str], None]
"""Called as (position, total, cell, event) with event "start" or "done"."""


class KernelCodeError(Exception):
    """Code mlship sent to the kernel raised; carries the kernel's exception type and message."""

    def __init__(self, ename: str, evalue: str, traceback: str) -> None:
        super().__init__(f"{ename}: {evalue}")
        self.ename = ename
        self.evalue = evalue
        self.traceback = traceback


def _kernel_spec_manager() -> Any:
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager

    class SameEnvSpecs(KernelSpecManager):
        def get_kernel_spec(self, kernel_name: str) -> Any:
            if kernel_name == SAME_ENV_KERNEL:
                return KernelSpec(
                    argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                    display_name=f"Python {sys.version.split()[0]} (mlship)",
                    language="python",
                    resource_dir="",
                )
            return super().get_kernel_spec(kernel_name)

    return SameEnvSpecs()


def available_kernels() -> list[str]:
    from jupyter_client.kernelspec import KernelSpecManager

    return sorted(KernelSpecManager().find_kernel_specs())


class KernelSession:
    """A kernel running one notebook. Use as a context manager: the kernel shuts down on exit."""

    def __init__(
        self,
        notebook: Notebook,
        *,
        kernel: str | None = None,
        timeout: int = 600,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        self.notebook = notebook
        self.kernel = kernel or SAME_ENV_KERNEL
        self.timeout = timeout
        self.on_progress = on_progress
        self.execution_seconds = 0.0
        self._client: Any = None
        self._ctx: Any = None
        self._ipc_dir = ""

    def __enter__(self) -> KernelSession:
        from jupyter_client.kernelspec import NoSuchKernel
        from jupyter_client.manager import AsyncKernelManager
        from nbclient import NotebookClient

        km = AsyncKernelManager(
            kernel_name=self.kernel,
            kernel_spec_manager=_kernel_spec_manager(),
            # Unix sockets: nothing listens on the network, and the kernel does not warn about plain-text TCP.
            transport="ipc",
        )
        # The socket files go in a private folder, not the notebook's (the kernel's working directory).
        self._ipc_dir = tempfile.mkdtemp(prefix="mlship-kernel-")
        km.ip = os.path.join(self._ipc_dir, "kernel")
        self._client = NotebookClient(
            self.notebook.node,
            km=km,
            timeout=self.timeout,
            allow_errors=False,
            # A kernel that takes long to start is usually a kernel that cannot start; don't hang CI for 60 s.
            startup_timeout=120,
            resources={"metadata": {"path": str(self.notebook.path.parent)}},
            # The kernel is mlship's scratch process: once its answers are in, it is killed (with its process
            # group, so whatever the notebook started goes too), not asked to run its shutdown (seconds).
            shutdown_kernel="immediate",
        )
        # A fixed hash seed makes set and dict-of-set iteration orders repeatable, so a captured set of
        # stopwords pickles to the same bytes on every run (Python randomizes str hashes per process).
        env = {**os.environ, "PYTHONHASHSEED": os.environ.get("PYTHONHASHSEED", "0")}
        self._ctx = self._client.setup_kernel(env=env)
        try:
            self._ctx.__enter__()
        except NoSuchKernel:
            names = ", ".join(available_kernels()) or "none"
            raise NotebookError(
                f"no Jupyter kernel named {self.kernel!r} is installed (installed: {names})",
                hint="omit --kernel to use mlship's own Python, or install the kernel with "
                "`python -m ipykernel install --user --name NAME` in the environment you want",
            ) from None
        except Exception as exc:
            raise NotebookError(
                f"the Jupyter kernel {self.kernel!r} did not start: {exc}",
                hint="check that ipykernel is installed in that kernel's environment",
            ) from None
        self.run(_SETUP_CODE)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._ctx is not None:
            try:
                self._ctx.__exit__(None, None, None)
                # We passed our own kernel manager, so nbclient leaves the kernel running: stop it here.
                self._client._cleanup_kernel()
            except Exception:  # noqa: BLE001 - a kernel that fails to shut down must not hide the real result
                log.debug("kernel shutdown failed", exc_info=True)
            self._ctx = None
        shutil.rmtree(self._ipc_dir, ignore_errors=True)

    def request_stop(self) -> None:
        """End the kernel now, without waiting: SIGKILL to its process group (where there is one; elsewhere a
        shutdown request), and leaving the `with` block collects it and removes its connection file. Nothing may
        run in the kernel after this."""
        from jupyter_core.utils import run_sync

        km = self._client.km
        try:
            if hasattr(signal, "SIGKILL"):
                run_sync(km.signal_kernel)(signal.SIGKILL)
            else:
                run_sync(km.request_shutdown)()
        except Exception:  # noqa: BLE001 - __exit__ still stops the kernel
            log.debug("stopping the kernel failed", exc_info=True)

    def run_notebook(self) -> None:
        """Execute every code cell in order, except cells marked `# mlship: skip`."""
        from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

        cells = [c for c in self.notebook.cells if c.source.strip()]
        index_of = {i + 1: i for i in range(len(self.notebook.node.cells))}
        start = time.perf_counter()
        for position, cell in enumerate(cells, start=1):
            if self.on_progress:
                self.on_progress(position, len(cells), cell, "start")
            if not cell.skipped:
                node = self.notebook.node.cells[index_of[cell.number]]
                try:
                    self._client.execute_cell(node, index_of[cell.number])
                except CellTimeoutError:
                    raise NotebookError(
                        f"cell {cell.number} ({cell.first_line!r}) did not finish within {self.timeout} s",
                        hint="raise the limit with --timeout SECONDS, or mark a slow cell the model does not need "
                        "with `# mlship: skip` on its first line",
                    ) from None
                except CellExecutionError as exc:
                    raise NotebookError(
                        f"cell {cell.number} ({cell.first_line!r}) raised {exc.ename}: {_plain(exc.evalue)}",
                        hint=_cell_error_hint(exc.ename, exc.evalue, self.kernel),
                    ) from None
                except DeadKernelError:
                    raise NotebookError(
                        f"the kernel died while running cell {cell.number} ({cell.first_line!r})",
                        hint="this is usually running out of memory or a crash in a compiled library",
                    ) from None
            if self.on_progress:
                self.on_progress(position, len(cells), cell, "done")
        self.execution_seconds = time.perf_counter() - start

    def run(self, code: str) -> str:
        """Run mlship's own code in the kernel (not stored in history); return what it printed to stdout."""
        from nbclient.exceptions import CellExecutionError
        from nbformat.v4 import new_code_cell

        # nbclient writes the executed cell back into the notebook at the index it is given, so our code runs as
        # a scratch cell appended at the end and removed again: the user's cells are never overwritten.
        cell = new_code_cell(code)
        cells = self.notebook.node.cells
        cells.append(cell)
        try:
            self._client.execute_cell(cell, len(cells) - 1, store_history=False)
        except CellExecutionError as exc:
            raise KernelCodeError(exc.ename, exc.evalue, exc.traceback) from None
        finally:
            cells.pop()
        return "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream"
                       and o.get("name") == "stdout")

    def call(self, code: str) -> Any:
        """Run code that ends by calling `__mlship_emit(obj)`; return `obj` decoded from JSON."""
        out = self.run(code)
        if _RESULT_MARK not in out:
            raise KernelCodeError("MlshipProtocolError", "kernel code produced no result", out)
        payload = out.rsplit(_RESULT_MARK, 1)[1].strip()
        return json.loads(payload)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _plain(text: str) -> str:
    return _ANSI.sub("", text)


def _cell_error_hint(ename: str, evalue: str, kernel: str) -> str:
    if ename == "ModuleNotFoundError":
        missing = re.search(r"No module named '([^'.]+)", evalue)
        name = missing.group(1) if missing else "the package"
        where = "mlship's Python environment" if kernel == SAME_ENV_KERNEL else f"the {kernel!r} kernel's environment"
        return (f"install {name} in {where} (e.g. pip install {name}; some packages install under another name), "
                "or choose the kernel that has it with --kernel NAME")
    if ename == "FileNotFoundError":
        return ("cells run with the notebook's folder as working directory; check the path, or mark the cell "
                "`# mlship: skip` if serving does not need it")
    return ("the notebook must run top to bottom in a fresh kernel; fix the cell, or mark it `# mlship: skip` if "
            "serving does not need it")


def emit_code() -> str:
    """Kernel-side definition of `__mlship_emit`, which prints a result the host can find among user output."""
    return (
        "def __mlship_emit(obj):\n"
        "    import json, sys\n"
        f"    sys.stdout.write({_RESULT_MARK!r} + json.dumps(obj) + '\\n')\n"
        "    sys.stdout.flush()\n"
    )

