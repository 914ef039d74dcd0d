#!/usr/bin/env bash
# Install the comparison servers (MLflow, BentoML) into their own virtualenv, and MLServer (with mlserver-sklearn)
# into another (its pins disagree with MLflow's), so the main environment's packages (the ones mlship's bundles pin)
# stay untouched. The peers get the main environment's scikit-learn and numpy
# versions, so a model pickled by benchmarks/serving.py loads unchanged on both sides.
#
#   bash benchmarks/setup_peers.sh [VENV]      default VENV: /opt/mlship-bench/venv   [env var: MLSHIP_BENCH_VENV]
#   MLServer's: MLSHIP_MLSERVER_VENV (default /opt/mlship-bench/mlserver-venv); PEERS="mlflow-bentoml mlserver" (the
#   default) picks which of the two to install.
#
# Versions: MLFLOW_VERSION (default 3.17.2) and BENTOML_VERSION (default 1.4.40), the ones measured in
# shared/FIELD-NOTES.md; set either to "latest" to take the newest release. Also installs the Debian package wrk
# when it is missing (needs root).
set -euo pipefail

VENV="${1:-${MLSHIP_BENCH_VENV:-/opt/mlship-bench/venv}}"
PYTHON="${PYTHON:-python3}"
MLFLOW_VERSION="${MLFLOW_VERSION:-3.17.2}"
BENTOML_VERSION="${BENTOML_VERSION:-1.4.40}"
MLSERVER_VENV="${MLSHIP_MLSERVER_VENV:-/opt/mlship-bench/mlserver-venv}"
MLSERVER_VERSION="${MLSERVER_VERSION:-1.7.1}"
PEERS="${PEERS:-mlflow-bentoml mlserver}"

spec() { if [ "$2" = latest ]; then echo "$1"; else echo "$1==$2"; fi; }

if ! command -v wrk >/dev/null 2>&1; then
    echo "installing wrk (Debian package)"
    apt-get update -qq && apt-get install -y -qq wrk
fi

# Match the main environment's model libraries so pickles are portable between the two.
pins="$("$PYTHON" - <<'PY'
from importlib.metadata import version, PackageNotFoundError
out = []
for name in ("scikit-learn", "numpy"):
    try:
        out.append(f"{name}=={version(name)}")
    except PackageNotFoundError:
        out.append(name)
print(" ".join(out))
PY
)"

make_venv() {
    if [ ! -x "$1/bin/python" ]; then
        echo "creating $1 with $("$PYTHON" --version)"
        mkdir -p "$(dirname "$1")"
        "$PYTHON" -m venv "$1"
    fi
    "$1/bin/python" -m pip install -q --upgrade pip
}

if [[ " $PEERS " == *" mlflow-bentoml "* ]]; then
    make_venv "$VENV"
    # shellcheck disable=SC2086
    "$VENV/bin/python" -m pip install -q \
        "$(spec mlflow "$MLFLOW_VERSION")" "$(spec bentoml "$BENTOML_VERSION")" \
        $pins pandas uvicorn starlette orjson uvloop httptools
    "$VENV/bin/python" - <<'PY'
from importlib.metadata import version
print("peers venv:", ", ".join(f"{n} {version(n)}" for n in
      ("mlflow", "bentoml", "scikit-learn", "numpy", "pandas", "uvicorn", "starlette")))
PY
fi

if [[ " $PEERS " == *" mlserver "* ]]; then
    make_venv "$MLSERVER_VENV"
    # uvloop 0.22 and later refuse asyncio.get_event_loop() without a running loop, which MLServer 1.7's parallel
    # workers call at start: every worker died at once (measured with uvloop 0.23.0).
    # shellcheck disable=SC2086
    "$MLSERVER_VENV/bin/python" -m pip install -q \
        "$(spec mlserver "$MLSERVER_VERSION")" "$(spec mlserver-sklearn "$MLSERVER_VERSION")" $pins joblib "uvloop<0.22"
    "$MLSERVER_VENV/bin/python" - <<'PY'
from importlib.metadata import version
print("mlserver venv:", ", ".join(f"{n} {version(n)}" for n in
      ("mlserver", "mlserver-sklearn", "scikit-learn", "numpy", "uvicorn", "uvloop")))
PY
fi
