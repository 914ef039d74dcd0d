from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from mlship.bundle.archive import (
    FALLBACK_EPOCH,
    Member,
    source_date_epoch,
    tree_members,
    unsafe_members,
    write_tar_gz,
)
from mlship.errors import BuildError


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "pkg" / "b.txt").write_text("b\n")
    (root / "pkg" / "a.txt").write_text("a\n")
    (root / "pkg" / "sub" / "c.bin").write_bytes(bytes(range(256)))
    tool = root / "run.sh"
    tool.write_text("#!/bin/sh\necho hi\n")
    tool.chmod(0o700)
    (root / "pkg" / "__pycache__").mkdir()
    (root / "pkg" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"junk")
    return root


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(tree: Path, dest: Path) -> str:
    members = tree_members(tree, "top", exclude=lambda rel: rel.endswith("__pycache__"))
    members.append(Member("top/generated.txt", data=b"made in memory\n"))
    return write_tar_gz(dest, members)


def test_same_files_give_the_same_bytes_whatever_their_times_order_and_modes(tree: Path, tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    first = build(tree, tmp_path / "one.tar.gz")
    for path in tree.rglob("*"):
        os.utime(path, (1_700_000_000, 1_700_000_000))
    (tree / "pkg" / "a.txt").chmod(0o600)  # group/other bits never reach the archive
    second = build(tree, tmp_path / "two.tar.gz")
    assert first == second == sha256(tmp_path / "one.tar.gz") == sha256(tmp_path / "two.tar.gz")
    reversed_members = list(reversed(tree_members(tree, "top", exclude=lambda rel: "__pycache__" in rel)))
    reversed_members.append(Member("top/generated.txt", data=b"made in memory\n"))
    assert write_tar_gz(tmp_path / "three.tar.gz", reversed_members) == first


def test_source_date_epoch_sets_every_mtime(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    assert source_date_epoch() == FALLBACK_EPOCH
    fallback = build(tree, tmp_path / "fallback.tar.gz")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    zero = build(tree, tmp_path / "zero.tar.gz")
    assert zero != fallback
    assert build(tree, tmp_path / "zero-again.tar.gz") == zero
    with tarfile.open(tmp_path / "zero.tar.gz") as tar:
        assert {m.mtime for m in tar} == {0}
    with tarfile.open(tmp_path / "fallback.tar.gz") as tar:
        assert {m.mtime for m in tar} == {FALLBACK_EPOCH}
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "not a number")
    assert source_date_epoch() == FALLBACK_EPOCH


def test_members_are_sorted_owned_by_root_with_normal_modes_and_directories(tree: Path, tmp_path: Path) -> None:
    build(tree, tmp_path / "out.tar.gz")
    with tarfile.open(tmp_path / "out.tar.gz") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == ["top", "top/generated.txt", "top/pkg", "top/pkg/a.txt", "top/pkg/b.txt", "top/pkg/sub",
                     "top/pkg/sub/c.bin", "top/run.sh"]
    assert all((m.uid, m.gid, m.uname, m.gname) == (0, 0, "", "") for m in members)
    modes = {m.name: m.mode for m in members}
    assert modes["top/run.sh"] == 0o755 and modes["top/pkg"] == 0o755 and modes["top/pkg/a.txt"] == 0o644
    assert {m.name for m in members if m.isdir()} == {"top", "top/pkg", "top/pkg/sub"}


def test_gzip_header_has_no_name_and_no_time_and_the_tar_is_pax(tree: Path, tmp_path: Path) -> None:
    build(tree, tmp_path / "out.tar.gz")
    data = (tmp_path / "out.tar.gz").read_bytes()
    assert data[:3] == b"\x1f\x8b\x08"
    assert data[3] & 0x08 == 0  # FNAME flag: no file name stored
    assert data[4:8] == b"\0\0\0\0"  # MTIME
    import gzip

    raw = gzip.decompress(data)
    assert raw[257:265] == b"ustar\x0000"  # POSIX ustar/pax magic, not GNU's "ustar  \0"
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        assert tar.extractfile("top/pkg/sub/c.bin").read() == bytes(range(256))  # type: ignore[union-attr]


def test_returned_digest_is_the_file_sha256_and_no_temporary_file_is_left(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "dist" / "out.tar.gz"
    digest = build(tree, out)
    assert digest == sha256(out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.tar.gz"]


def test_a_failed_write_leaves_the_old_archive_and_no_partial_file(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.tar.gz"
    out.write_bytes(b"old")
    with pytest.raises(FileNotFoundError):
        write_tar_gz(out, [Member("top/a", data=b"a"), Member("top/gone", source=tmp_path / "missing")])
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tar.gz", "src"]


@pytest.mark.parametrize("name", ["/etc/passwd", "../up", "a/../../b", "a//b", "./a", "a/./b", "a/", "", "a\\b"])
def test_unsafe_member_names_are_refused(name: str) -> None:
    with pytest.raises(BuildError, match="unsafe archive member"):
        Member(name, data=b"x")


def test_duplicates_and_file_folder_clashes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="twice"):
        write_tar_gz(tmp_path / "x.tar.gz", [Member("a/b", data=b"1"), Member("a/b", data=b"2")])
    with pytest.raises(BuildError, match="both a file and a folder"):
        write_tar_gz(tmp_path / "x.tar.gz", [Member("a/b", data=b"1"), Member("a", data=b"2")])
    assert not list(tmp_path.iterdir())


def test_tree_members_refuses_links_and_keeps_the_executable_bit(tree: Path) -> None:
    members = {m.name: m for m in tree_members(tree, "top")}
    assert members["top/run.sh"].executable and not members["top/pkg/a.txt"].executable
    assert "top/pkg/__pycache__/a.cpython-311.pyc" in members
    (tree / "link").symlink_to("/etc/passwd")
    with pytest.raises(BuildError, match="not a regular file"):
        tree_members(tree, "top")
    (tree / "link").unlink()
    (tree / "dirlink").symlink_to(tree / "pkg")
    with pytest.raises(BuildError, match="symbolic link"):
        tree_members(tree, "top")


def test_unsafe_members_names_what_is_wrong(tmp_path: Path, tree: Path) -> None:
    build(tree, tmp_path / "good.tar.gz")
    assert unsafe_members(tmp_path / "good.tar.gz") == []

    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:
        for name in ("/abs.txt", "top/../../escape.txt", "top/ok.txt"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
        link = tarfile.TarInfo("top/link")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/shadow"
        tar.addfile(link)
        setuid = tarfile.TarInfo("top/setuid")
        setuid.mode = 0o4755
        tar.addfile(setuid, io.BytesIO(b""))
    problems = unsafe_members(bad)
    assert any(p.startswith("/abs.txt:") for p in problems)
    assert any(p.startswith("top/../../escape.txt:") for p in problems)
    assert "top/link: a link to /etc/shadow" in problems
    assert "top/setuid: mode 4755" in problems
    assert not any(p.startswith("top/ok.txt") for p in problems)
