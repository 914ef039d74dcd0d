from __future__ import annotations

from typing import Any

import pytest

from mlship.notebook import _kernel
from mlship.notebook.extract import FittedObject, ObjectInfo
from mlship.runtime._codec import to_jsonable


class InProcessKernel:
    """The kernel-side helpers run against a plain dict namespace: extraction without starting Jupyter."""

    def __init__(self, ns: dict[str, Any]) -> None:
        self.ns = ns
        _kernel.install(ns, to_jsonable)

    def describe(self, exprs: list[str]) -> list[ObjectInfo]:
        return [ObjectInfo.from_json(info) for info in _kernel.describe(exprs)]

    def first_parameter(self, expr: str, method: str) -> str | None:
        return _kernel.first_parameter(expr, method)

    def fitted_objects(self) -> list[FittedObject]:
        return [FittedObject.from_json(found) for found in _kernel.fitted_objects()]


@pytest.fixture()
def run_cells() -> Any:
    """Execute sources in one namespace, as a kernel would, and return (cells, namespace)."""
    from mlship.notebook.analyze import transform
    from mlship.notebook.read import Cell, parse_directives

    def run(*sources: str) -> tuple[tuple[Cell, ...], InProcessKernel]:
        ns: dict[str, Any] = {"__name__": "__main__"}
        cells = tuple(Cell(i, s, parse_directives(s)) for i, s in enumerate(sources, start=1))
        for cell in cells:
            if not cell.skipped:
                exec(compile(transform(cell.source), f"<cell {cell.number}>", "exec"), ns)
        return cells, InProcessKernel(ns)

    return run
