"""Code that runs *inside* the notebook's kernel.

mlship sends this file's source to the kernel and executes it in a private namespace, so it must import nothing
from mlship and nothing third-party at module level: the kernel may run in another environment (`--kernel`).
numpy, pandas and cloudpickle are used only when the notebook's objects need them. The serving runtime's
`_codec.py` source is executed next to it (as `to_jsonable`), so the golden outputs are encoded by the very code
that encodes the server's answers.

Every public function takes and returns JSON-able values; the host calls them through `KernelSession.call`.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import os
import sys
import time
import types
from typing import Any

try:
    from ._kernel_columns import find_required
except ImportError:  # inside the kernel: install_code executed _kernel_columns.py's source into this namespace
    pass

USER_NS: dict[str, Any] = {}
to_jsonable: Any = None  # replaced by the runtime codec's to_jsonable when installed in the kernel

PREDICT_METHODS = ("predict", "predict_proba", "predict_log_proba", "decision_function", "score_samples")
_IPYTHON_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}


def install(user_ns: dict[str, Any], codec: Any) -> None:
    global USER_NS, to_jsonable
    USER_NS = user_ns
    to_jsonable = codec


# -- looking at objects ----------------------------------------------------------------------------------------


def _type_name(obj: Any) -> str:
    t = type(obj)
    mod = t.__module__
    return t.__qualname__ if mod in ("builtins", "__main__") else f"{mod}.{t.__qualname__}"


def _kind(obj: Any) -> str:
    if isinstance(obj, types.ModuleType):
        return "module"
    if isinstance(obj, type):
        return "class"
    if isinstance(obj, (types.FunctionType, types.BuiltinFunctionType, types.MethodType)):
        return "function"
    return "instance"


def _is_fitted(obj: Any) -> bool:
    """Best effort: scikit-learn's own check where it applies, otherwise 'has a callable predict'."""
    sklearn_base = sys.modules.get("sklearn.base")
    if sklearn_base is not None and isinstance(obj, sklearn_base.BaseEstimator):
        try:
            from sklearn.utils.validation import check_is_fitted

            check_is_fitted(obj)
        except Exception:
            return False
    return True


def servable_kind(value: Any) -> str | None:
    """The schema kind mlship can serve this value as, or None."""
    pd = sys.modules.get("pandas")
    np = sys.modules.get("numpy")
    if _tensor_dtype(value) is not None:
        return "ndarray" if value.ndim >= 1 else None  # served as the array it converts to (see _as_array)
    if pd is not None and isinstance(value, pd.DataFrame):
        return "dataframe"
    if pd is not None and isinstance(value, pd.Series):
        return "series"
    if np is not None and isinstance(value, np.ndarray):
        return "ndarray" if value.ndim >= 1 else None
    if isinstance(value, (list, tuple)) and value:
        if all(isinstance(v, dict) for v in value):
            return "records"
        if all(_is_scalar(v) for v in value):
            return "list"
        if np is not None and _is_table(value):
            return "ndarray"  # [[5.1, 3.5, 1.4, 0.2]]: rows of numbers, served as a 2-D array
        return None
    if isinstance(value, dict) and value and all(isinstance(k, str) for k in value):
        lengths = {_length(v) for v in value.values()}
        if None not in lengths and len(lengths) == 1:
            return "columns"
    return None


def _is_table(value: Any) -> bool:
    rows = list(value)
    if not all(isinstance(r, (list, tuple)) and r and all(_is_scalar(x) and not isinstance(x, str) for x in r)
               for r in rows):
        return False
    return len({len(r) for r in rows}) == 1


def _is_scalar(v: Any) -> bool:
    np = sys.modules.get("numpy")
    return isinstance(v, (str, int, float, bool)) or v is None or (np is not None and isinstance(v, np.generic))


def _length(v: Any) -> int | None:
    if isinstance(v, (str, bytes, dict)):
        return None
    try:
        return len(v)
    except TypeError:
        return None


def _evaluate(expr: str) -> Any:
    return eval(compile(expr, "<mlship>", "eval"), USER_NS)


def describe(exprs: list[str]) -> list[dict[str, Any]]:
    """For each expression: does it evaluate, to what type, and what prediction methods does it offer."""
    out = []
    for expr in exprs:
        try:
            value = _evaluate(expr)
        except Exception as exc:  # noqa: BLE001 - reported to the host, which decides
            out.append({"expr": expr, "ok": False, "error": f"{type(exc).__name__}: {exc}"})
            continue
        kind = _kind(value)
        methods = [m for m in PREDICT_METHODS if kind == "instance" and callable(getattr(value, m, None))]
        info: dict[str, Any] = {
            "expr": expr,
            "ok": True,
            "type": _type_name(value),
            "kind": kind,
            "methods": methods,
            "fitted": bool(methods) and _is_fitted(value),
            "servable": servable_kind(value),
            "has_transform": kind == "instance" and callable(getattr(value, "transform", None)),
            "module": getattr(value, "__module__", None) if kind in ("function", "class") else None,
            "module_name": value.__name__ if kind == "module" else None,
            "direct_call": kind == "instance" and _is_torch_model(value),
            "tensor_dtype": _tensor_dtype(value),
        }
        out.append(info)
    return out


def first_parameter(expr: str, method: str) -> str | None:
    """The name of the first parameter of `expr.method` (the one data is passed by), if it can be read."""
    try:
        fn = getattr(_evaluate(expr), method)
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except Exception:  # noqa: BLE001
        return None
    return params[0].name if params else None


def fitted_objects() -> list[dict[str, Any]]:
    """Top-level names bound to fitted objects with a callable predict: the fallback when no call is found."""
    found: dict[int, dict[str, Any]] = {}
    for name, value in list(USER_NS.items()):
        if name.startswith("_") or name in _IPYTHON_NAMES or _kind(value) != "instance":
            continue
        if callable(getattr(value, "predict", None)) and _is_fitted(value):
            if id(value) in found:  # `for m in (lr, rf)` leaves m bound to rf: one model, two names
                found[id(value)]["aliases"].append(name)
            else:
                found[id(value)] = {"name": name, "type": _type_name(value), "aliases": []}
    return list(found.values())


# -- samples, schema and golden cases --------------------------------------------------------------------------


def _head(value: Any, n: int) -> Any:
    kind = servable_kind(value)
    if kind in ("dataframe", "series"):
        return value.iloc[:n]
    if kind == "columns":
        return {k: v[:n] for k, v in value.items()}
    return value[:n]


def _row(value: Any, i: int) -> Any:
    """Row i of a sample, as a one-row sample of the same type."""
    kind = servable_kind(value)
    if kind in ("dataframe", "series"):
        return value.iloc[i : i + 1]
    if kind == "columns":
        return {k: v[i : i + 1] for k, v in value.items()}
    return value[i : i + 1]


def _n_rows(value: Any) -> int:
    kind = servable_kind(value)
    if kind == "columns":
        return len(next(iter(value.values())))
    return len(value)


def _scalar_type(values: list[Any], dtype: str = "object") -> str:
    kinds = set()
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        np = sys.modules.get("numpy")
        if np is not None and isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, bool):
            kinds.add("boolean")
        elif isinstance(v, int):
            kinds.add("integer")
        elif isinstance(v, float):
            kinds.add("number")
        elif isinstance(v, str):
            kinds.add("string")
        elif hasattr(v, "isoformat"):
            kinds.add("datetime")
        else:
            kinds.add("any")
    if kinds == {"integer", "number"}:
        return "number"
    if len(kinds) == 1:
        return kinds.pop()
    return "any" if kinds else _type_from_dtype(dtype)


def _type_from_dtype(dtype: Any) -> str:
    kind = getattr(dtype, "kind", None)
    return {"f": "number", "i": "integer", "u": "integer", "b": "boolean", "M": "datetime"}.get(kind or "", "any")


def _column(name: Any, dtype: Any, values: list[Any]) -> dict[str, Any]:
    t = _type_from_dtype(dtype)
    if t == "any":
        t = _scalar_type(values)
    return {"name": str(name), "dtype": str(dtype), "type": t}


def _has_missing(values: Any) -> bool:
    """Whether the notebook's full input has missing values here: only then does the server accept null."""
    isna = getattr(values, "isna", None)
    if callable(isna):
        return bool(isna().any())
    np = sys.modules.get("numpy")
    if np is not None and isinstance(values, np.ndarray):
        if values.dtype.kind == "f":
            return bool(np.isnan(values).any())
        values = values.ravel().tolist() if values.dtype == object else []
    return any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values)


def column_labels(labels: Any) -> str:
    """"str" when every column label is a string, "int" when every one is an integer (`read_csv(header=None)`,
    then `drop(60, axis=1)`): requests name those "0", "1", ... and the runtime turns the names back into ints.
    Anything else (floats, tuples, a mix) has no one JSON spelling that maps back, so it is refused."""
    np = sys.modules.get("numpy")
    integer = (int,) if np is None else (int, np.integer)
    values = list(labels)
    if all(isinstance(c, str) for c in values):
        return "str"
    if all(isinstance(c, integer) and not isinstance(c, bool) for c in values):
        return "int"
    bad = [c for c in values if not isinstance(c, str)]
    raise TypeError(
        f"the input DataFrame has column labels {bad[:5]!r} that are neither all strings nor all integers; "
        "JSON requests name columns by string"
    )


def infer_schema(sample: Any, full: Any = None) -> dict[str, Any]:
    """The schema of `sample`; `full` (the whole input the sample came from) decides which fields may be null."""
    full = sample if full is None else full
    kind = servable_kind(sample)
    if kind == "dataframe":
        labels = column_labels(sample.columns)
        cols = [dict(_column(c, sample[c].dtype, sample[c].tolist()), nullable=_has_missing(full[c]))
                for c in sample.columns]
        schema: dict[str, Any] = {"kind": "dataframe", "columns": cols}
        if labels == "int":
            schema["column_labels"] = "int"
        return schema
    if kind == "series":
        col = _column(sample.name if sample.name is not None else "value", sample.dtype, sample.tolist())
        return {"kind": "series", "name": None if sample.name is None else str(sample.name),
                "dtype": col["dtype"], "type": col["type"], "nullable": _has_missing(full)}
    if kind == "ndarray":
        t = _type_from_dtype(sample.dtype)
        if t == "any":
            t = _scalar_type(sample.ravel().tolist())
        return {"kind": "ndarray", "dtype": str(sample.dtype), "type": t, "shape": [None, *sample.shape[1:]],
                "nullable": _has_missing(full)}
    if kind == "list":
        # nullable said explicitly: the contract's default (true) let null reach a text model that then raised
        # (a 500 where the client sent a bad value).
        return {"kind": "list", "type": _scalar_type(list(sample)), "nullable": _has_missing(list(full))}
    if kind == "records":
        names: list[str] = []
        for rec in sample:
            names += [k for k in rec if k not in names]
        cols = [{"name": str(k), "dtype": "object", "type": _scalar_type([r.get(k) for r in sample])} for k in names]
        return {"kind": "records", "columns": cols}
    if kind == "columns":
        cols = []
        for k, v in sample.items():
            dtype = getattr(v, "dtype", "object")
            cols.append(_column(k, dtype, list(v)))
        return {"kind": "columns", "columns": cols}
    raise TypeError(f"cannot serve a {_type_name(sample)} as input")


def _json_value(v: Any) -> Any:
    if hasattr(v, "isoformat") and not isinstance(v, (int, float, str)):
        return v.isoformat()
    v = to_jsonable(v)
    if isinstance(v, float) and math.isnan(v):
        return None  # a missing value travels as JSON null
    return v


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def instances(sample: Any, schema: dict[str, Any]) -> list[Any]:
    """The sample as a JSON `instances` list, in the row form BUNDLE.md documents for its kind."""
    kind = schema["kind"]
    if kind == "dataframe":
        return [{str(c): _json_value(v) for c, v in zip(sample.columns, row, strict=True)}
                for row in sample.itertuples(index=False, name=None)]
    if kind == "series":
        return [_json_value(v) for v in sample.tolist()]
    if kind == "ndarray":
        return list(_nan_to_none(to_jsonable(sample)))
    if kind == "list":
        return [_json_value(v) for v in sample]
    if kind == "records":
        return [{str(k): _json_value(v) for k, v in rec.items()} for rec in sample]
    if kind == "columns":
        n = _n_rows(sample)
        return [{str(k): _json_value(v[i]) for k, v in sample.items()} for i in range(n)]
    raise TypeError(kind)


def _call(expr: str, input_name: str, value: Any) -> Any:
    ns = dict(USER_NS)
    ns[input_name] = value
    return eval(compile(expr, "<mlship served expression>", "eval"), ns)


def _rows_of(output: Any) -> list[Any] | None:
    out = to_jsonable(output)
    return out if isinstance(out, list) else None


def golden(sample_expr: str, n: int, methods: dict[str, str], input_name: str, more: bool = True) -> dict[str, Any]:
    """Evaluate the sample, infer its schema, and record the served path's outputs row by row.

    When the sample has fewer than `n` rows (`model.predict(new_row)`) and `more` is set, the remaining rows come
    from another value of the notebook with the same schema (the test split; see `matching_values`)."""
    raw = _as_array(_evaluate(sample_expr))
    if isinstance(raw, (list, tuple)) and servable_kind(raw) == "ndarray":
        raw = sys.modules["numpy"].asarray(raw)
    if servable_kind(raw) is None:
        raise TypeError(
            f"the input `{sample_expr}` is a {_type_name(raw)}; mlship serves DataFrames, Series, numpy arrays, "
            "lists of values or records, and dicts of columns"
        )
    total = _n_rows(raw)
    if total == 0:
        raise ValueError(f"the input `{sample_expr}` has no rows, so there is no sample to record")
    sample = _head(raw, n)
    schema = infer_schema(sample, raw)
    rows = instances(sample, schema)
    schema["example"] = rows[0]
    dropped: dict[str, str] = {}
    cases, batch_safe = _record(methods, input_name, sample, rows, sample_expr, 0, dropped)
    sources = [{"expr": sample_expr, "rows": len(rows), "reason": "the inference call's data"}]
    skipped: list[dict[str, str]] = []
    frames = [sample]  # the golden rows' values, in case-number order (for the client columns' proof)
    if more and len(rows) < n:
        kept = {name: expr for name, expr in methods.items() if name not in dropped}
        for found in matching_values(raw, schema, exclude=sample_expr):
            block = _head(found["value"], n - len(rows))
            if not _fits(infer_schema(block), schema):
                skipped.append({"expr": found["name"], "reason": "its values have other JSON types than the sample's"})
                continue
            try:
                extra, safe = _record(kept, input_name, block, instances(block, schema), found["name"], len(rows))
            except Exception as exc:  # noqa: BLE001 - that value is not used; the notebook's own rows still are
                skipped.append({"expr": found["name"], "reason": f"the served path failed on it: {exc}"})
                continue
            cases = _merge_by_method(cases, extra)
            frames.append(block)
            batch_safe = batch_safe and safe
            sources.append({"expr": found["name"], "rows": _n_rows(block), "reason": found["reason"]})
            break
    served = {name: expr for name, expr in methods.items() if name not in dropped}
    columns = client_columns(frames, served, input_name, cases)
    if columns is not None and columns["ignored"]:
        required = columns["required"]
        schema = dict(infer_schema(sample[required], raw[required]), ignored=columns["ignored"])
        for case in cases:
            case["instances"] = [{name: row[name] for name in required} for row in case["instances"]]
        schema["example"] = cases[0]["instances"][0]
    return {"schema": schema, "cases": cases, "batch_safe": batch_safe, "rows": len(rows), "total_rows": total,
            "dropped": dropped, "sources": sources, "skipped_sources": skipped, "columns": columns}


def client_columns(frames: list[Any], methods: dict[str, str], input_name: str,
                   cases: list[dict[str, Any]]) -> dict[str, Any] | None:
    """For a DataFrame input: the columns the served path needs (_kernel_columns.find_required on all the golden
    rows, `frames` being their values in case-number order), proved on every golden case row by row. None for
    other inputs, and for frames whose labels are not unique strings (nothing chosen: every column stays).

    The result's `proof` is "ok", or why the client-only frame failed, in which case nothing is ignored."""
    pd = sys.modules.get("pandas")
    sample = frames[0]
    if pd is None or not isinstance(sample, pd.DataFrame) or not sample.columns.is_unique or not all(
        isinstance(c, str) for c in sample.columns
    ):
        return None
    golden_rows = pd.concat(frames) if len(frames) > 1 else sample

    def run(kept: list[str]) -> Any:
        # A copy per trial: a served path that writes into its input (X["new"] = ...) must not change the sample.
        frame = golden_rows[kept].copy()
        return {name: to_jsonable(_call(expr, input_name, frame)) for name, expr in methods.items()}

    started = time.perf_counter()
    found = find_required(list(sample.columns), run, _same)
    found["proof"] = "ok"
    if found["ignored"]:
        for case in cases:
            index = int(case["id"].rsplit("-", 1)[1])  # the row's number among all golden rows
            try:
                row = golden_rows.iloc[index : index + 1][found["required"]].copy()
                out = _rows_of(_call(methods[case["method"]], input_name, row))
            except Exception as exc:  # noqa: BLE001
                out, why = None, f"{type(exc).__name__}: {exc}"
            else:
                why = "a different output"
            if out is None or not _same(out, case["expected"]):
                found.update(proof=f"golden case {case['id']} with only {found['required']} gave {why}",
                             required=list(sample.columns), ignored=[])
                break
    found["seconds"] = round(time.perf_counter() - started, 3)
    return found


def _record(methods: dict[str, str], input_name: str, sample: Any, rows: list[Any], source: str, first: int,
            dropped: dict[str, str] | None = None) -> tuple[list[dict[str, Any]], bool]:
    """Golden cases of `sample` (rows numbered from `first`) for each method, and whether predicting its rows
    together equals predicting them one by one. With `dropped`, an extra method that fails is recorded there
    and left out; without it, any failure raises."""
    cases = []
    batch_safe = True
    for name, expr in methods.items():
        try:
            whole = _rows_of(_call(expr, input_name, sample))
        except Exception as exc:  # noqa: BLE001
            if name == "predict" or dropped is None:
                raise
            # An extra method the object has but cannot use here (SVC without probability=True): not served.
            dropped[name] = f"{type(exc).__name__}: {exc}"
            continue
        for i in range(len(rows)):
            out = _rows_of(_call(expr, input_name, _row(sample, i)))
            if out is None or len(out) != 1:
                raise ValueError(
                    f"`{expr}` on one input row returned {type(out).__name__} "
                    f"of length {len(out) if out is not None else '?'}, not one result per row"
                )
            cases.append({"id": f"{name}-{first + i}", "method": name, "instances": [rows[i]], "expected": out,
                          "source": source})
            if whole is None or len(whole) != len(rows) or not _same(whole[i], out[0]):
                batch_safe = False
    return cases, batch_safe


def _fits(found: dict[str, Any], schema: dict[str, Any]) -> bool:
    """Whether rows of schema `found` pass `schema`'s checks: same dtypes, and JSON types the same (an integer
    where a number goes, and "any" for a column of nothing but nulls, are fine)."""
    def fields(s: dict[str, Any]) -> list[dict[str, Any]]:
        return list(s["columns"]) if "columns" in s else [s]

    mine, theirs = fields(found), fields(schema)
    if found["kind"] != schema["kind"] or len(mine) != len(theirs):
        return False
    for a, b in zip(mine, theirs, strict=True):
        if a.get("name") != b.get("name") or a.get("dtype") != b.get("dtype"):
            return False
        if a["type"] != b["type"] and a["type"] != "any" and b["type"] != "any" and (a["type"], b["type"]) != (
                "integer", "number"):
            return False
    return True


def _merge_by_method(cases: list[dict[str, Any]], extra: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The cases of both lists, each method's together, in the order the methods came."""
    order = list(dict.fromkeys(c["method"] for c in cases + extra))
    return [c for m in order for c in cases + extra if c["method"] == m]


# -- other values with the sample's schema (golden rows beyond a one-row inference call) ----------------------

_TEST_WORDS = ("test", "val", "valid", "holdout", "eval", "new", "unseen")
_INPUT_WORDS = ("x", "feature", "input", "text", "doc", "sentence", "review", "sample", "data")
_DERIVED_WORDS = ("scaled", "transformed", "encoded", "pca", "norm", "std", "processed", "prep", "vec", "tfidf",
                  "emb", "reduced", "poly")
# A list of strings shaped like the texts a model takes may be its labels ("spam"/"ham"): never golden input.
_LABEL_WORDS = ("label", "target", "class", "answer", "pred", "truth", "output", "result")


def _words(name: str) -> list[str]:
    return [w for w in name.lower().replace("-", "_").split("_") if w]


def _is_label_name(name: str) -> bool:
    words = _words(name)
    first = name.split("_")[0]
    return first in ("y", "Y") or (bool(words) and words[0].rstrip("0123456789") == "y") or any(
        w.startswith(label) for w in words for label in _LABEL_WORDS)


def _plausibility(name: str) -> tuple[int, str]:
    """How much `name` reads like held-out model input (higher first): X_test, x_val, test_texts > X > X_train."""
    words = _words(name)
    score = 0
    if any(w.startswith(t) for w in words for t in _TEST_WORDS):
        score += 2
    if any(w.rstrip("0123456789s") in _INPUT_WORDS or w.startswith(_INPUT_WORDS[1:]) for w in words):
        score += 1
    if any(w.startswith("train") for w in words):
        score -= 2
    if any(w.startswith(_DERIVED_WORDS) for w in words):
        score -= 1  # X_test_scaled has the raw input's shape, but not its values: X_test first
    return score, ("named like a test split" if score >= 2 else "named like model input" if score >= 1
                   else "no test split of that shape" if score == 0 else "training data, no test split of that shape")


def matching_values(raw: Any, schema: dict[str, Any], exclude: str = "") -> list[dict[str, Any]]:
    """Top-level values of the notebook whose rows fit `schema` exactly as `raw`'s do, most plausible first:
    [{"name", "value" (converted to the sample's form), "rows", "reason"}].

    "Fit exactly" is what keeps the golden check right: a frame has the same columns with the same dtypes (and
    is reordered to the sample's column order), an array the same trailing shape and dtype, a list of texts is
    a list, tuple, Series or 1-D array of strings that is not a column of labels. Values named like labels or
    targets (y_test, labels) are never taken."""
    found = []
    for name, value in list(USER_NS.items()):
        if (name.startswith("_") or name in _IPYTHON_NAMES or name == exclude or value is raw
                or _is_label_name(name)):
            continue
        try:
            converted = _as_sample_of(value, raw, schema)
        except Exception:  # noqa: BLE001 - a value that cannot even be compared is not a match
            converted = None
        if converted is None or _n_rows(converted) == 0:
            continue
        score, why = _plausibility(name)
        rows = _n_rows(converted) if schema["kind"] != "list" else len(value)
        found.append({"name": name, "value": converted, "rows": rows, "score": score,
                      "reason": f"{_same_what(schema)}; {why}"})
    found.sort(key=lambda f: (-f["score"], -f["rows"], f["name"]))
    return [{k: v for k, v in f.items() if k != "score"} for f in found]


def _same_what(schema: dict[str, Any]) -> str:
    kind = schema["kind"]
    if kind == "dataframe":
        return "same columns and dtypes as the sample"
    if kind == "ndarray":
        return "same row shape and dtype as the sample"
    if kind == "series":
        return "same name and dtype as the sample"
    return "texts, like the sample"


def _as_sample_of(value: Any, raw: Any, schema: dict[str, Any]) -> Any:
    """`value` in `raw`'s form when its rows fit `schema` as raw's do, else None."""
    pd = sys.modules.get("pandas")
    np = sys.modules.get("numpy")
    kind = schema["kind"]
    if kind == "dataframe" and pd is not None and isinstance(value, pd.DataFrame):
        cols = list(raw.columns)
        if len(value.columns) != len(cols) or set(value.columns) != set(cols) or value.columns.has_duplicates:
            return None
        if any(value[c].dtype != raw[c].dtype for c in cols):
            return None
        value = value if list(value.columns) == cols else value[cols]
        return _complete_rows(value, schema)
    if kind == "ndarray" and np is not None and isinstance(value, np.ndarray):
        if value.ndim != raw.ndim or value.shape[1:] != raw.shape[1:] or value.dtype != raw.dtype:
            return None
        return _complete_rows(value, schema)
    if kind == "series" and pd is not None and isinstance(value, pd.Series):
        if value.dtype != raw.dtype or value.name != raw.name:
            return None
        return _complete_rows(value, schema)
    if kind == "list" and schema.get("type") == "string":
        return _texts(value)
    return None


def _texts(value: Any) -> list[str] | None:
    """`value` as a list of strings when it holds texts (not a column of a few repeated labels), else None."""
    pd = sys.modules.get("pandas")
    np = sys.modules.get("numpy")
    head: list[Any]
    # The first 1,000 (--sample-rows' limit) are all golden could take: a million texts are not copied or scanned.
    if pd is not None and isinstance(value, pd.Series):
        head = value.iloc[:1000].tolist()
    elif np is not None and isinstance(value, np.ndarray) and value.ndim == 1:
        head = value[:1000].tolist()
    elif isinstance(value, (list, tuple)):
        head = list(value[:1000])
    else:
        return None
    if not head or not all(isinstance(v, str) for v in head):
        return None
    if len(set(head)) <= max(2, len(head) // 2):
        return None  # "spam", "ham", "spam", ...: labels, whatever the value is called
    return [str(v) for v in head]


def _complete_rows(value: Any, schema: dict[str, Any]) -> Any:
    """The rows of `value` with no missing value where the schema refuses null (its golden rows must pass it)."""
    kind = schema["kind"]
    if kind == "dataframe":
        strict = [c for c, spec in zip(value.columns, schema["columns"], strict=True) if not spec["nullable"]]
        return value[~value[strict].isna().any(axis=1)] if strict else value
    if schema.get("nullable", True):
        return value
    if kind == "series":
        return value[~value.isna()]
    if value.dtype.kind == "f":
        np = sys.modules["numpy"]
        return value[~np.isnan(value.reshape(len(value), -1)).any(axis=1)]
    return value


def _same(a: Any, b: Any, rtol: float = 1e-9, atol: float = 1e-12) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        if a == b or (math.isnan(a) and math.isnan(b)):  # equal infinities subtract to NaN
            return True
        return abs(a - b) <= atol + rtol * abs(b)
    return bool(a == b)


# -- serialization ---------------------------------------------------------------------------------------------


def _stable_class_ids(cloudpickle: Any) -> None:
    """Give the notebook's classes content-derived cloudpickle tracker ids instead of random uuids.

    cloudpickle tags every class it pickles by value with a uuid4, so two packagings of the same notebook would
    differ in bytes. A digest of the class's name and source is just as unique within one pickle."""
    mod = cloudpickle.cloudpickle
    registry = getattr(mod, "_DYNAMIC_CLASS_TRACKER_BY_CLASS", None)
    by_id = getattr(mod, "_DYNAMIC_CLASS_TRACKER_BY_ID", None)
    if registry is None or by_id is None:
        return
    for value in list(USER_NS.values()):
        if isinstance(value, type) and value.__module__ == "__main__" and value not in registry:
            try:
                src = inspect.getsource(value)
            except (OSError, TypeError):
                src = value.__qualname__
            tracker = hashlib.sha256(f"{value.__qualname__}\n{src}".encode()).hexdigest()[:32]
            registry[value] = tracker
            by_id[tracker] = value


def _dumps(obj: Any) -> bytes:
    import cloudpickle

    return bytes(cloudpickle.dumps(obj, protocol=5))


def _find_unpicklable(obj: Any, path: str, depth: int = 0) -> str:
    """The deepest attribute or item path under `obj` that still fails to pickle."""
    if depth > 6:
        return path
    children: list[tuple[str, Any]] = []
    if isinstance(obj, dict):
        children = [(f"{path}[{k!r}]", v) for k, v in obj.items()]
    elif isinstance(obj, (list, tuple, set, frozenset)):
        children = [(f"{path}[{i}]", v) for i, v in enumerate(obj)]
    else:
        state = getattr(obj, "__dict__", None)
        if isinstance(state, dict):
            children = [(f"{path}.{k}", v) for k, v in state.items()]
    for child_path, child in children:
        try:
            _dumps(child)
        except Exception:  # noqa: BLE001
            return _find_unpicklable(child, child_path, depth + 1)
    return path


def serialize(names: list[str], path: str | None) -> dict[str, Any]:
    """cloudpickle {name: value} for the captured names into `path`; explain the first value that fails."""
    try:
        import cloudpickle
    except ImportError:
        return {"ok": False, "error": "cloudpickle is not installed in the kernel's environment",
                "name": None, "path": None}
    _stable_class_ids(cloudpickle)
    values = {name: USER_NS[name] for name in names}
    for name in names:
        try:
            _dumps(values[name])
        except Exception as exc:  # noqa: BLE001
            where = _find_unpicklable(values[name], name)
            culprit = _evaluate_path(values[name], name, where)
            return {"ok": False, "name": name, "path": where, "type": _type_name(culprit),
                    "error": f"{type(exc).__name__}: {exc}"}
    data = _dumps(values)
    if path is None:
        return {"ok": True, "bytes": len(data)}
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
    return {"ok": True, "bytes": len(data)}


def _evaluate_path(root: Any, name: str, path: str) -> Any:
    try:
        return eval(path, {name: root})
    except Exception:  # noqa: BLE001
        return root


def runtime_info() -> dict[str, Any]:
    import platform

    return {"python": platform.python_version(), "implementation": platform.python_implementation(),
            "executable": sys.executable}


# -- deep-learning models called directly ----------------------------------------------------------------------


def _is_torch_model(value: Any) -> bool:
    """A PyTorch nn.Module served by calling it (`model(X)`), not a loss function."""
    nn = sys.modules.get("torch.nn")
    if nn is None or not isinstance(value, nn.Module):
        return False
    loss = getattr(getattr(nn, "modules", None), "loss", None)
    return not (loss is not None and isinstance(value, loss._Loss))


def _tensor_dtype(value: Any) -> str | None:
    """"torch.float32" for a torch tensor, else None."""
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(value, torch.Tensor):
        return None
    return str(value.dtype)


def _as_array(value: Any) -> Any:
    """A torch tensor as the numpy array a client's JSON decodes to (the served code converts it back)."""
    if _tensor_dtype(value) is None:
        return value
    return value.detach().cpu().numpy()
