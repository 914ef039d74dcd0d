"""The native builder's pieces without an engine or a registry: reproducible layers, the tar that is both an OCI
layout and a docker-archive, reading a base's files through whiteouts, finding its Python, references and
credentials, the venv made by `installer` from a wheel written here, the config and the layer split."""

from __future__ import annotations

import base64
import csv
import gzip
import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

from mlship.errors import BuildError
from mlship.targets._docker_context import ImageMetadata, dockerfile_context
from mlship.targets._native_build import _bundle_entries, bundle_env, image_config
from mlship.targets._native_venv import _destinations, _disjoint, make_venv
from mlship.targets._oci import BlobStore, Entry, Layer, make_image, write_archive, write_layer
from mlship.targets._oci_base import BaseImage, check_python, resolve_base
from mlship.targets._registry import find_credentials, split_reference
from mlship.targets.wheelhouse import LockedWheel, Wheelhouse, parse_platform

AMD64 = parse_platform("linux/amd64")
FILES = [Entry("etc", "dir", 0o755), Entry("etc/passwd", "file", data=b"root:x:0:0:root:/root:/bin/sh\n"),
         Entry("usr/bin/python3.11", "file", 0o755, data=b"#"), Entry("usr", "dir", 0o755),
         Entry("usr/bin", "dir", 0o755), Entry("usr/bin/python3", "symlink", 0o777, target="python3.11")]


def members(store: BlobStore, layer: Layer) -> list[tarfile.TarInfo]:
    with tarfile.open(store.path(layer.descriptor.digest)) as tar:
        return tar.getmembers()


def test_a_layer_is_the_same_bytes_every_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    one, two = BlobStore(tmp_path / "a"), BlobStore(tmp_path / "b")
    first, second = write_layer(one, FILES, "x"), write_layer(two, list(reversed(FILES)), "x")
    assert first == second
    data = one.read(first.descriptor.digest)
    assert data[4:8] == b"\0\0\0\0"  # gzip header mtime
    assert first.diff_id == "sha256:" + hashlib.sha256(gzip.decompress(data)).hexdigest()
    listed = members(one, first)
    assert [m.name for m in listed] == ["etc", "etc/passwd", "usr", "usr/bin", "usr/bin/python3", "usr/bin/python3.11"]
    assert {(m.uid, m.gid, m.uname, m.gname, m.mtime) for m in listed} == {(0, 0, "", "", 315532800)}
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    other = write_layer(one, FILES, "x")
    assert other.descriptor.digest != first.descriptor.digest
    assert {m.mtime for m in members(one, other)} == {0}


def fake_base(tmp_path: Path, layers: list[list[Entry]], env: list[str] | None = None,
              arch: str = "amd64") -> tuple[BlobStore, Path]:
    """A base image as an oci-archive tar, written by the builder's own functions."""
    store = BlobStore(tmp_path / "base-store")
    written = [write_layer(store, entries, f"layer {i}") for i, entries in enumerate(layers)]
    config = {"architecture": arch, "os": "linux", "config": {"Env": env or [], "Labels": {"base": "yes"}},
              "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in written]}}
    image = make_image(store, config, [layer.descriptor for layer in written])
    return store, write_archive(image, tmp_path / "base.tar", ["base:1"])


def test_a_large_layer_is_gzip_members_that_every_reader_takes_as_one_stream(tmp_path: Path) -> None:
    # Text-like data over three of the 4 MiB members: Python's gzip and the system's gzip read them as one stream,
    # and the layer is no larger than zlib's single stream at the same level (what the engine's Go gzip is near).
    import random
    import shutil
    import subprocess
    import zlib

    rng = random.Random(14)
    words = [bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz_", k=rng.randint(3, 12))) for _ in range(4000)]
    data = b" ".join(rng.choice(words) for _ in range(1_400_000))[:10 << 20]
    store = BlobStore(tmp_path)
    layer = write_layer(store, [Entry("blob", "file", 0o644, data=data)], "members")
    blob = store.read(layer.descriptor.digest)
    assert blob.count(b"\x1f\x8b\x08\x00\x00\x00\x00\x00") >= 3  # one header per member, mtime 0
    unpacked = gzip.decompress(blob)
    assert "sha256:" + hashlib.sha256(unpacked).hexdigest() == layer.diff_id
    with tarfile.open(fileobj=io.BytesIO(unpacked)) as tar:
        member = tar.extractfile("blob")
        assert member is not None and member.read() == data
    system_gzip = shutil.which("gzip")
    assert system_gzip is not None
    assert subprocess.run([system_gzip, "-dc"], input=blob, capture_output=True, check=True).stdout == unpacked
    assert layer.descriptor.size <= len(zlib.compress(unpacked, 6))
    assert write_layer(BlobStore(tmp_path / "again"), [Entry("blob", "file", 0o644, data=data)], "members") == layer


def test_the_archive_is_an_oci_layout_and_a_docker_archive(tmp_path: Path) -> None:
    store, tar_path = fake_base(tmp_path, [FILES])
    with tarfile.open(tar_path) as tar:
        names = set(tar.getnames())
        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
        docker = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert {"oci-layout", "index.json", "manifest.json"} <= names
    ref = index["manifests"][0]
    assert ref["annotations"] == {"org.opencontainers.image.ref.name": "1",
                                  "io.containerd.image.name": "docker.io/library/base:1"}
    assert ref["platform"] == {"architecture": "amd64", "os": "linux"}
    assert f"blobs/sha256/{ref['digest'][7:]}" in names
    assert docker[0]["RepoTags"] == ["docker.io/library/base:1"]
    assert {docker[0]["Config"], *docker[0]["Layers"]} <= names


def test_the_bases_files_are_read_through_whiteouts(tmp_path: Path) -> None:
    later = [Entry("usr/bin/.wh.python3.11", "file"), Entry("usr/local/bin/python3.12", "file", 0o755, data=b"#"),
             Entry("etc/.wh..wh..opq", "file"), Entry("etc/passwd", "file", data=b"root:x:0:0::/:/bin/sh\nx:x:1:1::/:\n")]
    _, tar_path = fake_base(tmp_path, [FILES, later])
    base = resolve_base(f"oci-archive:{tar_path}", BlobStore(tmp_path / "store"), AMD64)
    assert base.passwd().endswith("x:x:1:1::/:\n")
    assert sorted(base.files().pythons) == ["usr/local/bin/python3.12"]
    with pytest.raises(BuildError) as caught:
        check_python(base, "3.11", AMD64)
    assert "has no python3.11 on its PATH (only python3.12 (/usr/local/bin/python3.12))" in caught.value.message


def test_a_bases_files_are_read_past_the_first_gzip_member(tmp_path: Path) -> None:
    # 6 MiB of random bytes first, so /usr/bin/python3.11 lies in the layer's second gzip member (tarfile's own
    # "r|gz" stream reader would stop at the first).
    import os

    large = [Entry("aaa", "dir", 0o755), Entry("aaa/blob", "file", data=os.urandom(6 << 20)), *FILES]
    _, tar_path = fake_base(tmp_path, [large])
    base = resolve_base(f"oci-archive:{tar_path}", BlobStore(tmp_path / "store"), AMD64)
    assert sorted(base.files().pythons) == ["usr/bin/python3.11"]
    assert check_python(base, "3.11", AMD64)[0] == "/usr/bin/python3.11"


def test_the_pythons_path_follows_the_bases_path(tmp_path: Path) -> None:
    local = [Entry("usr/local/bin/python3.11", "file", 0o755, data=b"#")]
    _, tar_path = fake_base(tmp_path, [FILES, local], env=["PATH=/usr/local/bin:/usr/bin", "PYTHON_VERSION=3.11.9"])
    base = resolve_base(f"oci-archive:{tar_path}", BlobStore(tmp_path / "store"), AMD64)
    assert check_python(base, "3.11", AMD64) == ("/usr/local/bin/python3.11", "3.11.9")
    with pytest.raises(BuildError, match="is for linux/amd64, but the target platform is linux/arm64"):
        check_python(base, "3.11", parse_platform("linux/arm64"))


def test_references_are_normalized_as_docker_does() -> None:
    assert split_reference("python:3.11-slim").full == "docker.io/library/python:3.11-slim"
    ref = split_reference("127.0.0.1:5000/team/iris@sha256:" + "a" * 64)
    assert (ref.registry, ref.repository, ref.tag, ref.reference) == ("127.0.0.1:5000", "team/iris", "latest",
                                                                      "sha256:" + "a" * 64)
    assert split_reference("localhost/x:2").full == "localhost/x:2"
    with pytest.raises(BuildError, match="is not a valid image reference"):
        split_reference("Registry.local/UPPER:1")


def test_credentials_come_from_the_flag_or_the_docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    auth = base64.b64encode(b"me:secret").decode()
    (tmp_path / "config.json").write_text(json.dumps({"auths": {"https://registry.local:5000": {"auth": auth}}}))
    found = find_credentials("registry.local:5000")
    assert found is not None and (found.username, found.password) == ("me", "secret")
    assert find_credentials("other.local") is None
    given = find_credentials("other.local", "u:p:with-colon")
    assert given is not None and (given.username, given.password) == ("u", "p:with-colon")
    with pytest.raises(BuildError, match="USER:PASSWORD"):
        find_credentials("other.local", "nopassword")


def write_wheel(folder: Path, pkg: str = "pkg", extra: dict[str, bytes] | None = None) -> Path:
    info = f"{pkg}-1.0.dist-info"
    files = {f"{pkg}/__init__.py": b"def main():\n    return 0\n", f"{pkg}/tests/test_pkg.py": b"",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {pkg}\nVersion: 1.0\n".encode(),
             f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
             f"{info}/entry_points.txt": f"[console_scripts]\n{pkg}cli = {pkg}:main\n".encode(), **(extra or {})}
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        writer.writerow([name, f"sha256={digest}", len(data)])
    writer.writerow([f"{info}/RECORD", "", ""])
    path = folder / f"{pkg}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
        wheel.writestr(f"{info}/RECORD", record.getvalue())
    return path


def test_the_venv_is_made_by_installer_without_running_the_image(tmp_path: Path) -> None:
    wheel = write_wheel(tmp_path)
    house = Wheelhouse(tmp_path, [LockedWheel("pkg", "1.0", wheel.name, "0" * 64)], "3.11", AMD64)
    prefix = make_venv(house, tmp_path / "root", venv="/opt/venv", python="3.11", executable="/usr/bin/python3.11",
                       version="3.11.2")
    assert (prefix / "pyvenv.cfg").read_text().startswith("home = /usr/bin\ninclude-system-site-packages = false\n")
    assert [(p.name, str(p.readlink())) for p in sorted((prefix / "bin").glob("python*"))] == [
        ("python", "python3.11"), ("python3", "python3.11"), ("python3.11", "/usr/bin/python3.11")]
    assert (prefix / "bin" / "pkgcli").read_text().startswith("#!/opt/venv/bin/python\n")
    site = prefix / "lib" / "python3.11" / "site-packages"
    assert (site / "pkg-1.0.dist-info" / "INSTALLER").read_text() == "mlship\n"
    record = (site / "pkg-1.0.dist-info" / "RECORD").read_text()
    assert "pkg/__init__.py,sha256=" in record and "../../../bin/pkgcli" in record
    assert not (site / "pkg" / "tests").exists()  # package test suites are dropped, as in the engine image
    pyc = next((site / "pkg" / "__pycache__").glob("__init__.cpython-311.pyc")).read_bytes()
    assert int.from_bytes(pyc[8:12], "little") == 315532800  # the source's mtime in the layer


def test_wheels_that_write_one_path_are_installed_in_the_locks_order(tmp_path: Path) -> None:
    # Disjoint wheels install two at a time (one namespace folder between them is fine); two that write one
    # file install one after the other, so the one later in the lock wins on every build (as with pip), never
    # whichever thread finished last, and never a FileExistsError.
    def house(*wheels: Path) -> Wheelhouse:
        return Wheelhouse(tmp_path, [LockedWheel(w.name.split("-")[0], "1.0", w.name, "0" * 64) for w in wheels],
                          "3.11", AMD64)

    first = write_wheel(tmp_path, "first", {"shared/data.txt": b"first"})
    second = write_wheel(tmp_path, "second", {"shared/data.txt": b"second"})
    other = write_wheel(tmp_path, "other", {"shared/other.txt": b"other"})  # one namespace folder, other files
    def disjoint(*wheels: Path) -> bool:
        return _disjoint([_destinations(wheel) for wheel in wheels])

    assert disjoint(first, other) and not disjoint(first, second, other)
    scripts = write_wheel(tmp_path, "scripts", {"scripts-1.0.dist-info/entry_points.txt":
                                                b"[console_scripts]\nfirstcli = scripts:main\n"})
    assert not disjoint(first, scripts)  # one console script name: one bin/ file
    for order, winner in (((first, second, other), b"second"), ((second, first, other), b"first")):
        prefix = make_venv(house(*order), tmp_path / f"root-{winner.decode()}", venv="/opt/venv", python="3.11",
                           executable="/usr/bin/python3.11", version="3.11.2")
        site = prefix / "lib" / "python3.11" / "site-packages"
        assert (site / "shared" / "data.txt").read_bytes() == winner
        assert (site / "shared" / "other.txt").read_bytes() == b"other"
        assert {p.name for p in (prefix / "bin").glob("*cli")} == {"firstcli", "secondcli", "othercli"}


def test_the_config_is_the_dockerfiles_final_stage_on_the_bases_config(tmp_path: Path) -> None:
    base = BaseImage("b", "sha256:" + "1" * 64, {"architecture": "amd64", "os": "linux", "config": {
        "Env": ["PATH=/usr/bin:/bin", "LANG=C.UTF-8", "HOME=/root"], "Labels": {"base": "yes", "io.mlship.version": "0"},
        "Cmd": ["python3"]}, "rootfs": {"diff_ids": []}}, [], BlobStore(tmp_path))
    meta = ImageMetadata("iris", "1", "2026-01-01T00:00:00Z", "r", "s", "sha256:2", "3", "3.11.7", "1")
    house = Wheelhouse(tmp_path, [], "3.11", AMD64)
    ctx = dockerfile_context(meta, base_image="b", python="3.11", wheelhouse=house, context_hash="h")
    layer = Layer(write_layer(BlobStore(tmp_path), FILES, "x").descriptor, "sha256:" + "4" * 64, "ours")
    config: dict[str, Any] = image_config(base, ctx, [layer], dict(ctx.labels), env=bundle_env(ctx))
    settings = config["config"]
    assert settings["Env"] == ["PATH=/opt/venv/bin:/usr/bin:/bin", "LANG=C.UTF-8", "HOME=/tmp", "PYTHONPATH=/app",
                               "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"]
    assert settings["Cmd"] == ["serve", "/app", "--host", "0.0.0.0", "--port", "8080"]
    assert settings["Labels"]["base"] == "yes" and settings["Labels"]["io.mlship.version"] != "0"
    assert settings["Healthcheck"]["Interval"] == 10_000_000_000 and settings["User"] == "10001:0"
    assert config["rootfs"]["diff_ids"] == [layer.diff_id] and config["created"] == "2026-01-01T00:00:00Z"


def test_the_bundle_splits_into_a_code_layer_and_a_model_layer(tmp_path: Path) -> None:
    for name in ("mlship_runtime/_boot.py", "code/helpers.py", "predictor.py", "mlship.json", "golden.json",
                 "artifacts/values.pkl", "lock/linux_x86_64-py311.txt", "code/__pycache__/helpers.cpython-311.pyc"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    code = {e.path for e in _bundle_entries(tmp_path, code=True) if e.kind == "file"}
    model = {e.path for e in _bundle_entries(tmp_path, code=False) if e.kind == "file"}
    # predictor.py names the notebook's sha256: any retraining edit changes it, so it goes with the model.
    assert code == {"app/mlship_runtime/_boot.py", "app/code/helpers.py"}
    assert model == {"app/mlship.json", "app/golden.json", "app/artifacts/values.pkl", "app/predictor.py",
                     "app/lock/linux_x86_64-py311.txt"}


def test_disjoint_wheels_of_one_namespace_install_together(tmp_path: Path) -> None:
    wheels = [write_wheel(tmp_path, f"ns{n}", {f"nspkg/part{n}/__init__.py": b""}) for n in range(6)]
    assert _disjoint([_destinations(wheel) for wheel in wheels])
    house = Wheelhouse(tmp_path, [LockedWheel(w.name.split("-")[0], "1.0", w.name, "0" * 64) for w in wheels],
                       "3.11", AMD64)
    prefix = make_venv(house, tmp_path / "root", venv="/opt/venv", python="3.11", executable="/usr/bin/python3.11",
                       version="3.11.2")
    site = prefix / "lib" / "python3.11" / "site-packages"
    assert sorted(p.name for p in (site / "nspkg").iterdir()) == [f"part{n}" for n in range(6)]
