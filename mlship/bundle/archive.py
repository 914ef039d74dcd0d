"""Deterministic .tar.gz archives: the same files give the same bytes, on any machine, on any day.

Follows flit (flit_core/sdist.py `clean_tarinfo`) and hatchling (builders/utils.py): members sorted by name,
owner 0/0 with empty owner names, modes 644 or 755, every mtime from SOURCE_DATE_EPOCH, PAX format, and a gzip
header with no file name and a fixed mtime. Parent directories get their own entries, so unpacking creates them
with mode 755 whatever the unpacker's umask.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from ..errors import BuildError

# hatchling's fallback when SOURCE_DATE_EPOCH is unset (2020-02-02): any fixed value works, and a date after 1980
# keeps zip-based tools that read the members' times (flit's fallback exists for that limit) out of trouble.
FALLBACK_EPOCH = 1580601600
_CHUNK = 1 << 20


def source_date_epoch() -> int:
    """SOURCE_DATE_EPOCH when it holds a whole number of seconds, else FALLBACK_EPOCH."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    return int(value) if value.isdigit() else FALLBACK_EPOCH


@dataclass(frozen=True)
class Member:
    """One regular file in an archive: read from `source`, or `data` held in memory."""

    name: str  # relative, forward slashes
    source: Path | None = None
    data: bytes | None = None
    executable: bool = False

    def __post_init__(self) -> None:
        check_member_name(self.name)
        if (self.source is None) == (self.data is None):
            raise ValueError(f"archive member {self.name}: give exactly one of source and data")

    def open(self) -> BinaryIO:
        return io.BytesIO(self.data) if self.data is not None else self.source.open("rb")  # type: ignore[union-attr]

    def size(self) -> int:
        return len(self.data) if self.data is not None else self.source.stat().st_size  # type: ignore[union-attr]

    def sha256(self) -> str:
        digest = hashlib.sha256()
        with self.open() as fh:
            for block in iter(lambda: fh.read(_CHUNK), b""):
                digest.update(block)
        return digest.hexdigest()


def check_member_name(name: str) -> None:
    """Refuse a name that could land outside the folder it is unpacked in, or that unpacks ambiguously."""
    path = PurePosixPath(name)
    if (not name or name.startswith("/") or "\\" in name or path.as_posix() != name
            or any(part in ("", ".", "..") for part in name.split("/"))):
        raise BuildError(f"unsafe archive member name {name!r}",
                         hint="members must be relative paths without '.', '..' or empty parts")


def tree_members(root: Path, prefix: str, *, exclude: Callable[[str], bool] = lambda rel: False) -> list[Member]:
    """Every regular file under `root` as a member named `prefix/relative/path`; executables keep their x bit.

    `exclude(rel)` sees each relative path (forward slashes, directories too) and drops it, with all it holds.
    Symbolic links and special files are refused: what they point to would differ from machine to machine.
    """
    members: list[Member] = []
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        rel_base = base.relative_to(root).as_posix()

        def rel(name: str, rel_base: str = rel_base) -> str:
            return name if rel_base == "." else f"{rel_base}/{name}"

        for name in list(dirnames):
            if exclude(rel(name)):
                dirnames.remove(name)
            elif (base / name).is_symlink():
                raise BuildError(f"{base / name} is a symbolic link", hint="replace it with the folder it points to")
        for name in filenames:
            path = base / name
            if exclude(rel(name)):
                continue
            mode = path.lstat().st_mode
            if not stat.S_ISREG(mode):
                raise BuildError(f"{path} is not a regular file (a link or a special file)",
                                 hint="replace it with a regular file")
            members.append(Member(f"{prefix}/{rel(name)}", source=path, executable=bool(mode & 0o100)))
    return sorted(members, key=lambda m: m.name)


def write_tar_gz(dest: Path, members: Iterable[Member], *, mtime: int | None = None, compresslevel: int = 6) -> str:
    """Write `members` (plus their parent directories) to `dest` reproducibly; return the archive's sha256.

    The archive is written to a temporary file beside `dest` and renamed into place, so `dest` is either the
    old file or the complete new one, never a partial write.
    """
    when = source_date_epoch() if mtime is None else mtime
    files = sorted(members, key=lambda m: m.name)
    names = [m.name for m in files]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise BuildError(f"archive {dest.name} would hold {', '.join(dupes)} twice")
    directories = {parent.as_posix() for m in files for parent in PurePosixPath(m.name).parents} - {"."}
    clash = directories & set(names)
    if clash:
        raise BuildError(f"archive {dest.name}: {sorted(clash)[0]} is both a file and a folder")
    entries: list[tuple[str, Member | None]] = [(d, None) for d in directories] + [(m.name, m) for m in files]
    entries.sort(key=lambda e: e[0])

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as raw:
            hashing = _HashingWriter(raw)
            # filename="" keeps the temporary file's name out of the gzip header; mtime=0 keeps the clock out.
            with gzip.GzipFile(filename="", mode="wb", fileobj=hashing, mtime=0,
                               compresslevel=compresslevel) as gz, \
                    tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for name, member in entries:
                    _add(tar, name, member, when)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return hashing.hexdigest()


def _add(tar: tarfile.TarFile, name: str, member: Member | None, mtime: int) -> None:
    info = tarfile.TarInfo(name)
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = mtime
    if member is None:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        tar.addfile(info)
        return
    info.mode = 0o755 if member.executable else 0o644
    info.size = member.size()
    with member.open() as fh:
        tar.addfile(info, fh)


class _HashingWriter:
    """A write-only file object that hashes what passes through it (the archive's sha256 without a re-read)."""

    def __init__(self, raw: io.BufferedWriter) -> None:
        self._raw = raw
        self._digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self._digest.update(data)
        return self._raw.write(data)

    def flush(self) -> None:
        self._raw.flush()

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def unsafe_members(path: Path) -> list[str]:
    """Why each member of the .tar.gz at `path` would be unsafe to unpack; empty when all are safe.

    Unsafe: an absolute name, a `..` part, a link, a device or FIFO, a name that appears twice, a mode with
    set-uid/set-gid/sticky bits or write access for others.
    """
    problems: list[str] = []
    seen: set[str] = set()
    with tarfile.open(path, "r:gz") as tar:
        for info in tar:
            name = info.name
            try:
                check_member_name(name.rstrip("/") if info.isdir() else name)
            except BuildError:
                problems.append(f"{name}: absolute or contains '..'")
            if info.issym() or info.islnk():
                problems.append(f"{name}: a link to {info.linkname}")
            elif not (info.isfile() or info.isdir()):
                problems.append(f"{name}: a device, FIFO or other special file")
            if info.mode & 0o7002:
                problems.append(f"{name}: mode {info.mode:o}")
            if name in seen:
                problems.append(f"{name}: appears twice")
            seen.add(name)
    return problems
