"""_kernel_main.py: loading a pickle back with a recording `__main__` finds the names it looks up by reference."""

from __future__ import annotations

import pickle
import sys
from typing import Any

import cloudpickle

from mlship.notebook import _kernel_main


class Helper:
    def __init__(self, k: int) -> None:
        self.k = k


class Nested:
    """Pickles its helper with the standard pickler inside its own state, as skorch does with torch.save."""

    def __init__(self) -> None:
        self.helper = Helper(3)

    def __getstate__(self) -> dict[str, Any]:
        return {"blob": pickle.dumps(self.helper)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.helper = pickle.loads(state["blob"])


def _as_main(cls: type) -> type:
    body = {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")}
    clone = type(cls.__name__, cls.__bases__, body)
    clone.__module__ = "__main__"
    clone.__qualname__ = cls.__name__
    return clone


def test_nested_standard_pickles_are_recorded_and_main_is_restored() -> None:
    helper, nested = _as_main(Helper), _as_main(Nested)
    namespace = {"Helper": helper, "Nested": nested}
    real = sys.modules["__main__"]
    real.Helper = helper  # where pickle.dumps looks the class up while pickling
    try:
        obj = nested.__new__(nested)
        obj.helper = helper(3)
        data = cloudpickle.dumps({"obj": obj})  # Nested by value; Helper inside by reference
    finally:
        delattr(real, "Helper")
    assert _kernel_main.recorded_lookups(data, namespace) == ["Helper"]
    assert sys.modules["__main__"] is real


def test_a_pickle_without_main_references_records_nothing() -> None:
    assert _kernel_main.recorded_lookups(pickle.dumps({"a": [1, 2.5]}), {}) == []


def test_a_name_missing_from_the_namespace_fails_like_a_fresh_interpreter() -> None:
    proxy = _kernel_main.RecordingMain({"there": 1})
    assert proxy.there == 1 and proxy.seen == ["there"]
    try:
        proxy.missing  # noqa: B018
    except AttributeError as exc:
        assert "missing" in str(exc)
    else:
        raise AssertionError("no AttributeError")
