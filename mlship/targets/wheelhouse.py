"""Resolve a bundle's requirements on the host into a wheelhouse for the target platform (docs/BUILD.md).

Containers and on-prem machines get no network: every wheel they install comes from here. pip does the
resolving, with the user's own configuration (PIP_INDEX_URL, pip.conf), so a private index works and no token is
ever written into an artifact. Downloaded wheels are cached per platform and Python; a cache that already holds
a complete set resolves offline, which also keeps rebuilds on the versions resolved the first time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import BuildError
from ..runtime._contract import REQUIREMENTS_NAME, Manifest, sha256_file

logger = logging.getLogger(__name__)

# glibc 2.28 (RHEL 8, Debian 10+) is the oldest a current scientific wheel targets; every Debian/Ubuntu-based
# Python image is newer. pip does not expand manylinux_2_X tags by itself, so the accepted ones are listed.
_GLIBC_MAX = 28


def _manylinux(arch: str, lowest: int) -> tuple[str, ...]:
    pep600 = tuple(f"manylinux_2_{minor}_{arch}" for minor in range(_GLIBC_MAX, lowest - 1, -1))
    # pip expands manylinux2014 to manylinux2010 and manylinux1 itself.
    return (*pep600, f"manylinux2014_{arch}")


@dataclass(frozen=True)
class Platform:
    name: str  # "linux_x86_64" | "linux_aarch64"  (used in file names)
    docker: str  # "linux/amd64" | "linux/arm64"
    machine: str  # "x86_64" | "aarch64"  (uname -m on the target)
    pip_platforms: tuple[str, ...]  # manylinux tags passed to pip download --platform


PLATFORMS = {
    "linux_x86_64": Platform("linux_x86_64", "linux/amd64", "x86_64", _manylinux("x86_64", 5)),
    # manylinux2014 was the first manylinux for aarch64.
    "linux_aarch64": Platform("linux_aarch64", "linux/arm64", "aarch64", _manylinux("aarch64", 17)),
}
_ALIASES = {
    "linux/amd64": "linux_x86_64", "amd64": "linux_x86_64", "x86_64": "linux_x86_64", "linux_x86_64": "linux_x86_64",
    "linux/x86_64": "linux_x86_64",
    "linux/arm64": "linux_aarch64", "arm64": "linux_aarch64", "aarch64": "linux_aarch64",
    "linux_aarch64": "linux_aarch64", "linux/aarch64": "linux_aarch64", "linux/arm64/v8": "linux_aarch64",
}


def parse_platform(value: str) -> Platform:
    """linux/amd64, amd64, x86_64, linux_x86_64, linux/arm64, arm64, aarch64 (any case) -> Platform."""
    key = _ALIASES.get(value.strip().lower())
    if key is None:
        raise BuildError(f"unknown platform {value!r}",
                         hint="use linux/amd64 (x86_64) or linux/arm64 (aarch64)")
    return PLATFORMS[key]


@dataclass(frozen=True)
class LockedWheel:
    name: str  # PEP 503 normalized project name
    version: str
    filename: str
    sha256: str


@dataclass
class Wheelhouse:
    directory: Path  # holds exactly the wheels in `lock`
    lock: list[LockedWheel]  # the full transitive set, sorted by name
    python: str  # "3.11"
    platform: Platform

    def lock_text(self) -> str:
        """`name==version --hash=sha256:…` lines, for `pip install --no-index --require-hashes -r`."""
        header = (f"# The full set of wheels resolved by mlship for {self.platform.name}, "
                  f"Python {self.python}.\n")
        return header + "".join(f"{w.name}=={w.version} \\\n    --hash=sha256:{w.sha256}\n" for w in self.lock)

    @property
    def lock_path(self) -> str:
        """Where the lock lives inside a bundle (forward slashes): lock/<platform>-py<XY>.txt."""
        return lock_path(self.platform, self.python)

    def write_lock(self, bundle: Path) -> Path:
        """Record the resolved set in the bundle (not a manifest artifact: the bundle's digests stay valid)."""
        path = bundle.joinpath(*self.lock_path.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, self.lock_text().encode())
        return path


def lock_path(platform: Platform, python: str) -> str:
    return f"lock/{platform.name}-py{python.replace('.', '')}.txt"


def bundle_python(manifest: Manifest) -> str:
    """'3.11' from a manifest's python.version '3.11.7'."""
    major, minor = manifest.python.minor
    return f"{major}.{minor}"


def bundle_requirements(bundle: Path, manifest: Manifest) -> list[str]:
    """The bundle's pinned requirements: the manifest's list, else its requirements.txt."""
    if manifest.requirements:
        return list(manifest.requirements)
    path = bundle / REQUIREMENTS_NAME
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def build_wheelhouse(requirements: list[str], *, python: str, platform: Platform, dest: Path,
                     cache_dir: Path | None = None, on_step: Callable[[str], None] | None = None) -> Wheelhouse:
    """Resolve `requirements` (and everything they depend on) to wheels for `platform` and `python`, in `dest`.

    Tries the cache alone first; if it lacks something, pip resolves against the configured index and the new
    wheels join the cache. Packages published only as sdists are built into wheels on the host, and accepted
    when the result is pure Python. Raises BuildError naming the package and the platform when a wheel cannot
    be had.
    """
    if not requirements:
        raise BuildError("the bundle lists no requirements", hint="package the notebook again")
    cache = _cache_for(cache_dir, platform, python)
    step = on_step or (lambda msg: None)
    dest.mkdir(parents=True, exist_ok=True)
    remembered = _remembered(cache, requirements, dest)
    if remembered is not None:
        step(f"wheels for {platform.name} from the cache ({cache}), as resolved before")
        return Wheelhouse(directory=dest, lock=remembered, python=python, platform=platform)
    with tempfile.TemporaryDirectory(prefix=".wheels-", dir=dest.parent) as tmp:
        staging = Path(tmp) / "wheels"
        staging.mkdir()
        if _pip_download(requirements, python, platform, staging, links=[cache], offline=True).returncode == 0:
            logger.info("resolved %d requirements from the wheel cache %s", len(requirements), cache)
            step(f"wheels for {platform.name} from the cache ({cache})")
        else:
            step(f"resolving {len(requirements)} requirements for {platform.name}, Python {python} with pip")
            _resolve_online(requirements, python, platform, staging, cache, Path(tmp))
        wheels = sorted(staging.glob("*.whl"))
        lock = sorted((_locked(w) for w in wheels), key=lambda w: (w.name, w.version))
        for old in dest.glob("*.whl"):
            old.unlink()
        for wheel in wheels:
            shutil.move(str(wheel), dest / wheel.name)
    _remember(cache, requirements, lock)
    return Wheelhouse(directory=dest, lock=lock, python=python, platform=platform)


def _memo(cache: Path, requirements: list[str]) -> Path:
    key = hashlib.sha256("\n".join(sorted(requirements)).encode()).hexdigest()[:32]
    return cache / ".resolved" / f"{key}.json"


def _remembered(cache: Path, requirements: list[str], dest: Path) -> list[LockedWheel] | None:
    """The set these requirements resolved to last time, when the cache still holds every wheel of it unchanged:
    the same answer pip's offline resolution over the cache gives, without its seconds of start-up."""
    try:
        lock = [LockedWheel(**entry) for entry in json.loads(_memo(cache, requirements).read_text(encoding="utf-8"))]
    except (OSError, ValueError, TypeError):
        return None
    if not all((cache / w.filename).is_file() and sha256_file(cache / w.filename) == w.sha256 for w in lock):
        return None
    for old in dest.glob("*.whl"):
        old.unlink()
    for wheel in lock:
        shutil.copyfile(cache / wheel.filename, dest / wheel.filename)
    return lock


def _remember(cache: Path, requirements: list[str], lock: list[LockedWheel]) -> None:
    if not all((cache / w.filename).is_file() for w in lock):
        return  # a wheel built on the host is in the cache; one only staged is not: resolve again next time
    memo = _memo(cache, requirements)
    memo.parent.mkdir(exist_ok=True)
    _write_atomic(memo, json.dumps([dataclasses.asdict(w) for w in lock]).encode())


def _cache_for(cache_dir: Path | None, platform: Platform, python: str) -> Path:
    if cache_dir is None:
        env = os.environ.get("MLSHIP_WHEEL_CACHE")
        cache_dir = Path(env) if env else Path.home() / ".cache" / "mlship" / "wheels"
    cache = cache_dir / f"{platform.name}-py{python.replace('.', '')}"
    cache.mkdir(parents=True, exist_ok=True)
    return cache


def _resolve_online(requirements: list[str], python: str, platform: Platform, staging: Path, cache: Path,
                    tmp: Path) -> None:
    built: set[str] = set()
    while True:
        for stale in staging.glob("*.whl"):
            stale.unlink()
        proc = _pip_download(requirements, python, platform, staging, links=[cache], offline=False)
        if proc.returncode == 0:
            break
        missing = _unresolved(proc.stderr)
        if missing is None or missing in built:
            raise _resolution_error(missing, platform, python, proc.stderr)
        # Perhaps the package has only an sdist: build it on the host, keep it if it is pure Python, retry.
        built.add(missing)
        _build_pure_wheel(missing, platform, python, cache, tmp, proc.stderr)
    for wheel in staging.glob("*.whl"):
        if not (cache / wheel.name).exists():
            shutil.copy2(wheel, cache / f".{wheel.name}.tmp")
            os.replace(cache / f".{wheel.name}.tmp", cache / wheel.name)


def _pip_download(requirements: list[str], python: str, platform: Platform, dest: Path, *, links: list[Path],
                  offline: bool) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--dest", str(dest),
           "--python-version", python, "--implementation", "cp", "--abi", f"cp{python.replace('.', '')}",
           "--progress-bar", "off", "--disable-pip-version-check"]
    for tag in platform.pip_platforms:
        cmd += ["--platform", tag]
    for link in links:
        cmd += ["--find-links", str(link)]
    env = None
    if offline:
        cmd.append("--no-index")
        # The cache and nothing else: no configured find-links, index or constraint may add to the set.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")} | {"PIP_CONFIG_FILE": os.devnull}
    cmd += requirements
    logger.debug("running %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env)
    if proc.returncode != 0:
        logger.debug("pip download (%s) failed:\n%s", "offline" if offline else "online", proc.stderr)
    return proc


_NOT_FOUND = re.compile(r"(?:No matching distribution found for|satisfies the requirement) ([^\s;]+)")


def _unresolved(stderr: str) -> str | None:
    found = _NOT_FOUND.findall(stderr)
    return found[-1] if found else None


def _build_pure_wheel(spec: str, platform: Platform, python: str, cache: Path, tmp: Path, why: str) -> None:
    name = re.split(r"[<>=!~\[ ]", spec, maxsplit=1)[0]
    out = Path(tempfile.mkdtemp(prefix="sdist-", dir=tmp))
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", f"--no-binary={name}", "--wheel-dir", str(out),
           "--progress-bar", "off", "--disable-pip-version-check", spec]
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    wheels = list(out.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        raise _resolution_error(spec, platform, python, why)
    wheel = wheels[0]
    if not wheel.name.endswith("-none-any.whl"):
        raise BuildError(
            f"{spec} has no wheel for {platform.name} (Python {python}) and its sdist builds a "
            f"platform-specific wheel ({wheel.name})",
            hint="choose a version that publishes wheels for this platform (mlship package -r NAME==VERSION), "
            "or put a built wheel in the wheel cache",
        )
    logger.info("built %s from its sdist on the host", wheel.name)
    os.replace(wheel, cache / wheel.name)


def _resolution_error(spec: str | None, platform: Platform, python: str, stderr: str) -> BuildError:
    lines = stderr.strip().splitlines()
    tail = "\n".join([line for line in lines if line.startswith("ERROR:")][-4:] or lines[-6:])
    what = spec or "the requirements"
    return BuildError(
        f"cannot get wheels of {what} for {platform.name} (Python {python}):\n{tail}",
        hint="check that the package publishes manylinux wheels for this platform and that the index is "
        "reachable (pip's own configuration applies: PIP_INDEX_URL, pip.conf); a cache that already holds "
        "every wheel works offline (--wheel-cache)",
    )


_WHEEL_NAME = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")


def _locked(wheel: Path) -> LockedWheel:
    match = _WHEEL_NAME.match(wheel.name)
    if match is None:
        raise BuildError(f"pip left a file that is not a wheel: {wheel.name}")
    name = re.sub(r"[-_.]+", "-", match["name"]).lower()
    return LockedWheel(name=name, version=match["version"], filename=wheel.name, sha256=sha256_file(wheel))


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
