"""The base image of a native build, read without an engine: from a registry (by digest, through _registry.py),
an `oci-archive:` tar, a `docker-archive:` tar (`docker save`) or an OCI layout folder (docs/DOCKER.md).

Its blobs land in the builder's blob store; its layers are then reused as they are. What the build needs to
know of its file system (which pythonX.Y is on its PATH, /etc/passwd, the Debian package list) is read from the
layers once, whiteouts applied, and kept beside the store by base digest.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import tarfile
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..errors import BuildError
from ._oci import (
    DOCKER_LIST,
    INDEX_TYPE,
    LAYER_GZIP,
    MANIFEST_TYPE,
    BlobStore,
    Descriptor,
    DigestMismatch,
    Layer,
    canonical_json,
    gzip_blob,
    oci_media_type,
)
from ._registry import Reference, RegistryClient, RegistryUnreachable, find_credentials, split_reference
from .wheelhouse import Platform

_ARCH = {"amd64": "x86_64", "arm64": "aarch64"}
_PYTHON = re.compile(r"^(?:usr/local/bin|usr/bin|bin|usr/local/sbin|opt/[^/]+/bin)/python3\.(\d+)$")
_WANTED = ("etc/passwd", "var/lib/dpkg/status")
_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"
_SCAN_VERSION = 1


@dataclass(frozen=True)
class BaseFiles:
    """What the base's merged file system holds that the build reads: small files, and the Pythons present."""

    files: dict[str, str]  # path (no leading slash) -> text, for _WANTED
    pythons: dict[str, str]  # path of each python3.X -> "file" or the symlink's target

    def to_json(self) -> dict[str, Any]:
        return {"version": _SCAN_VERSION, "files": self.files, "pythons": self.pythons}


@dataclass
class BaseImage:
    """A resolved base: where it came from, its manifest digest, config and layers, all blobs in `store`."""

    reference: str  # as the user gave it
    digest: str  # sha256 of its manifest (for a docker-archive: of the OCI manifest made from it)
    config: dict[str, Any]
    layers: list[Layer]
    store: BlobStore
    registry_ref: Reference | None = None  # where it came from, to mount its blobs when pushing there
    _files: BaseFiles | None = field(default=None, repr=False)

    @property
    def architecture(self) -> str:
        return str(self.config.get("architecture", ""))

    @property
    def env(self) -> list[str]:
        return list((self.config.get("config") or {}).get("Env") or [])

    def files(self) -> BaseFiles:
        if self._files is None:
            self._files = _scan(self)
        return self._files

    def dpkg_status(self) -> str | None:
        """var/lib/dpkg/status as the base's layers leave it (None: no Debian package database)."""
        return self.files().files.get("var/lib/dpkg/status")

    def passwd(self) -> str:
        return self.files().files.get("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n")


def resolve_base(text: str, store: BlobStore, platform: Platform, *, auth: str | None = None,
                 on_step: Any = None) -> BaseImage:
    """Read the base image named by --base-image into the store."""
    step = on_step or (lambda message: None)
    if text.startswith("oci-archive:"):
        return _from_tar(text, Path(text.removeprefix("oci-archive:")), store, platform)
    if text.startswith("docker-archive:"):
        return _from_docker_archive(text, Path(text.removeprefix("docker-archive:")), store)
    if text.startswith("oci:") or (("/" in text or text.startswith(".")) and Path(text).is_dir()):
        return _from_layout(text, Path(text.removeprefix("oci:")), store, platform)
    ref = split_reference(text)
    client = RegistryClient(ref, find_credentials(ref.registry, auth))
    step(f"reading base image {text} from {client.host}")
    try:
        data, media_type, digest = client.get_manifest(ref.reference)
    except RegistryUnreachable as exc:  # an offline host can still build from a base it has as a file
        raise BuildError(exc.message, hint=f"{exc.hint}; or, offline, give the base as a file: --base-image "
                         "docker-archive:FILE (`docker save IMAGE -o FILE` where an engine is) or oci-archive:FILE "
                         "(`skopeo copy docker://IMAGE oci-archive:FILE`)") from None
    if media_type in (INDEX_TYPE, DOCKER_LIST):
        chosen = _choose(json.loads(data), platform, text)
        data, media_type, digest = client.get_manifest(chosen)
    manifest = json.loads(data)
    config_desc = Descriptor.from_json(manifest["config"])
    client.fetch_blob(config_desc.digest, store)
    layers = [Descriptor.from_json(layer) for layer in manifest["layers"]]
    for number, layer in enumerate(layers, 1):
        if not store.has(layer.digest):
            step(f"pulling base layer {number}/{len(layers)} ({layer.size / 1e6:.1f} MB)")
        client.fetch_blob(layer.digest, store)
    store.put(data)
    return _image(text, digest, store, config_desc, layers, Reference(ref.registry, ref.repository, ref.tag, digest))


def _choose(index: dict[str, Any], platform: Platform, text: str) -> str:
    arch = {"x86_64": "amd64", "aarch64": "arm64"}[platform.machine]
    found = []
    for entry in index.get("manifests", []):
        wanted = entry.get("platform") or {}
        found.append(f"{wanted.get('os')}/{wanted.get('architecture')}")
        if wanted.get("os") == "linux" and wanted.get("architecture") == arch:
            return str(entry["digest"])
    raise BuildError(f"the base image {text} has no image for {platform.docker} (it has {', '.join(found) or 'none'})",
                     hint=f"use a base image built for {platform.docker}, or pass --platform to match the base")


def _image(text: str, digest: str, store: BlobStore, config_desc: Descriptor, layers: list[Descriptor],
           registry_ref: Reference | None = None) -> BaseImage:
    config = json.loads(store.read(config_desc.digest))
    diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
    if len(diff_ids) != len(layers):
        raise BuildError(f"the base image {text} is inconsistent: {len(layers)} layers, {len(diff_ids)} diff_ids",
                         hint="rebuild or re-export the base image")
    history = [h for h in config.get("history") or [] if not h.get("empty_layer")]
    comments = [str(h.get("created_by", "")) for h in history] if len(history) == len(layers) else [""] * len(layers)
    relabelled = [Descriptor(oci_media_type(layer.media_type), layer.digest, layer.size) for layer in layers]
    return BaseImage(text, digest, config,
                     [Layer(layer, diff, comment) for layer, diff, comment in zip(relabelled, diff_ids, comments,
                                                                                   strict=True)],
                     store, registry_ref)


def _read_index(read: Any, text: str, platform: Platform) -> Descriptor:
    index = json.loads(read("index.json"))
    manifests = index.get("manifests") or []
    if not manifests:
        raise BuildError(f"{text} holds no image (index.json lists no manifest)", hint="export the base image again")
    if len(manifests) == 1 and manifests[0].get("mediaType", MANIFEST_TYPE) != INDEX_TYPE:
        return Descriptor.from_json({"mediaType": MANIFEST_TYPE, **manifests[0]})
    return Descriptor(MANIFEST_TYPE, _choose(index, platform, text), 0)


def _from_tar(text: str, path: Path, store: BlobStore, platform: Platform) -> BaseImage:
    if not path.is_file():
        raise BuildError(f"--base-image {text}: no file {path}", hint="give the path of an `oci-archive` tar")
    with tarfile.open(path) as tar:
        def read(name: str) -> bytes:
            member = tar.extractfile(name.removeprefix("./"))
            if member is None:
                raise KeyError(name)
            return member.read()

        try:
            chosen = _read_index(read, text, platform)
            return _from_blobs(text, chosen.digest, store, lambda digest: tar.extractfile(_blob_name(digest)))
        except KeyError as missing:
            raise BuildError(f"--base-image {text} is not an OCI archive: it has no {missing}",
                             hint="write one with `skopeo copy ... oci-archive:FILE`, or use docker-archive:FILE "
                             "for a `docker save` tar") from None


def _from_layout(text: str, path: Path, store: BlobStore, platform: Platform) -> BaseImage:
    if not (path / "index.json").is_file():
        raise BuildError(f"--base-image {text}: {path} is not an OCI layout (no index.json)",
                         hint="give an OCI layout folder, oci-archive:FILE, docker-archive:FILE or a registry reference")
    chosen = _read_index(lambda name: (path / name).read_bytes(), text, platform)
    return _from_blobs(text, chosen.digest, store, lambda digest: (path / _blob_name(digest)).open("rb"))


def _from_blobs(text: str, digest: str, store: BlobStore, open_blob: Any) -> BaseImage:
    def copy(wanted: str) -> None:
        if store.has(wanted):
            return
        source: IO[bytes] | None = open_blob(wanted)
        if source is None:
            raise KeyError(_blob_name(wanted))
        with source, store.writer() as out:
            shutil.copyfileobj(source, out)
            try:
                out.commit(wanted)
            except DigestMismatch as exc:
                raise DigestMismatch(wanted, exc.actual, f" (in {text})") from None

    copy(digest)
    manifest = json.loads(store.read(digest))
    config_desc = Descriptor.from_json(manifest["config"])
    copy(config_desc.digest)
    layers = [Descriptor.from_json(layer) for layer in manifest["layers"]]
    for layer in layers:
        copy(layer.digest)
    return _image(text, digest, store, config_desc, layers)


def _from_docker_archive(text: str, path: Path, store: BlobStore) -> BaseImage:
    """A `docker save` tar: its layers are uncompressed tars, gzipped here once (deterministically, so the same
    archive always gives the same layer digests); the base's digest is that of the OCI manifest made of them."""
    if not path.is_file():
        raise BuildError(f"--base-image {text}: no file {path}", hint="write one with `docker save IMAGE -o FILE`")
    with tarfile.open(path) as tar:
        try:
            entry = json.loads(_member(tar, "manifest.json"))[0]
            config_bytes = _member(tar, entry["Config"])
        except (KeyError, IndexError, ValueError):
            raise BuildError(f"--base-image {text} is not a docker-archive (no usable manifest.json)",
                             hint="write one with `docker save IMAGE -o FILE`") from None
        config_digest = store.put(config_bytes)
        diff_ids = json.loads(config_bytes)["rootfs"]["diff_ids"]
        layers = []
        for name, diff_id in zip(entry["Layers"], diff_ids, strict=True):
            layers.append(_gzipped(store, tar, name, diff_id, text))
    config_desc = Descriptor("application/vnd.oci.image.config.v1+json", config_digest, len(config_bytes))
    manifest = canonical_json({"schemaVersion": 2, "mediaType": MANIFEST_TYPE, "config": config_desc.to_json(),
                               "layers": [layer.to_json() for layer in layers]})
    return _image(text, store.put(manifest), store, config_desc, layers)


def _gzipped(store: BlobStore, tar: tarfile.TarFile, name: str, diff_id: str, text: str) -> Descriptor:
    known = store.root / "gzipped" / f"{diff_id.removeprefix('sha256:')}.json"
    if known.is_file():
        desc = Descriptor.from_json(json.loads(known.read_text()))
        if store.has(desc.digest):
            return desc
    member = tar.extractfile(name)
    if member is None:
        raise BuildError(f"--base-image {text}: the archive lacks its layer {name}", hint="export the image again")
    head = member.read(2)
    member.seek(0)
    if head == b"\x1f\x8b":  # already compressed (newer `docker save`)
        with store.writer() as out:
            shutil.copyfileobj(member, out)
            digest = out.commit()
            desc = Descriptor(LAYER_GZIP, digest, out.size)
    else:
        desc, actual = gzip_blob(store, member)
        if actual != diff_id:
            raise DigestMismatch(diff_id, actual, f" (layer {name} in {text})")
    known.parent.mkdir(exist_ok=True)
    known.write_text(json.dumps(desc.to_json()))
    return desc


def _member(tar: tarfile.TarFile, name: str) -> bytes:
    member = tar.extractfile(name)
    if member is None:
        raise KeyError(name)
    return member.read()


def _blob_name(digest: str) -> str:
    return "blobs/sha256/" + digest.removeprefix("sha256:")


def _scan(base: BaseImage) -> BaseFiles:
    cache = base.store.root / "scans" / f"{base.digest.removeprefix('sha256:')}.json"
    if cache.is_file():
        data = json.loads(cache.read_text(encoding="utf-8"))
        if data.get("version") == _SCAN_VERSION:
            return BaseFiles(data["files"], data["pythons"])
    files: dict[str, str] = {}
    pythons: dict[str, str] = {}
    for layer in base.layers:
        for name, member, tar in _members(base.store, layer.descriptor):
            parent, _, leaf = name.rpartition("/")
            if leaf == _OPAQUE:
                _drop(files, pythons, parent, keep_self=True)
            elif leaf.startswith(_WHITEOUT):
                _drop(files, pythons, f"{parent}/{leaf[len(_WHITEOUT):]}".lstrip("/"))
            elif name in _WANTED and member.isfile():
                handle = tar.extractfile(member)
                files[name] = handle.read().decode(errors="replace") if handle else ""
            elif _PYTHON.match(name) and (member.isfile() or member.issym() or member.islnk()):
                pythons[name] = member.linkname if member.issym() else "file"
    result = BaseFiles(files, pythons)
    cache.parent.mkdir(exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps(result.to_json()), encoding="utf-8")
    tmp.replace(cache)
    return result


def _members(store: BlobStore, layer: Descriptor) -> Iterator[tuple[str, tarfile.TarInfo, tarfile.TarFile]]:
    # gzip.GzipFile, not tarfile's "r|gz": a gzip layer may be several members (ours are; pigz and BGZF write
    # them too), and tarfile's own stream reader stops at the end of the first one.
    with store.path(layer.digest).open("rb") as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        with (gzip.GzipFile(fileobj=raw) if gzipped else nullcontext(raw)) as stream, \
                tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                yield member.name.removeprefix("./").strip("/"), member, tar


def _drop(files: dict[str, str], pythons: dict[str, str], path: str, keep_self: bool = False) -> None:
    for table in (files, pythons):
        for key in [k for k in table if k.startswith(f"{path}/") or (k == path and not keep_self)]:
            del table[key]


def check_python(base: BaseImage, python: str, platform: Platform) -> tuple[str, str]:
    """(executable, full version) of the base's pythonX.Y found on its PATH; BuildError as the engine build's."""
    machine = _ARCH.get(base.architecture, base.architecture)
    if machine != platform.machine:
        raise BuildError(
            f"the base image {base.reference} is for {base.config.get('os', 'linux')}/{base.architecture}, but the "
            f"target platform is {platform.docker} ({platform.machine})",
            hint=f"use a base image for {platform.docker}, or pass --platform to match the base")
    found = base.files().pythons
    path_dirs = next((e.split("=", 1)[1] for e in base.env if e.startswith("PATH=")),
                     "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin").split(":")
    for directory in path_dirs:
        candidate = f"{directory.strip('/')}/python{python}"
        if candidate in found:
            return "/" + candidate, _full_version(base, python)
    others = sorted({f"python3.{m[1]} (/{p})" for p in found if (m := _PYTHON.match(p))})
    has = f"only {', '.join(others)}" if others else "no python3 at all"
    raise BuildError(
        f"the base image {base.reference} has no python{python} on its PATH ({has}); the bundle was packaged "
        f"with Python {python}, and its pickled model loads only under the same major.minor",
        hint=f"use a base with Python {python} (e.g. --base-image python:{python}-slim, or one made by "
        "`mlship base-image TAG`), or package the notebook under the base's Python")


def _full_version(base: BaseImage, python: str) -> str:
    for entry in base.env:
        if entry.startswith("PYTHON_VERSION="):
            return entry.split("=", 1)[1]
    status = base.dpkg_status() or ""
    match = re.search(rf"^Package: python{re.escape(python)}-minimal\n(?:.+\n)*?Version: ({re.escape(python)}\.\d+)",
                      status, re.MULTILINE) or re.search(
        rf"^Package: python{re.escape(python)}\n(?:.+\n)*?Version: ({re.escape(python)}\.\d+)", status, re.MULTILINE)
    return match[1] if match else python
