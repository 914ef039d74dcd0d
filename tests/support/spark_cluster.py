"""A Spark standalone cluster on 127.0.0.1: one master and one worker, started with pyspark's own `spark-class`.

pyspark's pip package ships Spark's jars and `bin/spark-class` (not `sbin/start-master.sh`), which is all a
standalone master (`org.apache.spark.deploy.master.Master`) and worker (`...deploy.worker.Worker`) need. Both
bind to 127.0.0.1 only (SPARK_LOCAL_IP), with their web UIs on free ports and the master's REST server off;
each runs in its own session and is stopped with its process group (the worker's executors with it).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Cluster:
    url: str  # spark://127.0.0.1:PORT
    work_dir: Path  # the worker's: app-*/EXECUTOR/ is each executor's working folder
    logs: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _spark_class() -> tuple[Path, Path]:
    import pyspark

    home = Path(pyspark.__file__).resolve().parent
    return home, home / "bin" / "spark-class"


@contextmanager
def standalone_cluster(root: Path, *, cores: int = 2, memory: str = "2g", timeout: float = 180.0) -> Iterator[Cluster]:
    """Start the master and the worker, wait (at most `timeout` s) until the worker has registered, yield."""
    home, spark_class = _spark_class()
    port = _free_port()
    url = f"spark://127.0.0.1:{port}"
    work, logs = root / "work", root / "logs"
    work.mkdir(parents=True)
    logs.mkdir()
    env = {**os.environ, "SPARK_HOME": str(home), "SPARK_LOCAL_IP": "127.0.0.1",
           "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false", "SPARK_LOG_DIR": str(logs)}
    env.pop("PYSPARK_PYTHON", None)  # the driver tells the executors which Python to run
    commands = {
        "master": [str(spark_class), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                   "--port", str(port), "--webui-port", "0"],
        "worker": [str(spark_class), "org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1",
                   "--cores", str(cores), "--memory", memory, "--work-dir", str(work), "--webui-port", "0"],
    }
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for name, command in commands.items():
            with (logs / f"{name}.log").open("wb") as log:
                processes.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                                  stdin=subprocess.DEVNULL, start_new_session=True))
        deadline = time.monotonic() + timeout
        while "Registering worker" not in (logs / "master.log").read_text(errors="replace"):
            dead = [name for name, process in zip(commands, processes, strict=False) if process.poll() is not None]
            if dead or time.monotonic() > deadline:
                tails = {name: (logs / f"{name}.log").read_text(errors="replace")[-2000:] for name in commands}
                raise AssertionError(f"the standalone cluster did not start ({', '.join(dead) or 'timeout'}): {tails}")
            time.sleep(0.5)
        yield Cluster(url, work, logs)
    finally:
        for process in processes:
            _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue
