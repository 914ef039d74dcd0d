"""The environment a bundle's Spark job ships to its executors: the bundle's locked wheels as a packed venv.

The wheels are resolved as for the on-prem and docker targets (targets/wheelhouse.py: the bundle's pinned
requirements, for this machine's platform and the bundle's Python, from the wheel cache when it has them all),
plus pyarrow and pandas (a pandas UDF's Arrow batches need them). They are installed into a new venv with no
index (every file checked against its sha256), which venv-pack packs so that it relocates; Spark unpacks it in
each executor's working folder (spark.archives) and starts its Python workers with it. The executors need
only the same Python at the same path: no network, no pip, nothing built per executor.

The archive is cached under the wheel cache's folder, keyed by the requirements and the Python it was made
with, so the second job of a bundle ships what the first one packed.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .bundle.manifest import open_manifest
from .errors import BuildError, MlshipError
from .targets.wheelhouse import (
    PLATFORMS,
    build_wheelhouse,
    bundle_python,
    bundle_requirements,
    parse_platform,
)

logger = logging.getLogger(__name__)

ENV_LINK = "mlship_env"  # the folder each executor unpacks the archive into (spark.archives' #fragment)
SPARK_HINT = "pip install 'mlship[spark]' (pyspark, venv-pack), and Java 17 or later on PATH or JAVA_HOME"
PYTHON = f"./{ENV_LINK}/bin/python"  # relative: each executor's working folder, where Spark unpacked it


@dataclass(frozen=True)
class SparkEnvironment:
    archive: Path
    seconds: float  # spent making it (0 when it came from the cache)
    size: int

    def conf(self) -> dict[str, str]:
        """What a SparkSession needs to ship this environment to its executors."""
        return {"spark.archives": f"{self.archive}#{ENV_LINK}"}

    @property
    def python(self) -> str:
        """The workers' Python: PYSPARK_PYTHON when the session starts (pyspark reads it then, not a setting)."""
        return PYTHON


def environment_archive(
    bundle: Path, *, cache_dir: Path | None = None, on_step: Callable[[str], None] | None = None
) -> SparkEnvironment:
    """The packed venv of `bundle`'s locked wheels (made once, then cached); BuildError when it cannot be made."""
    manifest = open_manifest(bundle)
    python = bundle_python(manifest)
    ours = f"{sys.version_info.major}.{sys.version_info.minor}"
    if python != ours:
        raise BuildError(
            f"the bundle needs Python {python} on the executors, but mlship runs on Python {ours}, "
            "and the shipped environment is made with mlship's own Python",
            hint=f"run mlship with Python {python}, or pass --env executor to use the executors' Python as it is",
        )
    requirements = _with_arrow(bundle_requirements(bundle, manifest))
    target = parse_platform(platform.machine()) if platform.machine() in ("x86_64", "aarch64") else None
    if target is None:
        raise BuildError(f"cannot make a Spark environment on a {platform.machine()} machine",
                         hint=f"run mlship on one of {', '.join(PLATFORMS)}, or pass --env executor")
    step = on_step or (lambda message: None)
    root = _cache_root(cache_dir)
    # Keyed by the requirements (a bundle pins them all) and the interpreter the venv links to: a hit costs
    # no resolution at all.
    key = hashlib.sha256("\n".join([sys.executable, target.name, *requirements]).encode()).hexdigest()[:16]
    archive = root / f"{manifest.name}-{key}.tar.gz"
    if archive.is_file():
        step(f"environment from the cache ({archive})")
        return SparkEnvironment(archive, 0.0, archive.stat().st_size)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".spark-env-", dir=root) as tmp:
        house = build_wheelhouse(requirements, python=python, platform=target, dest=Path(tmp) / "wheels",
                                 cache_dir=cache_dir, on_step=step)
        step(f"packing {len(house.lock)} wheels into a venv for the executors")
        venv = Path(tmp) / "venv"
        _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], "create a venv")
        lock = Path(tmp) / "lock.txt"
        lock.write_text(house.lock_text())
        _run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-index",
              "--no-deps", "--require-hashes", "--find-links", str(house.directory), "--disable-pip-version-check",
              "--no-compile", "-q", "-r", str(lock)], "install the bundle's wheels into it")
        partial = archive.with_name(f".{archive.name}.{os.getpid()}.tmp")
        _pack(venv, partial)
        os.replace(partial, archive)
    seconds = time.perf_counter() - started
    logger.info("packed %s (%d bytes) in %.1f s", archive, archive.stat().st_size, seconds)
    return SparkEnvironment(archive, seconds, archive.stat().st_size)


def start_session(environment: SparkEnvironment | None, *, master: str | None = None,
                  conf: dict[str, str] | None = None, name: str = "mlship") -> Any:
    """A new SparkSession whose Python workers run in `environment` (None: the executors' own Python, as
    PYSPARK_PYTHON says). A context's workers' Python is fixed when it starts, so this starts a new one; its
    `conf` and `master` as spark-submit would take them. MlshipError when pyspark or Java is missing, or the
    master cannot be reached."""
    try:
        from pyspark import SparkFiles
        from pyspark.sql import SparkSession
    except ImportError:
        raise MlshipError("Spark scoring needs pyspark, which is not installed", hint=SPARK_HINT) from None
    settings = dict(conf or {})
    if environment is not None:
        shipped = environment.conf()
        if "spark.archives" in settings:  # the user's archives travel too
            shipped["spark.archives"] = f"{settings['spark.archives']},{shipped['spark.archives']}"
        settings.update(shipped)
    # Spark's progress bar draws over mlship's own lines on stderr; a --conf brings it back.
    settings.setdefault("spark.ui.showConsoleProgress", "false")
    builder = SparkSession.builder.appName(name)
    if master:
        builder = builder.master(master)
    for key, value in settings.items():
        builder = builder.config(key, value)
    old = os.environ.get("PYSPARK_PYTHON")
    if environment is not None:
        os.environ["PYSPARK_PYTHON"] = PYTHON  # read once, as the context starts
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # no Java, a master that cannot be reached: pyspark raises several types
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise MlshipError(f"cannot start a Spark session{f' on {master}' if master else ''}: {first}",
                          hint=SPARK_HINT) from None
    finally:
        if environment is not None:
            if old is None:
                os.environ.pop("PYSPARK_PYTHON", None)
            else:
                os.environ["PYSPARK_PYTHON"] = old
    context = spark.sparkContext
    if environment is not None and str(context.master).startswith("local"):
        # Local executors run in the driver's folder, not where Spark unpacked the archive: its SparkFiles root.
        context.pythonExec = str(Path(SparkFiles.getRootDirectory()) / ENV_LINK / "bin" / "python")
    return spark


def _with_arrow(requirements: list[str]) -> list[str]:
    """The bundle's pins, plus pyarrow and pandas at this machine's versions (those the driver's Spark works
    with) when the bundle does not pin them."""
    names = {_name(requirement) for requirement in requirements}
    extra = []
    for package in ("pyarrow", "pandas"):
        if package not in names:
            try:
                extra.append(f"{package}=={importlib.metadata.version(package)}")
            except importlib.metadata.PackageNotFoundError:
                extra.append(package)
    return [*requirements, *extra]


def _name(requirement: str) -> str:
    for index, char in enumerate(requirement):
        if char in "=<>!~;[ @":
            return requirement[:index].lower().replace("_", "-")
    return requirement.lower().replace("_", "-")


def _cache_root(cache_dir: Path | None) -> Path:
    if cache_dir is None:
        env = os.environ.get("MLSHIP_WHEEL_CACHE")
        cache_dir = Path(env) if env else Path.home() / ".cache" / "mlship" / "wheels"
    root = cache_dir / "spark-env"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _pack(venv: Path, output: Path) -> None:
    try:
        import venv_pack  # type: ignore[import-untyped, import-not-found, unused-ignore]
    except ImportError:
        raise BuildError("shipping the environment to Spark needs venv-pack, which is not installed",
                         hint=f"{SPARK_HINT}; or pass --env executor") from None
    # Level 1: the archive is made once per bundle but unpacked on every executor; speed over a few percent.
    venv_pack.pack(prefix=str(venv), output=str(output), format="tar.gz", compress_level=1, verbose=False,
                   force=True)


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-6:])
        raise BuildError(f"cannot {what} for the Spark environment:\n{tail}",
                         hint="or pass --env executor to use the executors' Python as it is")
