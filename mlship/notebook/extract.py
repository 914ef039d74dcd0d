"""Decide what to serve: the inference call, its input and sample, the code and values it needs.

Static analysis (analyze.py) proposes; the kernel's final state (through `Inspector`) confirms: a receiver must
evaluate to an object with the method, a data argument to something servable, a name to a value that exists.
Precedence of choices: flags > `# mlship:` directives > `[tool.mlship]` config > auto.
"""

from __future__ import annotations

import ast
import copy
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import ExtractionError
from .analyze import (
    BUILTIN_NAMES,
    PREDICT_METHODS,
    Candidate,
    CodeIndex,
    Definition,
    Statement,
    find_candidates,
    free_names,
)

log = logging.getLogger(__name__)

INPUT_NAME = "X"
EXTRA_METHODS = ("predict_proba", "predict_log_proba", "decision_function")
# Row-preserving operations on the input itself: `df["text"].map(clean)` serves `df["text"]` and keeps `.map(clean)`.
_DATA_METHODS = {"map", "apply", "astype", "fillna", "to_numpy", "to_dict", "tolist", "to_list", "copy", "to_records"}
_DATA_ATTRIBUTES = {"values"}


@dataclass(frozen=True)
class ObjectInfo:
    """What an expression evaluates to in the kernel (_kernel.describe); `error` says why when not `ok`."""

    expr: str
    ok: bool
    error: str | None = None
    type: str | None = None
    kind: str | None = None  # module, class, function or instance
    methods: tuple[str, ...] = ()  # the prediction methods it offers
    fitted: bool = False
    servable: str | None = None  # the input schema kind it can be served as
    has_transform: bool = False
    module: str | None = None  # where a function or class was defined
    module_name: str | None = None  # a module's own name
    direct_call: bool = False  # a deep-learning model served by calling it (a torch nn.Module)
    tensor_dtype: str | None = None  # "torch.float32" for a torch tensor

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ObjectInfo:
        return cls(
            expr=data["expr"], ok=bool(data["ok"]), error=data.get("error"), type=data.get("type"),
            kind=data.get("kind"), methods=tuple(data.get("methods", ())), fitted=bool(data.get("fitted")),
            servable=data.get("servable"), has_transform=bool(data.get("has_transform")),
            module=data.get("module"), module_name=data.get("module_name"),
            direct_call=bool(data.get("direct_call")), tensor_dtype=data.get("tensor_dtype"),
        )


@dataclass(frozen=True)
class FittedObject:
    """A top-level name bound to a fitted object with a predict method (_kernel.fitted_objects)."""

    name: str
    type: str
    aliases: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FittedObject:
        return cls(data["name"], data["type"], tuple(data.get("aliases", ())))


class Inspector(Protocol):
    """What extraction asks the kernel (see _kernel.py for the contract of each call), as typed values."""

    def describe(self, exprs: list[str]) -> list[ObjectInfo]: ...

    def first_parameter(self, expr: str, method: str) -> str | None: ...

    def fitted_objects(self) -> list[FittedObject]: ...


@dataclass
class Choices:
    """What the user forced, from flags, directives or config; `origin` says where each came from."""

    model: str | None = None
    predict: str | None = None
    preprocess: str | None = None
    sample: str | None = None
    origin: dict[str, str] = field(default_factory=dict)


@dataclass
class ServePlan:
    methods: dict[str, str]  # endpoint name -> Python expression over INPUT_NAME
    sample_expr: str | None
    input_name: str
    origin: str  # auto | flag | directive | config
    reason: str
    cell: int | None = None
    model_expr: str | None = None
    model_type: str | None = None
    # The sample was named (--sample, a directive, config): its rows alone become golden cases, none are added
    # from other values of the notebook.
    sample_given: bool = False


@dataclass
class CodePlan:
    """What the generated predictor module holds."""

    imports: list[Definition]
    definitions: list[Definition]  # notebook functions and classes, in notebook order
    by_value: list[str]  # names captured from the kernel
    types: dict[str, str]  # name -> type, for comments in the generated code
    needed_by: dict[str, str] = field(default_factory=dict)  # name -> what uses it, for error messages
    # Notebook classes and functions the pickled values look up in `__main__` (a library pickled them by
    # reference): predictor.py defines them, and what they need, before loading the values and registers them there.
    main_names: list[str] = field(default_factory=list)
    early: list[str] = field(default_factory=list)  # main_names and the definitions they need, defined first


# -- the inference call ----------------------------------------------------------------------------------------


def choose(index: CodeIndex, choices: Choices, kernel: Inspector) -> ServePlan:
    candidates = [c for c in find_candidates(index) if _confirm(c, kernel)]
    # A fit_predict/fit_transform call counts only in a notebook that never calls a prediction method.
    candidates = [c for c in candidates if not c.fits] or candidates
    if choices.predict or choices.model:
        # The user chose; the last candidate (ambiguous or not) only lends its input as the sample.
        last = candidates[-1] if candidates else None
        if choices.predict:
            plan = _plan_from_expression(choices.predict, choices, last, kernel)
        else:
            plan = _plan_from_model(str(choices.model), choices, candidates, last, kernel)
    elif (auto := _auto_candidate(candidates)) is not None:
        _check_not_rebound(auto, index)
        where = f"in the notebook (cell {auto.cell.number})"
        reason = (f"last prediction call {where}" if not auto.fits else
                  f"last {auto.method} call {where}, served through the fitted model's predict (no prediction call)")
        plan = _plan_from_candidate(auto, kernel, origin="auto", reason=reason)
    else:
        plan = _plan_from_fallback(choices, kernel)
    if choices.preprocess:
        name = choices.preprocess
        _check_exists(name, kernel, what="--preprocess function")
        plan.methods = {m: _wrap_input(e, plan.input_name, name) for m, e in plan.methods.items()}
        plan.reason += f"; input preprocessed by {name}() ({choices.origin.get('preprocess', 'flag')})"
    if choices.sample:
        plan.sample_expr = choices.sample
        plan.sample_given = True
    if plan.sample_expr is None:
        raise ExtractionError(
            f"no sample input for {plan.methods['predict']}: the notebook never calls it on data mlship can see",
            hint='pass --sample "EXPR" (e.g. --sample "X_test"), or add `# mlship: sample EXPR` to a cell',
        )
    return plan


def _check_not_rebound(c: Candidate, index: CodeIndex) -> None:
    """Values are captured when the notebook ends: a model name bound to something else after the prediction call
    would silently serve the wrong object. Refitting in place (`model = model.fit(...)`) is fine."""
    root = c.call.func
    while isinstance(root, ast.Attribute | ast.Subscript | ast.Call):
        root = root.value if not isinstance(root, ast.Call) else root.func
    if not isinstance(root, ast.Name):
        return
    for pos in index.bindings.get(root.id, []):
        if pos <= c.order:
            continue
        st = index.statements[pos]
        value = getattr(st.node, "value", None)
        if value is not None and root.id in {n.id for n in ast.walk(value) if isinstance(n, ast.Name)}:
            continue
        _rebound(c, root.id, st, st.node)
    # Inside a later loop or block too: an elbow loop after `labels = kmeans.fit_predict(X)` that does
    # `kmeans = KMeans(k).fit(X)` leaves the last k's model in `kmeans`.
    for st in index.statements[c.order + 1:]:
        if isinstance(st.node, ast.For | ast.AsyncFor | ast.While | ast.If | ast.With | ast.Try):
            nested = _nested_binding(st.node, root.id)
            if nested is not None:
                _rebound(c, root.id, st, nested)


def _rebound(c: Candidate, name: str, st: Statement, node: ast.AST) -> None:
    line = st.segment(node).splitlines()[0].strip()
    raise ExtractionError(
        f"the last prediction call {c.source} (cell {c.cell.number}) uses `{name}`, but cell "
        f"{st.cell.number} binds `{name}` to something else afterwards ({line!r}); "
        "mlship captures objects as they are when the notebook ends",
        hint=f"rename one of them, or pass --model {name} if the later object is the one to serve",
    )


def _nested_binding(node: ast.AST, name: str) -> ast.stmt | None:
    """The first statement inside a compound statement's body (not inside a def, class or lambda) that binds
    `name` to another value; `model = model.fit(X)` refits in place and does not count."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            continue
        if isinstance(child, ast.stmt):
            targets: list[ast.expr] = []
            if isinstance(child, ast.Assign):
                targets = list(child.targets)
            elif isinstance(child, ast.AnnAssign):
                targets = [child.target]
            elif isinstance(child, ast.For | ast.AsyncFor):
                targets = [child.target]
            elif isinstance(child, ast.With | ast.AsyncWith):
                targets = [item.optional_vars for item in child.items if item.optional_vars is not None]
            bound = {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
            value = getattr(child, "value", None)
            refit = value is not None and name in {n.id for n in ast.walk(value) if isinstance(n, ast.Name)}
            if name in bound and not refit:
                return child
        found = _nested_binding(child, name)
        if found is not None:
            return found
    return None


def _confirm(c: Candidate, kernel: Inspector) -> bool:
    if c.kind == "function":
        return True
    [info] = kernel.describe([c.receiver])
    if c.kind == "call":
        return info.ok and info.kind == "instance" and info.direct_call
    if c.fits:
        # Served through predict, so it needs one; and fitted, which `KMeans(4).fit_predict(X)` (a receiver that
        # builds a new, unfitted model when evaluated again) is not.
        return info.ok and info.kind == "instance" and "predict" in info.methods and info.fitted
    return info.ok and info.kind == "instance" and c.method in info.methods


def _auto_candidate(candidates: list[Candidate]) -> Candidate | None:
    if not candidates:
        return None
    last_order = candidates[-1].order
    last = [c for c in candidates if c.order == last_order]
    receivers = {(c.kind, c.receiver) for c in last}
    if len(receivers) > 1:
        listed = "; ".join(f"{c.source} (cell {c.cell.number})" for c in last)
        raise ExtractionError(
            f"the last prediction statement calls several models: {listed}",
            hint="choose one with --model NAME or --predict \"EXPR\" (or `# mlship: model NAME` in a cell)",
        )
    # Same model, several methods (`clf.predict(X)` and `clf.predict_proba(X)`): predict wins, then the order above.
    return min(last, key=lambda c: PREDICT_METHODS.index(c.method) if c.method in PREDICT_METHODS else 99)


def _data_argument(c: Candidate, kernel: Inspector) -> ast.expr:
    call = c.call
    if c.kind == "function" and call.args:
        # predict(df, dv, model) or score(model, df): the first argument that holds data, not a fitted object.
        infos = kernel.describe([ast.unparse(a) for a in call.args])
        for arg, info in zip(call.args, infos, strict=True):
            if info.ok and info.servable:
                return arg
        return call.args[0]
    if call.args:
        return call.args[0]
    param = kernel.first_parameter(c.receiver, c.method) if c.kind == "method" else None
    by_name = {k.arg: k.value for k in call.keywords if k.arg}
    if param and param in by_name:
        return by_name[param]
    for key in ("X", "x", "exog", "data", "df", "features", "inputs", "input"):
        if key in by_name:
            return by_name[key]
    if len(by_name) == 1:
        return next(iter(by_name.values()))
    raise ExtractionError(
        f"cannot tell which argument of {c.source} (cell {c.cell.number}) is the input data",
        hint='say it with --predict "EXPR" using X for the input, e.g. --predict "model.predict(data=X)"',
    )


def _input_chain(data: ast.expr, index: CodeIndex, kernel: Inspector) -> list[ast.expr]:
    """The data argument and the values it is computed from, outermost first, through preprocessing wrappers."""
    chain = [data]
    node: ast.expr = data
    for _ in range(12):
        nxt: ast.expr | None = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _DATA_METHODS:
            nxt = node.func.value
        elif isinstance(node, ast.Attribute) and node.attr in _DATA_ATTRIBUTES:
            nxt = node.value
        elif isinstance(node, ast.Call) and node.args:
            nxt = node.args[0]  # notebook function, fitted transformer, or library call: decided below
        elif isinstance(node, ast.ListComp | ast.GeneratorExp) and len(node.generators) == 1:
            nxt = node.generators[0].iter
        if nxt is None:
            break
        chain.append(nxt)
        node = nxt
    return chain


def _raw_input(data: ast.expr, index: CodeIndex, kernel: Inspector) -> tuple[ast.expr, ObjectInfo]:
    """The innermost servable value under the preprocessing: what clients send."""
    chain = _input_chain(data, index, kernel)
    infos = kernel.describe([ast.unparse(n) for n in chain])
    best: tuple[ast.expr, ObjectInfo] | None = None
    for node, info in zip(chain, infos, strict=True):
        if info.ok and info.servable:
            best = (node, info)
        elif best is not None and not info.ok:
            break
    if best is None:
        first = infos[0]
        what = first.type if first.ok else first.error
        raise ExtractionError(
            f"the input `{ast.unparse(data)}` is a {what}, which mlship cannot take over HTTP",
            hint="mlship serves DataFrames, Series, numpy arrays, lists and dicts of columns; point it at the raw "
            'data with --predict "EXPR" over X plus --sample "EXPR"',
        )
    return best


def _replace(tree: ast.expr, target: ast.expr, name: str) -> str:
    target._mlship_input = True  # type: ignore[attr-defined]
    try:
        clone = copy.deepcopy(tree)
    finally:
        del target._mlship_input  # type: ignore[attr-defined]

    class Swap(ast.NodeTransformer):
        def visit(self, node: ast.AST) -> ast.AST:
            if getattr(node, "_mlship_input", False):
                return ast.copy_location(ast.Name(id=name, ctx=ast.Load()), node)
            return super().visit(node)  # type: ignore[no-any-return]

    return ast.unparse(Swap().visit(clone))


def _outer(c: Candidate) -> ast.expr:
    """The call, with subscripts applied to its result (`clf.predict_proba(X)[:, 1]`)."""
    node: ast.expr = c.call
    for parent in ast.walk(c.statement.node):
        if isinstance(parent, ast.Subscript) and parent.value is node:
            node = parent
    return node


def _plan_from_candidate(c: Candidate, kernel: Inspector, *, origin: str, reason: str) -> ServePlan:
    data = _data_argument(c, kernel)
    raw, raw_info = _raw_input(data, CodeIndex(), kernel)
    # X names the input, unless the served call also reads a notebook variable called X elsewhere.
    outside = [n for n in ast.walk(_outer(c)) if isinstance(n, ast.Name) and n.id == INPUT_NAME]
    inside = [n for n in ast.walk(raw) if isinstance(n, ast.Name) and n.id == INPUT_NAME]
    input_name = INPUT_NAME if len(outside) == len(inside) else "X_input"
    methods = {"predict": _replace(_outer(c) if not c.fits else _refit_free(c, data, "predict"), raw, input_name)}
    model_type = None
    if raw_info.tensor_dtype is not None:
        # The client sends an array; the model takes a tensor of the notebook's dtype (float32, usually).
        torch = "torch" if kernel.describe(["torch"])[0].module_name == "torch" else '__import__("torch")'
        tensor = f"{torch}.as_tensor({input_name}, dtype={raw_info.tensor_dtype.replace('torch', torch, 1)})"
        methods = {m: _swap_name(e, input_name, tensor) for m, e in methods.items()}
    if c.kind == "call":
        [info] = kernel.describe([c.receiver])
        model_type = info.type
    if c.kind == "method":
        [info] = kernel.describe([c.receiver])
        model_type = info.type
        if c.fits and info.has_transform:
            methods["transform"] = _replace(_refit_free(c, data, "transform"), raw, input_name)
        for m in EXTRA_METHODS:
            if m in info.methods and not (m == c.method and _outer(c) is c.call):
                if c.fits:
                    methods[m] = _replace(_refit_free(c, data, m), raw, input_name)
                    continue
                call = copy.copy(c.call)
                call.func = ast.Attribute(value=c.call.func.value, attr=m, ctx=ast.Load())  # type: ignore[attr-defined]
                methods[m] = _replace(call, raw, input_name)
    return ServePlan(
        methods=methods,
        sample_expr=ast.unparse(raw),
        input_name=input_name,
        origin=origin,
        reason=f"{reason}: {ast.unparse(_outer(c))}",
        cell=c.cell.number,
        model_expr=c.receiver,
        model_type=model_type,
    )


def _refit_free(c: Candidate, data: ast.expr, method: str) -> ast.Call:
    """`kmeans.fit_predict(X, y)` as `kmeans.predict(X)`: the fitted model, called on the same data, without
    fitting it again (the labels y and fit options such as sample_weight are the fit's, not the prediction's)."""
    assert isinstance(c.call.func, ast.Attribute)
    func = ast.Attribute(value=c.call.func.value, attr=method, ctx=ast.Load())
    return ast.copy_location(ast.Call(func=func, args=[data], keywords=[]), c.call)


def _plan_from_model(
    model: str, choices: Choices, candidates: list[Candidate], auto: Candidate | None, kernel: Inspector
) -> ServePlan:
    origin = choices.origin.get("model", "flag")
    _parse(model, "--model")
    [info] = kernel.describe([model])
    if not info.ok:
        raise ExtractionError(
            f"--model {model}: {info.error}",
            hint=_known_models_hint(kernel),
        )
    if "predict" not in info.methods:
        raise ExtractionError(
            f"--model {model}: it is a {info.type}, which has no predict method",
            hint=_known_models_hint(kernel),
        )
    normalized = ast.unparse(ast.parse(model, mode="eval").body)
    mine = [c for c in candidates if c.kind == "method" and c.receiver == normalized]
    if mine:
        return _plan_from_candidate(mine[-1], kernel, origin=origin, reason=f"model chosen by {origin}")
    methods = {"predict": f"{model}.predict({INPUT_NAME})"}
    methods.update({m: f"{model}.{m}({INPUT_NAME})" for m in EXTRA_METHODS if m in info.methods})
    sample = None
    if auto is not None:
        sample = ast.unparse(_raw_input(_data_argument(auto, kernel), CodeIndex(), kernel)[0])
    return ServePlan(methods, sample, INPUT_NAME, origin, f"model chosen by {origin}: {model}",
                     model_expr=model, model_type=info.type)


def _plan_from_expression(expr: str, choices: Choices, auto: Candidate | None, kernel: Inspector) -> ServePlan:
    origin = choices.origin.get("predict", "flag")
    _parse(expr, "--predict")
    sample = None
    if auto is not None and not choices.sample:
        sample = ast.unparse(_raw_input(_data_argument(auto, kernel), CodeIndex(), kernel)[0])
    return ServePlan({"predict": expr}, sample, INPUT_NAME, origin, f"expression given by {origin}: {expr}")


def _plan_from_fallback(choices: Choices, kernel: Inspector) -> ServePlan:
    fitted = kernel.fitted_objects()
    if len(fitted) != 1:
        if not fitted:
            raise ExtractionError(
                "no model found: the notebook never calls predict/predict_proba/decision_function on a fitted "
                "object, and no top-level variable holds a fitted object with a predict method",
                hint="fit a model in the notebook, or say what to serve with --model NAME or --predict \"EXPR\"",
            )
        raise ExtractionError(
            f"several fitted models and no prediction call to choose between them: {_list_models(fitted)}",
            hint="choose one with --model NAME (or `# mlship: model NAME` in a cell)",
        )
    name = fitted[0].name
    methods = {"predict": f"{name}.predict({INPUT_NAME})"}
    [info] = kernel.describe([name])
    methods.update({m: f"{name}.{m}({INPUT_NAME})" for m in EXTRA_METHODS if m in info.methods})
    return ServePlan(methods, None, INPUT_NAME, "auto",
                     f"no prediction call found; the only fitted model in the notebook: {name}",
                     model_expr=name, model_type=fitted[0].type)


def _known_models_hint(kernel: Inspector) -> str:
    fitted = kernel.fitted_objects()
    if not fitted:
        return "no top-level variable holds a fitted model with a predict method"
    return "fitted models in the notebook: " + _list_models(fitted)


def _list_models(fitted: list[FittedObject]) -> str:
    return ", ".join(f"{f.name} ({f.type}" + (f"; also named {', '.join(f.aliases)}" if f.aliases else "") + ")"
                     for f in fitted)


def _parse(expr: str, flag: str) -> ast.expr:
    try:
        return ast.parse(expr.strip(), mode="eval").body
    except SyntaxError as exc:
        raise ExtractionError(
            f"{flag} {expr!r} is not a Python expression: {exc.msg}",
            hint=f'quote it for the shell, e.g. {flag} "model.predict(X)"',
        ) from None


def _check_exists(name: str, kernel: Inspector, what: str) -> None:
    [info] = kernel.describe([name])
    if not info.ok:
        raise ExtractionError(f"{what} {name}: {info.error}", hint="name a function defined in the notebook")


def _wrap_input(expr: str, input_name: str, function: str) -> str:
    tree = ast.parse(expr, mode="eval")

    class Wrap(ast.NodeTransformer):
        def visit_Name(self, node: ast.Name) -> ast.AST:  # noqa: N802
            if node.id == input_name:
                return ast.Call(func=ast.Name(function, ast.Load()), args=[node], keywords=[])
            return node

    return ast.unparse(Wrap().visit(tree))


# -- the code the served expressions need ----------------------------------------------------------------------


MAIN_USER = "the captured values (a library pickled it by reference to __main__)"


def plan_code(index: CodeIndex, plan: ServePlan, kernel: Inspector, main_names: list[str] | None = None) -> CodePlan:
    """Walk the free names of the served expressions through the notebook's definitions.

    Imports are re-emitted, notebook functions and classes are emitted as source (and their own free names walked),
    everything else is captured by value from the kernel. `main_names` (found by loading the pickled values back
    in the kernel, _kernel_main.py) must each be a class or function defined in the notebook: they are emitted as
    source too, ahead of the values."""
    main_names = list(main_names or [])
    pending: list[tuple[str, str]] = [(n, MAIN_USER) for n in main_names]  # (name, who needs it)
    for name, expr in plan.methods.items():
        try:
            names = free_names(expr.strip(), "eval")
        except SyntaxError as exc:
            raise ExtractionError(f"served expression {expr!r} does not parse: {exc.msg}") from None
        pending += [(n, f"the served expression for /{name}") for n in sorted(names - {plan.input_name})]
    imports: dict[str, Definition] = {}
    defs: dict[str, Definition] = {}
    by_value: dict[str, str] = {}
    needed: dict[str, str] = {}
    seen: set[str] = set()
    while pending:
        name, needed_by = pending.pop(0)
        if name in seen:
            continue
        seen.add(name)
        d = index.definitions.get(name)
        if d is None and name in BUILTIN_NAMES:
            continue
        if d is not None and d.kind == "import":
            imports[name] = d
            continue
        [info] = kernel.describe([name])
        if not info.ok:
            raise ExtractionError(
                f"{needed_by} uses `{name}`, which is not defined when the notebook has finished ({info.error})",
                hint="define it in a cell that runs (not one marked `# mlship: skip`), or fix the name",
            )
        if (d is not None and d.kind in ("def", "class") and info.kind in ("function", "class")
                and info.module == "__main__"):
            if "get_ipython" in free_names(d.source):
                raise ExtractionError(
                    f"function {name} (cell {d.statement.cell.number}) uses IPython magics or shell escapes, "
                    "which do not exist outside Jupyter",
                    hint="rewrite those lines in plain Python (subprocess, os) inside that function",
                )
            defs[name] = d
            pending += [(n, f"{name} (cell {d.statement.cell.number})") for n in sorted(free_names(d.source) - {name})]
            continue
        if name in main_names:
            _unsourced_main_name(name, info, d)
        by_value[name] = info.type or "?"
        needed[name] = needed_by
    order = {id(st): i for i, st in enumerate(index.statements)}
    definitions = sorted(defs.values(), key=lambda d: order.get(id(d.statement), 0))
    import_list = sorted(imports.values(), key=lambda d: order.get(id(d.statement), 0))
    return CodePlan(import_list, definitions, list(by_value), by_value, needed, main_names,
                    _defined_first(main_names, defs))


def _unsourced_main_name(name: str, info: ObjectInfo, d: Definition | None) -> None:
    """A name the pickles look up in `__main__` but whose source is not a notebook def or class statement."""
    what = f"a {info.kind} ({info.type})" if info.ok else "not defined"
    where = f"; cell {d.statement.cell.number} binds it by assignment" if d is not None else ""
    raise ExtractionError(
        f"the captured values need `__main__.{name}` when they are loaded (a library pickled it by reference), "
        f"but mlship finds no `def` or `class` statement for it in the notebook: it is {what}{where}",
        hint=f"define {name} with a plain `class`/`def` statement in a notebook cell, or move it into a module "
        "beside the notebook (or an installed package) and import it from there",
    )


def _defined_first(main_names: list[str], defs: dict[str, Definition]) -> list[str]:
    """main_names and, transitively, the notebook definitions their source names (a base class, a helper)."""
    early: list[str] = []
    pending = [n for n in main_names if n in defs]
    while pending:
        name = pending.pop(0)
        if name in early:
            continue
        early.append(name)
        pending += sorted((free_names(defs[name].source) - {name}) & set(defs))
    return early


def _swap_name(expr: str, name: str, replacement: str) -> str:
    """`expr` with every load of `name` replaced by the expression `replacement`."""
    new = ast.parse(replacement, mode="eval").body

    class Swap(ast.NodeTransformer):
        def visit_Name(self, node: ast.Name) -> ast.AST:  # noqa: N802
            return copy.deepcopy(new) if node.id == name else node

    return ast.unparse(Swap().visit(ast.parse(expr, mode="eval")))
