"""`mlship package`: notebook -> executed in a kernel -> served path chosen -> bundle written and verified.

The bundle is assembled in a hidden staging folder beside its destination and renamed into place only after a
fresh interpreter has loaded it and replayed every golden case: a failure leaves nothing half-written.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from .._paths import BUNDLE_RUNTIME_NAME, PACKAGE_DIR, RUNTIME_DIR
from ..errors import BundleError, ExtractionError, MlshipError
from ..notebook.analyze import CodeIndex, index_cells
from ..notebook.config import CHOICE_KEYS, read_config
from ..notebook.execute import KernelCodeError, KernelSession, ProgressCallback, emit_code
from ..notebook.extract import Choices, CodePlan, ServePlan, choose, plan_code
from ..notebook.read import Notebook, read_notebook
from . import manifest as mf
from .render import PredictorContext, SourceBlock, render
from .verify import CaseResult, verify_bundle

log = logging.getLogger(__name__)

RTOL = 1e-6
ATOL = 1e-9
RUNTIME_VERSION_FILE = RUNTIME_DIR / "__init__.py"


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


@dataclass
class PackageResult:
    bundle: Path | None
    name: str
    plan: ServePlan
    code: CodePlan
    schema: dict[str, Any]
    requirements: list[str]
    cases: list[CaseResult]
    dropped_methods: dict[str, str]
    batch_safe: bool
    timings: dict[str, float]
    size_bytes: int = 0


StepCallback = Callable[[str], None]


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

    def build(self, on_progress: ProgressCallback | None = None, on_step: StepCallback | None = None) -> PackageResult:
        step = on_step or (lambda msg: log.info(msg))
        dest = self.destination().resolve()
        if not self.options.dry_run and dest.exists() and not self.options.force:
            raise BundleError(
                f"{dest} already exists",
                hint="pass --force to replace it, or -o/--output DIR to write somewhere else",
            )
        timings: dict[str, float] = {}
        started = time.perf_counter()
        choices = self.merged_choices()
        timeout = self.options.timeout or int(self.config.get("timeout", 600))
        kernel = self.options.kernel or self.config.get("kernel")
        staging = None if self.options.dry_run else _staging_dir(dest)
        try:
            with KernelSession(self.notebook, kernel=kernel, timeout=timeout, on_progress=on_progress) as session:
                step("running the notebook")
                session.run_notebook()
                timings["notebook"] = session.execution_seconds
                session.run(_install_code())
                inspector = KernelInspector(session)
                step("choosing what to serve")
                index = index_cells(self.notebook.cells)
                plan = choose(index, choices, inspector)
                code = plan_code(index, plan, inspector)
                step("recording golden cases")
                golden = inspector.golden(plan, self.options.sample_rows or int(self.config.get("sample_rows", 5)))
                for method in golden["dropped"]:
                    plan.methods.pop(method, None)
                runtime = inspector.runtime_info()
                step("serializing the model in the kernel")
                inspector.serialize(code, None if staging is None else staging / "artifacts" / "values.pkl")
                if staging is None:
                    return self._result(None, plan, code, golden, [], [], timings, started)
            self._write_code(staging, index, plan, code)
            step("resolving dependencies in a fresh interpreter")
            deps = _probe_dependencies(staging, runtime["executable"], self.notebook.path.parent,
                                       _schema_modules(golden["schema"]))
            local = self._copy_local_modules(staging, deps.get("local", {}))
            if local:
                self._write_code(staging, index, plan, code, local_code=True)
            requirements = mf.build_requirements(
                deps["distributions"], [*self.config.get("requirements", []), *self.options.requirements])
            self._write_bundle(staging, plan, golden, requirements, runtime, local)
            step("verifying the bundle in a fresh interpreter")
            cases = verify_bundle(staging, python=runtime["executable"])
            failed = [c for c in cases if not c.ok]
            if failed:
                first = failed[0]
                raise BundleError(
                    f"the bundle does not reproduce the notebook: {len(failed)} of {len(cases)} golden cases differ "
                    f"(first: {first.id}: {first.detail})",
                    hint="the served code behaves differently outside the kernel; run with --dry-run to see what "
                    "was captured, and report the notebook if the choice looks right",
                )
            _move_into_place(staging, dest)
            staging = None
            timings["total"] = time.perf_counter() - started
            return self._result(dest, plan, code, golden, requirements, cases, timings, started)
        except KernelCodeError as exc:
            raise ExtractionError(f"inspecting the notebook's objects failed: {exc.ename}: {exc.evalue}") from None
        finally:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)

    def _result(self, bundle: Path | None, plan: ServePlan, code: CodePlan, golden: dict[str, Any],
                requirements: list[str], cases: list[CaseResult], timings: dict[str, float],
                started: float) -> PackageResult:
        timings.setdefault("total", time.perf_counter() - started)
        size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file()) if bundle else 0
        return PackageResult(bundle, self.name, plan, code, golden["schema"], requirements, cases,
                             golden["dropped"], golden["batch_safe"], timings, size)

    # -- writing -----------------------------------------------------------------------------------------------

    def _write_code(self, staging: Path, index: CodeIndex, plan: ServePlan, code: CodePlan,
                    local_code: bool = False) -> None:
        context = PredictorContext(
            mlship_version=__version__,
            notebook=self.notebook.path.name,
            notebook_sha256=self.notebook.sha256,
            reason=plan.reason,
            imports=[d.source for d in code.imports],
            values=[(n, code.types[n]) for n in code.by_value],
            definitions=[SourceBlock(d.name, d.statement.cell.number, d.source) for d in code.definitions],
            methods=list(plan.methods.items()),
            input_name=plan.input_name,
            local_code=local_code,
        )
        if not code.by_value:
            (staging / "artifacts" / "values.pkl").unlink(missing_ok=True)
        (staging / "predictor.py").write_text(render("predictor.py.jinja", context), encoding="utf-8")

    def _copy_local_modules(self, staging: Path, local: dict[str, str]) -> list[str]:
        """Modules imported from beside the notebook (not installed packages) travel in code/."""
        copied = []
        root = self.notebook.path.parent.resolve()
        for name, origin in sorted(local.items()):
            path = Path(origin).resolve()
            if root not in path.parents:
                raise BundleError(
                    f"the served code imports {name!r} from {path}, which is neither an installed package nor "
                    "a file beside the notebook",
                    hint="install it as a package (pip install -e PATH) so mlship can pin it",
                )
            target = staging / "code" / path.name
            target.parent.mkdir(exist_ok=True)
            if path.is_dir():
                shutil.copytree(path, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(path, target)
            copied.append(name)
        return copied

    def _write_bundle(self, staging: Path, plan: ServePlan, golden: dict[str, Any], requirements: list[str],
                      runtime: dict[str, Any], local: list[str]) -> None:
        shutil.copytree(RUNTIME_DIR, staging / BUNDLE_RUNTIME_NAME,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        (staging / mf.REQUIREMENTS).write_text("\n".join(requirements) + "\n", encoding="utf-8")
        mf.write_json(staging / "golden.json", {"rtol": RTOL, "atol": ATOL, "cases": golden["cases"]})
        artifacts = [str(p.relative_to(staging).as_posix()) for p in sorted(staging.rglob("*"))
                     if p.is_file() and p.name != mf.MANIFEST]
        manifest = {
            "format": mf.FORMAT,
            "name": self.name,
            "version": self.version,
            "mlship_version": __version__,
            "runtime_version": _runtime_version(),
            "created_at": mf.created_at(),
            "source": {"notebook": self.notebook.path.name, "sha256": self.notebook.sha256},
            "python": {"version": runtime["python"], "implementation": runtime["implementation"]},
            "requirements": requirements,
            "artifacts": mf.digest_artifacts(staging, artifacts),
            "methods": [{"name": n, "expression": e} for n, e in plan.methods.items()],
            "batch_safe": golden["batch_safe"],
            "input": golden["schema"],
            "golden": "golden.json",
            "local_modules": local,
            "selection": {"source": plan.origin, "reason": plan.reason, "cell": plan.cell,
                          "sample": plan.sample_expr},
        }
        mf.write_json(staging / mf.MANIFEST, manifest)


# -- the kernel side -------------------------------------------------------------------------------------------


class KernelInspector:
    """Calls into _kernel.py inside the notebook's kernel; arguments and results travel as JSON."""

    def __init__(self, session: KernelSession) -> None:
        self.session = session

    def _call(self, function: str, *args: Any) -> Any:
        encoded = ", ".join(f"__mlship_json.loads({json.dumps(a)!r})" for a in args)
        return self.session.call(f"import json as __mlship_json\n__mlship_emit(__mlship__.{function}({encoded}))")

    def describe(self, exprs: list[str]) -> list[dict[str, Any]]:
        return list(self._call("describe", exprs))

    def first_parameter(self, expr: str, method: str) -> str | None:
        result = self._call("first_parameter", expr, method)
        return result if isinstance(result, str) else None

    def fitted_objects(self) -> list[dict[str, Any]]:
        return list(self._call("fitted_objects"))

    def runtime_info(self) -> dict[str, Any]:
        return dict(self._call("runtime_info"))

    def golden(self, plan: ServePlan, rows: int) -> dict[str, Any]:
        assert plan.sample_expr is not None
        try:
            result = self._call("golden", plan.sample_expr, rows, plan.methods, plan.input_name)
        except KernelCodeError as exc:
            raise ExtractionError(
                f"running the served path on the sample `{plan.sample_expr}` failed: {exc.ename}: {exc.evalue}",
                hint='check the choice with --dry-run; set the input with --sample "EXPR" or the call with '
                '--predict "EXPR"',
            ) from None
        return dict(result)

    def serialize(self, code: CodePlan, path: Path | None) -> None:
        """Pickle the captured values into `path` (None: only check that they can be pickled)."""
        result = self._call("serialize", code.by_value, None if path is None else str(path))
        if result["ok"]:
            return
        if result.get("name") is None:
            raise ExtractionError(result["error"], hint="pip install cloudpickle in the kernel's environment")
        name, where = result["name"], result["path"]
        detail = f"`{where}` (a {result['type']})" if where != name else f"it is a {result['type']} and"
        user = code.needed_by.get(name, "the served code")
        raise ExtractionError(
            f"cannot capture `{name}`, which {user} uses: {detail} cannot be serialized ({result['error']})",
            hint="open files, connections, locks, threads and generators cannot travel; create them inside the "
            "function that uses them, drop them from the object before packaging (e.g. in __getstate__), or keep "
            "them off the served path",
        )


def _install_code() -> str:
    kernel_src = (PACKAGE_DIR / "notebook" / "_kernel.py").read_text(encoding="utf-8")
    codec_src = (RUNTIME_DIR / "_codec.py").read_text(encoding="utf-8")
    return f"""
import sys as __mlship_sys, types as __mlship_types
__mlship__ = __mlship_types.ModuleType("__mlship__")
__mlship_sys.modules["__mlship__"] = __mlship__
exec(compile({kernel_src!r}, "<mlship-kernel>", "exec"), __mlship__.__dict__)
__mlship_codec = __mlship_types.ModuleType("__mlship_codec__")
__mlship_sys.modules["__mlship_codec__"] = __mlship_codec
exec(compile({codec_src!r}, "<mlship-codec>", "exec"), __mlship_codec.__dict__)
__mlship__.install(get_ipython().user_ns, __mlship_codec.to_jsonable)
del __mlship_sys, __mlship_types, __mlship_codec
""" + emit_code()


# -- helpers ---------------------------------------------------------------------------------------------------


def _default_name(path: Path) -> str:
    return path.stem.replace(" ", "-")


def _runtime_version() -> str:
    tree = ast.parse(RUNTIME_VERSION_FILE.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "RUNTIME_VERSION"
                                                for t in node.targets):
            return str(ast.literal_eval(node.value))
    raise MlshipError("mlship/runtime/__init__.py defines no RUNTIME_VERSION")


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


def _schema_modules(schema: dict[str, Any]) -> list[str]:
    """What the runtime imports to decode requests of this schema into the notebook's types."""
    kind = schema.get("kind")
    if kind in ("dataframe", "series"):
        return ["pandas", "numpy"]
    if kind in ("ndarray", "columns"):
        return ["numpy"]
    return []


def _probe_dependencies(bundle: Path, python: str, notebook_dir: Path, modules: list[str]) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(notebook_dir), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(
        [python, str(Path(__file__).with_name("_probe.py")), str(bundle), *modules],
        capture_output=True, text=True, env=env, cwd=str(notebook_dir), timeout=600,
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise BundleError(
            f"the captured objects do not load in a fresh Python ({python}): {last}",
            hint="this is the classic pickle problem: an object refers to something that only existed in the "
            "notebook's session; run with MLSHIP_DEBUG=1 for the full output",
        )
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))
