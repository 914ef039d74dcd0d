"""The host side of _kernel.py: calls into the notebook's kernel, and its JSON answers turned into typed values.

_kernel.py runs inside the user's kernel and answers in JSON (its only output format); everything here hands the
rest of mlship typed values (the bundle contract's InputSchema and GoldenCase), so no caller reads kernel dicts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._paths import PACKAGE_DIR, RUNTIME_DIR
from ..errors import ExtractionError
from ..runtime._contract import GoldenCase, GoldenSource, InputSchema, PythonInfo
from .execute import KernelCodeError, KernelSession, emit_code
from .extract import CodePlan, FittedObject, ObjectInfo, ServePlan


@dataclass(frozen=True)
class ColumnChoice:
    """How a DataFrame input's client columns were found (_kernel.client_columns): by elimination on the golden
    rows, `calls` runs of the served methods in `seconds`. `untried` columns are kept only because the search's
    budget ran out; `proof` is "ok", or why the client-only frame failed on a golden case (then none is ignored)."""

    required: tuple[str, ...]
    ignored: tuple[str, ...]
    untried: tuple[str, ...] = ()
    calls: int = 0
    seconds: float = 0.0
    proof: str = "ok"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ColumnChoice:
        return cls(tuple(data["required"]), tuple(data["ignored"]), tuple(data.get("untried", ())),
                   int(data.get("calls", 0)), float(data.get("seconds", 0.0)), str(data.get("proof", "ok")))

    def to_json(self) -> dict[str, Any]:
        return {"required": list(self.required), "ignored": list(self.ignored), "untried": list(self.untried),
                "calls": self.calls, "seconds": self.seconds, "proof": self.proof}


@dataclass(frozen=True)
class GoldenRecord:
    """The sample's schema and the served path's outputs on it, row by row (see _kernel.golden)."""

    schema: InputSchema
    cases: tuple[GoldenCase, ...]
    batch_safe: bool
    dropped: dict[str, str]  # extra method -> why it failed on the sample (it is not served)
    # Where the golden rows came from: the sample, then maybe another value of the same schema (a test split).
    sources: tuple[GoldenSource, ...] = ()
    skipped: dict[str, str] = field(default_factory=dict)  # a value of the same schema -> why it was not used
    columns: ColumnChoice | None = None  # a DataFrame input's client columns, and how they were found


@dataclass(frozen=True)
class MainReference:
    """A name the pickled values look up in `__main__` (a library pickled it by reference): what it is there."""

    name: str
    kind: str  # class, function or value
    module: str | None  # the object's __module__ ("__main__" for a notebook definition)
    type: str


@dataclass(frozen=True)
class KernelPython:
    """The kernel's interpreter: the bundle records its version, and the fresh-process check runs it."""

    info: PythonInfo
    executable: str


class KernelInspector:
    """Calls into _kernel.py inside the notebook's kernel; arguments and results travel as JSON."""

    def __init__(self, session: KernelSession) -> None:
        self.session = session

    @classmethod
    def install(cls, session: KernelSession) -> KernelInspector:
        """Load _kernel.py (and the runtime's codec, which encodes golden outputs) into the kernel."""
        session.run(install_code())
        return cls(session)

    def _call(self, function: str, *args: Any, module: str = "__mlship__") -> Any:
        encoded = ", ".join(f"__mlship_json.loads({json.dumps(a)!r})" for a in args)
        return self.session.call(f"import json as __mlship_json\n__mlship_emit({module}.{function}({encoded}))")

    def main_references(self, code: CodePlan, path: Path | None) -> list[MainReference]:
        """The notebook names the pickled values look up in `__main__` when loaded (see _kernel_main.py)."""
        result = self._call("main_references", code.by_value, None if path is None else str(path),
                            module="__mlship_main__")
        if not result["ok"]:
            raise ExtractionError(
                f"the captured values do not load back even in the notebook's kernel: {result['error']}",
                hint="an object's __getstate__/__setstate__ (or __reduce__) does not round-trip; check it with "
                "pickle.loads(pickle.dumps(obj)) in the notebook",
            )
        return [MainReference(r["name"], r["kind"], r["module"], r["type"]) for r in result["names"]]

    def describe(self, exprs: list[str]) -> list[ObjectInfo]:
        return [ObjectInfo.from_json(info) for info in self._call("describe", exprs)]

    def first_parameter(self, expr: str, method: str) -> str | None:
        result = self._call("first_parameter", expr, method)
        return result if isinstance(result, str) else None

    def fitted_objects(self) -> list[FittedObject]:
        return [FittedObject.from_json(found) for found in self._call("fitted_objects")]

    def python(self) -> KernelPython:
        info = self._call("runtime_info")
        return KernelPython(PythonInfo(info["python"], info["implementation"]), info["executable"])

    def golden(self, plan: ServePlan, rows: int) -> GoldenRecord:
        assert plan.sample_expr is not None
        try:
            result = self._call("golden", plan.sample_expr, rows, plan.methods, plan.input_name,
                                not plan.sample_given)
        except KernelCodeError as exc:
            raise ExtractionError(
                f"running the served path on the sample `{plan.sample_expr}` failed: {exc.ename}: {exc.evalue}",
                hint='check the choice with --dry-run; set the input with --sample "EXPR" or the call with '
                '--predict "EXPR"',
            ) from None
        cases = tuple(GoldenCase(c["id"], c["method"], c["instances"], c["expected"], c.get("source"))
                      for c in result["cases"])
        sources = tuple(GoldenSource(s["expr"], s["rows"], s["reason"]) for s in result.get("sources", ()))
        skipped = {s["expr"]: s["reason"] for s in result.get("skipped_sources", ())}
        columns = result.get("columns")
        return GoldenRecord(InputSchema.from_json(result["schema"], "the sample's input schema"), cases,
                            bool(result["batch_safe"]), dict(result["dropped"]), sources, skipped,
                            None if columns is None else ColumnChoice.from_json(columns))

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


def install_code() -> str:
    """Kernel code that loads _kernel.py and the runtime's _codec.py as private modules, then `__mlship_emit`."""
    kernel_src = (PACKAGE_DIR / "notebook" / "_kernel.py").read_text(encoding="utf-8")
    main_src = (PACKAGE_DIR / "notebook" / "_kernel_main.py").read_text(encoding="utf-8")
    columns_src = (PACKAGE_DIR / "notebook" / "_kernel_columns.py").read_text(encoding="utf-8")
    codec_src = (RUNTIME_DIR / "_codec.py").read_text(encoding="utf-8")
    return f"""
import sys as __mlship_sys, types as __mlship_types
__mlship__ = __mlship_types.ModuleType("__mlship__")
__mlship_sys.modules["__mlship__"] = __mlship__
exec(compile({columns_src!r}, "<mlship-kernel-columns>", "exec"), __mlship__.__dict__)
exec(compile({kernel_src!r}, "<mlship-kernel>", "exec"), __mlship__.__dict__)
__mlship_codec = __mlship_types.ModuleType("__mlship_codec__")
__mlship_sys.modules["__mlship_codec__"] = __mlship_codec
exec(compile({codec_src!r}, "<mlship-codec>", "exec"), __mlship_codec.__dict__)
__mlship__.install(get_ipython().user_ns, __mlship_codec.to_jsonable)
__mlship_main__ = __mlship_types.ModuleType("__mlship_main__")
__mlship_sys.modules["__mlship_main__"] = __mlship_main__
exec(compile({main_src!r}, "<mlship-kernel-main>", "exec"), __mlship_main__.__dict__)
__mlship_main__.install(get_ipython().user_ns)
del __mlship_sys, __mlship_types, __mlship_codec
""" + emit_code()
