"""The multi-model front end to end: `python -m mlship.runtime serve-service FILE` over two example bundles and a
damaged one, real processes and real HTTP: every protocol's golden cases through the front, the catalog routes,
merged metrics, and kill -9 of one model's processes under load on two models."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mlship.runtime import _contract as contract
from mlship.runtime._codec import outputs_match, replace_non_finite
from mlship.runtime._contract import read_manifest
from mlship.runtime._tensors import input_tensors
from mlship.runtime._verify import verify_url
from tests.support.servers import clean_env, free_port, shut_down, wait_until_ready

pytestmark = pytest.mark.e2e

GOOD = ("iris", "churn", "reviews", "taxi")  # every example, served together
BROKEN = ("iris-columns", "text")  # a damaged bundle, and one whose golden case the model does not match


def _request(url: str, body: Any = None, method: str | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw, status = resp.read(), resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode()


def _index(url: str) -> dict[str, dict[str, str]]:
    status, index = _request(f"{url}/v2/repository/index", {})
    assert status == 200, index
    return {entry["name"]: entry for entry in index}


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not {what} after {timeout:g} s"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def front(example_bundles: dict[str, Path], sample_bundle: Callable[[str], Path],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    folder = tmp_path_factory.mktemp("service")
    damaged = Path(shutil.copytree(sample_bundle("iris_columns"), folder / "damaged"))
    with (damaged / "artifacts" / "values.pkl").open("ab") as stream:
        stream.write(b"\0")  # its digest no longer matches: the backend refuses to load it
    service = folder / "mlship.toml"
    service.write_text(
        '[service]\nname = "scoring"\n\n'
        f'[[models]]\nbundle = "{example_bundles["iris"]}"\nworkers = 2\n\n'
        f'[[models]]\nbundle = "{example_bundles["churn"]}"\n\n'
        f'[[models]]\nbundle = "{example_bundles["reviews"]}"\n\n'
        f'[[models]]\nbundle = "{example_bundles["taxi"]}"\n\n'
        f'[[models]]\nbundle = "{damaged}"\n\n'
        f'[[models]]\nbundle = "{_wrong_golden(sample_bundle("text"), folder / "wrong")}"\n\n'
        f'[[models]]\nbundle = "{sample_bundle("series")}"\n\n'
        f'[[models]]\nbundle = "{_version(sample_bundle("series"), folder / "series-2", "2.0.0")}"\n\n'
        '[routes.series]\ndefault = "0.1.0"\n')
    url, process, log = _start_front(service, folder)
    try:
        wait_until_ready(f"{url}/livez", process, log=log)
        # Every model but the two broken ones (whose states the tests check) serves before any test runs.
        _wait_for(lambda: all(entry["state"] == "READY" for entry in _request(f"{url}/v2/repository/index", {})[1]
                              if entry["name"] not in BROKEN), "ready")
        yield url, process, log
    finally:
        code = shut_down(process)
    assert code == [0], log.read_text()
    assert not (folder / "front.pid").exists()


def _start_front(service: Path, folder: Path, **env: str) -> tuple[str, subprocess.Popen[bytes], Path]:
    port, log = free_port(), folder / "front.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-B", "-m", "mlship.runtime", "serve-service", str(service), "--port", str(port),
             "--workers", "1", "--pid-file", str(folder / "front.pid")],
            stdout=out, stderr=subprocess.STDOUT, env=clean_env(**env))
    return f"http://127.0.0.1:{port}", process, log


def _wrong_golden(bundle: Path, copy: Path) -> Path:
    """A copy of `bundle` whose golden outputs the model does not give (digests rewritten: it loads, then fails
    the golden case its server replays before it is ready)."""
    shutil.copytree(bundle, copy)
    read = contract.read(copy)
    cases = tuple(replace(case, expected=[f"not {value}" for value in case.expected]) for case in read.golden.cases)
    contract.write(copy, read.manifest, replace(read.golden, cases=cases))
    return copy


def _version(bundle: Path, copy: Path, version: str) -> Path:
    """A copy of `bundle` packaged as another version of the same model."""
    shutil.copytree(bundle, copy)
    read = contract.read(copy)
    contract.write(copy, replace(read.manifest, version=version), read.golden)
    return copy


def test_versions_of_one_model_each_routed_and_the_default_without_a_version(
    front: tuple[str, subprocess.Popen[bytes], Path], sample_bundle: Callable[[str], Path]
) -> None:
    url, _, _ = front
    rows = json.loads((sample_bundle("series") / "golden.json").read_text())["cases"][0]["instances"]
    body = _v2_request(read_manifest(sample_bundle("series")), rows)
    for path, version in (("/v2/models/series/infer", "0.1.0"), ("/v2/models/series/versions/0.1.0/infer", "0.1.0"),
                          ("/v2/models/series/versions/2.0.0/infer", "2.0.0")):
        status, answer = _request(url + path, body)
        assert status == 200 and answer["model_version"] == version, (path, answer)
    status, metadata = _request(f"{url}/v2/models/series")
    assert status == 200 and metadata["versions"] == ["0.1.0", "2.0.0"]
    status, entry = _request(f"{url}/models/series")
    assert entry["default"] == "0.1.0" and [v["version"] for v in entry["versions"]] == ["0.1.0", "2.0.0"]
    status, answer = _request(f"{url}/models/series/versions/2.0.0/predict", {"instances": rows})
    assert status == 200 and answer["predictions"]


def test_every_protocol_answers_each_models_golden_cases(
    front: tuple[str, subprocess.Popen[bytes], Path], example_bundles: dict[str, Path]
) -> None:
    url, _, _ = front
    for name in GOOD:
        bundle = example_bundles[name]
        manifest = read_manifest(bundle)
        golden = json.loads((bundle / "golden.json").read_text())
        for base in (f"{url}/models/{name}", f"{url}/models/{name}/versions/{manifest.version}"):
            results = verify_url(base, bundle)
            assert results and all(result.ok for result in results), [r.detail for r in results if not r.ok]
        for case in (c for c in golden["cases"] if c["method"] == manifest.methods[0].name):
            expected = replace_non_finite(case["expected"])
            status, answer = _request(f"{url}/models/{name}/invocations", {"instances": case["instances"]})
            assert status == 200, answer
            assert outputs_match(answer["predictions"], expected, 1e-6, 1e-9)[0]
            status, answer = _request(f"{url}/v2/models/{name}/versions/{manifest.version}/infer",
                                      _v2_request(manifest, case["instances"]))
            assert status == 200, answer
            output = next(o for o in answer["outputs"] if o["name"] == case["method"])
            assert outputs_match(output["data"], expected, 1e-6, 1e-9)[0], (output, expected)
            assert answer["model_name"] == name and answer["model_version"] == manifest.version


def _v2_request(manifest: Any, rows: list[Any]) -> dict[str, Any]:
    tensors = []
    for tensor in input_tensors(manifest.input):
        data = [row[tensor["name"]] for row in rows] if manifest.input.has_columns else rows
        tensors.append({"name": tensor["name"], "datatype": tensor["datatype"], "shape": [len(rows)], "data": data})
    return {"inputs": tensors}


def test_the_catalog_routes_and_a_damaged_model_unavailable_with_its_reason(
    front: tuple[str, subprocess.Popen[bytes], Path], example_bundles: dict[str, Path]
) -> None:
    url, _, _ = front
    index = _index(url)
    assert index["iris-columns"]["state"] == "UNAVAILABLE"
    assert "sha256" in index["iris-columns"]["reason"], index["iris-columns"]
    _wait_for(lambda: "golden" in _index(url)["text"]["reason"], "failing its golden case")
    assert _index(url)["text"]["state"] == "UNAVAILABLE"
    status, ready = _request(f"{url}/readyz")
    assert status == 503 and "iris-columns" in ready["error"] and "text" in ready["error"]
    assert [entry["name"] for entry in ready["unavailable"]] == ["iris-columns", "text"]
    status, answer = _request(f"{url}/models/iris-columns/predict", {"instances": [{}]})
    assert status == 503 and "unavailable" in answer["error"]

    status, models = _request(f"{url}/models")
    assert status == 200 and models["service"] == "scoring"
    by_name = {model["name"]: model for model in models["models"]}
    iris = by_name["iris"]
    assert iris["default"] == "0.1.0" and iris["versions"][0]["state"] == "READY"
    assert iris["versions"][0]["methods"] == [m.name for m in read_manifest(example_bundles["iris"]).methods]
    assert iris["versions"][0]["input"]["columns"]
    assert by_name["iris-columns"]["versions"][0]["methods"]  # from its mlship.json, though it never served

    status, missing = _request(f"{url}/predict", {"instances": [{}]})
    assert status == 404 and "POST /models/iris/predict" in missing["routes"]
    status, missing = _request(f"{url}/models/fraud/predict", {"instances": [{}]})
    assert status == 404 and "'iris'" in missing["error"] and "'churn'" in missing["error"]
    status, missing = _request(f"{url}/models/iris/versions/9.9/predict", {"instances": [{}]})
    assert status == 404 and "'0.1.0'" in missing["error"]
    status, missing = _request(f"{url}/v2/models/fraud/infer", {"inputs": []})
    assert status == 404

    status, document = _request(f"{url}/openapi.json")
    assert status == 200
    operation = document["paths"]["/models/churn/versions/0.1.0/predict"]["post"]
    ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert ref.rsplit("/", 1)[-1] in document["components"]["schemas"]
    assert "/v2/models/iris/versions/0.1.0/infer" in document["paths"] and "/v2/repository/index" in document["paths"]
    churn_row = document["components"]["schemas"]["churn_0.1.0_Row"]
    assert churn_row["example"] and set(churn_row["required"]) == set(churn_row["example"])

    with urllib.request.urlopen(f"{url}/", timeout=10) as response:
        page = response.read().decode()
        assert "content-security-policy" in {k.lower() for k in response.headers}
    assert 'href="/models/iris/versions/0.1.0/"' in page and "UNAVAILABLE" in page
    with urllib.request.urlopen(f"{url}/models/iris/versions/0.1.0/", timeout=10) as response:
        assert response.headers.get_content_type() == "text/html"  # the model's own page, under its prefix


def test_metrics_carry_model_and_version_labels(front: tuple[str, subprocess.Popen[bytes], Path]) -> None:
    url, _, _ = front
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    for family in ("mlship_requests_total", "mlship_request_duration_seconds", "mlship_inference_duration_seconds",
                   "mlship_batch_rows", "mlship_requests_in_flight"):
        assert text.count(f"# TYPE {family} ") == 1, family
        for name in GOOD:
            assert any(line.startswith(family) and f'model="{name}"' in line and 'version="0.1.0"' in line
                       for line in text.splitlines()), (family, name)
    assert 'mlship_model_ready{model="iris-columns",version="0.1.0"} 0.0' in text


class _Load:
    """Threads posting one model's golden rows on kept-alive connections, counting statuses and errors."""

    def __init__(self, port: int, name: str, body: bytes, threads: int) -> None:
        self.port, self.path, self.body = port, f"/models/{name}/predict", body
        self.ok = 0
        self.failed: list[str] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> _Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def _run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while not self.stop.is_set():
            try:
                connection.request("POST", self.path, self.body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                payload = response.read()
                if response.status == 200:
                    self.ok += 1
                else:
                    self.failed.append(f"{response.status} {payload[:200]!r}")
            except (OSError, http.client.HTTPException) as exc:
                self.failed.append(repr(exc))
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        connection.close()


def _parent(entry: Path) -> int | None:
    try:
        return int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _backend_group(front_pid: int, bundle: Path) -> int:
    """The process group of the backend serving `bundle` (its supervisor's pid: backends run in their own session)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == front_pid and str(bundle).encode() in cmdline:
            return int(entry.name)
    raise AssertionError(f"no backend of {bundle} under {front_pid}")


def test_kill_9_of_one_models_processes_under_load(
    front: tuple[str, subprocess.Popen[bytes], Path], example_bundles: dict[str, Path]
) -> None:
    url, process, _ = front
    port = int(url.rsplit(":", 1)[1])
    bodies = {}
    for name in GOOD:
        golden = json.loads((example_bundles[name] / "golden.json").read_text())
        bodies[name] = json.dumps({"instances": golden["cases"][0]["instances"]}).encode()
    group = _backend_group(process.pid, example_bundles["churn"])
    with _Load(port, "iris", bodies["iris"], 4) as iris, _Load(port, "churn", bodies["churn"], 2) as churn:
        time.sleep(1.0)
        before = iris.ok
        os.killpg(group, signal.SIGKILL)  # the supervisor and its worker, at once
        _wait_for(lambda: _index(url)["churn"]["state"] != "READY", "unavailable", timeout=10)
        _wait_for(lambda: _index(url)["churn"]["state"] == "READY", "ready again")
        served_again, churn_failed = churn.ok, len(churn.failed)
        time.sleep(1.0)
        assert iris.failed == [] and iris.ok > before > 0
        assert churn.ok > served_again, churn.failed[-3:]  # the replaced backend serves
        # Then one of iris' two workers: its own supervisor replaces it, the front goes on routing to iris.
        supervisor = _backend_group(process.pid, example_bundles["iris"])
        worker = next(int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _parent(p) == supervisor)
        iris_ok = iris.ok
        os.kill(worker, signal.SIGKILL)
        time.sleep(2.0)
    assert churn.failed[churn_failed:] == [] and iris.ok > iris_ok
    assert _request(f"{url}/models/churn/predict", json.loads(bodies["churn"]))[0] == 200
    assert _index(url)["iris"]["state"] == "READY"
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        assert 'mlship_backend_restarts_total{model="churn",version="0.1.0"} 1.0' in response.read().decode()


def test_tokens_and_backends_stop_when_the_front_is_killed(sample_bundle: Callable[[str], Path],
                                                            tmp_path: Path) -> None:
    bundle = sample_bundle("series")
    service = tmp_path / "mlship.toml"
    service.write_text(f'[[models]]\nbundle = "{bundle}"\n')
    api, metrics = "a" * 32, "m" * 32
    url, process, log = _start_front(service, tmp_path, MLSHIP_API_TOKEN=api, MLSHIP_METRICS_TOKEN=metrics)
    try:
        wait_until_ready(f"{url}/readyz", process, log=log)
        body = json.dumps({"instances": json.loads((bundle / "golden.json").read_text())["cases"][0]["instances"]})

        def status(path: str, token: str | None, data: str | None = None) -> int:
            headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
            req = urllib.request.Request(url + path, data=data.encode() if data else None, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=10) as response:
                    return int(response.status)
            except urllib.error.HTTPError as exc:
                exc.close()
                return exc.code

        assert status("/models/series/predict", None, body) == 401
        assert status("/models/series/predict", api, body) == 200
        assert status("/models", None) == 401 and status("/models/nope/predict", None, body) == 401
        assert status("/models/nope/predict", api, body) == 404
        assert status("/metrics", api) == 401 and status("/readyz", None) == 200
        req = urllib.request.Request(f"{url}/metrics", headers={"Authorization": f"Bearer {metrics}"})
        with urllib.request.urlopen(req, timeout=10) as response:  # the front scraped its backend with the token
            assert 'model="series"' in response.read().decode()
        req = urllib.request.Request(f"{url}/openapi.json", headers={"Authorization": f"Bearer {api}"})
        with urllib.request.urlopen(req, timeout=10) as response:  # and read its document with the other one
            assert "/models/series/predict" in json.loads(response.read())["paths"]
        backend = _backend_group(process.pid, bundle)
    finally:
        process.kill()  # kill -9: no chance to stop its backends
        process.wait()
    _wait_for(lambda: not Path(f"/proc/{backend}").exists() or _zombie(backend), "stopped", timeout=20)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
