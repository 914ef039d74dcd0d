"""Run as a script in a fresh interpreter (the kernel's): probe a staged bundle's dependencies, then load the finished
bundle with its own runtime and replay its golden cases. One interpreter start, and one import of the notebook's
heavy libraries, serve both (they were two processes, each paying for numpy, pandas and scikit-learn).

Usage: python _fresh.py BUNDLE_DIR [--probe PATH ...], then one JSON request per line on stdin, each answered by
one line on stdout that starts with RS (\\x1e), since the user's code may print too:
  {"probe": {"modules": [...]}} -> {"distributions": {name: version}, "local": {module: origin},
                                    "unknown": [...], "modules": [...]}
  {"verify": {"url": null}}    -> {"cases": [case result, ...]} or {"error": why it cannot load}
An unexpected failure ends the process with a traceback on stderr and no answer. With --probe, the PATHs go in
front of sys.path and the map of installed distributions is built at once, before the first request: the host
starts this process while the notebook still runs, so that work is done by the time the probe is asked.

The probe loads artifacts/values.pkl with an unpickler that records every module the pickle refers to (including
the modules cloudpickle re-imports for functions serialized by value), adds the predictor's imports and the input
schema's modules, and maps each top-level module to the installed distribution that provides it, with its exact
version. It runs with the notebook's folder on sys.path, as the kernel did; before verifying, that folder leaves
sys.path and the modules found there leave sys.modules, so the bundle must load them from its own code/ folder.
Standard-library only: it must run in whatever environment the notebook's kernel used.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import importlib.util
import json
import os
import pickle
import sys
from pathlib import Path
from typing import Any

MARK = "\x1e"
RUNTIME_PACKAGE = "mlship_runtime"
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


def import_modules(source: str) -> set[str]:
    """The modules the top-level import statements of `source` name."""
    found: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


_providers: dict[str, list[str]] = {}


def providers() -> dict[str, list[str]]:
    """Top-level module -> distributions providing it (built once: it reads every installed distribution)."""
    if not _providers:
        _providers.update(importlib.metadata.packages_distributions())
    return _providers


def classify(modules: set[str]) -> dict[str, Any]:
    stdlib = set(sys.stdlib_module_names) | {"__main__", "builtins"}
    distributions: dict[str, str] = {}
    local: dict[str, str] = {}
    unknown: list[str] = []
    for top in sorted({m.split(".")[0] for m in modules}):
        if top in stdlib or top.startswith("mlship_"):
            continue
        dists = providers().get(top)
        if dists:
            meta = importlib.metadata.metadata(dists[0])
            distributions[meta["Name"]] = importlib.metadata.version(dists[0])
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
                found |= import_modules(file.read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError, OSError):
                continue
    return found


def probe(bundle: Path, modules: set[str]) -> dict[str, Any]:
    """`modules`: the predictor's imports and what the runtime needs for the input schema (pandas for a
    DataFrame input); the pickle's are added here, and the imports of local helpers, transitively."""
    modules = modules | pickle_modules(bundle / "artifacts" / "values.pkl")
    result = classify(modules)
    seen_local: set[str] = set()
    while set(result["local"]) - seen_local:  # local helpers may import packages, or other local helpers
        seen_local = set(result["local"])
        modules |= local_imports(result["local"])
        result = classify(modules)
    result["modules"] = sorted(modules)
    return result


class Session:
    """The child's state between requests: what the probe put on sys.path and found there."""

    def __init__(self, bundle: Path) -> None:
        self.bundle = bundle
        self.added: list[str] = []
        self.local: list[str] = []

    def add_path(self, path: list[str]) -> None:
        self.added = [p for p in path if p not in sys.path]
        sys.path[:0] = self.added
        importlib.invalidate_caches()

    def probe(self, modules: list[str]) -> dict[str, Any]:
        result = probe(self.bundle, set(modules))
        self.local = list(result["local"])
        return result

    def verify(self, url: str | None) -> dict[str, Any]:
        self._forget_notebook()
        os.chdir(self.bundle)
        # mlship's own copy of the check (never the bundle's): every file listed, no links, the runtime's digests;
        # then the bundle's runtime is imported from digest-checked sources only, with the bundle off sys.path.
        boot = _host_boot()
        try:
            boot.prepare(self.bundle)
        except boot.BundleLoadError as exc:
            return {"error": exc.message}
        verify = importlib.import_module(f"{RUNTIME_PACKAGE}._verify")
        contract = importlib.import_module(f"{RUNTIME_PACKAGE}._contract")
        try:
            results = verify.verify_url(url, self.bundle) if url else verify.verify_bundle(self.bundle)
        except (contract.BundleLoadError, verify.ServerUnreachable) as exc:
            return {"error": str(exc)}
        return {"cases": [r.to_dict() for r in results]}

    def _forget_notebook(self) -> None:
        for entry in self.added:
            while entry in sys.path:
                sys.path.remove(entry)
        for name in list(sys.modules):
            if name.split(".")[0] in self.local:
                del sys.modules[name]
        importlib.invalidate_caches()


def _host_boot() -> Any:
    """mlship/runtime/_boot.py of the mlship running this script, loaded by path (it is standard-library only)."""
    path = Path(__file__).resolve().parent.parent / "runtime" / "_boot.py"
    spec = importlib.util.spec_from_file_location("_mlship_host_boot", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str]) -> int:
    sys.dont_write_bytecode = True
    # This script's own folder (mlship/bundle/) must not shadow the notebook's modules.
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        del sys.path[0]
    session = Session(Path(argv[1]).resolve())
    if "--probe" in argv:
        session.add_path(argv[argv.index("--probe") + 1:])
        providers()
    for line in sys.stdin:
        request = json.loads(line)
        if "probe" in request:
            answer = session.probe(request["probe"]["modules"])
        else:
            answer = session.verify(request["verify"].get("url"))
        sys.stdout.write(MARK + json.dumps(answer) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
