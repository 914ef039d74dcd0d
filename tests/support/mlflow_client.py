"""MLflow's own client in a virtual environment of its own, made from requirements/mlflow-client.txt.

MLflow and its dependencies never enter the test environment (requirements/test.txt): the venv is made once per
lock and Python version, under MLSHIP_TEST_CACHE (default ~/.cache/mlship-tests), and reused by later runs while
the lock is unchanged (its sha256 is in the folder's name; a venv is used only once its install finished). CI's
fresh clone makes it from PyPI when the machine has none yet.

    python = mlflow_client_python()
    subprocess.run([python, CLIENT_SCRIPT], input=json.dumps(plan), ...)
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements" / "mlflow-client.txt"
CLIENT_SCRIPT = Path(__file__).resolve().parent / "mlflow_client_script.py"
_DONE = ".mlship-complete"


def cache_root() -> Path:
    return Path(os.environ.get("MLSHIP_TEST_CACHE") or Path.home() / ".cache" / "mlship-tests")


def mlflow_client_python() -> Path:
    """The python of the MLflow client venv, made now if this lock and Python have none yet."""
    key = hashlib.sha256(LOCK.read_bytes() + platform.python_version().encode()).hexdigest()[:16]
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    venv = root / f"mlflow-client-{key}"
    python = venv / "bin" / "python"
    # One maker at a time (two test runs on one machine); the other waits, then finds it done.
    with (root / f"mlflow-client-{key}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (venv / _DONE).exists() and python.exists():
            return python
        shutil.rmtree(venv, ignore_errors=True)  # an install that did not finish
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        install = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--require-hashes",
                   "-r", str(LOCK)]
        result = subprocess.run(install, capture_output=True, text=True)
        if result.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            raise AssertionError(f"installing MLflow's client from {LOCK.name} failed:\n{result.stderr[-3000:]}")
        (venv / _DONE).write_text(LOCK.read_text())
    for old in root.glob("mlflow-client-*"):  # venvs of earlier locks (each is about 350 MB)
        if old.is_dir() and old != venv:
            shutil.rmtree(old, ignore_errors=True)
    return python
