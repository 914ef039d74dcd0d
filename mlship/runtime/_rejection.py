"""Which exceptions of a model call are the model refusing the client's input (422), not the model failing (500).

An input can pass the schema and still be refused by the model's own input checks: scikit-learn's
`check_array` finds a value that a StandardScaler turned into inf, a OneHotEncoder with handle_unknown="error"
meets a category it was not fitted on, a cast overflows. Those are the client's to fix, so the client gets the
library's message. Everything else a model raises stays a 500 with a generic message (a bug in the notebook's
code must not leak its details, nor be blamed on the client).

The rule (docs/RUNTIME.md, "A model's rejection of an input"): the exception is one of the types a table row
allows, and the frame that raised it (the innermost frame of its traceback) is in that row's module, or a
submodule of it, and in one of its functions when the row names any. Only the raising frame counts, not the
frames above it: a ValueError that the notebook's own code raises after calling scikit-learn is a 500. C
extensions (numpy's casts) raise in the Python frame that called them, so a cast that scikit-learn's
validation does is in its frame.
"""

from __future__ import annotations

from types import TracebackType

from ._values import escape_text

# How much of the library's message a 422 carries: its first line, at most this many characters.
MESSAGE_LIMIT = 300

_CHECKS = (ValueError, TypeError, OverflowError, FloatingPointError)
_CASTS = (OverflowError, FloatingPointError)

# (module, exception types, functions or () for any function of the module). One table for every library.
REJECTING: tuple[tuple[str, tuple[type[BaseException], ...], tuple[str, ...]], ...] = (
    # check_array / _assert_all_finite / check_X_y and the casts they do (not check_is_fitted: see below)
    ("sklearn.utils.validation", _CHECKS, ()),
    # OneHotEncoder / OrdinalEncoder with handle_unknown="error": "Found unknown categories ..."
    ("sklearn.preprocessing._encoders", (ValueError,), ()),
    # LabelEncoder and the encoders' shared helpers: "y contains previously unseen labels"
    ("sklearn.preprocessing._label", (ValueError,), ()),
    ("sklearn.utils._encode", (ValueError, TypeError), ()),
    # XGBoost's conversion of the input (DMatrix from pandas/numpy: unsupported dtypes, bad categories)
    ("xgboost.data", (ValueError, TypeError), ()),
    # LightGBM's checks of a pandas input's dtypes and categories
    ("lightgbm.basic", (ValueError, TypeError), ("_data_from_pandas", "_check_for_bad_pandas_dtypes")),
    # pandas' conversions of the values (astype, to_numeric, to_datetime, categoricals)
    ("pandas.core.dtypes.astype", _CHECKS, ()),
    ("pandas.core.dtypes.cast", _CHECKS, ()),
    ("pandas.core.tools", _CHECKS, ()),
    # numpy's own casts and floating-point checks (np.errstate(all="raise")): overflow only
    ("numpy", _CASTS, ()),
)

# Raised from the validation module but about the model, not the input: an unfitted estimator is a 500.
_NOT_INPUT = frozenset({"NotFittedError"})


def _raising_module(exc: BaseException) -> tuple[str, str] | None:
    """The module and function name of the frame that raised `exc`, or None without a traceback."""
    tb: TracebackType | None = exc.__traceback__
    if tb is None:
        return None
    while tb.tb_next is not None:
        tb = tb.tb_next
    frame = tb.tb_frame
    return str(frame.f_globals.get("__name__", "")), frame.f_code.co_name


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def rejection(exc: BaseException) -> str | None:
    """The message for a 422 when `exc` is the model's input validation refusing the input, else None.

    The message is the library's, as it is: its type, its first line, at most MESSAGE_LIMIT characters,
    control and invisible characters escaped (it may quote what the client sent).
    """
    if not isinstance(exc, _CHECKS) or type(exc).__name__ in _NOT_INPUT:
        return None
    where = _raising_module(exc)
    if where is None:
        return None
    module, function = where
    for package, types, functions in REJECTING:
        if _in(module, package) and isinstance(exc, types) and (not functions or function in functions):
            return f"the model rejected the input: {type(exc).__name__}: {_first_line(str(exc))}"
    return None


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "(no message)"
    line = escape_text(line)
    return line if len(line) <= MESSAGE_LIMIT else line[: MESSAGE_LIMIT - 1] + "…"
