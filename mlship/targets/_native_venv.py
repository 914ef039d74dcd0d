"""The image's virtual environment, made on the host without running anything of the image: the layout
`pythonX.Y -m venv` gives, and the locked wheels installed into it by `installer` (pypa's wheel installer: it
unpacks a wheel into any scheme and writes RECORD, INSTALLER and the entry-point scripts, as pip does).

The result is what the engine build's `pip install` leaves, minus pip and setuptools (the engine build uninstalls
them) and the installed packages' test suites (both builds drop them). Bytecode is compiled here with every
file's mtime set to SOURCE_DATE_EPOCH first, so each .pyc records the mtime the layer gives its source: valid in
the image (a read-only root never writes a .pyc) and the same bytes on every build.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .. import __version__
from ._oci import source_date_epoch
from .wheelhouse import Wheelhouse

_DROP_DIRS = ("tests",)
_PER_PROCESS = 500  # modules compiled by one interpreter (fixed: see _compile)


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
    for locked in wheelhouse.lock:
        scheme = {"purelib": site, "platlib": site, "scripts": f"{venv}/bin", "data": venv,
                  "headers": f"{venv}/include/site/python{python}/{locked.name}"}
        destination = SchemeDictionaryDestination(scheme, interpreter=f"{venv}/bin/python", script_kind="posix",
                                                  destdir=str(root))
        with WheelFile.open(wheelhouse.directory / locked.filename) as source:
            install(source, destination, {"INSTALLER": b"mlship\n"})
    site_dir = root / site.strip("/")
    for folder in _DROP_DIRS:
        for found in sorted(site_dir.glob(f"*/**/{folder}"), key=lambda p: len(p.parts), reverse=True):
            if found.is_dir() and not found.is_symlink():
                shutil.rmtree(found)
    _compile(site_dir, root)
    return prefix


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
