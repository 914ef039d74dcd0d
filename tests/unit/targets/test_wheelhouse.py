"""mlship/targets/wheelhouse.py against a local package index of tiny hand-made wheels (no network)."""

from __future__ import annotations

import base64
import hashlib
import io
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from mlship.errors import BuildError
from mlship.runtime._contract import Column, InputSchema, Manifest, Method, PythonInfo
from mlship.targets.wheelhouse import (
    LockedWheel,
    Platform,
    Wheelhouse,
    build_wheelhouse,
    bundle_python,
    bundle_requirements,
    lock_path,
    parse_platform,
)

X86 = parse_platform("linux/amd64")
ARM = parse_platform("linux/arm64")
PY = f"{sys.version_info.major}.{sys.version_info.minor}"


def make_wheel(directory: Path, name: str, version: str, requires: tuple[str, ...] = (),
               tag: str = "py3-none-any") -> Path:
    """A minimal valid wheel: one module, METADATA, WHEEL and RECORD."""
    dist = f"{name.replace('-', '_')}-{version}"
    files = {
        f"{name.replace('-', '_')}/__init__.py": f"VERSION = {version!r}\n",
        f"{dist}.dist-info/METADATA": "Metadata-Version: 2.1\n"
        f"Name: {name}\nVersion: {version}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{dist}.dist-info/WHEEL": f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: {tag}\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{dist}.dist-info/RECORD"] = "\n".join([*record, f"{dist}.dist-info/RECORD,,"]) + "\n"
    path = directory / f"{dist}-{tag}.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for member, text in files.items():
            zf.writestr(member, text)
    return path


_BACKEND = '''
import base64, hashlib, zipfile

NAME, VERSION = "delta", "1.0"

def _record_line(path, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    name = f"{NAME}-{VERSION}-py3-none-any.whl"
    files = {
        "delta/__init__.py": b"",
        f"{NAME}-{VERSION}.dist-info/METADATA": f"Metadata-Version: 2.1\\nName: {NAME}\\nVersion: {VERSION}\\n".encode(),
        f"{NAME}-{VERSION}.dist-info/WHEEL": b"Wheel-Version: 1.0\\nGenerator: t\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
    }
    record = [_record_line(p, d) for p, d in files.items()] + [f"{NAME}-{VERSION}.dist-info/RECORD,,"]
    files[f"{NAME}-{VERSION}.dist-info/RECORD"] = ("\\n".join(record) + "\\n").encode()
    with zipfile.ZipFile(f"{wheel_directory}/{name}", "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return name
'''


def make_pure_sdist(directory: Path) -> Path:
    """delta-1.0.tar.gz: an sdist with an in-tree build backend, so building it needs no index."""
    files = {
        "pyproject.toml": '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n',
        "backend.py": _BACKEND,
        "PKG-INFO": "Metadata-Version: 2.1\nName: delta\nVersion: 1.0\n",
    }
    path = directory / "delta-1.0.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"delta-1.0/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A find-links folder as the only package source: pip's config files and the network are out of play."""
    links = tmp_path / "index"
    links.mkdir()
    make_wheel(links, "alpha", "1.0", requires=("beta>=2",))
    make_wheel(links, "beta", "1.5")
    make_wheel(links, "beta", "2.1")
    make_wheel(links, "gamma", "3.0", tag=f"cp{PY.replace('.', '')}-cp{PY.replace('.', '')}-manylinux_2_17_x86_64")
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CONSTRAINT"):
        monkeypatch.delenv(name, raising=False)
    return links


@pytest.mark.parametrize("value", ["linux/amd64", "amd64", "x86_64", "linux_x86_64", "LINUX/AMD64"])
def test_parse_platform_amd64_aliases(value: str) -> None:
    platform = parse_platform(value)
    assert (platform.name, platform.docker, platform.machine) == ("linux_x86_64", "linux/amd64", "x86_64")
    assert "manylinux2014_x86_64" in platform.pip_platforms
    assert all(tag.endswith("_x86_64") for tag in platform.pip_platforms)


@pytest.mark.parametrize("value", ["linux/arm64", "arm64", "aarch64", "linux_aarch64"])
def test_parse_platform_arm64_aliases(value: str) -> None:
    platform = parse_platform(value)
    assert (platform.name, platform.docker, platform.machine) == ("linux_aarch64", "linux/arm64", "aarch64")
    assert all(tag.endswith("_aarch64") for tag in platform.pip_platforms)


def test_parse_platform_rejects_unknown() -> None:
    with pytest.raises(BuildError, match="unknown platform 'windows/amd64'") as info:
        parse_platform("windows/amd64")
    assert info.value.hint and "linux/arm64" in info.value.hint


def test_bundle_python() -> None:
    schema = InputSchema("list", element=Column(None, "string"))
    manifest = Manifest("m", "1", "1", PythonInfo("3.11.7"), (Method("predict"),), schema)
    assert bundle_python(manifest) == "3.11"
    assert bundle_python(replace(manifest, python=PythonInfo("3.9"))) == "3.9"


def test_bundle_requirements(tmp_path: Path) -> None:
    schema = InputSchema("list", element=Column(None, "string"))
    manifest = Manifest("m", "1", "1", PythonInfo("3.11.7"), (Method("predict"),), schema, requirements=("a==1",))
    assert bundle_requirements(tmp_path, manifest) == ["a==1"]
    (tmp_path / "requirements.txt").write_text("# pinned\nb==2\n\n  c==3\n")
    assert bundle_requirements(tmp_path, replace(manifest, requirements=())) == ["b==2", "c==3"]


def test_lock_text_and_path() -> None:
    house = Wheelhouse(Path("w"), [LockedWheel("alpha", "1.0", "alpha-1.0-py3-none-any.whl", "ab" * 32)], "3.11", X86)
    assert house.lock_text().splitlines()[1:] == ["alpha==1.0 \\", f"    --hash=sha256:{'ab' * 32}"]
    assert house.lock_path == lock_path(X86, "3.11") == "lock/linux_x86_64-py311.txt"


def test_resolves_the_transitive_set_and_locks_it(index: Path, tmp_path: Path) -> None:
    house = build_wheelhouse(["alpha==1.0"], python=PY, platform=X86, dest=tmp_path / "dest",
                             cache_dir=tmp_path / "cache")
    assert [(w.name, w.version) for w in house.lock] == [("alpha", "1.0"), ("beta", "2.1")]
    assert sorted(p.name for p in house.directory.iterdir()) == [w.filename for w in house.lock]
    for wheel in house.lock:
        assert hashlib.sha256((house.directory / wheel.filename).read_bytes()).hexdigest() == wheel.sha256
    cache = tmp_path / "cache" / f"linux_x86_64-py{PY.replace('.', '')}"
    assert sorted(p.name for p in cache.glob("*.whl")) == [w.filename for w in house.lock]
    # The lock installs with pip's --require-hashes from the wheelhouse alone.
    lock = tmp_path / "lock.txt"
    lock.write_text(house.lock_text())
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-index",
                           "--find-links", str(house.directory), "--require-hashes", "-r", str(lock)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "Would install alpha-1.0 beta-2.1" in proc.stdout


def test_platform_wheels_and_the_platform_they_fit(index: Path, tmp_path: Path) -> None:
    house = build_wheelhouse(["gamma"], python=PY, platform=X86, dest=tmp_path / "x86", cache_dir=tmp_path / "c")
    assert [w.filename for w in house.lock] == [p.name for p in index.glob("gamma-*.whl")]
    with pytest.raises(BuildError) as info:
        build_wheelhouse(["gamma"], python=PY, platform=ARM, dest=tmp_path / "arm", cache_dir=tmp_path / "c")
    assert "gamma" in info.value.message and "linux_aarch64" in info.value.message
    assert info.value.hint and "PIP_INDEX_URL" in info.value.hint


def test_a_warm_cache_resolves_without_any_index(index: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    build_wheelhouse(["alpha==1.0"], python=PY, platform=X86, dest=tmp_path / "one", cache_dir=tmp_path / "cache")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "nowhere"))
    steps: list[str] = []
    house = build_wheelhouse(["alpha==1.0"], python=PY, platform=X86, dest=tmp_path / "two",
                             cache_dir=tmp_path / "cache", on_step=steps.append)
    assert [w.name for w in house.lock] == ["alpha", "beta"]
    assert any("from the cache" in step for step in steps)


def test_the_default_cache_follows_mlship_wheel_cache(index: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLSHIP_WHEEL_CACHE", str(tmp_path / "envcache"))
    build_wheelhouse(["beta==1.5"], python=PY, platform=X86, dest=tmp_path / "dest")
    assert list((tmp_path / "envcache").glob("linux_x86_64-py*/beta-1.5-*.whl"))


def test_a_pure_python_sdist_is_built_into_a_wheel(index: Path, tmp_path: Path) -> None:
    make_pure_sdist(index)
    house = build_wheelhouse(["delta==1.0", "beta==1.5"], python=PY, platform=ARM, dest=tmp_path / "dest",
                             cache_dir=tmp_path / "cache")
    assert [w.filename for w in house.lock] == ["beta-1.5-py3-none-any.whl", "delta-1.0-py3-none-any.whl"]


def test_missing_package_names_package_and_platform(index: Path, tmp_path: Path) -> None:
    with pytest.raises(BuildError) as info:
        build_wheelhouse(["nosuchthing==1.0"], python=PY, platform=X86, dest=tmp_path / "d",
                         cache_dir=tmp_path / "c")
    assert "nosuchthing==1.0" in info.value.message and "linux_x86_64" in info.value.message


def test_dest_holds_exactly_the_locked_wheels(index: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "stale-0.1-py3-none-any.whl").write_bytes(b"old")
    house = build_wheelhouse(["beta==1.5"], python=PY, platform=X86, dest=dest, cache_dir=tmp_path / "c")
    assert [p.name for p in dest.iterdir()] == ["beta-1.5-py3-none-any.whl"] == [w.filename for w in house.lock]


def test_write_lock_into_the_bundle(tmp_path: Path) -> None:
    house = Wheelhouse(tmp_path, [LockedWheel("beta", "1.5", "beta-1.5-py3-none-any.whl", "0" * 64)], "3.11",
                       Platform("linux_x86_64", "linux/amd64", "x86_64", ()))
    path = house.write_lock(tmp_path / "bundle")
    assert path == tmp_path / "bundle" / "lock" / "linux_x86_64-py311.txt"
    assert path.read_text() == house.lock_text()


def test_a_set_resolved_before_is_reused_without_pip_while_the_cache_holds_it(index: Path, tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import mlship.targets.wheelhouse as wheelhouse

    first = build_wheelhouse(["alpha==1.0"], python=PY, platform=X86, dest=tmp_path / "one",
                             cache_dir=tmp_path / "cache")
    calls: list[list[str]] = []
    real = wheelhouse._pip_download
    monkeypatch.setattr(wheelhouse, "_pip_download", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    again = build_wheelhouse(["alpha==1.0"], python=PY, platform=X86, dest=tmp_path / "two",
                             cache_dir=tmp_path / "cache")
    assert again.lock == first.lock and calls == []
    assert sorted(p.name for p in (tmp_path / "two").glob("*.whl")) == sorted(w.filename for w in first.lock)
    # A cached wheel whose bytes changed is not trusted: pip resolves again.
    cached = tmp_path / "cache" / f"linux_x86_64-py{PY.replace('.', '')}" / first.lock[0].filename
    cached.write_bytes(cached.read_bytes() + b"\0")
    build_wheelhouse(["alpha==1.0"], python=PY, platform=X86, dest=tmp_path / "three", cache_dir=tmp_path / "cache")
    assert calls
