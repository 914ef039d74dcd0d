"""Reloading a running service (`mlship reload mlship.toml`, SIGHUP) under continuous load: real `mlship serve`
processes, real HTTP, real signals (`mlship reload` runs in this process, through typer's runner).

One server per test: it serves sample bundles with one worker each (no access log: the load would fill it) while
threads post each model's golden input without pause; every answer must be a 2xx with the golden prediction,
through every change of the file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cli
from tests.support.servers import free_port, shut_down, wait_until_ready
from tests.support.services import bundle_copy
from tests.unit.runtime.sample_bundles import edit_golden

SAMPLES = {"a": "iris_array", "b": "iris_columns", "c": "iris_records"}


@pytest.fixture(scope="module")
def samples(sample_bundle: Callable[[str], Path]) -> dict[str, Path]:
    return {key: sample_bundle(name) for key, name in SAMPLES.items()}


def manifest(bundle: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((bundle / "mlship.json").read_text())
    return data


def write_service(path: Path, bundles: list[Path]) -> None:
    path.write_text('[service]\nname = "reloads"\n' + "".join(f'\n[[models]]\nbundle = "{b}"\n' for b in bundles))


def post(url: str, body: Any, timeout: float = 30.0) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()[:300]


def get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


@dataclass
class Load:
    """Threads posting one model's first golden input in a loop; every answer that is not a 2xx with the golden
    prediction is kept."""

    base: str
    sent: dict[str, int] = field(default_factory=dict)
    bad: list[str] = field(default_factory=list)
    _stops: dict[str, threading.Event] = field(default_factory=dict)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self, bundle: Path, threads: int = 2) -> None:
        name = manifest(bundle)["name"]
        case = json.loads((bundle / "golden.json").read_text())["cases"][0]
        stop = self._stops[name] = threading.Event()
        self.sent.setdefault(name, 0)

        def run() -> None:
            while not stop.is_set():
                try:
                    status, answer = post(f"{self.base}/models/{name}/predict", {"instances": case["instances"]})
                except OSError as exc:
                    self.bad.append(f"{name}: {type(exc).__name__}: {exc}")
                    continue
                self.sent[name] += 1
                if status != 200 or answer.get("predictions") != case["expected"]:
                    self.bad.append(f"{name}: HTTP {status}: {answer!r}"[:300])

        for _ in range(threads):
            thread = threading.Thread(target=run, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, name: str) -> None:
        self._stops[name].set()

    def stop_all(self) -> None:
        for stop in self._stops.values():
            stop.set()
        for thread in self._threads:
            thread.join(timeout=40)


@contextmanager
def service(tmp_path: Path, bundles: list[Path] | str) -> Iterator[tuple[str, Path, subprocess.Popen[bytes], Path]]:
    """`mlship serve mlship.toml --workers 1` until the block ends: (base URL, service file, process, log). The
    file lists `bundles`, or is that text."""
    source, log, port = tmp_path / "mlship.toml", tmp_path / "server.log", free_port()
    if isinstance(bundles, str):
        source.write_text(bundles)
    else:
        write_service(source, bundles)
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "mlship", "serve", str(source), "--port", str(port),
                                    "--workers", "1"], stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, "MLSHIP_PLAIN": "1", "MLSHIP_ACCESS_LOG": "0"})
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_ready(f"{base}/readyz", process, log=log, timeout=90, interval=0.2)
        yield base, source, process, log
    finally:
        shut_down(process)


def reload(cli: Cli, source: Path) -> Any:
    return cli("reload", source, "--timeout", "90")


def processes_in(root: int, folder: Path) -> list[int]:
    """The descendants of `root` running in `folder` (each backend runs in its bundle's folder)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    below, level = set(), {root}
    while level:
        level = {pid for pid, parent in parents.items() if parent in level} - below
        below |= level
    found = []
    for pid in below:
        try:
            if Path(f"/proc/{pid}/cwd").resolve() == folder.resolve():
                found.append(pid)
        except OSError:
            continue
    return found


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} after {timeout:g} s"
        time.sleep(0.1)


def index(base: str) -> list[dict[str, str]]:
    status, answer = post(f"{base}/v2/repository/index", {})
    assert status == 200, answer
    assert isinstance(answer, list)
    return answer


def test_reload_under_load_adds_changes_and_removes_models_with_no_failed_request(
    samples: dict[str, Path], tmp_path: Path, cli: Cli
) -> None:
    a, b, c = samples["a"], samples["b"], samples["c"]
    changed_a = Path(shutil.copytree(a, tmp_path / "a-rebuilt"))  # the same name and version, another bundle
    with service(tmp_path, [a, b]) as (base, source, process, log):
        load = Load(base)
        load.start(a)
        load.start(b)
        try:
            time.sleep(0.5)
            assert processes_in(process.pid, a) and processes_in(process.pid, b)
            load.stop(manifest(b)["name"])  # b is removed below: its last requests end first
            time.sleep(0.3)
            write_service(source, [changed_a, c])  # a rebuilt, b removed, c added: one reload
            result = reload(cli, source)
            assert result.exit_code == 0, result.output
            load.start(c)
            for change in (f"added {manifest(c)['name']} 0.1.0", f"changed {manifest(a)['name']} 0.1.0",
                           f"removed {manifest(b)['name']} 0.1.0"):
                assert change in result.output
            for gone in (a, b):
                wait_for(lambda gone=gone: not processes_in(process.pid, gone), 30,
                         f"the processes of {gone.name} still run")
            assert processes_in(process.pid, changed_a) and processes_in(process.pid, c)
            time.sleep(1.0)  # more load on the new table
        finally:
            load.stop_all()
        assert load.bad == [], load.bad[:5]
        assert all(count > 10 for count in load.sent.values()), load.sent
        served = {(entry["name"], entry["state"]) for entry in index(base)}
        assert served == {(manifest(a)["name"], "READY"), (manifest(c)["name"], "READY")}
        metrics = get_text(f"{base}/metrics")
        assert 'mlship_reloads_total{result="ok"} 1.0' in metrics
        assert f'mlship_reload_models_total{{action="remove",model="{manifest(b)["name"]}",result="ok",' in metrics


def test_new_bundles_that_fail_to_load_or_fail_golden_cases_never_take_traffic_and_a_broken_file_changes_nothing(
    samples: dict[str, Path], tmp_path: Path, cli: Cli
) -> None:
    a = samples["a"]
    name = manifest(a)["name"]
    # A rebuilt bundle of the same version whose golden case no longer matches what its model computes.
    bad = Path(shutil.copytree(a, tmp_path / "a-bad"))
    edit_golden(bad, lambda golden: golden["cases"][0].update(expected=[99]))
    # And a new version of it, broken the same way: it must not appear in the routes either.
    bad_new = bundle_copy(bad, tmp_path / "a-bad-new", name, "0.2.0")
    # And one whose last golden case is wrong: never sent over HTTP (its backend reports every case it replayed at
    # start-up), so its own readiness must refuse it.
    bad_last = bundle_copy(a, tmp_path / "a-bad-last", name, "0.4.0")
    edit_golden(bad_last, lambda golden: golden["cases"][-1].update(expected=[99]))
    # And one that cannot even load: its pickled values no longer match their digest.
    unloadable = bundle_copy(a, tmp_path / "a-unloadable", name, "0.3.0")
    (unloadable / "artifacts" / "values.pkl").write_bytes(b"not a pickle")
    with service(tmp_path, [a]) as (base, source, process, log):
        load = Load(base)
        load.start(a, threads=3)
        try:
            source.write_text(source.read_text().replace(str(a), str(bad)) + f'\n[[models]]\nbundle = "{bad_new}"\n'
                              f'\n[[models]]\nbundle = "{unloadable}"\n\n[[models]]\nbundle = "{bad_last}"\n'
                              f'\n[routes.{name}]\ndefault = "0.2.0"\n')
            failed = reload(cli, source)
            assert failed.exit_code == 1, failed.output
            assert f"{name} 0.1.0 FAILED (golden case" in failed.output
            assert f"{name} 0.2.0 FAILED (golden case" in failed.output
            assert f"{name} 0.3.0 FAILED (" in failed.output and "values.pkl" in failed.output
            assert f"{name} 0.4.0 FAILED (golden case predict-2 does not match" in failed.output
            assert "never took traffic" in failed.output
            wait_for(lambda: not any(processes_in(process.pid, f) for f in (bad, bad_new, unloadable, bad_last)), 30,
                     "the failed candidates' processes still run")
            assert processes_in(process.pid, a), "the version before keeps serving"

            source.write_text("[service\nname = ")
            broken = reload(cli, source)
            assert broken.exit_code == 1
            assert "refused" in broken.output and "nothing changed" in broken.output
            time.sleep(0.5)
        finally:
            load.stop_all()
        assert load.bad == [], load.bad[:5]
        entries = {(e["name"], e["version"]): e for e in index(base)}
        assert entries[(name, "0.1.0")]["state"] == "READY"
        assert "reload 1 failed: golden case" in entries[(name, "0.1.0")]["reason"]
        assert "keeps serving" in entries[(name, "0.1.0")]["reason"]
        assert entries[(name, "0.2.0")]["state"] == "UNAVAILABLE"
        assert entries[(name, "0.3.0")]["state"] == "UNAVAILABLE" and "values.pkl" in entries[(name, "0.3.0")]["reason"]
        assert entries[(name, "0.4.0")]["state"] == "UNAVAILABLE" and "predict-2" in entries[(name, "0.4.0")]["reason"]
        for version in ("0.2.0", "0.4.0"):
            status, answer = post(f"{base}/models/{name}/versions/{version}/predict", {"instances": [[1, 2, 3, 4]]})
            assert status == 404, answer
        metrics = get_text(f"{base}/metrics")
        assert 'mlship_reloads_total{result="failed"} 1.0' in metrics
        assert 'mlship_reloads_total{result="invalid"} 1.0' in metrics
        assert f'mlship_reload_models_total{{action="add",model="{name}",result="failed",version="0.2.0"}} 1.0' \
            in metrics
        text = log.read_text()
        assert "never takes traffic" in text and "refused, nothing changed" in text


def test_reload_without_a_running_server_says_so(samples: dict[str, Path], tmp_path: Path) -> None:
    source = tmp_path / "mlship.toml"
    write_service(source, [samples["a"]])
    result = subprocess.run([sys.executable, "-m", "mlship", "reload", str(source)], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "MLSHIP_PLAIN": "1"})
    assert result.returncode == 1
    assert f"no mlship server is running for {source.resolve()}" in result.stderr
    assert "mlship serve" in result.stderr
    assert "Traceback" not in result.stderr
