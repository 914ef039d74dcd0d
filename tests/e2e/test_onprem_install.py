"""install.sh really installing a tiny package: releases and the atomic switch, kill -9 at several points, two runs
at once, a UID without a passwd entry, no flock.

The package is real but small: two pure-Python wheels built here, and a bundle whose `mlship_runtime` stands in for
the runtime (`verify` and `serve` only report), so that one install takes seconds. Installing real wheels and
serving a real model is test_onprem.py. Each install creates a venv (about 5-10 s on a loaded 2-core machine), so
these are end-to-end tests even though they build no real tarball.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlship.targets._onprem_build import OnpremBuilder
from mlship.targets.onprem import OnpremOptions
from mlship.targets.wheelhouse import LockedWheel, Wheelhouse, parse_platform
from tests.support.wheels import make_wheel

pytestmark = pytest.mark.e2e

PY = f"{sys.version_info.major}.{sys.version_info.minor}"
SH = shutil.which("dash") or "/bin/sh"
# The service account (as root) must be able to run the interpreter: the OS's own, not one under /root.
PYTHON = next((p for p in (f"/usr/bin/python{PY}", f"/usr/local/bin/python{PY}") if os.access(p, os.X_OK)),
              sys.executable)
LINKS = ["app", "venv", "bin", "lib", ".mlship-install", ".installed-files"]

# Stands in for the runtime: `verify` takes a little while (so that a kill can land in the model check) and
# passes; `serve` says what it would serve and from where.
FAKE_MAIN = """\
import os, sys, time
if sys.argv[1] == "verify":
    time.sleep(0.5)
    print("all golden cases match")
else:
    print("serving", os.path.realpath(sys.argv[2]), "with", os.path.realpath(sys.prefix))
"""


def _bundle(root: Path, version: str) -> Path:
    files = {
        "predictor.py": "METHODS = {}\n",
        "requirements.txt": "tinya==1.0\n",
        "golden.json": '{"cases": [{"id": "0", "method": "predict", "instances": ["a"], "expected": 1}]}\n',
        "mlship_runtime/__init__.py": "RUNTIME_VERSION = '1'\n",
        "mlship_runtime/__main__.py": FAKE_MAIN,
        "mlship_runtime/_boot.py": FAKE_MAIN,  # what the launcher may run instead of -m mlship_runtime
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    manifest = {
        "format": 1, "name": "iris", "version": version, "runtime_version": "1",
        "python": {"version": f"{PY}.7", "implementation": "CPython"}, "requirements": ["tinya==1.0"],
        "golden": "golden.json",
        "artifacts": {rel: hashlib.sha256(text.encode()).hexdigest() for rel, text in files.items()},
        "methods": [{"name": "predict", "expression": "m.predict(X)"}],
        "input": {"kind": "list", "type": "string", "example": "a"},
    }
    (root / "mlship.json").write_text(json.dumps(manifest))
    return root


def _package(tmp: Path, version: str) -> Path:
    """An unpacked onprem package of iris `version`, with real wheels."""
    wheels = tmp / f"wheels-{version}"
    wheels.mkdir(parents=True)
    lock = []
    for name in ("tinya", "tinyb"):
        data = make_wheel(name, "1.0")
        filename = f"{name}-1.0-py3-none-any.whl"
        (wheels / filename).write_bytes(data)
        lock.append(LockedWheel(name, "1.0", filename, hashlib.sha256(data).hexdigest()))
    house = Wheelhouse(directory=wheels, lock=lock, python=PY, platform=parse_platform("linux/amd64"))
    out = tmp / f"dist-{version}"
    options = OnpremOptions(platform="linux/amd64", output=out)
    result = OnpremBuilder.from_bundle(_bundle(tmp / f"bundle-{version}", version), options).build(out, house)
    dest = tmp / f"pkg-{version}"
    with tarfile.open(result.tarball) as tar:
        tar.extractall(dest, filter="data")
    return dest / result.top


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if os.uname().machine != "x86_64":
        pytest.skip("the packages here are built for x86_64")
    tmp = tmp_path_factory.mktemp("packages")
    tmp.chmod(0o755)  # as root, the model check runs as `nobody`, who must read the package
    return {version: _package(tmp, version) for version in ("1.0.0", "2.0.0", "3.0.0")}


@pytest.fixture
def root_dir() -> Iterator[Path]:
    """A folder for prefixes that the service account (nobody, as root) can reach: pytest's are 0700."""
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"mlship-install-{os.getpid()}-{time.monotonic_ns()}"
    path.mkdir(mode=0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def command(package: Path, *args: str | Path) -> list[str]:
    cmd = [SH, str(package / "install.sh"), "--python", PYTHON, *map(str, args)]
    if os.geteuid() == 0 and "--uninstall" not in args and "--user" not in args:
        cmd += ["--user", "nobody"]  # don't create accounts on the test machine
    return cmd


def env(path: str | None = None) -> dict[str, str]:
    return {"PATH": path or os.environ["PATH"], "HOME": "/", "LC_ALL": "C"}


def install(package: Path, *args: str | Path, path: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command(package, *args), env=env(path), capture_output=True, text=True, timeout=300)


def working(prefix: Path) -> str | None:
    """The version the install in `prefix` serves, or None when it does not work: record, app, venv, files
    and launcher all agree."""
    try:
        record = dict(line.split("=", 1) for line in (prefix / ".mlship-install").read_text().splitlines())
        app = json.loads((prefix / "app/mlship.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None
    if record.get("version") != app:
        return None
    checked = subprocess.run(["sha256sum", "--check", "--strict", "--quiet", ".installed-files"], cwd=prefix,
                             capture_output=True)
    imported = subprocess.run([str(prefix / "venv/bin/python"), "-c", "import tinya, tinyb"], capture_output=True)
    served = subprocess.run([str(prefix / "bin/iris-serve")], env=env(), capture_output=True, text=True)
    unit = (prefix / "lib/systemd/iris.service").read_text() if (prefix / "lib/systemd/iris.service").is_file() else ""
    if checked.returncode or imported.returncode or served.returncode or f"ExecStart={prefix}/bin/iris-serve" not in unit:
        return None
    # The launcher serves the app and venv of one and the same release.
    words = served.stdout.split()
    release = Path(words[1]).parent
    if words[0] != "serving" or words[3] != str(release / "venv"):
        return None
    return app


def releases(prefix: Path) -> list[str]:
    return sorted(p.name for p in (prefix / ".releases").glob("r.*")) if (prefix / ".releases").exists() else []


def assert_clean(prefix: Path) -> None:
    """No leftovers: only finished releases (the live one and at most the one before), no temporary names."""
    names = sorted(p.name for p in prefix.iterdir())
    assert names == sorted([".current", ".releases", "etc", *LINKS]), names
    for link in LINKS:
        assert os.readlink(prefix / link) == f".current/{link}"
    for name in releases(prefix):
        assert (prefix / ".releases" / name / ".mlship-install").is_file(), name
    assert 1 <= len(releases(prefix)) <= 2


def tree(path: Path) -> dict[str, tuple[int, str]]:
    return {p.relative_to(path).as_posix(): (p.lstat().st_mtime_ns, os.readlink(p) if p.is_symlink() else "")
            for p in sorted(path.rglob("*"))}


def test_releases_switch_upgrade_keeps_one_back_and_uninstall_removes_all(packages: dict[str, Path],
                                                                          root_dir: Path) -> None:
    prefix = root_dir / "opt/iris"
    result = install(packages["1.0.0"], "--prefix", prefix, "--skip-model-check")
    assert result.returncode == 0, result.stderr
    assert working(prefix) == "1.0.0"
    assert_clean(prefix)
    first = releases(prefix)
    before = tree(prefix)
    again = install(packages["1.0.0"], "--prefix", prefix, "--skip-model-check")
    assert again.returncode == 0 and "already installed" in again.stdout and "nothing to do" in again.stdout
    assert tree(prefix) == before
    (prefix / "etc/iris.env").write_text("MLSHIP_WORKERS=4\n")  # the admin's, kept across releases
    assert install(packages["2.0.0"], "--prefix", prefix).returncode == 0  # with the model check
    assert working(prefix) == "2.0.0"
    assert_clean(prefix)
    assert len(releases(prefix)) == 2 and first[0] in releases(prefix)  # the one before stays, as a way back
    assert install(packages["3.0.0"], "--prefix", prefix, "--skip-model-check").returncode == 0
    assert working(prefix) == "3.0.0" and first[0] not in releases(prefix) and len(releases(prefix)) == 2
    assert (prefix / "etc/iris.env").read_text() == "MLSHIP_WORKERS=4\n"
    gone = install(packages["3.0.0"], "--uninstall", "--prefix", prefix)
    assert gone.returncode == 0 and f"removed iris from {prefix}" in gone.stdout
    assert not prefix.exists()


def _killed_run(package: Path, prefix: Path, delay: float) -> None:
    """install.sh started in a session of its own and killed -9, with everything it started, after `delay` s."""
    proc = subprocess.Popen(command(package, "--prefix", prefix), env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(delay)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)
    # Wait for the killed group to be gone (orphans are reparented, not killed, if the group was already empty).
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)


def _duration(package: Path, prefix: Path) -> float:
    start = time.perf_counter()
    result = install(package, "--prefix", prefix)
    assert result.returncode == 0, result.stderr
    return time.perf_counter() - start


# Where in the run the kill lands, as a fraction of one whole run: checks, venv, pip, model check, switch.
FRACTIONS = (0.15, 0.35, 0.55, 0.75, 0.95)


def test_kill_9_during_a_first_install_then_a_rerun_finishes_it(packages: dict[str, Path], root_dir: Path) -> None:
    whole = _duration(packages["1.0.0"], root_dir / "timing")
    for index, fraction in enumerate(FRACTIONS):
        prefix = root_dir / f"fresh{index}/iris"
        _killed_run(packages["1.0.0"], prefix, whole * fraction)
        state = working(prefix)
        assert state in (None, "1.0.0"), (fraction, state)
        if state is None:  # not installed yet: nothing pretends to be
            assert not (prefix / ".mlship-install").exists()
        result = install(packages["1.0.0"], "--prefix", prefix)
        assert result.returncode == 0, (fraction, result.stdout + result.stderr)
        assert working(prefix) == "1.0.0", fraction
        assert_clean(prefix)
        assert len(releases(prefix)) == 1, (fraction, releases(prefix))


def test_kill_9_during_an_upgrade_leaves_the_old_or_the_new_install(packages: dict[str, Path],
                                                                    root_dir: Path) -> None:
    prefix = root_dir / "opt/iris"
    assert install(packages["1.0.0"], "--prefix", prefix).returncode == 0
    whole = _duration(packages["2.0.0"], root_dir / "timing")
    seen = set()
    for fraction in FRACTIONS:
        _killed_run(packages["2.0.0"], prefix, whole * fraction)
        state = working(prefix)
        assert state in ("1.0.0", "2.0.0"), (fraction, state)
        seen.add(state)
        # The old installer run again: nothing to do when the old install is live, and no half-built release left.
        again = install(packages["1.0.0"], "--prefix", prefix)
        assert again.returncode == 0, again.stderr
        assert working(prefix) == "1.0.0"
        assert_clean(prefix)
        # The new one run again finishes the job.
        upgrade = install(packages["2.0.0"], "--prefix", prefix)
        assert upgrade.returncode == 0, upgrade.stderr
        assert working(prefix) == "2.0.0"
        assert_clean(prefix)
        assert install(packages["1.0.0"], "--prefix", prefix).returncode == 0  # back to the old one
    assert "1.0.0" in seen


@pytest.mark.parametrize("fresh", [True, False], ids=["first-install", "reinstall"])
def test_two_runs_at_once_take_turns(packages: dict[str, Path], root_dir: Path, fresh: bool) -> None:
    prefix = root_dir / "opt/iris"
    if not fresh:
        assert install(packages["1.0.0"], "--prefix", prefix).returncode == 0
    runs = [subprocess.Popen(command(packages["2.0.0"], "--prefix", prefix), env=env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    text = "".join(out + err for out, err in outputs)
    assert text.count("installed iris 2.0.0 in") == 1 and "nothing to do" in text
    assert working(prefix) == "2.0.0"
    assert_clean(prefix)


def test_without_flock_it_says_so_and_installs(packages: dict[str, Path], root_dir: Path) -> None:
    tools = root_dir / "tools"
    tools.mkdir()
    for folder in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            if name != "flock" and not (tools / name).exists():
                (tools / name).symlink_to(os.path.join(folder, name))
    prefix = root_dir / "opt/iris"
    result = install(packages["1.0.0"], "--prefix", prefix, "--skip-model-check", path=str(tools))
    assert result.returncode == 0, result.stderr
    assert "flock (util-linux) is not installed: nothing stops two runs of install.sh" in result.stderr
    assert working(prefix) == "1.0.0"


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_a_uid_without_a_passwd_entry_installs_by_number(packages: dict[str, Path], root_dir: Path) -> None:
    uid = 4321
    prefix = root_dir / "home/iris"
    prefix.parent.mkdir()
    os.chown(prefix.parent, uid, uid)
    package = Path(shutil.copytree(packages["1.0.0"], root_dir / "package"))  # pytest's folders are 0700
    setpriv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
    # No --user: the default is the running account, which has a number and no name.
    result = subprocess.run([*setpriv, SH, str(package / "install.sh"), "--python", PYTHON, "--prefix", str(prefix)],
                            env=env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"user={uid}\n" in (prefix / ".mlship-install").read_text()
    assert f"User={uid}\n" in (prefix / "lib/systemd/iris.service").read_text()
    assert working(prefix) == "1.0.0"
    # As root, a numeric --user with no passwd entry: no account is created, the model check runs as that UID.
    other = root_dir / "opt/iris"
    result = install(packages["1.0.0"], "--prefix", other, "--user", str(uid))
    assert result.returncode == 0, result.stderr
    assert "created the service account" not in result.stdout and working(other) == "1.0.0"


def test_a_prefix_left_by_someone_else_is_still_refused(packages: dict[str, Path], root_dir: Path) -> None:
    prefix = root_dir / "opt/iris"
    (prefix / ".releases").mkdir(parents=True)
    (prefix / ".releases/owner").write_text("churn\n")
    result = install(packages["1.0.0"], "--prefix", prefix)
    assert result.returncode == 1 and "holds an unfinished install of another package" in result.stderr
    assert sorted(p.name for p in prefix.iterdir()) == [".releases"]



def _legacy_install(package: Path, prefix: Path) -> None:
    """An install as the installer before releases made it: real app/, venv/, bin/, lib/ folders in the prefix."""
    prefix.mkdir(parents=True)
    shutil.copytree(package / "app", prefix / "app")
    shutil.copytree(package / "bin", prefix / "bin")
    (prefix / "lib/systemd").mkdir(parents=True)
    unit = (package / "lib/systemd/iris.service").read_text()
    user = "nobody" if os.geteuid() == 0 else str(os.getuid())
    for key, value in (("@PREFIX@", str(prefix)), ("@USER@", user), ("@PROTECT_HOME@", "yes")):
        unit = unit.replace(key, value)
    (prefix / "lib/systemd/iris.service").write_text(unit)
    shutil.copytree(package / "etc", prefix / "etc")
    subprocess.run([PYTHON, "-m", "venv", str(prefix / "venv")], check=True)
    subprocess.run([str(prefix / "venv/bin/python"), "-m", "pip", "install", "--quiet", "--no-index", "--find-links",
                    str(package / "wheels"), "tinya", "tinyb"], check=True, env={**env(), "PIP_CONFIG_FILE": "/dev/null"})
    sums = (package / "SHA256SUMS").read_text().splitlines()
    (prefix / ".installed-files").write_text("".join(
        line + "\n" for line in sums if line.split("  ", 1)[1].startswith(("app/", "bin/"))))
    (prefix / ".mlship-install").write_text(
        f"name=iris\nversion=1.0.0\nrelease=old\npython={PYTHON}\nuser={user}\n")


def test_an_install_from_before_releases_is_switched_over_by_an_upgrade(packages: dict[str, Path],
                                                                        root_dir: Path) -> None:
    prefix = root_dir / "opt/iris"
    _legacy_install(packages["1.0.0"], prefix)
    (prefix / "etc/iris.env").write_text("MLSHIP_WORKERS=4\n")
    assert (prefix / "app").is_dir() and not (prefix / "app").is_symlink()
    result = install(packages["2.0.0"], "--prefix", prefix, "--skip-model-check")
    assert result.returncode == 0, result.stderr
    assert working(prefix) == "2.0.0"
    assert_clean(prefix)
    assert (prefix / "etc/iris.env").read_text() == "MLSHIP_WORKERS=4\n"
    assert install(packages["2.0.0"], "--prefix", prefix, "--skip-model-check").stdout.count("nothing to do") == 1
