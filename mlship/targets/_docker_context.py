"""The docker build context: Dockerfile, locked wheelhouse and bundle, written deterministically.

Same bundle and same wheels -> same bytes -> same context hash. The hash covers every file, the Dockerfile
included: the Dockerfile is rendered once with an empty hash label, the tree is hashed, and the Dockerfile is
rendered again with that hash (so the label records the hash of everything else plus the template's output).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from .. import __version__
from ..bundle.render import make_environment
from ..errors import BuildError
from ._docker_engine import NAME_LABEL, STAGE_LABEL, STAGE_VALUE
from ._oci import source_date_epoch
from .wheelhouse import Wheelhouse

TEMPLATE = "Dockerfile.jinja"
DOCKERIGNORE_TEMPLATE = "dockerignore"
PORT = 8080
UID = 10001
VENV = "/opt/venv"
APP_DIR = "/app"
HOME = "/tmp"
WHEELS_DIR = "wheels"
BUNDLE_DIR = "bundle"
SBOM_DIR = "sbom"  # the image's SBOM files in the context; COPY'd to their folder in the image (sbom/artifacts.py)
LABEL_PREFIX = "io.mlship"
CONTEXT_HASH_LABEL = f"{LABEL_PREFIX}.context-hash"
# ensurepip puts these into every venv; the image does not need them unless the lock asks for them.
_VENV_TOOLS = ("pip", "setuptools")
_PACKAGE_DIRS_TO_DROP = ("tests",)
_SKIP_NAMES = {"__pycache__", ".DS_Store"}


@dataclass(frozen=True)
class DockerfileContext:
    """Everything templates/Dockerfile.jinja needs (data only)."""

    mlship_version: str
    name: str
    version: str
    base_image: str
    python: str  # the interpreter the venv is made with, e.g. "python3.11"
    wheels_dir: str
    bundle_dir: str
    lock_file: str
    venv: str
    app_dir: str
    home: str
    uid: int
    port: int
    passwd_line: str
    remove_from_venv: list[str]
    drop_package_dirs: list[str]
    start_period: int
    healthcheck: list[str]
    entrypoint: list[str]
    cmd: list[str]
    labels: list[tuple[str, str]]
    stage_labels: list[tuple[str, str]]
    sbom_dir: str = ""  # the context folder holding the SBOM ("" for none)
    sbom_dest: str = ""  # where it goes in the image


@dataclass(frozen=True)
class ImageMetadata:
    """What the labels say about the image, gathered by the caller."""

    name: str
    version: str
    created: str
    revision: str
    source: str
    bundle_digest: str
    notebook_sha256: str
    python: str  # full version recorded in the bundle, e.g. 3.11.7
    runtime_version: str


def image_labels(meta: ImageMetadata, base_image: str, context_hash: str,
                 extra: dict[str, str] | None = None) -> list[tuple[str, str]]:
    oci = "org.opencontainers.image"
    return [*sorted((extra or {}).items()),
        (f"{oci}.title", meta.name),
        (f"{oci}.version", meta.version),
        (f"{oci}.created", meta.created),
        (f"{oci}.revision", meta.revision),
        (f"{oci}.source", meta.source),
        (f"{oci}.description", f"mlship model service for {meta.name}"),
        (f"{oci}.base.name", base_image),
        (f"{LABEL_PREFIX}.bundle.digest", meta.bundle_digest),
        (f"{LABEL_PREFIX}.notebook.sha256", meta.notebook_sha256),
        (f"{LABEL_PREFIX}.version", __version__),
        (f"{LABEL_PREFIX}.runtime-version", meta.runtime_version),
        (f"{LABEL_PREFIX}.python", meta.python),
        (CONTEXT_HASH_LABEL, context_hash),
    ]


def dockerfile_context(meta: ImageMetadata, *, base_image: str, python: str, wheelhouse: Wheelhouse,
                       context_hash: str = "", sbom_dest: str = "",
                       sbom_labels: dict[str, str] | None = None) -> DockerfileContext:
    locked = {w.name for w in wheelhouse.lock}
    readyz = f"http://127.0.0.1:{PORT}/readyz"
    return DockerfileContext(
        mlship_version=__version__,
        name=meta.name,
        version=meta.version,
        base_image=base_image,
        python=f"python{python}",
        wheels_dir=WHEELS_DIR,
        bundle_dir=BUNDLE_DIR,
        lock_file=lock_file_name(wheelhouse),
        venv=VENV,
        app_dir=APP_DIR,
        home=HOME,
        uid=UID,
        port=PORT,
        passwd_line=f"mlship:x:{UID}:0:mlship model service:{HOME}:/usr/sbin/nologin",
        remove_from_venv=[tool for tool in _VENV_TOOLS if tool not in locked],
        # The test suites installed packages ship (scipy, pandas, numpy, scikit-learn: 102 MB of iris's 374 MB
        # venv, benchmarks/image_size.py); serving never imports them, and the smoke test replays the golden
        # cases without them. __pycache__ stays: without it every start compiles every module (7 s -> 12 s).
        drop_package_dirs=list(_PACKAGE_DIRS_TO_DROP),
        # Loading a model and replaying its golden cases can take a while for a large model.
        start_period=120,
        # No curl in a slim image: the venv's own Python asks /readyz (an HTTP error status raises -> exit 1).
        healthcheck=[f"{VENV}/bin/python", "-c",
                     f"import urllib.request; urllib.request.urlopen('{readyz}', timeout=4)"],
        # _boot.py checks the bundle (every file listed and unchanged, no links) before the runtime is imported, from
        # those checked sources only; -I keeps /app (PYTHONPATH) off sys.path, -B: no bytecode; -u as -I drops
        # PYTHONUNBUFFERED (docs/BUNDLE.md "Integrity").
        entrypoint=[f"{VENV}/bin/python", "-I", "-B", "-u", f"{APP_DIR}/mlship_runtime/_boot.py"],
        cmd=["serve", APP_DIR, "--host", "0.0.0.0", "--port", str(PORT)],
        labels=image_labels(meta, base_image, context_hash, sbom_labels),
        # Deterministic (no build id), so the stage's layers stay cacheable and the context hash stable.
        stage_labels=[(STAGE_LABEL, STAGE_VALUE), (NAME_LABEL, meta.name)],
        sbom_dir=SBOM_DIR if sbom_dest else "",
        sbom_dest=sbom_dest,
    )


def lock_file_name(wheelhouse: Wheelhouse) -> str:
    return wheelhouse.lock_path.rsplit("/", 1)[-1]


def render_dockerfile(context: DockerfileContext) -> str:
    env = make_environment()
    env.filters["dockerstr"] = dockerfile_string
    return str(env.get_template(TEMPLATE).render(asdict(context)))


def dockerfile_string(value: Any) -> str:
    """A double-quoted Dockerfile word: JSON escaping, plus `$` escaped, since LABEL values are expanded."""
    return json.dumps(str(value), ensure_ascii=False).replace("$", "\\$")


def write_context(dest: Path, bundle: Path, wheelhouse: Wheelhouse, meta: ImageMetadata, *, base_image: str,
                  python: str, sbom: dict[str, bytes] | None = None, sbom_labels: dict[str, str] | None = None) -> str:
    """Lay out the build context in `dest` (which must not exist or be empty); return its hash.

    dest/Dockerfile, dest/.dockerignore, dest/wheels/ (the locked wheels and their lock file), dest/bundle/
    (the bundle, without caches), dest/sbom/ (`sbom`: the image's SBOM files by their path in the image, all in
    one folder; `sbom_labels` name them).
    """
    if dest.exists() and any(dest.iterdir()):
        raise BuildError(f"{dest} is not empty", hint="give --context-only a new or empty directory")
    dest.mkdir(parents=True, exist_ok=True)
    wheels = dest / WHEELS_DIR
    wheels.mkdir()
    for locked in wheelhouse.lock:
        # Copied, not hard-linked: normalize_tree changes modes and mtimes, which a link would share with the cache.
        shutil.copyfile(wheelhouse.directory / locked.filename, wheels / locked.filename)
    (wheels / lock_file_name(wheelhouse)).write_text(wheelhouse.lock_text(), encoding="utf-8")
    shutil.copytree(bundle, dest / BUNDLE_DIR, ignore=_ignore)
    sbom_dest = _write_sbom(dest / SBOM_DIR, sbom or {})
    env = make_environment()
    (dest / ".dockerignore").write_text(env.get_template(DOCKERIGNORE_TEMPLATE).render(), encoding="utf-8")
    draft = dockerfile_context(meta, base_image=base_image, python=python, wheelhouse=wheelhouse,
                               sbom_dest=sbom_dest, sbom_labels=sbom_labels)
    (dest / "Dockerfile").write_text(render_dockerfile(draft), encoding="utf-8")
    normalize_tree(dest)
    digest = context_hash(dest)
    final = dockerfile_context(meta, base_image=base_image, python=python, wheelhouse=wheelhouse,
                               context_hash=digest, sbom_dest=sbom_dest, sbom_labels=sbom_labels)
    (dest / "Dockerfile").write_text(render_dockerfile(final), encoding="utf-8")
    normalize_tree(dest)
    return digest


def _write_sbom(folder: Path, files: dict[str, bytes]) -> str:
    """Write the SBOM files into `folder`; return the one image folder they all go to ("" when there are none)."""
    if not files:
        return ""
    parents = {str(PurePosixPath(path).parent) for path in files}
    if len(parents) != 1:
        raise ValueError(f"the image's SBOM files must share one folder, got {sorted(parents)}")
    folder.mkdir()
    for path, data in sorted(files.items()):
        (folder / PurePosixPath(path).name).write_bytes(data)
    return parents.pop()


def context_hash(root: Path) -> str:
    """sha256 over every file's path, mode and content, the Dockerfile's hash label blanked out."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        data = path.read_bytes()
        if rel == "Dockerfile":
            data = _blank_hash_label(data)
        mode = "755" if path.stat().st_mode & 0o100 else "644"
        digest.update(f"{mode} {hashlib.sha256(data).hexdigest()} {rel}\n".encode())
    return "sha256:" + digest.hexdigest()


def _blank_hash_label(dockerfile: bytes) -> bytes:
    marker = f'{CONTEXT_HASH_LABEL}="'.encode()
    start = dockerfile.find(marker)
    if start < 0:
        return dockerfile
    start += len(marker)
    end = dockerfile.index(b'"', start)
    return dockerfile[:start] + dockerfile[end:]


def normalize_tree(root: Path) -> None:
    """Modes 644/755 and one fixed mtime for every file and folder, so COPY layers are reproducible."""
    # One fixed timestamp (SOURCE_DATE_EPOCH, else the zip epoch): COPY layers carry the same bytes everywhere.
    epoch = source_date_epoch()
    paths = sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True)
    for path in paths:
        if path.is_symlink():
            continue
        if path.is_dir():
            path.chmod(0o755)
        else:
            path.chmod(0o755 if path.stat().st_mode & 0o100 else 0o644)
        os.utime(path, (epoch, epoch))
    os.utime(root, (epoch, epoch))


def _ignore(directory: str, names: list[str]) -> list[str]:
    return [n for n in names if n in _SKIP_NAMES or n.endswith((".pyc", ".tmp")) or n.startswith(".mlship-")]

