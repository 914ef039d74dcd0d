"""Check a bundle before any of its code runs, then import its code only from bytes whose digest was checked.

Standard library only and no relative imports: this file runs as a script, `python -I -B
mlship_runtime/_boot.py serve /app ...` (the image and the on-prem launcher) or, from the host's own copy of mlship,
`python -B -P .../mlship/runtime/_boot.py --bundle DIR serve DIR ...` (`mlship serve`, `mlship predict`), before
anything of the bundle is imported; the contract imports its checks as a module. docs/BUNDLE.md "Integrity".

What it guarantees, given a trustworthy copy of this file and of the Python it runs in:
- every file of the bundle is listed in mlship.json with its sha256, but mlship.json, mlship.sig and the contents
  of `__pycache__` folders (check_tree); nothing is a symbolic link, a device or a pipe;
- the bundle folder is on no sys.path entry, so a stray `json.py` in it can never shadow the standard library;
- the runtime (mlship_runtime/) and the notebook's modules (code/) are imported by VerifiedImporter: it reads each
  module's source, checks the digest of the very bytes it then compiles and executes, and never reads or writes
  bytecode (a planted `__pycache__/*.pyc` is never loaded; sys.dont_write_bytecode is set).
What it cannot catch: someone who rewrites mlship.json with new digests as well (`mlship verify --key` checks a
signature for that), nor one who can change this file or the interpreter itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
from collections.abc import Mapping, Sequence
from importlib.abc import Loader, MetaPathFinder
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import Any

MANIFEST_NAME = "mlship.json"
SIGNATURE_NAME = "mlship.sig"
# Files at the bundle's root that mlship.json cannot list: itself, and the signature over its bytes.
UNLISTED = (MANIFEST_NAME, SIGNATURE_NAME)
# `mlship build` records the wheels it resolved as LOCK_DIR/PLATFORM-pyXY.txt after packaging (a pip hash lock,
# read by pip only, never by the runtime): those .txt files may be unlisted too.
LOCK_DIR = "lock"
# Folders whose contents are ignored: bytecode is never loaded from a bundle, so nothing in them ever runs.
IGNORED_DIRS = ("__pycache__",)
RUNTIME_PACKAGE = "mlship_runtime"
CODE_DIR = "code"


class BundleLoadError(Exception):
    """The bundle cannot be used: missing, damaged, tampered with, or in a format this code does not read."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# -- the checks -------------------------------------------------------------------------------------------------


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bundle_files(root: Path) -> list[str]:
    """Every file under `root` as a bundle-relative POSIX path, sorted, without the documented unlisted ones
    (is_documented_unlisted) and what `__pycache__` folders hold; BundleLoadError for a symbolic link or anything that is not a file or folder."""
    found = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        here = Path(folder)
        for name in sorted(dirs):
            if (here / name).is_symlink():
                raise BundleLoadError(_link_message(root, here / name))
        dirs[:] = sorted(name for name in dirs if name not in IGNORED_DIRS)
        for name in sorted(files):
            path = here / name
            relative = path.relative_to(root).as_posix()
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                raise BundleLoadError(_link_message(root, path))
            if not stat.S_ISREG(mode):
                raise BundleLoadError(f"{relative} in the bundle {root} is not a regular file")
            if not is_documented_unlisted(relative):
                found.append(relative)
    return sorted(found)


def is_documented_unlisted(relative: str) -> bool:
    """mlship.json, mlship.sig and the build's wheel locks (lock/NAME.txt): the files a bundle may hold unlisted."""
    parts = relative.split("/")
    return relative in UNLISTED or (len(parts) == 2 and parts[0] == LOCK_DIR and parts[1].endswith(".txt"))


def check_tree(root: Path, artifacts: Mapping[str, str], *, digests_under: str | None = None) -> None:
    """The files under `root` are exactly those `artifacts` lists (plus the documented unlisted ones), with those
    sha256 digests (only for the files under the folder `digests_under`, if given). Raises BundleLoadError naming
    the first file that is not."""
    listed = set(artifacts)
    for relative in bundle_files(root):
        if relative not in listed:
            raise BundleLoadError(
                f"{relative} is in the bundle {root} but not listed in {MANIFEST_NAME}: a file added after "
                "packaging is refused, since it could run in place of a listed one"
            )
    for name, expected in artifacts.items():
        if digests_under is not None and not name.startswith(digests_under + "/"):
            continue
        path = root.joinpath(*name.split("/"))
        if not path.is_file():
            raise BundleLoadError(f"artifact {name} is missing from the bundle {root}")
        actual = sha256_file(path)
        if actual != expected:
            raise BundleLoadError(
                f"artifact {name} has sha256 {actual}, but {MANIFEST_NAME} expects {expected}: "
                "the file changed after packaging"
            )


def read_checked(root: Path, name: str, artifacts: Mapping[str, str]) -> bytes:
    """The bytes of the listed file `name`, read once and checked against its digest: what the caller executes."""
    expected = artifacts.get(name)
    if expected is None:
        raise BundleLoadError(f"{name} is not listed in {MANIFEST_NAME}, so it is not loaded")
    path = root.joinpath(*name.split("/"))
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise BundleLoadError(f"artifact {name} cannot be read from the bundle {root}: {exc}") from None
    with os.fdopen(fd, "rb") as stream:
        data = stream.read()
    actual = sha256_bytes(data)
    if actual != expected:
        raise BundleLoadError(
            f"artifact {name} has sha256 {actual}, but {MANIFEST_NAME} expects {expected}: "
            "the file changed after packaging"
        )
    return data


def read_artifacts(root: Path) -> dict[str, str]:
    """The `artifacts` map of root/mlship.json, checked only as far as this module needs (the contract checks the
    rest once its own code has been verified)."""
    path = root / MANIFEST_NAME
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise BundleLoadError(f"{root} is not a bundle: it has no {MANIFEST_NAME}") from None
    except (OSError, ValueError) as exc:
        raise BundleLoadError(f"{path} cannot be read as JSON: {exc}") from None
    artifacts = data.get("artifacts") if isinstance(data, dict) else None
    if not isinstance(artifacts, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in artifacts.items()
    ):
        raise BundleLoadError(f"{path}: 'artifacts' must map bundle paths to sha256 digests")
    return {name: digest.lower() for name, digest in artifacts.items()}


def code_roots(artifacts: Mapping[str, str]) -> dict[str, str]:
    """Top-level module name -> the bundle folder that holds it, for the notebook's modules in code/."""
    roots = {}
    for name in artifacts:
        parts = name.split("/")
        if len(parts) == 2 and parts[0] == CODE_DIR and parts[1].endswith(".py"):
            roots[parts[1][:-3]] = CODE_DIR
        elif len(parts) == 3 and parts[0] == CODE_DIR and parts[2] == "__init__.py":
            roots[parts[1]] = CODE_DIR
    return roots


# -- importing from checked bytes -------------------------------------------------------------------------------


class VerifiedImporter(MetaPathFinder, Loader):
    """Imports the modules under `roots` (top-level name -> bundle folder, "" for the root) from the bundle's listed
    sources only: each module's bytes are read once, checked against mlship.json, compiled and executed. Bytecode
    is neither read nor written. A name under `roots` with no listed source is not found, whatever else is there."""

    def __init__(self, root: Path, artifacts: Mapping[str, str], roots: Mapping[str, str]) -> None:
        self.root = root
        self.artifacts = dict(artifacts)
        self.roots = dict(roots)

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        parts = fullname.split(".")
        if parts[0] not in self.roots:
            return None
        base = [self.roots[parts[0]]] if self.roots[parts[0]] else []
        module, package = "/".join(base + parts) + ".py", "/".join(base + parts + ["__init__.py"])
        for name, is_package in ((package, True), (module, False)):
            if name in self.artifacts:
                spec = ModuleSpec(fullname, self, origin=str(self.root.joinpath(*name.split("/"))),
                                  is_package=is_package)
                spec.has_location = True
                if is_package:
                    spec.submodule_search_locations = [str(self.root.joinpath(*name.split("/")[:-1]))]
                return spec
        raise ModuleNotFoundError(f"No module named {fullname!r} among the bundle's listed files", name=fullname)

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        spec = module.__spec__
        assert spec is not None and spec.origin is not None
        name = Path(spec.origin).relative_to(self.root).as_posix()
        source = read_checked(self.root, name, self.artifacts)
        exec(compile(source, spec.origin, "exec", dont_inherit=True), module.__dict__)


def install(importer: VerifiedImporter) -> VerifiedImporter:
    """Put `importer` first on sys.meta_path, replacing one installed earlier for the same top-level names."""
    sys.meta_path[:] = [
        finder for finder in sys.meta_path
        if not (isinstance(finder, VerifiedImporter) and set(finder.roots) & set(importer.roots))
    ]
    sys.meta_path.insert(0, importer)
    return importer


def untrusted_path(root: Path) -> None:
    """Drop every sys.path entry that is the bundle or inside it ('' and the script's folder included)."""
    sys.dont_write_bytecode = True
    kept = []
    for entry in sys.path:
        try:
            resolved = Path(entry or os.getcwd()).resolve()
        except OSError:
            continue
        if resolved != root and root not in resolved.parents:
            kept.append(entry)
    sys.path[:] = kept


def prepare(root: str | os.PathLike[str]) -> VerifiedImporter:
    """Check the bundle at `root` (every file listed, no link, the runtime's digests), take it off sys.path, and
    install the importer of its runtime and code/ modules. Raises BundleLoadError before anything of the bundle
    has run. The other digests are the runtime's to check (the contract's read), once its own code is verified:
    it refuses the bundle before predictor.py runs, and reports that as it always has (a log line for serve)."""
    base = Path(root).resolve()
    untrusted_path(base)
    artifacts = read_artifacts(base)
    check_tree(base, artifacts, digests_under=RUNTIME_PACKAGE)
    for required in (f"{RUNTIME_PACKAGE}/__init__.py", f"{RUNTIME_PACKAGE}/__main__.py"):
        if required not in artifacts:
            raise BundleLoadError(f"{MANIFEST_NAME}: 'artifacts' does not list {required}")
    return install(VerifiedImporter(base, artifacts, {RUNTIME_PACKAGE: "", **code_roots(artifacts)}))


def check_started(package: ModuleType) -> None:
    """For `python -m mlship_runtime`: the files Python imported before this check could run (the package's
    __init__, its __main__ and this module) must be the listed ones. This catches damage, not a forger who
    changes those files too: mlship's own launchers start this file as a script instead."""
    root = Path(str(package.__file__)).resolve().parent.parent
    importer = prepare(root)
    for name in ("__init__.py", "__main__.py", "_boot.py"):
        read_checked(root, f"{RUNTIME_PACKAGE}/{name}", importer.artifacts)


# -- as a script ------------------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    """`_boot.py [--bundle DIR] COMMAND ARGS...`: check DIR (default: the bundle holding this file), then run the
    bundle's `python -m mlship_runtime COMMAND ARGS...` from checked bytes. A refused bundle exits like the runtime
    refusing it: 1 for serve, 2 for verify and predict, with one `error:` line."""
    args = list(argv)
    if args[:1] == ["--bundle"] and len(args) > 1:
        root, args = Path(args[1]), args[2:]
    else:
        root = Path(__file__).resolve().parent.parent
    try:
        prepare(root)
    except BundleLoadError as exc:
        sys.stderr.write(f"error: cannot {args[0] if args else 'load'} {root}: {exc.message}\n")
        return 1 if args[:1] == ["serve"] else 2
    runtime: Any = __import__(f"{RUNTIME_PACKAGE}.__main__", fromlist=["main"])
    return int(runtime.main(args))


def _link_message(root: Path, path: Path) -> str:
    target = os.readlink(path)
    return (f"{path.relative_to(root).as_posix()} in the bundle {root} is a symbolic link (to {target}): "
            "a bundle holds only regular files, so that nothing it loads can come from outside it")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
