"""Run as a script in a fresh interpreter (the kernel's): probe a staged bundle's dependencies, then load the finished
bundle with its own runtime and replay its golden cases. One interpreter start, and one import of the notebook's
heavy libraries, serve both (they were two processes, each paying for numpy, pandas and scikit-learn).

Usage: python _fresh.py BUNDLE_DIR [--probe PATH ...], then one JSON request per line on stdin, each answered by
one line on stdout that starts with RS (\\x1e), since the user's code may print too:
  {"probe": {"modules": [...]}} -> {"distributions": {name: version}, "local": {module: origin},
                                    "unknown": [...], "modules": [...], "preloaded": [...]}
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

Snapshots (Linux only; `--preload PKG,...` after --probe): importing numpy, pandas and scikit-learn cold is most of
the probe's time, so while the notebook runs, a helper process imports the notebook's third-party top-level packages
one at a time and forks a paused copy of itself after each (a snapshot: the cold interpreter plus packages 1..k).
At the probe, this process (the coordinator, which itself stays cold) hands the requests to the deepest snapshot
whose pre-imported packages the bundle imports anyway: each is the top-level package of a module the pickle names
(read with pickletools, nothing imported), of the served code's imports or of the schema's modules. No snapshot
ever holds a package the bundle does not need, so the check proves what a cold interpreter proves: nothing the
notebook alone imported is there. The snapshot checks its answer against the probe's real record (every module the
unpickler asked for) and answers only successes: a refusal, a failure, a failing case or a crash is redone here,
cold, and only the cold answer counts. The coordinator is the subreaper of every process it forks and exits only
after all have ended.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.metadata
import importlib.util
import json
import os
import pickle
import pickletools
import signal
import sys
import traceback
import types
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

MARK = "\x1e"
RUNTIME_PACKAGE = "mlship_runtime"
_SUBIMPORTS = {"subimport", "dynamic_subimport"}
MAX_SNAPSHOTS = 6
_PR_SET_CHILD_SUBREAPER = 36


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
    with path.open("rb") as fh, _placeholder_main():
        unpickler = RecordingUnpickler(fh)
        unpickler.load()
    return unpickler.modules


class _PlaceholderMain(types.ModuleType):
    """`__main__` while the probe loads the values: a notebook class that a library pickled by reference (skorch's
    torch.save inside __getstate__) is defined by predictor.py, which does not exist yet; the probe only wants the
    modules, so such a lookup gets an empty stand-in class (the verification step loads the real thing)."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        stand_in = type(name, (), {"__module__": "__main__"})
        setattr(self, name, stand_in)
        return stand_in


@contextlib.contextmanager
def _placeholder_main() -> Iterator[None]:
    real = sys.modules["__main__"]
    sys.modules["__main__"] = _PlaceholderMain("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = real


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

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        if "probe" in request:
            return self.probe(request["probe"]["modules"])
        return self.verify(request["verify"].get("url"))

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


# -- snapshots -----------------------------------------------------------------------------------------------------


def scan_pickle_modules(path: Path) -> set[str]:
    """The modules a pickle's GLOBAL, INST and STACK_GLOBAL opcodes name, read with pickletools: nothing is imported.

    Loading the pickle imports each of them (find_class). The scan may miss some (a module cloudpickle imports by
    name, a name built on the stack in some unusual way), never invent one; the snapshot re-checks against the
    unpickler's real record anyway."""
    if not path.exists():
        return set()
    found: set[str] = set()
    with path.open("rb") as fh:
        try:
            _scan(pickletools.genops(fh), found)
        except (ValueError, EOFError, KeyError, pickle.UnpicklingError):
            pass  # not a pickle (the probe says so): what was found so far is still named by it
    return found


def _scan(ops: Iterator[tuple[Any, Any, Any]], found: set[str]) -> None:
    memo: dict[int, Any] = {}
    recent: list[Any] = [None, None]  # the two values last pushed on the stack (None: not a string we know)
    for opcode, arg, _ in ops:
        name = opcode.name
        if name in ("GLOBAL", "INST"):
            found.add(str(arg).split(" ", 1)[0])
            recent.append(None)
        elif name == "STACK_GLOBAL":
            module, attr = recent[-2], recent[-1]
            if isinstance(module, str) and isinstance(attr, str):
                found.add(module)
            recent.append(None)
        elif name in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
            memo[len(memo) if name == "MEMOIZE" else int(str(arg))] = recent[-1]  # the stack does not change
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            recent.append(memo.get(int(str(arg))))
        elif name in ("FRAME", "PROTO"):
            continue
        elif isinstance(arg, str) and name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE",
                                               "STRING", "BINSTRING", "SHORT_BINSTRING"):
            recent.append(arg)
        else:
            recent.append(None)
        del recent[:-2]


def needed_tops(bundle: Path, modules: list[str]) -> set[str]:
    """Top-level packages the bundle is known to import before the probe runs: the probe request's modules (the
    served code's imports, the schema's) and those the staged pickle names."""
    return {m.split(".")[0] for m in (*modules, *scan_pickle_modules(bundle / "artifacts" / "values.pkl"))}


def usable_depth(chain: list[str], needed: set[str]) -> int:
    """How many of the chain's packages, from the first, the bundle imports anyway: the deepest usable snapshot."""
    depth = 0
    for name in chain:
        if name not in needed:
            break
        depth += 1
    return depth


def snapshot_chain(preload: list[str], added: list[str]) -> list[str]:
    """The packages to pre-import, in order: distinct top-level names that an installed distribution provides and
    that are not found beside the notebook (those are the bundle's own code), never the standard library."""
    chain: list[str] = []
    stdlib = set(sys.stdlib_module_names)
    for module in preload:
        top = module.split(".")[0]
        if top in chain or top in stdlib or top.startswith("mlship") or top not in providers():
            continue
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            continue
        if spec is None:
            continue
        origin = spec.origin or next(iter(spec.submodule_search_locations or []), "")
        if not origin or any(_inside(origin, entry) for entry in added):
            continue
        chain.append(top)
    return chain[:MAX_SNAPSHOTS]


def _inside(path: str, folder: str) -> bool:
    try:
        return Path(path).resolve().is_relative_to(Path(folder).resolve())
    except OSError:
        return False


def can_snapshot() -> bool:
    """fork() is safe enough for imports only on Linux (macOS frameworks and Windows have no such fork)."""
    return sys.platform.startswith("linux") and not os.environ.get("MLSHIP_NO_SNAPSHOTS")


def become_subreaper() -> bool:
    """Make this process the one that collects its orphaned descendants (Linux prctl), so that it can wait for
    every process it started, however they end."""
    try:
        import ctypes

        return int(ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


class Lines:
    """Lines read straight from a file descriptor (no buffer shared with a forked copy)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        while b"\n" not in self.buffer:
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                if self.buffer:
                    line, self.buffer = self.buffer, b""
                    return line.decode("utf-8")
                raise StopIteration
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode("utf-8")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _flush(*streams: IO[str]) -> None:
    for stream in streams:
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


class Snapshots:
    """The coordinator's side: an importer process forks snapshot k after importing chain[k-1]; `choose` keeps one,
    `ask` hands it a request line, `close` ends every process started here and collects them all."""

    def __init__(self, session: Session, chain: list[str]) -> None:
        self.chain = chain
        self.chosen: int | None = None  # the depth kept (0: none fits), once choose() has run
        self.ready: set[int] = set()
        controls = [os.pipe() for _ in chain]  # [k - 1]: the coordinator -> snapshot k
        ready_r, ready_w = os.pipe()
        answers_r, answers_w = os.pipe()
        _flush(sys.stdout, sys.stderr)
        pid = os.fork()
        if pid == 0:  # the importer
            code = 0
            try:
                os.close(ready_r)
                os.close(answers_r)
                for _, write in controls:
                    os.close(write)
                _importer(session, chain, [r for r, _ in controls], ready_w, answers_w)
            except BaseException:  # noqa: BLE001 - a snapshot is an optimization; the coordinator goes on cold
                code = 1
            finally:
                _flush(sys.stdout, sys.stderr)
                os._exit(code)
        self.importer: int | None = pid
        os.close(ready_w)
        os.close(answers_w)
        for read, _ in controls:
            os.close(read)
        self._writes = {k: w for k, (_, w) in enumerate(controls, start=1)}
        self._ready = ready_r
        self._answers: int | None = answers_r
        self._answer_lines = Lines(answers_r)

    def choose(self, needed: set[str]) -> None:
        """Keep the deepest snapshot the bundle can use (waiting for it, if it is still importing what the bundle
        needs anyway); end the importer and every other snapshot. chosen is 0 when none fits."""
        depth = usable_depth(self.chain, needed)
        lines = Lines(self._ready)
        while depth and depth not in self.ready:
            try:
                self.ready.add(int(next(lines)))
            except StopIteration:  # the importer ended early (an import failed): take what exists
                depth = max((d for d in self.ready if d <= depth), default=0)
        self._stop_importer()
        for k in list(self._writes):
            if k != depth:
                os.close(self._writes.pop(k))
        self.chosen = depth

    def ask(self, line: str) -> dict[str, Any] | None:
        """The chosen snapshot's answer to one request line; None if it refused, failed or died."""
        assert self.chosen
        try:
            _write_all(self._writes[self.chosen], line.encode("utf-8") + b"\n")
            answer: dict[str, Any] = json.loads(next(self._answer_lines)[len(MARK):])
        except (OSError, StopIteration, ValueError):  # it died, perhaps halfway through its answer
            return None
        return None if "refused" in answer else answer

    def _stop_importer(self) -> None:
        if self.importer is not None:
            try:
                os.kill(self.importer, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.importer = None
        if self._ready >= 0:
            os.close(self._ready)
            self._ready = -1

    def close(self) -> None:
        """End everything: the importer is killed, each snapshot sees its control pipe close and exits; then every
        descendant (orphans come to this process, the subreaper) is collected."""
        self._stop_importer()
        for k in list(self._writes):
            os.close(self._writes.pop(k))
        while True:
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                break
        if self._answers is not None:
            os.close(self._answers)
            self._answers = None


def _importer(session: Session, chain: list[str], controls: list[int], ready: int, answers: int) -> None:
    """Import chain[0], fork snapshot 1, import chain[1], fork snapshot 2, ...; then wait for the snapshots.
    `controls[k - 1]` is snapshot k's end of its control pipe."""
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # only the coordinator reads the host's requests
    os.close(devnull)
    children = []
    for depth, name in enumerate(chain, start=1):
        importlib.import_module(name)
        _flush(sys.stdout, sys.stderr)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                os.close(ready)
                for later in controls[depth:]:
                    os.close(later)
                _snapshot(session, chain[:depth], controls[depth - 1], answers)
            except BaseException:  # noqa: BLE001 - the coordinator sees the pipe close and goes on cold
                code = 1
            finally:
                _flush(sys.stdout, sys.stderr)
                os._exit(code)
        children.append(pid)
        os.close(controls[depth - 1])
        os.write(ready, f"{depth}\n".encode())
    os.close(ready)
    os.close(answers)
    for pid in children:
        os.waitpid(pid, 0)


def _snapshot(session: Session, preloaded: list[str], control: int, answers: int) -> None:
    """Wait, paused, for the coordinator; answer its requests (all of them, or none: a refusal ends it)."""
    for line in Lines(control):
        request = json.loads(line)
        try:
            answer = session.handle(request)
        except BaseException:  # noqa: BLE001 - redone cold by the coordinator, whose traceback counts
            answer = {"refused": traceback.format_exc()}
        if "probe" in request and "refused" not in answer:
            needed = {m.split(".")[0] for m in answer["modules"]}
            if usable_depth(preloaded, needed) < len(preloaded):
                answer = {"refused": f"pre-imported {preloaded}, the bundle needs only {sorted(needed)}"}
        if "error" in answer or not all(case.get("ok") for case in answer.get("cases", [])):
            answer = {"refused": "not a success"}
        _write_all(answers, (MARK + json.dumps(answer) + "\n").encode("utf-8"))
        if "refused" in answer:
            return


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
    preload: list[str] = []
    if "--preload" in argv:
        at = argv.index("--preload")
        preload = [m for m in argv[at + 1].split(",") if m]
        del argv[at:at + 2]
    session = Session(Path(argv[1]).resolve())
    snapshots: Snapshots | None = None
    if "--probe" in argv:
        session.add_path(argv[argv.index("--probe") + 1:])
        providers()
        chain = snapshot_chain(preload, session.added)
        if chain and can_snapshot() and become_subreaper():
            snapshots = Snapshots(session, chain)
    answered: list[dict[str, Any]] = []
    try:
        for line in Lines(sys.stdin.fileno()):
            request = json.loads(line)
            answer = None
            if snapshots is not None:
                if snapshots.chosen is None and "probe" in request:
                    snapshots.choose(needed_tops(session.bundle, request["probe"]["modules"]))
                answer = snapshots.ask(line) if snapshots.chosen else None
                if answer is None:  # no snapshot fits, or it did not succeed: from here on, all is done cold
                    snapshots.close()
                    snapshots = None
                    for earlier in answered:
                        session.handle(earlier)
            if answer is None:
                answer = session.handle(request)
            if "probe" in request:
                answer["preloaded"] = snapshots.chain[:snapshots.chosen or 0] if snapshots else []
            answered.append(request)
            sys.stdout.write(MARK + json.dumps(answer) + "\n")
            sys.stdout.flush()
    finally:
        if snapshots is not None:
            snapshots.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
