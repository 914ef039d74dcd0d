"""Static analysis of the notebook's code: where names are defined, and which calls look like inference.

IPython syntax (magics, `!shell` lines) is first turned into plain Python by IPython's own input transformer,
the one the kernel uses, so a cell parses here exactly as it ran. Bodies of `%%time`/`%time`-style magics are
Python too, and are analysed as if they were written without the magic.
"""

from __future__ import annotations

import ast
import builtins
import symtable
from dataclasses import dataclass, field

from .read import Cell

PREDICT_METHODS = ("predict", "predict_proba", "predict_log_proba", "decision_function", "score_samples")
# Fitting and predicting in one call (clustering: `labels = kmeans.fit_predict(X)`): the model is then served
# through its own predict, on that call's data, when the notebook has no prediction call at all.
FIT_METHODS = ("fit_predict", "fit_transform")
# Magics whose argument is Python code that runs in the user's namespace.
_CODE_MAGICS = {"time", "timeit", "capture", "prun", "debug"}
BUILTIN_NAMES = frozenset(dir(builtins))


@dataclass(frozen=True)
class Statement:
    """A top-level statement and the text its line numbers refer to."""

    cell: Cell
    node: ast.stmt
    text: str

    def segment(self, node: ast.AST | None = None) -> str:
        node = node or self.node
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])  # type: ignore[attr-defined]
        lines = self.text.splitlines()[start - 1 : node.end_lineno]  # type: ignore[attr-defined]
        return "\n".join(lines)


@dataclass(frozen=True)
class Definition:
    name: str
    kind: str  # "import", "def", "class", "assign"
    statement: Statement
    source: str  # the statement's text (for imports: just the alias, as a statement)


@dataclass
class CodeIndex:
    """Every top-level statement of the executed cells, in order, plus the last definition of each name."""

    statements: list[Statement] = field(default_factory=list)
    definitions: dict[str, Definition] = field(default_factory=dict)
    bindings: dict[str, list[int]] = field(default_factory=dict)  # name -> positions of statements binding it
    unparsed: list[tuple[Cell, str]] = field(default_factory=list)

    @property
    def functions(self) -> dict[str, Definition]:
        return {n: d for n, d in self.definitions.items() if d.kind == "def"}


def transform(source: str) -> str:
    """IPython syntax -> Python, as the kernel does it."""
    from IPython.core.inputtransformer2 import TransformerManager

    return str(TransformerManager().transform_cell(source))


def _magic_body(node: ast.stmt) -> str | None:
    """The Python inside `get_ipython().run_cell_magic('time', '', BODY)` or run_line_magic('time', STMT)."""
    if not (isinstance(node, ast.Expr | ast.Assign) and isinstance(node.value, ast.Call)):
        return None
    call = node.value
    func = call.func
    if not (isinstance(func, ast.Attribute) and func.attr in ("run_cell_magic", "run_line_magic")):
        return None
    args = call.args
    if not args or not all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in args):
        return None
    if args[0].value not in _CODE_MAGICS:  # type: ignore[attr-defined]
        return None
    return str(args[-1].value)  # type: ignore[attr-defined]


def _statements(cell: Cell, text: str, depth: int = 0) -> list[Statement]:
    tree = ast.parse(text)
    out: list[Statement] = []
    for node in tree.body:
        body = _magic_body(node) if depth < 3 else None
        if body is not None:
            try:
                out += _statements(cell, transform(body), depth + 1)
                continue
            except SyntaxError:
                pass
        out.append(Statement(cell, node, text))
    return out


def index_cells(cells: tuple[Cell, ...] | list[Cell]) -> CodeIndex:
    index = CodeIndex()
    for cell in cells:
        if cell.skipped or not cell.source.strip():
            continue
        try:
            stmts = _statements(cell, transform(cell.source))
        except SyntaxError as exc:
            index.unparsed.append((cell, str(exc)))
            continue
        for st in stmts:
            index.statements.append(st)
            for d in _definitions(st):
                index.definitions[d.name] = d
                index.bindings.setdefault(d.name, []).append(len(index.statements) - 1)
    return index


def _definitions(st: Statement) -> list[Definition]:
    node = st.node
    if isinstance(node, ast.Import | ast.ImportFrom):
        out = []
        for alias in node.names:
            if alias.name == "*":
                continue
            bound = alias.asname or alias.name.split(".")[0]
            if isinstance(node, ast.Import):
                src = f"import {alias.name}" + (f" as {alias.asname}" if alias.asname else "")
            else:
                mod = "." * node.level + (node.module or "")
                src = f"from {mod} import {alias.name}" + (f" as {alias.asname}" if alias.asname else "")
            out.append(Definition(bound, "import", st, src))
        return out
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return [Definition(node.name, "def", st, st.segment())]
    if isinstance(node, ast.ClassDef):
        return [Definition(node.name, "class", st, st.segment())]
    names = _assigned_names(node)
    return [Definition(n, "assign", st, "") for n in names]


def _assigned_names(node: ast.stmt) -> list[str]:
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = list(node.targets)
    elif isinstance(node, ast.AnnAssign | ast.AugAssign):
        targets = [node.target]
    elif isinstance(node, ast.For | ast.AsyncFor):
        targets = [node.target]
    elif isinstance(node, ast.With):
        targets = [i.optional_vars for i in node.items if i.optional_vars is not None]
    names = []
    for t in targets:
        names += [n.id for n in ast.walk(t) if isinstance(n, ast.Name)]
    return names


# -- free names ------------------------------------------------------------------------------------------------


def free_names(source: str, mode: str = "exec") -> set[str]:
    """Names a piece of code reads from module scope (globals and builtins), excluding what it defines itself."""
    table = symtable.symtable(source, "<mlship>", mode)
    found: set[str] = set()
    _collect(table, found, top=True)
    return found


def _collect(table: symtable.SymbolTable, found: set[str], top: bool) -> None:
    for sym in table.get_symbols():
        name = sym.get_name()
        if top:
            if sym.is_referenced() and not (sym.is_assigned() or sym.is_imported()):
                found.add(name)
        elif sym.is_global() and (sym.is_referenced() or sym.is_declared_global()):
            found.add(name)
    for child in table.get_children():
        _collect(child, found, top=False)


# -- inference-call candidates ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A call in a top-level statement that looks like inference."""

    statement: Statement
    call: ast.Call
    kind: str  # "method": obj.predict(...) / "function": a notebook function that predicts / "call": model(X)
    receiver: str  # for "method": the receiver expression; for "function": the function's name
    method: str  # for "method": the method name; for "function": ""
    order: int  # position of the statement in the notebook

    @property
    def fits(self) -> bool:
        """A fit_predict/fit_transform call: it fits the model as it predicts (see FIT_METHODS)."""
        return self.method in FIT_METHODS

    @property
    def source(self) -> str:
        return ast.unparse(self.call)

    @property
    def cell(self) -> Cell:
        return self.statement.cell


def predicting_functions(index: CodeIndex) -> set[str]:
    """Notebook functions that return something and call a prediction method, directly or through another such
    function. A helper that only plots or prints predictions returns nothing and is not an inference function."""
    calls: dict[str, set[str]] = {}
    direct: set[str] = set()
    for name, d in index.functions.items():
        node = d.statement.node
        if not any(isinstance(r, ast.Return) and r.value is not None for r in ast.walk(node)):
            continue
        called = set()
        for sub in ast.walk(node):
            if isinstance(sub, ast.Call):
                if isinstance(sub.func, ast.Attribute) and sub.func.attr in PREDICT_METHODS:
                    direct.add(name)
                elif isinstance(sub.func, ast.Name):
                    called.add(sub.func.id)
        calls[name] = called
    result = set(direct)
    changed = True
    while changed:
        changed = False
        for name, called in calls.items():
            if name not in result and called & result:
                result.add(name)
                changed = True
    return result


class _CallFinder(ast.NodeVisitor):
    """Collect calls in a statement without entering function, class or lambda bodies."""

    def __init__(self) -> None:
        self.calls: list[tuple[ast.Call, frozenset[str]]] = []
        self._local: list[set[str]] = [set()]

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:  # noqa: N802
        return None

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]  # noqa: N815

    def visit_ClassDef(self, node: ast.ClassDef) -> None:  # noqa: N802
        return None

    def visit_Lambda(self, node: ast.Lambda) -> None:  # noqa: N802
        return None

    def _comprehension(self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp) -> None:
        bound = {n.id for g in node.generators for n in ast.walk(g.target) if isinstance(n, ast.Name)}
        self._local.append(self._local[-1] | bound)
        self.generic_visit(node)
        self._local.pop()

    visit_ListComp = visit_SetComp = visit_GeneratorExp = visit_DictComp = _comprehension  # noqa: N815

    def visit_For(self, node: ast.For) -> None:  # noqa: N802
        # A loop variable's final value is whatever the loop ended on: calls through it are not trusted.
        bound = {n.id for n in ast.walk(node.target) if isinstance(n, ast.Name)}
        self._local.append(self._local[-1] | bound)
        self.generic_visit(node)
        self._local.pop()

    def visit_Call(self, node: ast.Call) -> None:  # noqa: N802
        self.calls.append((node, frozenset(self._local[-1])))
        self.generic_visit(node)


def _names_in(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def find_candidates(index: CodeIndex) -> list[Candidate]:
    """Every inference-looking call at the top level of the notebook, in notebook order."""
    predicting = predicting_functions(index)
    found: list[Candidate] = []
    for order, st in enumerate(index.statements):
        if isinstance(st.node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        finder = _CallFinder()
        finder.visit(st.node)
        for call, local in finder.calls:
            func = call.func
            if isinstance(func, ast.Attribute) and func.attr in PREDICT_METHODS + FIT_METHODS:
                if _names_in(func.value) & local or (call.args and _names_in(call.args[0]) & local):
                    continue
                if not (call.args or call.keywords):
                    continue
                found.append(Candidate(st, call, "method", ast.unparse(func.value), func.attr, order))
            elif (isinstance(func, ast.Name) and func.id not in predicting and len(call.args) == 1
                  and not call.keywords and getattr(index.definitions.get(func.id), "kind", None) == "assign"):
                # `model(X_test)`: a deep-learning model called directly, if the kernel confirms it is one.
                if not _names_in(call.args[0]) & local:
                    found.append(Candidate(st, call, "call", func.id, "__call__", order))
            elif isinstance(func, ast.Name) and func.id in predicting:
                if not call.args or _names_in(call.args[0]) & local:
                    continue
                found.append(Candidate(st, call, "function", func.id, "", order))
    return found
