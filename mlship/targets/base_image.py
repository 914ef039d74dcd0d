"""`mlship base-image TAG`: a Python base image made from Debian packages, for engines that cannot pull from
Docker Hub (air-gapped sites, this project's CI) (docs/DOCKER.md "Without Docker Hub").

debootstrap lays out a minimal Debian (minbase + python3, python3-venv, ca-certificates) in a temporary folder,
the package lists, caches, logs and manuals are dropped, and the tree is streamed into `docker import`. The
suite's python3 decides the image's Python (bookworm: 3.11, trixie: 3.13). Idempotent: an existing TAG is only
checked. Progress is logged (logger `mlship.targets.base_image`).
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BuildError

logger = logging.getLogger(__name__)

DEFAULT_TAG = "mlship-base:bookworm-py311"
DEFAULT_SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("python3", "python3-venv", "ca-certificates")
# Dead weight in an image that never runs apt; the copyright files under usr/share/doc stay (they go wherever
# the packages go).
_DROP = ("var/lib/apt/lists", "var/cache/apt", "var/log", "usr/share/man", "usr/share/info")
_CHANGES = [
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["python3"]',
]
_LOG_TAIL = 20


@dataclass(frozen=True)
class BaseImageOptions:
    tag: str = DEFAULT_TAG
    suite: str = DEFAULT_SUITE
    mirror: str = DEFAULT_MIRROR
    arch: str | None = None  # debootstrap --arch (e.g. arm64, with qemu-user-static); default the host's
    python: str | None = None  # the major.minor the image must have (a bundle's), e.g. "3.11"


@dataclass(frozen=True)
class BaseImageResult:
    tag: str
    image_id: str
    python: str  # full version, e.g. 3.11.2
    size: int
    created: bool  # False when TAG already existed
    seconds: float

    def rows(self) -> list[tuple[str, str]]:
        state = "built" if self.created else "already there, nothing to do"
        return [("base image", f"{self.tag} ({state})"), ("image", self.image_id),
                ("python", self.python), ("size", f"{self.size / 1e6:.1f} MB"),
                ("time", f"{self.seconds:.1f}s")]

    def to_json(self) -> dict[str, Any]:
        return {"tag": self.tag, "image_id": self.image_id, "python": self.python, "size": self.size,
                "created": self.created, "seconds": round(self.seconds, 3)}


def make_base_image(options: BaseImageOptions, client: Any = None) -> BaseImageResult:
    """Build options.tag from Debian packages unless it exists; check its Python against options.python."""
    from ._docker_engine import connect

    started = time.perf_counter()
    own = client is None
    client = connect() if own else client
    try:
        existing = _inspect(client, options.tag)
        if existing is None:
            check_host()
            with _lock():
                existing = _inspect(client, options.tag)  # another session may have built it meanwhile
                if existing is None:
                    _build(client, options)
                    existing = _inspect(client, options.tag)
                    assert existing is not None, options.tag
                    created = True
                else:
                    created = False
        else:
            created = False
        python = _image_python(client, options.tag)
        check_python(options.tag, python, options.python, options.suite)
        if not created:
            logger.info("base image %s exists (Python %s)", options.tag, python)
        return BaseImageResult(options.tag, str(existing["Id"]), python, int(existing.get("Size", 0)), created,
                               time.perf_counter() - started)
    finally:
        if own:
            client.close()


def check_host() -> None:
    """debootstrap installed and running as root, or BuildError saying how."""
    if shutil.which("debootstrap") is None:
        raise BuildError("debootstrap is not installed: it lays out the Debian system the base image is made of",
                         hint="install it (`sudo apt-get install -y debootstrap`), or pass an existing base with "
                         "python3.X to `mlship build --target docker --base-image IMAGE`")
    if os.geteuid() != 0:
        raise BuildError(f"making a base image needs root (debootstrap creates device nodes and chroots); this is "
                         f"uid {os.geteuid()}",
                         hint="run it as root: `sudo mlship base-image TAG` (the image is then usable by anyone "
                         "who can reach the Docker engine)")


def check_python(tag: str, found: str, wanted: str | None, suite: str) -> None:
    """The image's major.minor must be the bundle's: a pickle made under 3.11 does not load under 3.12."""
    minor = ".".join(found.split(".")[:2])
    if wanted is None or minor == wanted:
        return
    raise BuildError(
        f"the base image {tag} has Python {found}, but the bundle was packaged with Python {wanted}",
        hint=f"pick the Debian suite whose python3 is {wanted} (bookworm: 3.11, trixie: 3.13) with --suite and a "
        f"new TAG, or package the notebook under Python {minor} (the suite was {suite})",
    )


def bundle_python_of(bundle: Path) -> str:
    """The major.minor a bundle was packaged with (its pickles load only under it)."""
    from ..errors import bundle_errors
    from ..runtime import _contract as contract
    from .wheelhouse import bundle_python

    with bundle_errors(bundle):
        return bundle_python(contract.read_manifest(bundle))


def _inspect(client: Any, tag: str) -> dict[str, Any] | None:
    import docker

    try:
        info: dict[str, Any] = client.api.inspect_image(tag)
        return info
    except docker.errors.ImageNotFound:
        return None


def _image_python(client: Any, tag: str) -> str:
    from ._docker_engine import _run_python

    found = _run_python(client, tag, "python3")
    if found is None:
        raise BuildError(f"the image {tag} has no working python3",
                         hint=f"remove it (`docker rmi {tag}`) and run `mlship base-image {tag}` again")
    return found.version


@contextmanager
def _lock() -> Iterator[None]:
    """Two sessions starting at once (parallel test runs) build the image once."""
    path = Path(tempfile.gettempdir()) / "mlship-make-base-image.lock"
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _build(client: Any, options: BaseImageOptions) -> None:
    with tempfile.TemporaryDirectory(prefix="mlship-rootfs-") as tmp:
        root = Path(tmp) / "root"
        _debootstrap(root, options)
        _slim(root)
        python = _rootfs_python(root)
        check_python(options.tag, python, options.python, options.suite)
        _import(client, root, options, python)


def debootstrap_command(root: Path, options: BaseImageOptions) -> list[str]:
    arch = ["--arch", options.arch] if options.arch else []
    return ["debootstrap", "--variant=minbase", *arch, f"--include={','.join(PACKAGES)}", options.suite,
            str(root), options.mirror]


def _debootstrap(root: Path, options: BaseImageOptions) -> None:
    logger.info("debootstrap %s from %s into %s", options.suite, options.mirror, root)
    started = time.perf_counter()
    proc = subprocess.run(debootstrap_command(root, options), capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        tail = "\n".join(f"  {line}" for line in (proc.stdout + proc.stderr).splitlines()[-_LOG_TAIL:])
        raise BuildError(f"debootstrap {options.suite} failed (exit status {proc.returncode}):\n{tail}",
                         hint=f"check that the mirror {options.mirror} is reachable and serves {options.suite} "
                         "(--mirror, or DEBIAN_MIRROR, points at an internal mirror)")
    logger.info("debootstrap done in %.0fs", time.perf_counter() - started)


def _slim(root: Path) -> None:
    for rel in _DROP:
        folder = root / rel
        if folder.is_dir():
            for child in folder.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
    for old in (root / "var/cache/debconf").glob("*-old"):
        old.unlink()
    docs = root / "usr/share/doc"
    for path in docs.rglob("*") if docs.is_dir() else ():
        if not path.is_dir() and path.name != "copyright":
            path.unlink()


def _rootfs_python(root: Path) -> str:
    proc = subprocess.run(["chroot", str(root), "python3", "-c",
                           "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise BuildError(f"python3 does not run in the debootstrapped tree: {proc.stderr.strip()[-300:]}",
                         hint="with --arch for another machine, install qemu-user-static with binfmt support")
    return proc.stdout.strip()


def _import(client: Any, root: Path, options: BaseImageOptions, python: str) -> None:
    import docker

    from ._docker_engine import split_tag

    repository, version = split_tag(options.tag)
    title = f'LABEL org.opencontainers.image.title="debian {options.suite} python{python} (debootstrap)"'
    logger.info("docker import %s (Python %s)", options.tag, python)
    tar = subprocess.Popen(["tar", "--numeric-owner", "-C", str(root), "-c", "."], stdout=subprocess.PIPE,
                           stdin=subprocess.DEVNULL)
    assert tar.stdout is not None
    try:
        client.api.import_image_from_stream(tar.stdout, repository=repository, tag=version,
                                            changes=[*_CHANGES, title])
    except docker.errors.APIError as exc:
        raise BuildError(f"docker import of {options.tag} failed: {exc}",
                         hint="check the engine's free disk space (`docker system df`) and its log") from None
    finally:
        tar.stdout.close()
        tar.wait()
