"""A bundle is checked before any of its code runs (mlship/runtime/_boot.py, docs/BUNDLE.md "Integrity").

Each tampering of issue 9, item 4, is tried against every way a bundle's runtime is started: mlship's own copy of
_boot.py (`mlship serve`/`predict`), the bundle's _boot.py as the image and the on-prem launcher run it, and
`python -m mlship_runtime`. Planted code writes a marker file; the marker must never appear.
"""

from __future__ import annotations

import json
import os
import py_compile
import subprocess
import sys
from collections.abc import Callable
from importlib.util import cache_from_source
from pathlib import Path
from typing import Any

import pytest

from mlship._paths import RUNTIME_DIR
from mlship.runtime import _boot
from mlship.runtime import _contract as contract
from mlship.runtime._contract import BundleLoadError

from .sample_bundles import rehash

MakeBundle = Callable[[str], Path]
ENTRIES = ("host", "image", "module")


def _command(entry: str, bundle: Path, *args: str) -> list[str]:
    if entry == "host":  # what mlship serve/predict exec (cli._exec_runtime)
        return [sys.executable, "-B", "-P", str(RUNTIME_DIR / "_boot.py"), "--bundle", str(bundle), *args]
    if entry == "image":  # the Dockerfile's ENTRYPOINT and the on-prem launcher
        return [sys.executable, "-I", "-B", "-u", str(bundle / "mlship_runtime" / "_boot.py"), *args]
    # -B as install.sh's check runs it: without it, Python caches __init__ before anything of mlship can run.
    return [sys.executable, "-B", "-m", "mlship_runtime", *args]


def _run(entry: str, bundle: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")}
    return subprocess.run(_command(entry, bundle, *args), cwd=bundle, env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def _planted(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').write('ran')\n"


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "PLANTED-CODE-RAN"


@pytest.mark.parametrize("entry", ENTRIES)
def test_an_untouched_bundle_verifies_and_leaves_no_bytecode(make_bundle: MakeBundle, entry: str) -> None:
    bundle = make_bundle("iris_frame")
    result = _run(entry, bundle, "verify", ".")
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("6 of 6 golden cases match")
    assert not list(bundle.rglob("__pycache__"))


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("name", ["json.py", "__future__.py"])
def test_a_stray_module_in_the_bundle_never_runs_and_is_refused(make_bundle: MakeBundle, marker: Path,
                                                                entry: str, name: str) -> None:
    bundle = make_bundle("iris_frame")
    (bundle / name).write_text(_planted(marker))
    result = _run(entry, bundle, "verify", ".")
    assert not marker.exists()
    assert result.returncode == 2
    assert f"{name} is in the bundle {bundle} but not listed in mlship.json" in result.stderr


@pytest.mark.parametrize("entry", ENTRIES)
def test_an_unlisted_file_is_refused_by_serve(make_bundle: MakeBundle, entry: str) -> None:
    bundle = make_bundle("iris_frame")
    (bundle / "artifacts" / "notes.txt").write_text("added later\n")
    result = _run(entry, bundle, "serve", ".", "--port", "1")
    assert result.returncode == 1
    assert "artifacts/notes.txt is in the bundle" in result.stderr and "not listed in mlship.json" in result.stderr


def _plant_bytecode(source: Path, marker: Path, tmp_path: Path) -> Path:
    """A .pyc of other code with the source's mtime and size: what CPython's loader would accept for `source`."""
    original = source.read_bytes()
    evil = _planted(marker).encode()
    evil += b"#" * (len(original) - len(evil) - 1) + b"\n"
    assert len(evil) == len(original)
    stand_in = tmp_path / source.name
    stand_in.write_bytes(evil)
    stat = source.stat()
    os.utime(stand_in, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    cached = Path(cache_from_source(str(source)))
    cached.parent.mkdir(exist_ok=True)
    py_compile.compile(str(stand_in), cfile=str(cached), doraise=True,
                       invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP)
    return cached


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("target", ["predictor.py", "mlship_runtime/_api.py"])
def test_planted_bytecode_is_never_loaded(make_bundle: MakeBundle, marker: Path, tmp_path: Path, entry: str,
                                          target: str) -> None:
    bundle = make_bundle("iris_frame")
    _plant_bytecode(bundle / target, marker, tmp_path)
    result = _run(entry, bundle, "verify", ".")
    # __pycache__ is documented as ignored: the bundle verifies, from its sources, and the planted code never runs.
    assert not marker.exists()
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("6 of 6 golden cases match")


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("module", ["_api.py", "_contract.py"])
def test_a_modified_runtime_module_never_runs(make_bundle: MakeBundle, marker: Path, entry: str,
                                             module: str) -> None:
    bundle = make_bundle("iris_frame")
    with (bundle / "mlship_runtime" / module).open("a") as stream:
        stream.write(_planted(marker))
    for command in (("verify", "."), ("serve", ".", "--port", "1")):
        result = _run(entry, bundle, *command)
        assert not marker.exists()
        assert result.returncode == (1 if command[0] == "serve" else 2)
        assert f"artifact mlship_runtime/{module} has sha256 " in result.stderr


@pytest.mark.parametrize("entry", ENTRIES)
def test_a_symlink_out_of_the_bundle_is_refused(make_bundle: MakeBundle, tmp_path: Path, entry: str) -> None:
    bundle = make_bundle("iris_frame")
    # Same bytes, so the digest matches: only the link itself tells that the file now lives elsewhere.
    outside = tmp_path / "elsewhere.txt"
    outside.write_bytes((bundle / "requirements.txt").read_bytes())
    (bundle / "requirements.txt").unlink()
    (bundle / "requirements.txt").symlink_to(outside)
    result = _run(entry, bundle, "verify", ".")
    assert result.returncode == 2
    assert f"requirements.txt in the bundle {bundle} is a symbolic link (to {outside})" in result.stderr


def test_the_packaging_check_refuses_tampering_too(make_bundle: MakeBundle, marker: Path, tmp_path: Path) -> None:
    """mlship package's last step (and mlship verify) replay the cases in a fresh interpreter: it checks too."""
    from mlship.bundle.fresh import FreshInterpreter
    from mlship.errors import BundleError

    bundle = make_bundle("iris_frame")
    _plant_bytecode(bundle / "predictor.py", marker, tmp_path)
    with FreshInterpreter(sys.executable, bundle, cwd=bundle) as child:
        assert all(case.ok for case in child.verify("iris"))
    assert not marker.exists() and not (bundle / "mlship_runtime" / "__pycache__").exists()
    (bundle / "json.py").write_text(_planted(marker))
    with FreshInterpreter(sys.executable, bundle, cwd=bundle) as child:
        with pytest.raises(BundleError, match="json.py is in the bundle .* but not listed in mlship.json"):
            child.verify("iris")
    (bundle / "json.py").unlink()
    with (bundle / "mlship_runtime" / "_verify.py").open("a") as stream:
        stream.write(_planted(marker))
    with FreshInterpreter(sys.executable, bundle, cwd=bundle) as child:
        with pytest.raises(BundleError, match="artifact mlship_runtime/_verify.py has sha256"):
            child.verify("iris")
    assert not marker.exists()


# -- the notebook's modules in code/ ----------------------------------------------------------------------------


def _with_local_module(bundle: Path, marker: Path) -> Path:
    """The sample bundle, as if the notebook had imported a helper from beside it."""
    (bundle / "code").mkdir()
    (bundle / "code" / "helpers.py").write_text("def identity(x):\n    return x\n" + "#" * 200 + "\n")
    predictor = bundle / "predictor.py"
    predictor.write_text(
        "import sys as _s\nfrom pathlib import Path as _P\n_s.path.insert(0, str(_P(__file__).resolve().parent / "
        "'code'))\nimport helpers\n" + predictor.read_text()
    )
    manifest = json.loads((bundle / "mlship.json").read_text())
    manifest["artifacts"]["code/helpers.py"] = ""
    (bundle / "mlship.json").write_text(json.dumps(manifest))
    rehash(bundle)
    return bundle / "code" / "helpers.py"


@pytest.mark.parametrize("entry", ["host", "image"])
def test_code_modules_are_loaded_from_their_checked_sources_only(make_bundle: MakeBundle, marker: Path,
                                                                 tmp_path: Path, entry: str) -> None:
    bundle = make_bundle("iris_frame")
    helpers = _with_local_module(bundle, marker)
    assert _run(entry, bundle, "verify", ".").returncode == 0
    _plant_bytecode(helpers, marker, tmp_path)
    result = _run(entry, bundle, "verify", ".")
    assert result.returncode == 0 and not marker.exists(), result.stderr
    with helpers.open("a") as stream:
        stream.write(_planted(marker))
    result = _run(entry, bundle, "verify", ".")
    assert result.returncode == 2 and not marker.exists()
    assert "artifact code/helpers.py has sha256 " in result.stderr


# -- the checks in-process --------------------------------------------------------------------------------------


def test_read_refuses_what_check_tree_refuses_and_ignores_what_is_documented(make_bundle: MakeBundle) -> None:
    bundle = make_bundle("iris_frame")
    # Documented as unlisted: the signature, bytecode caches (never loaded), the build's wheel locks.
    (bundle / contract.SIGNATURE_NAME).write_text("untrusted comment: x\n")
    (bundle / "mlship_runtime" / "__pycache__").mkdir()
    (bundle / "mlship_runtime" / "__pycache__" / "_api.cpython-311.pyc").write_bytes(b"junk")
    (bundle / "lock").mkdir()
    (bundle / "lock" / "linux_amd64-py311.txt").write_text("anyio==4.0\n")
    contract.read(bundle)
    (bundle / "lock" / "install.py").write_text("")
    with pytest.raises(BundleLoadError, match="lock/install.py is in the bundle .* not listed"):
        contract.read(bundle)
    (bundle / "lock" / "install.py").unlink()
    # A link is refused even when it points inside the bundle, and a folder link as well.
    (bundle / "golden-again.json").symlink_to(bundle / "golden.json")
    with pytest.raises(BundleLoadError, match="golden-again.json in the bundle .* is a symbolic link"):
        contract.read(bundle)
    (bundle / "golden-again.json").unlink()
    (bundle / "more").symlink_to(bundle / "artifacts", target_is_directory=True)
    with pytest.raises(BundleLoadError, match="more in the bundle .* is a symbolic link"):
        contract.read(bundle)
    (bundle / "more").unlink()
    os.mkfifo(bundle / "pipe")
    with pytest.raises(BundleLoadError, match="pipe in the bundle .* is not a regular file"):
        contract.read(bundle)


def test_write_lists_every_file_but_caches_and_drops_a_stale_signature(tmp_path: Path,
                                                                      make_bundle: MakeBundle) -> None:
    bundle = make_bundle("iris_frame")
    manifest = contract.read(bundle)
    (bundle / "mlship_runtime" / "__pycache__").mkdir()
    (bundle / "mlship_runtime" / "__pycache__" / "x.pyc").write_bytes(b"junk")
    (bundle / contract.SIGNATURE_NAME).write_text("an old signature\n")
    written = contract.write(bundle, manifest.manifest, manifest.golden)
    assert not (bundle / "mlship_runtime" / "__pycache__").exists()
    assert not (bundle / contract.SIGNATURE_NAME).exists()
    assert set(written.artifacts) == set(_boot.bundle_files(bundle))
    assert "mlship_runtime/_boot.py" in written.artifacts and "mlship.json" not in written.artifacts


def test_the_importer_checks_the_bytes_it_executes(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    source = tmp_path / "pkg" / "__init__.py"
    source.write_text("VALUE = 1\n")
    digest = contract.sha256_file(source)
    importer = _boot.VerifiedImporter(tmp_path, {"pkg/__init__.py": digest}, {"pkg": ""})
    spec = importer.find_spec("pkg")
    assert spec is not None and spec.submodule_search_locations == [str(tmp_path / "pkg")]
    with pytest.raises(ModuleNotFoundError, match="among the bundle's listed files"):
        importer.find_spec("pkg.unlisted")
    assert importer.find_spec("json") is None  # not the bundle's: left to the usual finders
    # Changed after the tree was checked: refused when imported.
    source.write_text("VALUE = 2\n")
    from importlib.util import module_from_spec

    module = module_from_spec(spec)
    with pytest.raises(BundleLoadError, match="artifact pkg/__init__.py has sha256"):
        importer.exec_module(module)


# -- mlship serve / predict on the host ---------------------------------------------------------------------------


def test_mlship_serve_checks_with_the_hosts_code_then_starts_the_hosts_boot(
        cli: Any, make_bundle: MakeBundle, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[tuple[str, list[str], dict[str, str]]] = []
    monkeypatch.setattr(os, "execve", lambda path, argv, env: started.append((path, list(argv), dict(env))))
    monkeypatch.setattr(os, "chdir", lambda path: None)
    bundle = make_bundle("iris_frame")
    result = cli("serve", bundle, "--port", "8123")
    assert result.exit_code == 0, result.output
    [(path, argv, env)] = started
    assert argv == [sys.executable, "-B", "-P", str(RUNTIME_DIR / "_boot.py"), "--bundle", str(bundle), "serve",
                    str(bundle), "--host", "127.0.0.1", "--port", "8123"]
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and "PYTHONPATH" not in env
    # The host refuses a tampered bundle itself, before starting anything of it.
    (bundle / "json.py").write_text("")
    for command in (("serve", bundle), ("predict", bundle, "-i", "in.csv", "-o", "out.csv")):
        refused = cli(*command)
        assert refused.exit_code == 1 and "json.py is in the bundle" in refused.output
    assert len(started) == 1
