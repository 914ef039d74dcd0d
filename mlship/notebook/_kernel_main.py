"""Code that runs *inside* the notebook's kernel: which `__main__` names the captured values look up when loaded.

cloudpickle stores the notebook's classes and functions by value, but only those it pickles itself. A library that
pickles part of its own state with the standard pickler (skorch's `__getstate__`, `torch.save` of a whole module,
an object whose `__reduce__` calls `pickle.dumps`) stores a notebook class *by reference*, as `__main__.Name`;
a fresh interpreter then fails with "Can't get attribute 'Name' on <module '__main__'>".

The reliable way to find those names is to load the pickle back, here, where they exist, while `__main__` is a
proxy that records every attribute looked up on it. Every unpickler (pickle's C and Python ones, joblib's,
`torch.load` nested inside a `__setstate__`) finds a module through `sys.modules`, so every lookup is seen.

Like _kernel.py, this imports nothing from mlship and nothing third-party at module level.
"""

from __future__ import annotations

import pickle
import sys
import types
from typing import Any

USER_NS: dict[str, Any] = {}


def install(user_ns: dict[str, Any]) -> None:
    global USER_NS
    USER_NS = user_ns


class RecordingMain(types.ModuleType):
    """A stand-in for `__main__` that answers from `namespace` and remembers each name it was asked for.

    Only `__name__`, `__doc__` and the other module attributes live in the proxy's own `__dict__`, so every other
    lookup reaches `__getattr__`."""

    def __init__(self, namespace: dict[str, Any]) -> None:
        super().__init__("__main__")
        self.__dict__["_mlship_namespace"] = namespace
        self.__dict__["_mlship_seen"] = []

    def __getattr__(self, name: str) -> Any:
        namespace = self.__dict__["_mlship_namespace"]
        if name not in namespace:
            raise AttributeError(f"module '__main__' has no attribute '{name}'")
        seen = self.__dict__["_mlship_seen"]
        if name not in seen:
            seen.append(name)
        return namespace[name]

    @property
    def seen(self) -> list[str]:
        return list(self.__dict__["_mlship_seen"])


def recorded_lookups(data: bytes, namespace: dict[str, Any]) -> list[str]:
    """The `__main__` names that unpickling `data` looks up, in the order first asked for; `namespace` answers
    them (the notebook's). The real `__main__` is back in sys.modules afterwards, whatever happened."""
    real = sys.modules.get("__main__")
    proxy = RecordingMain(namespace)
    sys.modules["__main__"] = proxy
    try:
        pickle.loads(data)
    finally:
        if real is None:
            del sys.modules["__main__"]
        else:
            sys.modules["__main__"] = real
    return proxy.seen


def _describe(name: str, value: Any) -> dict[str, Any]:
    kind = "class" if isinstance(value, type) else "function" if callable(value) else "value"
    t = value if isinstance(value, type) else type(value)
    return {"name": name, "kind": kind, "module": getattr(value, "__module__", None),
            "type": f"{t.__module__}.{t.__qualname__}"}


def main_references(names: list[str], path: str | None) -> dict[str, Any]:
    """Which notebook names the captured values (pickled into `path`, or pickled again now when None) need in
    `__main__` when they are loaded. Answers {"ok": true, "names": [{name, kind, module, type}]}, or ok false with
    the error when the values do not even load back here."""
    if path is not None:
        with open(path, "rb") as fh:
            data = fh.read()
    else:
        import cloudpickle

        data = cloudpickle.dumps({name: USER_NS[name] for name in names}, protocol=5)
    try:
        seen = recorded_lookups(data, USER_NS)
    except Exception as exc:  # noqa: BLE001 - reported to the host, which explains it
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"ok": True, "names": [_describe(name, USER_NS[name]) for name in seen]}
