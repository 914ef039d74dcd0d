"""The onprem tarball from a tiny bundle and a fake wheelhouse: layout, determinism, and install.sh's refusals.

install.sh and the launcher really run here (under dash when it is installed, as on Debian); installing real
wheels and serving is in tests/e2e/test_onprem.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from mlship.bundle.archive import unsafe_members
from mlship.errors import BuildError, BundleError
from mlship.targets._onprem_build import OnpremBuilder, OnpremResult, service_name
from mlship.targets.onprem import OnpremOptions
from mlship.targets.wheelhouse import LockedWheel, Wheelhouse, parse_platform
from tests.support.wheels import make_wheel

PY = f"{sys.version_info.major}.{sys.version_info.minor}"
TAG = PY.replace(".", "")
SH = shutil.which("dash") or "/bin/sh"


def _write_bundle(root: Path, name: str = "iris", version: str = "1.0.0") -> Path:
    files = {
        "predictor.py": "METHODS = {}\n",
        "requirements.txt": "starlette==1.0\n",
        "golden.json": '{"cases": [{"id": "0", "method": "predict", "instances": ["it\'s great"], "expected": 1}]}\n',
        "mlship_runtime/__init__.py": "RUNTIME_VERSION = '1'\n",
        "artifacts/values.pkl": "not really a pickle",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    manifest = {
        "format": 1, "name": name, "version": version, "runtime_version": "1",
        "python": {"version": f"{PY}.7", "implementation": "CPython"}, "requirements": ["starlette==1.0"],
        "golden": "golden.json",
        "artifacts": {rel: hashlib.sha256(text.encode()).hexdigest() for rel, text in files.items()},
        "methods": [{"name": "predict", "expression": "m.predict(X)"}],
        "input": {"kind": "list", "type": "string", "example": "it's great"},
    }
    (root / "mlship.json").write_text(json.dumps(manifest))
    # Left behind by `mlship verify` and other builds: never shipped.
    (root / "mlship_runtime" / "__pycache__").mkdir()
    (root / "mlship_runtime" / "__pycache__" / "x.pyc").write_bytes(b"junk")
    (root / "lock").mkdir()
    (root / "lock" / "linux_aarch64-py311.txt").write_text("other platform\n")
    return root


def _wheelhouse(directory: Path, platform: str = "linux/amd64") -> Wheelhouse:
    directory.mkdir(parents=True, exist_ok=True)
    lock = []
    for name, version in (("anyio", "4.0"), ("starlette", "1.0")):
        filename = f"{name}-{version}-py3-none-any.whl"
        data = make_wheel(name, version, license_expression="MIT" if name == "anyio" else "BSD-3-Clause")
        (directory / filename).write_bytes(data)
        lock.append(LockedWheel(name, version, filename, hashlib.sha256(data).hexdigest()))
    return Wheelhouse(directory=directory, lock=lock, python=PY, platform=parse_platform(platform))


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return _write_bundle(tmp_path / "bundle")


def build(bundle: Path, out: Path, platform: str = "linux/amd64") -> OnpremResult:
    options = OnpremOptions(platform=platform, output=out)
    return OnpremBuilder.from_bundle(bundle, options).build(out, _wheelhouse(out.parent / "wh", platform))


@pytest.fixture
def built(bundle: Path, tmp_path: Path) -> OnpremResult:
    return build(bundle, tmp_path / "dist")


@pytest.fixture
def unpacked(built: OnpremResult, tmp_path: Path) -> Path:
    dest = tmp_path / "unpacked"
    dest.mkdir()
    with tarfile.open(built.tarball) as tar:
        tar.extractall(dest, filter="data")
    return dest / built.top


def run(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def tree(path: Path) -> dict[str, str]:
    return {p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(path.rglob("*"))} if path.exists() else {}


# -- the tarball --------------------------------------------------------------------------------------------------


def test_tarball_name_layout_and_contents(built: OnpremResult) -> None:
    assert built.tarball.name == f"iris-1.0.0-py{TAG}-linux_x86_64.tar.gz"
    with tarfile.open(built.tarball) as tar:
        names = [m.name for m in tar if m.isfile()]
    top = "iris-1.0.0"
    assert all(n.startswith(f"{top}/") for n in names)
    rel = {n[len(top) + 1:] for n in names}
    assert rel == {
        "INSTALL.txt", "SHA256SUMS", "install.sh", "requirements.lock", "bin/iris-serve",
        "lib/systemd/iris.service", "etc/iris.env",
        "app/mlship.json", "app/predictor.py", "app/requirements.txt", "app/golden.json",
        "app/mlship_runtime/__init__.py", "app/artifacts/values.pkl", f"app/lock/linux_x86_64-py{TAG}.txt",
        "wheels/anyio-4.0-py3-none-any.whl", "wheels/starlette-1.0-py3-none-any.whl",
        "sbom/sbom.cdx.json", "sbom/sbom.spdx.json",
    }
    assert built.ok and unsafe_members(built.tarball) == []
    assert (built.tarball.parent / f"{built.tarball.name}.sha256").read_text() == \
        f"{built.sha256}  {built.tarball.name}\n"
    assert built.sha256 == hashlib.sha256(built.tarball.read_bytes()).hexdigest()


def test_result_rows_and_json_show_the_full_sha256(built: OnpremResult) -> None:
    rows = dict(built.rows())
    assert rows["sha256"] == built.sha256 and rows["tarball"] == str(built.tarball)
    assert "2 wheels" in rows["size"] and "sudo ./install.sh" in rows["next"]
    data = built.to_json()
    assert data["ok"] is True and data["sha256"] == built.sha256 and data["wheels"] == 2
    assert data["platform"] == "linux_x86_64" and data["python"] == PY
    json.dumps(data)


def test_same_bundle_and_wheels_give_the_same_bytes(bundle: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    first = build(bundle, tmp_path / "one")
    for path in bundle.rglob("*"):
        os.utime(path, (1_800_000_000, 1_800_000_000))
    second = build(bundle, tmp_path / "two")
    assert first.sha256 == second.sha256
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    zero = build(bundle, tmp_path / "three")
    assert zero.sha256 != first.sha256 and build(bundle, tmp_path / "four").sha256 == zero.sha256


def test_sha256sums_covers_every_other_file(unpacked: Path) -> None:
    sums = (unpacked / "SHA256SUMS").read_text().splitlines()
    listed = {line.split("  ", 1)[1] for line in sums}
    files = {p.relative_to(unpacked).as_posix() for p in unpacked.rglob("*") if p.is_file()}
    assert listed == files - {"SHA256SUMS"}
    assert run("sha256sum", "--check", "--strict", "--quiet", "SHA256SUMS", cwd=unpacked).returncode == 0


def test_lock_and_modes(unpacked: Path) -> None:
    lock = (unpacked / "requirements.lock").read_text()
    assert "anyio==4.0 \\\n    --hash=sha256:" in lock
    assert (unpacked / f"app/lock/linux_x86_64-py{TAG}.txt").read_text() == lock
    assert os.access(unpacked / "install.sh", os.X_OK) and os.access(unpacked / "bin/iris-serve", os.X_OK)
    assert not os.access(unpacked / "INSTALL.txt", os.X_OK)


def test_a_modified_bundle_is_refused(bundle: Path, tmp_path: Path) -> None:
    (bundle / "predictor.py").write_text("import os; os.system('evil')\n")
    with pytest.raises(BundleError, match="predictor.py has sha256 .*: the file changed after packaging") as info:
        build(bundle, tmp_path / "dist")
    assert info.value.hint == "package the notebook again with this version of mlship"
    (bundle / "predictor.py").unlink()
    with pytest.raises(BundleError, match="artifact predictor.py is missing"):
        build(bundle, tmp_path / "dist")


def test_a_bundle_in_a_newer_format_is_refused_with_a_hint(bundle: Path, tmp_path: Path) -> None:
    manifest = json.loads((bundle / "mlship.json").read_text())
    (bundle / "mlship.json").write_text(json.dumps({**manifest, "format": 99, "mlship_version": "9.0.0"}))
    with pytest.raises(BundleError, match="bundle format 99, written by mlship 9.0.0") as info:
        build(bundle, tmp_path / "dist")
    assert info.value.hint
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="is not a bundle: it has no mlship.json") as info:
        build(tmp_path / "empty", tmp_path / "dist")
    assert info.value.hint and "the directory `mlship package` wrote" in info.value.hint


def test_platform_and_names(bundle: Path, tmp_path: Path) -> None:
    arm = build(bundle, tmp_path / "arm", platform="linux/arm64")
    assert arm.tarball.name == f"iris-1.0.0-py{TAG}-linux_aarch64.tar.gz"
    with pytest.raises(BuildError, match="unknown platform"):
        build(bundle, tmp_path / "x", platform="windows")
    assert service_name("iris") == "iris"
    assert service_name("Churn_Model v2") == "churn-model-v2"
    assert service_name("2024 taxi") == "model-2024-taxi"
    assert service_name("___") == "model"
    assert len(service_name("x" * 80)) == 32


# -- the rendered files -------------------------------------------------------------------------------------------


def test_templates_carry_the_bundle_data(unpacked: Path) -> None:
    install = (unpacked / "install.sh").read_text()
    assert "NAME=iris\n" in install and f"PYTHON_VERSION={PY}\n" in install and "MACHINE=x86_64\n" in install
    assert "DEFAULT_PREFIX=/opt/iris\n" in install
    guide = (unpacked / "INSTALL.txt").read_text()
    assert f"apt-get install python{PY} python{PY}-venv" in guide and f"dnf install python{PY}" in guide
    assert f"tar xzf iris-1.0.0-py{TAG}-linux_x86_64.tar.gz" in guide and "/opt/iris/bin/iris-serve" in guide
    assert "  starlette 1.0\n" in guide and "systemctl enable --now iris" in guide
    # the example body survives shell quoting even with a quote inside
    line = next(ln for ln in guide.splitlines() if ln.strip().startswith("-d "))
    assert run(SH, "-c", f"printf %s {line.strip()[3:]}").stdout == json.dumps({"instances": ["it's great"]})


def test_systemd_unit_is_hardened_and_valid(unpacked: Path, tmp_path: Path) -> None:
    unit = (unpacked / "lib/systemd/iris.service").read_text()
    for line in ("User=@USER@", "ExecStart=@PREFIX@/bin/iris-serve", "NoNewPrivileges=yes", "ProtectSystem=strict",
                 "ProtectHome=@PROTECT_HOME@", "PrivateTmp=yes", "Restart=on-failure", "WorkingDirectory=@PREFIX@/app",
                 "EnvironmentFile=-@PREFIX@/etc/iris.env", "WantedBy=multi-user.target"):
        assert f"\n{line}\n" in unit, line
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    prefix = tmp_path / "opt"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "bin/iris-serve").write_text("#!/bin/sh\n")
    (prefix / "bin/iris-serve").chmod(0o755)
    (prefix / "app").mkdir()
    filled = unit.replace("@PREFIX@", str(prefix)).replace("@USER@", "daemon").replace("@PROTECT_HOME@", "yes")
    (tmp_path / "iris.service").write_text(filled)
    result = run(analyze, "verify", tmp_path / "iris.service")
    assert result.returncode == 0, result.stderr


def test_shell_scripts_parse(unpacked: Path) -> None:
    for script in ("install.sh", "bin/iris-serve"):
        assert (unpacked / script).read_text().startswith("#!/bin/sh\n")
        for shell in {SH, "/bin/sh", shutil.which("bash") or "/bin/sh"}:
            result = run(shell, "-n", unpacked / script)
            assert result.returncode == 0, (shell, script, result.stderr)
    if shutil.which("shellcheck"):
        result = run("shellcheck", "--shell=sh", "--severity=warning", unpacked / "install.sh", unpacked / "bin/iris-serve")
        assert result.returncode == 0, result.stdout


def test_launcher_execs_the_runtime_with_flags_over_environment(unpacked: Path, tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "app").mkdir()
    (prefix / "venv/bin").mkdir(parents=True)
    shutil.copy(unpacked / "bin/iris-serve", prefix / "bin/iris-serve")
    # A stand-in interpreter that reports how it was started: its pid, folder and arguments.
    (prefix / "venv/bin/python").write_text('#!/bin/sh\necho "$$|$PWD|$PYTHONUNBUFFERED|$*"\n')
    (prefix / "venv/bin/python").chmod(0o755)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere/serve").symlink_to(prefix / "bin/iris-serve")
    env = {"PATH": os.environ["PATH"], "MLSHIP_PORT": "9000", "MLSHIP_WORKERS": "3"}
    proc = subprocess.Popen([SH, str(tmp_path / "elsewhere/serve"), "--host", "0.0.0.0"], env=env,
                            stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=30)
    pid, cwd, unbuffered, args = out.strip().split("|")
    assert int(pid) == proc.pid  # exec: the server is the launcher's own process, so signals reach it
    assert cwd == str(prefix / "app") and unbuffered == "1"
    boot = f"-I -B -u {prefix}/app/mlship_runtime/_boot.py"
    assert args == f"{boot} serve {prefix}/app --port 9000 --workers 3 --host 0.0.0.0"
    env["MLSHIP_HOST"] = "::1"
    out = subprocess.run([SH, str(prefix / "bin/iris-serve"), "--port", "1"], env=env, capture_output=True,
                         text=True, timeout=30).stdout
    assert out.strip().split("|")[3] == f"{boot} serve {prefix}/app --host ::1 --port 9000 --workers 3 --port 1"


def test_launcher_without_an_install_says_so(unpacked: Path) -> None:
    result = run(SH, unpacked / "bin/iris-serve")
    assert result.returncode == 1 and "run install.sh again" in result.stderr


# -- install.sh's checks (nothing installed: they all stop before touching the prefix) ----------------------------


def install(unpacked: Path, *args: str | Path, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": path or os.environ["PATH"], "HOME": str(unpacked), "LC_ALL": "C"}
    return run(SH, unpacked / "install.sh", *args, env=env, cwd=unpacked.parent)


def test_help(unpacked: Path) -> None:
    result = install(unpacked, "--help")
    assert result.returncode == 0 and "--prefix DIR" in result.stdout and "--uninstall" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--prefix", "relative/dir"], "must be an absolute path"),
    (["--prefix", "/usr"], "is a system folder"),
    (["--prefix", "/opt/a b"], "not a plain absolute path"),
    (["--prefix", "/opt/x/../etc"], "not a plain absolute path"),
    (["--prefix"], "--prefix needs a value"),
    (["--user", "root"], "must not run as root"),
    (["--user", "a;b"], "not a valid account name"),
    (["--frobnicate"], "unknown option: --frobnicate"),
])
def test_bad_options_exit_2(unpacked: Path, tmp_path: Path, args: list[str], message: str) -> None:
    result = install(unpacked, *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_a_tampered_file_is_refused_before_anything_is_written(unpacked: Path, tmp_path: Path) -> None:
    prefix = tmp_path / "opt/iris"
    with (unpacked / "app/predictor.py").open("a") as fh:
        fh.write("import os  # injected\n")
    result = install(unpacked, "--prefix", prefix, "--python", sys.executable, "--user", "nobody")
    assert result.returncode == 1
    assert "app/predictor.py: FAILED" in result.stderr
    assert "do not match SHA256SUMS: this package is damaged or was modified; nothing was installed" in result.stderr
    assert not (tmp_path / "opt").exists()


def test_a_missing_or_added_file_is_refused(unpacked: Path, tmp_path: Path) -> None:
    prefix = tmp_path / "opt/iris"
    (unpacked / "wheels/evil-1.0-py3-none-any.whl").write_bytes(b"x")
    result = install(unpacked, "--prefix", prefix, "--python", sys.executable, "--user", "nobody")
    assert result.returncode == 1 and "wheels/evil-1.0-py3-none-any.whl" in result.stderr
    assert "not part of the package" in result.stderr
    (unpacked / "wheels/evil-1.0-py3-none-any.whl").unlink()
    (unpacked / "etc/iris.env").unlink()
    result = install(unpacked, "--prefix", prefix, "--python", sys.executable, "--user", "nobody")
    assert result.returncode == 1 and "etc/iris.env" in result.stderr and "nothing was installed" in result.stderr
    assert not (tmp_path / "opt").exists()


def _bin_without_python(tmp_path: Path) -> Path:
    """A PATH holding the tools install.sh uses, and no python at all."""
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("uname", "id", "dirname", "basename", "sha256sum", "cut", "ls", "wc", "tr", "cat", "mkdir", "rm"):
        found = shutil.which(tool)
        if found:
            (tools / tool).symlink_to(found)
    return tools


def test_missing_python_is_a_clear_error(unpacked: Path, tmp_path: Path) -> None:
    result = install(unpacked, "--prefix", tmp_path / "opt/iris", path=str(_bin_without_python(tmp_path)))
    assert result.returncode == 3, result.stderr
    assert f"error: Python {PY} is required, and none was found" in result.stderr
    assert f"apt-get install python{PY} python{PY}-venv" in result.stderr
    assert f"dnf install python{PY}" in result.stderr and "--python" in result.stderr
    assert not (tmp_path / "opt").exists()


def test_a_python_of_another_version_is_refused(unpacked: Path, tmp_path: Path) -> None:
    fake = tmp_path / "python3.99"
    fake.write_text("#!/bin/sh\necho 3.99\n")
    fake.chmod(0o755)
    result = install(unpacked, "--python", fake, "--prefix", tmp_path / "opt/iris")
    assert result.returncode == 3
    assert f"--python {fake} is Python 3.99; iris needs Python {PY}" in result.stderr
    result = install(unpacked, "--python", tmp_path / "nope", "--prefix", tmp_path / "opt/iris")
    assert result.returncode == 1 and "no such program" in result.stderr


def test_a_package_for_another_machine_is_refused(bundle: Path, tmp_path: Path) -> None:
    arm = build(bundle, tmp_path / "arm", platform="linux/arm64")
    with tarfile.open(arm.tarball) as tar:
        tar.extractall(tmp_path / "u", filter="data")
    result = install(tmp_path / "u" / arm.top, "--prefix", tmp_path / "opt/iris")
    machine = os.uname().machine
    if machine == "aarch64":
        pytest.skip("this machine is aarch64")
    assert result.returncode == 1
    assert f"this package is for aarch64 machines; this one is {machine}" in result.stderr


def test_a_non_empty_foreign_prefix_is_refused(unpacked: Path, tmp_path: Path) -> None:
    prefix = tmp_path / "opt/data"
    prefix.mkdir(parents=True)
    (prefix / "precious.txt").write_text("keep me")
    before = tree(prefix)
    result = install(unpacked, "--prefix", prefix, "--python", sys.executable, "--user", "nobody")
    assert result.returncode == 1 and "is not empty, and no install of iris is recorded there" in result.stderr
    assert tree(prefix) == before
    result = install(unpacked, "--uninstall", "--prefix", prefix)
    assert result.returncode == 1 and "holds no install made by this script" in result.stderr
    assert tree(prefix) == before
