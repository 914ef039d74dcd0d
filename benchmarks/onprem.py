"""What `mlship build --target onprem` costs per example, and how fast its tarball installs and serves offline.

Per example: tarball size and the wheels' share of it; build time with an empty wheel cache (cold: pip resolves
and downloads from the configured index) and again with the cache it filled (warm: no index); the offline
install time (install.sh: checksums, venv, pip --no-index, the model check); and install-to-ready (install.sh
start to the first 200 from /readyz, i.e. install + server start + model load), with start-to-ready alone.
Installs run in a container with --network none from the test base image when Docker is reachable, else on this
host (in a network namespace with no interfaces when root).

Usage: python benchmarks/onprem.py [--examples iris,churn] [--host]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests/support, shared with the tests
from tests.support.servers import free_port, wait_until_ready  # noqa: E402

EXAMPLES = ["iris", "reviews", "churn", "taxi"]
BASE_TAG = f"mlship-base:bookworm-py{sys.version_info.major}{sys.version_info.minor}"

_IN_CONTAINER = """\
set -eu
cd /tmp && tar xzf /pkg/{tarball} && cd {top}
python3 - <<'EOF'
import subprocess, sys, time, urllib.request
t0 = time.monotonic()
subprocess.run(["./install.sh"], check=True, stdout=subprocess.DEVNULL)
t1 = time.monotonic()
server = subprocess.Popen(["/opt/{service}/bin/{service}-serve", "--port", "8080"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
while True:
    try:
        urllib.request.urlopen("http://127.0.0.1:8080/readyz", timeout=1)
        break
    except OSError:
        time.sleep(0.05)
t2 = time.monotonic()
server.terminate()
server.wait()
print(f"@@ {{t1 - t0:.2f}} {{t2 - t0:.2f}} {{t2 - t1:.2f}}")
EOF
"""


def mlship(*args: str | Path) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mlship", *map(str, args)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"mlship {' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}")
    return time.perf_counter() - start, proc.stdout


def docker_ready() -> bool:
    try:
        import docker

        docker.from_env(timeout=5).ping()
    except Exception:
        return False
    proc = subprocess.run([str(ROOT / "scripts" / "make-base-image"), BASE_TAG], capture_output=True, text=True)
    return proc.returncode == 0


def install_in_container(tarball: Path, top: str, service: str) -> tuple[float, float, float]:
    import docker

    client = docker.from_env(timeout=900)  # a loaded machine can take minutes
    script = _IN_CONTAINER.format(tarball=tarball.name, top=top, service=service)
    container = client.containers.run(BASE_TAG, ["sh", "-c", script], network_mode="none", detach=True,
                                      volumes={str(tarball.parent): {"bind": "/pkg", "mode": "ro"}})
    try:
        container.wait(timeout=900)
        out = container.logs().decode()
    finally:
        container.remove(force=True)
    line = next((ln for ln in out.splitlines() if ln.startswith("@@ ")), None)
    if line is None:
        raise SystemExit(f"install in the container failed:\n{out}")
    install, ready, start = (float(x) for x in line.split()[1:])
    return install, ready, start


def install_on_host(tarball: Path, top: str, service: str, work: Path) -> tuple[float, float, float]:
    with tarfile.open(tarball) as tar:
        tar.extractall(work, filter="data")
    prefix = work / "opt" / service
    cmd = [str(work / top / "install.sh"), "--prefix", str(prefix), "--python", sys.executable]
    if os.geteuid() == 0:
        cmd += ["--user", "nobody"]
        if shutil.which("unshare") and subprocess.run(["unshare", "--net", "true"]).returncode == 0:
            cmd = ["unshare", "--net", *cmd]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")} | {"PIP_NO_INDEX": "1"}
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    t1 = time.monotonic()
    port = str(free_port())
    server = subprocess.Popen([str(prefix / "bin" / f"{service}-serve"), "--port", port], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/readyz", server, timeout=600, interval=0.05)
        t2 = time.monotonic()
    finally:
        server.terminate()
        server.wait()
    return t1 - t0, t2 - t0, t2 - t1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", default=",".join(EXAMPLES))
    parser.add_argument("--host", action="store_true", help="install on this host even when Docker is reachable")
    args = parser.parse_args()
    in_docker = not args.host and docker_ready()
    where = f"a --network none container ({BASE_TAG})" if in_docker else "this host, offline"
    print(f"installs run in {where}")
    print(f"{'example':8} {'tarball MB':>10} {'wheels MB':>9} {'wheels %':>8} {'#whl':>4} {'cold s':>7} {'warm s':>7} "
          f"{'install s':>9} {'to ready s':>10} {'start s':>7}")
    with tempfile.TemporaryDirectory(prefix="mlship-bench-onprem-") as tmp_name:
        tmp = Path(tmp_name)
        for name in args.examples.split(","):
            bundle = tmp / "bundles" / name
            mlship("package", ROOT / "examples" / name / f"{name}.ipynb", "-o", bundle)
            cache = tmp / "cache" / name  # its own empty cache: the cold build resolves everything
            cold, out = mlship("build", "--target", "onprem", "--bundle", bundle, "-o", tmp / "cold",
                               "--wheel-cache", cache, "--json")
            warm, out = mlship("build", "--target", "onprem", "--bundle", bundle, "-o", tmp / "dist",
                               "--wheel-cache", cache, "--json")
            info = json.loads(out)
            tarball = Path(info["tarball"])
            top = f"{info['name']}-{info['version']}"
            if in_docker:
                install, ready, start = install_in_container(tarball, top, name)
            else:
                install, ready, start = install_on_host(tarball, top, name, tmp / "host" / name)
            print(f"{name:8} {info['size_bytes'] / 1e6:10.1f} {info['wheels_bytes'] / 1e6:9.1f} "
                  f"{info['wheels_bytes'] / info['content_bytes']:8.1%} {info['wheels']:4d} {cold:7.1f} {warm:7.1f} "
                  f"{install:9.1f} {ready:10.1f} {start:7.1f}")
    print("tarball MB: the .tar.gz; wheels MB / %: the wheels inside it and their share of the unpacked content; "
          "cold s / warm s: wall time of `mlship build --target onprem` (a fresh process) with an empty wheel cache, "
          "then with the cache it filled; install s: install.sh (checksums, venv, offline pip, model check); "
          "to ready s: install.sh start to the first 200 from /readyz; start s: launcher start to ready.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
