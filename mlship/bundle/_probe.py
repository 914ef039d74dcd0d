"""Run as a script in a fresh interpreter (the kernel's): which packages does a staged bundle need?

Usage: python _probe.py BUNDLE_DIR [MODULE ...]  -> one JSON object on stdout.

It loads artifacts/values.pkl with an unpickler that records every module the pickle refers to (including the
modules cloudpickle re-imports for functions serialized by value), and reads the imports of predictor.py. Each
top-level module is then mapped to the installed distribution that provides it, with its exact version.
Standard-library only: it must run in whatever environment the notebook's kernel used.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import pickle
import sys
from pathlib import Path
from typing import Any

_SUBIMPORTS = {"subimport", "dynamic_subimport"}


class RecordingUnpickler(pickle.Unpickler):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.modules: set[str] = set()

    def find_class(self, module: str, name: str) -> Any:
        self.modules.add(module)
        found = super().find_class(module, name)
        if name in _SUBIMPORTS and module.startswith("cloudpickle"):
            def recording_import(modname: str, *args: Any) -> Any:
                self.modules.add(modname)
                return found(modname, *args)

            return recording_import
        return found


def pickle_modules(path: Path) -> set[str]:
    if not path.exists():
        return set()
    with path.open("rb") as fh:
        unpickler = RecordingUnpickler(fh)
        unpickler.load()
    return unpickler.modules


def import_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def classify(modules: set[str], bundle: Path) -> dict[str, Any]:
    providers = importlib.metadata.packages_distributions()
    stdlib = set(sys.stdlib_module_names) | {"__main__", "builtins"}
    distributions: dict[str, str] = {}
    local: dict[str, str] = {}
    unknown: list[str] = []
    for top in sorted({m.split(".")[0] for m in modules}):
        if top in stdlib or top.startswith("mlship_"):
            continue
        dists = providers.get(top)
        if dists:
            for dist in dists[:1]:
                meta = importlib.metadata.metadata(dist)
                distributions[meta["Name"]] = importlib.metadata.version(dist)
            continue
        spec = importlib.util.find_spec(top)
        origin = spec.origin if spec is not None else None
        if spec is not None and spec.submodule_search_locations:
            local[top] = str(Path(list(spec.submodule_search_locations)[0]))
        elif origin and origin not in ("built-in", "frozen"):
            local[top] = origin
        else:
            unknown.append(top)
    return {"distributions": distributions, "local": local, "unknown": unknown}


def local_imports(local: dict[str, str]) -> set[str]:
    """What the modules copied from beside the notebook import in turn."""
    found: set[str] = set()
    for origin in local.values():
        path = Path(origin)
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            try:
                found |= import_modules(file)
            except (SyntaxError, UnicodeDecodeError, OSError):
                continue
    return found


def main(argv: list[str]) -> int:
    bundle = Path(argv[1])
    # argv[2:]: modules the runtime needs for the input schema (pandas for a DataFrame input), versions from here.
    modules = (pickle_modules(bundle / "artifacts" / "values.pkl") | import_modules(bundle / "predictor.py")
               | set(argv[2:]))
    result = classify(modules, bundle)
    seen_local: set[str] = set()
    while set(result["local"]) - seen_local:  # local helpers may import packages, or other local helpers
        seen_local = set(result["local"])
        modules |= local_imports(result["local"])
        result = classify(modules, bundle)
    result["modules"] = sorted(modules)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
