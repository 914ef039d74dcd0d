"""The image's virtual environment, made on the host without running anything of the image: the layout
`pythonX.Y -m venv` gives, and the locked wheels installed into it by `installer` (pypa's wheel installer: it
unpacks a wheel into any scheme and writes RECORD, INSTALLER and the entry-point scripts, as pip does).

The result is what the engine build's `pip install` leaves, minus pip and setuptools (the engine build uninstalls
them) and the installed packages' test suites (both builds drop them). Bytecode is compiled here with every
file's mtime set to SOURCE_DATE_EPOCH first, so each .pyc records the mtime the layer gives its source: valid in
the image (a read-only root never writes a .pyc) and the same bytes on every build.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

from .. import __version__
from ._oci import source_date_epoch
from .wheelhouse import LockedWheel, Wheelhouse

_DROP_DIRS = ("tests",)
_PER_PROCESS = 500  # modules compiled by one interpreter (fixed: see _compile)
_THREADS = 2


def venv_key(wheelhouse: Wheelhouse, *, venv: str, executable: str, version: str) -> str:
    """What the venv layer depends on: the same key, the same layer (its blob is reused from the cache)."""
    return "\n".join([f"mlship {__version__}", "venv-layer 1", venv, executable, version,
                      str(source_date_epoch()), wheelhouse.lock_text()])


def make_venv(wheelhouse: Wheelhouse, root: Path, *, venv: str, python: str, executable: str, version: str) -> Path:
    """Lay out VENV under `root` (which stands for the image's /) with the wheelhouse installed; returns root/VENV."""
    from installer import install
    from installer.destinations import SchemeDictionaryDestination
    from installer.sources import WheelFile

    prefix = root / venv.strip("/")
    site = f"{venv}/lib/python{python}/site-packages"
    for folder in ("bin", "include", site.removeprefix(venv).strip("/")):
        (prefix / folder).mkdir(parents=True, exist_ok=True)
    # What venv makes on 64-bit Linux: lib64 -> lib, bin/pythonX.Y -> the base's interpreter, python/python3 -> it.
    (prefix / "lib64").symlink_to("lib")
    exe_name = executable.rsplit("/", 1)[-1]
    (prefix / "bin" / exe_name).symlink_to(executable)
    for alias in ("python", "python3", f"python{python}"):
        if not (prefix / "bin" / alias).is_symlink():
            (prefix / "bin" / alias).symlink_to(exe_name)
    home = executable.rsplit("/", 1)[0]
    (prefix / "pyvenv.cfg").write_text(
        f"home = {home}\ninclude-system-site-packages = false\nversion = {version}\n"
        f"executable = {executable}\ncommand = {executable} -m venv {venv}\n", encoding="utf-8")

    def scheme_of(locked: LockedWheel) -> dict[str, str]:
        return {"purelib": site, "platlib": site, "scripts": f"{venv}/bin", "data": venv,
                "headers": f"{venv}/include/site/python{python}/{locked.name}"}

    def install_one(locked: LockedWheel, overwrite: bool) -> None:
        destination = SchemeDictionaryDestination(scheme_of(locked), interpreter=f"{venv}/bin/python",
                                                  script_kind="posix", destdir=str(root),
                                                  overwrite_existing=overwrite)
        with WheelFile.open(wheelhouse.directory / locked.filename) as source:
            install(source, destination, {"INSTALLER": b"mlship\n"})

    # Two at a time (unzipping and hashing let go of the GIL), their folders made first (installer makes a missing
    # parent without exist_ok: two wheels of one namespace package would race). If two wheels write one path,
    # one after the other in the lock's order, each overwriting: the last one wins, as with pip, on every build.
    writes = {locked: _destinations(wheelhouse.directory / locked.filename) for locked in wheelhouse.lock}
    if _disjoint(list(writes.values())):
        for locked, paths in writes.items():
            scheme = {**scheme_of(locked), "site": site}
            for folder in {str(PurePosixPath(scheme[name], path).parent) for name, path in paths}:
                (root / folder.strip("/")).mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(max_workers=_THREADS) as pool:
            list(pool.map(lambda locked: install_one(locked, False), wheelhouse.lock))
    else:
        for locked in wheelhouse.lock:
            install_one(locked, True)
    site_dir = root / site.strip("/")
    for folder in _DROP_DIRS:
        for found in sorted(site_dir.glob(f"*/**/{folder}"), key=lambda p: len(p.parts), reverse=True):
            if found.is_dir() and not found.is_symlink():
                shutil.rmtree(found)
    _compile(site_dir, root)
    return prefix


def _destinations(wheel_path: Path) -> set[tuple[str, str]]:
    """What a wheel writes, as (scheme, path): its files and its entry-point scripts (read from its zip)."""
    with zipfile.ZipFile(wheel_path) as wheel:
        names = wheel.namelist()
        paths = {_destination(name) for name in names if not name.endswith("/")}
        for name in names:
            if name.endswith(".dist-info/entry_points.txt"):
                paths |= {("scripts", script) for script in _scripts(wheel.read(name).decode("utf-8"))}
    return paths


def _disjoint(writes: list[set[tuple[str, str]]]) -> bool:
    """Whether no two wheels write the same path."""
    seen: set[tuple[str, str]] = set()
    for paths in writes:
        if seen & paths:
            return False
        seen |= paths
    return True


def _destination(name: str) -> tuple[str, str]:
    """Where a wheel's member lands, as (scheme, path): purelib and platlib are one site-packages here."""
    top, _, rest = name.partition("/")
    if top.endswith(".data") and rest:
        scheme, _, path = rest.partition("/")
        return ("site" if scheme in ("purelib", "platlib") else scheme, path)
    return ("site", name)


def _scripts(entry_points: str) -> set[str]:
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(entry_points)
    return {name for section in ("console_scripts", "gui_scripts") if parser.has_section(section)
            for name in parser.options(section)}


def _compile(site_dir: Path, root: Path) -> None:
    """Bytecode for every module, the same bytes on every build.

    marshal's output depends on the compiling process's state (which strings are interned and shared by what it
    compiled before, the hash seed's set order), so a process that compiles a varying sequence of files gives
    other bytes. Here the sorted list of modules is cut into fixed runs of _PER_PROCESS, each compiled by a fresh
    interpreter with PYTHONHASHSEED=0, two at a time: the runs never depend on the machine.
    """
    epoch = source_date_epoch()
    modules = []
    for dirpath, dirnames, filenames in os.walk(site_dir):
        dirnames.sort()
        for name in sorted(filenames):
            os.utime(Path(dirpath, name), (epoch, epoch), follow_symlinks=False)
            if name.endswith(".py"):
                modules.append(os.path.join(dirpath, name))
    runs = [modules[i:i + _PER_PROCESS] for i in range(0, len(modules), _PER_PROCESS)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")} | {"PYTHONHASHSEED": "0"}
    # co_filename is the path in the image (-s/-p), as pip's compile inside the image records it. A module that
    # does not compile (a Python 2 leftover in some packages) is skipped, as pip skips it.
    command = [sys.executable, "-m", "compileall", "-q", "-s", str(root), "-p", "/",
               "--invalidation-mode", "timestamp", "-i", "-"]

    def run(paths: list[str]) -> None:
        subprocess.run(command, input="\n".join(paths).encode(), env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)

    with ThreadPoolExecutor(max_workers=max(1, min(2, os.cpu_count() or 1))) as pool:
        list(pool.map(run, runs))
