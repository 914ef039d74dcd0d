"""`mlship package`: notebook -> captured in a kernel (capture.py) -> bundle written (writer.py) and checked.

The bundle is assembled in a hidden staging folder beside its destination and renamed into place only after a
fresh interpreter has loaded it and replayed every golden case: a failure leaves nothing half-written. That one
interpreter also resolves the dependencies first (fresh.py), so the notebook's libraries are imported once.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BundleError
from ..notebook.config import CHOICE_KEYS, license_policy, read_config
from ..notebook.execute import ProgressCallback
from ..notebook.extract import Choices, CodePlan, ServePlan
from ..notebook.read import Notebook, read_notebook
from ..runtime._contract import VALUES_NAME, CaseResult, InputSchema, Manifest
from ..sbom.document import warm_up
from ..sbom.licenses import LicensePolicy
from .capture import Capture, CaptureRequest, StepCallback, open_kernel
from .fresh import FreshInterpreter, notebook_search_path, preload_order
from .writer import BundleWriter

log = logging.getLogger(__name__)


@dataclass
class PackageOptions:
    output: Path | None = None
    force: bool = False
    name: str | None = None
    version: str | None = None
    kernel: str | None = None
    timeout: int | None = None
    sample_rows: int | None = None
    requirements: list[str] = field(default_factory=list)
    choices: Choices = field(default_factory=Choices)  # from flags
    dry_run: bool = False
    deny_licenses: list[str] = field(default_factory=list)  # SPDX ids; [tool.mlship] deny_licenses when empty
    deny_unknown_licenses: bool = False


@dataclass(frozen=True)
class PackageResult:
    """What `package` did: the capture, the bundle (None for a dry run) and how it verified.

    `timings` (seconds): kernel_start, notebook, capture, probe (waiting for the fresh interpreter), write, verify,
    kernel_stop, total."""

    bundle: Path | None
    capture: Capture
    requirements: list[str]
    cases: list[CaseResult]
    timings: dict[str, float]
    size_bytes: int = 0
    license_warnings: tuple[str, ...] = ()  # packages without a recognizable license (the gate lists them)

    @classmethod
    def of(cls, bundle: Path | None, capture: Capture, requirements: list[str], cases: list[CaseResult],
           timings: dict[str, float], started: float, license_warnings: list[str] | None = None) -> PackageResult:
        timings.setdefault("total", time.perf_counter() - started)
        size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file()) if bundle else 0
        return cls(bundle, capture, requirements, cases, timings, size, tuple(license_warnings or ()))

    @property
    def name(self) -> str:
        return self.capture.name

    @property
    def plan(self) -> ServePlan:
        return self.capture.plan

    @property
    def code(self) -> CodePlan:
        return self.capture.code

    @property
    def schema(self) -> InputSchema:
        return self.capture.golden.schema

    @property
    def dropped_methods(self) -> dict[str, str]:
        return self.capture.golden.dropped

    @property
    def batch_safe(self) -> bool:
        return self.capture.golden.batch_safe


class BundleBuilder:
    def __init__(self, notebook: Notebook, options: PackageOptions, config: dict[str, Any]) -> None:
        self.notebook = notebook
        self.options = options
        self.config = config
        self.name = options.name or config.get("name") or _default_name(notebook.path)
        self.version = options.version or config.get("version") or "0.1.0"

    @classmethod
    def from_notebook(cls, path: Path, options: PackageOptions) -> BundleBuilder:
        notebook = read_notebook(path)
        return cls(notebook, options, read_config(notebook.path.parent))

    # -- choices -----------------------------------------------------------------------------------------------

    def merged_choices(self) -> Choices:
        """flags > directives > config; each choice remembers where it came from."""
        merged = Choices()
        for key in CHOICE_KEYS:
            flag = getattr(self.options.choices, key)
            directive = next((c.directives[key] for c in reversed(self.notebook.cells)
                              if c.directives.get(key)), None)
            for value, origin in ((flag, "flag"), (directive, "directive"), (self.config.get(key), "config")):
                if value:
                    setattr(merged, key, value)
                    merged.origin[key] = f"--{key}" if origin == "flag" else (
                        f"`# mlship: {key}` directive" if origin == "directive" else "[tool.mlship]")
                    break
        return merged

    def destination(self) -> Path:
        return Path(self.options.output) if self.options.output else Path("dist") / self.name

    # -- the whole job -----------------------------------------------------------------------------------------

    def request(self) -> CaptureRequest:
        return CaptureRequest(
            choices=self.merged_choices(),
            kernel=self.options.kernel or self.config.get("kernel"),
            timeout=self.options.timeout or int(self.config.get("timeout", 600)),
            sample_rows=self.options.sample_rows or int(self.config.get("sample_rows", 5)),
            name=self.name,
            version=self.version,
            requirements=(*self.config.get("requirements", []), *self.options.requirements),
        )

    def build(self, on_progress: ProgressCallback | None = None, on_step: StepCallback | None = None) -> PackageResult:
        """Capture (kernel), write the bundle into a staging folder, check it in one fresh interpreter, move it
        into place. A dry run stops after the capture and writes nothing."""
        dest = self.destination().resolve()
        if not self.options.dry_run and dest.exists() and not self.options.force:
            raise BundleError(
                f"{dest} already exists",
                hint="pass --force to replace it, or -o/--output DIR to write somewhere else",
            )
        started = time.perf_counter()
        timings: dict[str, float] = {}
        if self.options.dry_run:
            with open_kernel(self.notebook, self.request(), on_progress=on_progress, timings=timings) as kernel:
                capture = kernel.capture(None, on_step)
            return PackageResult.of(None, capture, [], [], timings, started)
        policy = license_policy(self.config, self.options.deny_licenses, self.options.deny_unknown_licenses)
        staging = _staging_dir(dest)
        try:
            capture, manifest, cases, warnings = self._package(staging, policy, on_progress, on_step or log.info,
                                                               timings)
            _check_cases(cases)
            _move_into_place(staging, dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        timings["total"] = time.perf_counter() - started
        return PackageResult.of(dest, capture, list(manifest.requirements), cases, timings, started, warnings)

    def _package(self, staging: Path, policy: LicensePolicy, on_progress: ProgressCallback | None,
                 step: StepCallback, timings: dict[str, float]) -> tuple[Capture, Manifest, list[CaseResult], list[str]]:
        # The SBOM's libraries take seconds to import: in a thread, while the notebook runs.
        threading.Thread(target=warm_up, name="mlship-sbom-warm-up", daemon=True).start()
        with ExitStack() as stack:
            with open_kernel(self.notebook, self.request(), on_progress=on_progress, timings=timings) as kernel:
                # The fresh interpreter starts (maps the installed distributions, and pre-imports the notebook's
                # packages in snapshots, see _fresh.py) while the notebook runs.
                child = stack.enter_context(FreshInterpreter(
                    kernel.executable(), staging, cwd=self.notebook.path.parent,
                    search_path=notebook_search_path(self.notebook.path.parent),
                    preload=preload_order(kernel.index.result())))
                capture = kernel.capture(staging / VALUES_NAME, step)
                writer = BundleWriter(capture, staging, policy)
                writer.stage()
                step("resolving dependencies in a fresh interpreter")
                probe = child.start_probe(writer.probe_modules())
                kernel.stop()  # killed: nothing runs in it any more; leaving the block collects it
                with _timed(timings, "probe"):
                    dependencies = probe()
                log.debug("probed in a snapshot with %s pre-imported", ", ".join(dependencies.preloaded) or "nothing")
                with _timed(timings, "write"):
                    manifest = writer.finish(dependencies)
                step("verifying the bundle in a fresh interpreter")
                with _timed(timings, "verify"):
                    cases = child.verify(manifest.name)
                child.finish()  # it exits while the kernel is collected
        return capture, manifest, cases, writer.license_warnings


# -- helpers ---------------------------------------------------------------------------------------------------


@contextmanager
def _timed(timings: dict[str, float], key: str) -> Iterator[None]:
    mark = time.perf_counter()
    yield
    timings[key] = time.perf_counter() - mark


def _default_name(path: Path) -> str:
    return path.stem.replace(" ", "-")


def _check_cases(cases: list[CaseResult]) -> None:
    failed = [c for c in cases if not c.ok]
    if failed:
        first = failed[0]
        raise BundleError(
            f"the bundle does not reproduce the notebook: {len(failed)} of {len(cases)} golden cases differ "
            f"(first: {first.id}: {first.detail})",
            hint="the served code behaves differently outside the kernel; run with --dry-run to see what "
            "was captured, and report the notebook if the choice looks right",
        )


def _staging_dir(dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    # mkdtemp makes a private (0700) folder; the bundle gets the usual permissions instead.
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o777 & ~umask)
    (path / "artifacts").mkdir()
    return path


def _move_into_place(staging: Path, dest: Path) -> None:
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.replace(dest, old)
    os.replace(staging, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
