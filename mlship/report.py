"""How results look on the terminal (rich tables) and in CI (one JSON object)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from .bundle.builder import PackageResult
from .console import console, display_success, display_warning
from .notebook.inspector import GoldenRecord
from .runtime._contract import CaseResult, InputSchema
from .service import ModelVerification


def describe_schema(schema: InputSchema) -> str:
    if schema.has_columns:
        cols = schema.columns
        shown = ", ".join(f"{c.name}: {c.type}" for c in cols[:8])
        more = f", … {len(cols) - 8} more" if len(cols) > 8 else ""
        return f"{schema.kind} with {len(cols)} columns ({shown}{more})"
    element = schema.fields[0]
    if schema.kind == "ndarray":
        return f"array {element.dtype} shape {None if schema.shape is None else list(schema.shape)}"
    if schema.kind == "series":
        return f"series {element.name!r} of {element.type}"
    return f"list of {element.type}"


def describe_golden_sources(golden: GoldenRecord) -> str:
    """"1 from new_row (the inference call's data), 4 from X_test (same columns and dtypes as the sample; …)"."""
    if not golden.sources:
        return f"{len(golden.cases)} cases from the sample"
    text = ", ".join(f"{s.rows} from {s.expr} ({s.reason})" for s in golden.sources)
    if golden.skipped:
        text += "; not used: " + ", ".join(f"{expr} ({why})" for expr, why in golden.skipped.items())
    return text


def describe_client(schema: InputSchema, limit: int = 12) -> str | None:
    """"a client sends: ...; ignored if sent: ..." for a schema with columns (None for the other kinds)."""
    if not schema.has_columns:
        return None

    def names(items: list[str]) -> str:
        more = f", … {len(items) - limit} more" if len(items) > limit else ""
        return ", ".join(items[:limit]) + more

    text = f"a client sends: {names(schema.column_names)}"
    return text + (f"; ignored if sent: {names(list(schema.ignored))}" if schema.ignored else "")


def print_package_result(result: PackageResult) -> None:
    plan, code = result.plan, result.code
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("chosen", f"{plan.reason} [{plan.origin}]")
    if plan.model_type:
        table.add_row("model", f"{plan.model_expr} ({plan.model_type})")
    for name, expr in plan.methods.items():
        table.add_row(f"/{name}", expr)
    table.add_row("input", f"{plan.sample_expr} -> {describe_schema(result.schema)}")
    table.add_row("golden rows", describe_golden_sources(result.capture.golden))
    client = describe_client(result.schema)
    if client is not None:
        table.add_row("client", client)
    if code.imports:
        table.add_row("imports", "; ".join(d.source for d in code.imports))
    if code.definitions:
        table.add_row("notebook code", ", ".join(f"{d.name} (cell {d.statement.cell.number})"
                                                for d in code.definitions))
    if code.by_value:
        table.add_row("captured", ", ".join(f"{n} ({code.types[n]})" for n in code.by_value))
    if result.requirements:
        table.add_row("requirements", ", ".join(result.requirements))
    table.add_row("batching", "safe (rows predicted together = one by one)" if result.batch_safe
                  else "unsafe: rows are predicted one request at a time")
    console.print(table)
    for method, why in result.dropped_methods.items():
        display_warning(f"not serving /{method}: it failed on the sample ({why})")
    choice = result.capture.golden.columns
    if choice is not None and choice.proof != "ok":
        display_warning(f"every column of the input is required: {choice.proof}")
    if choice is not None and choice.untried:
        display_warning(f"{len(choice.untried)} columns were not tried (the search stopped after {choice.calls} "
                        f"calls, {choice.seconds:.0f}s) and stay required: {', '.join(choice.untried[:8])}"
                        + (" …" if len(choice.untried) > 8 else ""))
    if result.bundle is None:
        console.print("dry run: nothing written")
        return
    if result.license_warnings:
        display_warning(f"{len(result.license_warnings)} requirement(s) without a recognizable license (listed in "
                        "the SBOM as such): " + "; ".join(w.removeprefix("no recognizable license: ")
                                                          for w in result.license_warnings))
    ok = sum(c.ok for c in result.cases)
    t = result.timings
    display_success(
        f"{result.bundle} ({result.size_bytes / 1e6:.2f} MB): {ok}/{len(result.cases)} golden cases verified in a "
        f"fresh interpreter; {t['total']:.1f}s total, {t.get('notebook', 0):.1f}s running the notebook"
    )
    console.print(f"next: mlship serve {result.bundle}    or    mlship verify {result.bundle}")


def package_json(result: PackageResult) -> dict[str, Any]:
    return {
        "bundle": str(result.bundle) if result.bundle else None,
        "name": result.name,
        "methods": result.plan.methods,
        "selection": {"source": result.plan.origin, "reason": result.plan.reason, "cell": result.plan.cell},
        "sample": result.plan.sample_expr,
        "input": result.schema.to_json(),
        "client_columns": None if result.capture.golden.columns is None else result.capture.golden.columns.to_json(),
        "captured": result.code.by_value,
        "definitions": [d.name for d in result.code.definitions],
        "requirements": result.requirements,
        # recorded: the sample's rows kept as golden cases (--sample-rows); cases/passed: how they verified (0 for a
        # dry run, which verifies nothing).
        "golden": {"recorded": len(result.capture.golden.cases), "cases": len(result.cases),
                   "passed": sum(c.ok for c in result.cases),
                   "sources": [s.to_json() for s in result.capture.golden.sources],
                   "skipped_sources": result.capture.golden.skipped},
        "batch_safe": result.batch_safe,
        "dropped_methods": result.dropped_methods,
        "size_bytes": result.size_bytes,
        "license_warnings": list(result.license_warnings),
        "timings": {k: round(v, 3) for k, v in result.timings.items()},
    }


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def print_cases(results: list[CaseResult]) -> None:
    table = Table(title="golden cases")
    for col in ("case", "method", "result", "expected", "actual"):
        table.add_column(col)
    for r in results:
        table.add_row(r.id, r.method, "ok" if r.ok else f"FAIL: {r.detail}", _short(r.expected), _short(r.actual))
    console.print(table)


def print_rows(rows: list[tuple[str, str]]) -> None:
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    # Fold, never truncate: values are hashes, paths and commands that get copied.
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)


def print_model_verifications(results: list[ModelVerification]) -> None:
    """One line per model version of a service: PASS/FAIL, how many cases match, the first difference."""
    for result in results:
        model = result.model
        label = f"{'PASS' if result.ok else 'FAIL'}  {model.name} {model.version}"
        if result.error is not None:
            console.print(f"{label}: not verified: {result.error}", soft_wrap=True)
            continue
        failed = [case for case in result.cases if not case.ok]
        if not failed:
            console.print(f"{label}: {len(result.cases)} golden cases match", soft_wrap=True)
        else:
            first = failed[0]
            console.print(f"{label}: {len(failed)} of {len(result.cases)} golden cases differ (first: {first.id}: "
                          f"{first.detail})", soft_wrap=True)
