"""OCI image pieces written without a container engine: a content-addressed blob store, reproducible layers, the
image config and manifest, and the one tar that `docker load`, `podman load` and skopeo (as `oci-archive:` and
`docker-archive:`) all read (docs/DOCKER.md "The native builder").

Reproducible by construction: layer members are sorted, owned by 0:0 with empty owner names, modes 644/755, mtime
SOURCE_DATE_EPOCH (else 1980-01-01, the zip epoch, as the build context uses), PAX headers; gzip members cut at
fixed offsets, with no name and mtime 0; JSON documents are serialized with sorted keys and no spaces. Same inputs, same bytes, same digests.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..errors import BuildError

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
# The same bytes under Docker's names: a base pushed by `docker push` is reused as it is, relabelled.
_AS_OCI = {
    "application/vnd.docker.image.rootfs.diff.tar.gzip": LAYER_GZIP,
    "application/vnd.docker.image.rootfs.diff.tar": LAYER_TAR,
    DOCKER_CONFIG: CONFIG_TYPE,
}
REF_NAME = "org.opencontainers.image.ref.name"
# The zip epoch (1980-01-01), as wheels and the engine's build context use, unless SOURCE_DATE_EPOCH is set.
_DEFAULT_EPOCH = 315532800
_GZIP_LEVEL = 6
_CHUNK = 1 << 20
_BLOCK = 4 << 20  # the parallel gzip's block: fixed, so the output never depends on the machine


def source_date_epoch() -> int:
    value = os.environ.get("SOURCE_DATE_EPOCH", "")
    return int(value) if value.isdigit() else _DEFAULT_EPOCH


def canonical_json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def oci_media_type(media_type: str) -> str:
    return _AS_OCI.get(media_type, media_type)


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str  # "sha256:<hex>"
    size: int
    annotations: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            data["annotations"] = dict(self.annotations)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Descriptor:
        return cls(str(data["mediaType"]), str(data["digest"]), int(data["size"]), dict(data.get("annotations") or {}))


@dataclass(frozen=True)
class Layer:
    """A layer blob and what the config records of it (the digest of its uncompressed tar)."""

    descriptor: Descriptor
    diff_id: str
    comment: str = ""  # the history entry's `created_by`


class BlobStore:
    """Blobs by digest under ROOT/blobs/sha256/ (an OCI layout's folder), each written once, atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        self.blobs.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        algorithm, _, hexdigest = digest.partition(":")
        if algorithm != "sha256" or len(hexdigest) != 64:
            raise BuildError(f"unsupported digest {digest!r}", hint="mlship reads sha256 digests only")
        return self.blobs / hexdigest

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def read(self, digest: str) -> bytes:
        return self.path(digest).read_bytes()

    def put(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if not self.has(digest):
            with self.writer() as out:
                out.write(data)
                out.commit(digest)
        return digest

    def writer(self) -> BlobWriter:
        return BlobWriter(self)


class BlobWriter:
    """A temp file in the store that hashes what is written; `commit(expected)` checks and files it."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store
        fd, name = tempfile.mkstemp(prefix=".tmp-", dir=store.blobs)
        self.file = os.fdopen(fd, "wb")
        self.tmp = Path(name)
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        self.file.write(data)
        return len(data)

    @property
    def digest(self) -> str:
        return "sha256:" + self.sha.hexdigest()

    def commit(self, expected: str | None = None) -> str:
        self.file.close()
        if expected is not None and expected != self.digest:
            raise DigestMismatch(expected, self.digest)
        os.replace(self.tmp, self.store.path(self.digest))
        return self.digest

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.file.closed:
            self.file.close()
        self.tmp.unlink(missing_ok=True)


class DigestMismatch(BuildError):
    def __init__(self, expected: str, actual: str, where: str = "") -> None:
        self.expected, self.actual = expected, actual
        super().__init__(f"blob {expected}{where} has digest {actual}: its content is not what was announced",
                         hint="the source is damaged or tampered with; pull again, or check the registry's storage")


class _Hashing(io.RawIOBase):
    """Passes writes on to `out`, counting and hashing them (the uncompressed tar: the layer's diff_id)."""

    def __init__(self, out: IO[bytes] | BlobWriter | _ParallelGzip) -> None:
        self.out = out
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self.sha.update(chunk)
        self.size += len(chunk)
        self.out.write(chunk)
        return len(chunk)


@dataclass(frozen=True)
class Entry:
    """One member of a layer: `path` without a leading slash; a file's bytes come from `data` or `source`."""

    path: str
    kind: str  # "file" | "dir" | "symlink"
    mode: int = 0o644
    data: bytes | None = None
    source: Path | None = None
    target: str = ""  # a symlink's target

    @property
    def sort_key(self) -> tuple[str, ...]:
        return tuple(self.path.split("/"))  # parents before their children


def tree_entries(root: Path, prefix: str) -> Iterator[Entry]:
    """Every file, folder and symlink under `root`, as members under `prefix` (e.g. "opt/venv"), modes normalized;
    the parents of `prefix` included."""
    parts = prefix.strip("/").split("/")
    for depth in range(1, len(parts) + 1):
        yield Entry("/".join(parts[:depth]), "dir", 0o755)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(dirpath)
        rel = base.relative_to(root).as_posix()
        here = prefix.strip("/") if rel == "." else f"{prefix.strip('/')}/{rel}"
        for name in [*dirnames, *filenames]:
            path = base / name
            member = f"{here}/{name}"
            if path.is_symlink():
                yield Entry(member, "symlink", 0o777, target=os.readlink(path))
            elif path.is_dir():
                yield Entry(member, "dir", 0o755)
            else:
                yield Entry(member, "file", 0o755 if path.stat().st_mode & 0o111 else 0o644, source=path)


def write_layer(store: BlobStore, entries: Iterable[Entry], comment: str, *, epoch: int | None = None,
                level: int = _GZIP_LEVEL) -> Layer:
    """A gzipped layer of `entries` (sorted here; the last of two with one path wins) in the store."""
    when = source_date_epoch() if epoch is None else epoch
    unique = {entry.path: entry for entry in entries}
    with store.writer() as blob:
        with _gzip(blob, level) as zipped:
            raw = _Hashing(zipped)
            with tarfile.open(fileobj=raw, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for entry in sorted(unique.values(), key=lambda e: e.sort_key):
                    _add(tar, entry, when)
        digest = blob.commit()
        size = blob.size
    return Layer(Descriptor(LAYER_GZIP, digest, size), "sha256:" + raw.sha.hexdigest(), comment)


class _ParallelGzip(io.RawIOBase):
    """A gzip file of fixed 4 MiB members, each compressed by libdeflate on two threads (it lets go of the GIL).

    RFC 1952 allows a gzip file to be several members one after the other, and every reader of layers does read
    them as one stream: Go's compress/gzip (the engine, containerd, skopeo, podman, crane), pigz, Python's gzip.
    libdeflate compresses about three times faster than zlib at level 6 and 1% smaller; it has no streaming API,
    which members do not need. Members are cut at fixed offsets and libdeflate writes no name and mtime 0, so the
    bytes depend only on the input and the pinned `deflate` wheel, never on the machine or the thread count."""

    def __init__(self, out: BlobWriter, level: int) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.out, self.level = out, level
        self.pool = ThreadPoolExecutor(max_workers=2)
        self.pending: list[Any] = []
        self.buffer = bytearray()
        self.members = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.buffer += data
        while len(self.buffer) >= _BLOCK:
            self._submit(bytes(self.buffer[:_BLOCK]))
            del self.buffer[:_BLOCK]
        return len(data)

    def _submit(self, block: bytes) -> None:
        self.pending.append(self.pool.submit(_member, block, self.level))
        self.members += 1
        while len(self.pending) > 4 or (self.pending and self.pending[0].done()):
            self.out.write(self.pending.pop(0).result())

    def close(self) -> None:
        if self.closed:
            return
        if self.buffer or not self.members:  # an empty input is still one (empty) member: a valid gzip file
            self._submit(bytes(self.buffer))
        for future in self.pending:
            self.out.write(future.result())
        self.pool.shutdown()
        super().close()


def _member(block: bytes, level: int) -> bytes:
    import deflate

    return bytes(deflate.gzip_compress(block, level))


def _gzip(blob: BlobWriter, level: int) -> _ParallelGzip:
    return _ParallelGzip(blob, level)


def _add(tar: tarfile.TarFile, entry: Entry, mtime: int) -> None:
    info = tarfile.TarInfo(entry.path)
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = mtime
    info.mode = entry.mode
    if entry.kind == "dir":
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    elif entry.kind == "symlink":
        info.type = tarfile.SYMTYPE
        info.linkname = entry.target
        tar.addfile(info)
    elif entry.source is not None:
        info.size = entry.source.stat().st_size
        with entry.source.open("rb") as handle:
            tar.addfile(info, handle)
    else:
        data = entry.data or b""
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def gzip_blob(store: BlobStore, source: IO[bytes], *, level: int = _GZIP_LEVEL) -> tuple[Descriptor, str]:
    """Compress an uncompressed layer tar into the store: (its gzip descriptor, its diff_id)."""
    with store.writer() as blob:
        with _gzip(blob, level) as zipped:
            raw = _Hashing(zipped)
            while chunk := source.read(_CHUNK):
                raw.write(chunk)
        digest = blob.commit()
        size = blob.size
    return Descriptor(LAYER_GZIP, digest, size), "sha256:" + raw.sha.hexdigest()


@dataclass(frozen=True)
class Image:
    """A finished image in a store: its manifest (bytes as pushed), config, and layers (base first)."""

    store: BlobStore
    manifest: bytes
    config: Descriptor
    layers: tuple[Descriptor, ...]

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.manifest).hexdigest()

    @property
    def size(self) -> int:
        """Bytes a registry stores for it (config and compressed layers)."""
        return self.config.size + sum(layer.size for layer in self.layers)


def make_image(store: BlobStore, config: dict[str, Any], layers: list[Descriptor],
               annotations: dict[str, str] | None = None) -> Image:
    config_bytes = canonical_json(config)
    config_desc = Descriptor(CONFIG_TYPE, store.put(config_bytes), len(config_bytes))
    manifest: dict[str, Any] = {"schemaVersion": 2, "mediaType": MANIFEST_TYPE, "config": config_desc.to_json(),
                                "layers": [layer.to_json() for layer in layers]}
    if annotations:
        manifest["annotations"] = annotations
    data = canonical_json(manifest)
    store.put(data)
    return Image(store, data, config_desc, tuple(layers))


def write_archive(image: Image, dest: Path, tags: list[str]) -> Path:
    """One tar that is an OCI layout (index.json, oci-layout, blobs/) and a `docker save` archive (manifest.json
    naming the same blobs): docker load, podman load, skopeo oci-archive: and docker-archive: all read it."""
    from ._registry import split_reference

    # Each manifest named with its platform, from the config, so a reader choosing by platform (podman load warns
    # without it) finds the image without opening it.
    config = json.loads(image.store.read(image.config.digest))
    platform = {key: config[key] for key in ("architecture", "os", "variant") if config.get(key)}
    manifest_desc = Descriptor(MANIFEST_TYPE, image.digest, len(image.manifest))
    refs = []
    for tag in tags:
        ref = split_reference(tag)
        refs.append(Descriptor(MANIFEST_TYPE, image.digest, len(image.manifest),
                               {REF_NAME: ref.tag, "io.containerd.image.name": ref.full}).to_json())
    manifests = [{**ref, "platform": platform} for ref in refs or [manifest_desc.to_json()]]
    index = {"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": manifests}
    docker = [{"Config": _blob_name(image.config.digest), "RepoTags": [split_reference(t).full for t in tags],
               "Layers": [_blob_name(layer.digest) for layer in image.layers]}]
    members: list[tuple[str, bytes | Path]] = [
        ("oci-layout", canonical_json({"imageLayoutVersion": "1.0.0"})),
        ("index.json", canonical_json(index)),
        ("manifest.json", canonical_json(docker)),
    ]
    blobs = sorted({image.config.digest, image.digest, *(layer.digest for layer in image.layers)})
    members += [(_blob_name(digest), image.store.path(digest)) for digest in blobs]
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            epoch = source_date_epoch()
            for directory in ("blobs", "blobs/sha256"):
                _add(tar, Entry(directory, "dir", 0o755), epoch)
            for name, content in members:
                if isinstance(content, Path):
                    _add(tar, Entry(name, "file", source=content), epoch)
                else:
                    _add(tar, Entry(name, "file", data=content), epoch)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _blob_name(digest: str) -> str:
    return "blobs/sha256/" + digest.removeprefix("sha256:")
