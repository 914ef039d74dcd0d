"""Shadow and canary in the multi-model front, end to end: real processes and HTTP (`python -m mlship.runtime
serve-service FILE`). Five model names, each a stable version and a candidate of the same small model (the
length class of a string, with another threshold: they disagree on known rows), a constant predictor, and one
that fails on long strings:

- lengths: shadow 100% of a candidate that disagrees on 2-character strings: counted exactly under load, logged;
- split: canary 10%, sticky on X-User-ID: the split, stickiness, X-Model-Version, explicit versions;
- constant: shadow of a constant predictor: the guard trips, the index and /models say so, zero client errors;
- flaky: canary 50% of a candidate that fails some requests: each retried on the default, then the guard trips.
- strict: canary 50% of a candidate whose schema refuses what the default takes: answered by the default, tripped;
and last, a reload of an edited file (a promoted shadow, a canary turned shadow).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlship.runtime import _contract as contract
from tests.support.docker import write_tiny_bundle
from tests.support.servers import clean_env, free_port, shut_down, wait_until_ready

pytestmark = pytest.mark.e2e

_CLASSIFIER = """\
# The length class of each string: a stand-in for a classifier whose versions differ in one parameter.
THRESHOLD = {threshold}


def predict(X):
    return ["long" if len(text) >= THRESHOLD else "short" for text in X]


METHODS = {{"predict": predict}}
"""
_CONSTANT = """\
def predict(X):
    return ["short" for _ in X]


METHODS = {"predict": predict}
"""
_FAILING = """\
def predict(X):
    if any(len(text) > 4 for text in X):
        raise RuntimeError("this version fails on long strings")
    return ["long" if len(text) >= 3 else "short" for text in X]


METHODS = {"predict": predict}
"""


def _bundle(dest: Path, version: str, predictor: str, answer: Any) -> Path:
    """A tiny bundle (no third-party model package) whose predictor is `predictor`, golden outputs `answer`."""
    write_tiny_bundle(dest, name="model", version=version)
    (dest / "predictor.py").write_text(predictor)
    read = contract.read(dest, check_digests=False)
    cases = tuple(replace(case, expected=[answer(text) for text in case.instances]) for case in read.golden.cases)
    contract.write(dest, read.manifest, replace(read.golden, cases=cases))
    return dest


def _integers_only(dest: Path) -> Path:
    """A candidate whose input schema takes integers: it refuses (400) the strings the stable version takes."""
    write_tiny_bundle(dest, name="model", version="2.0.0")
    (dest / "predictor.py").write_text(_CONSTANT)
    read = contract.read(dest, check_digests=False)
    schema = contract.InputSchema.from_json({"kind": "list", "type": "integer", "example": 1})
    cases = (contract.GoldenCase("predict-0", "predict", [1], ["short"]),)
    contract.write(dest, replace(read.manifest, input=schema), replace(read.golden, cases=cases))
    return dest


def _by_threshold(threshold: int) -> Any:
    return lambda text: "long" if len(text) >= threshold else "short"


SERVICE = """\
[service]
name = "rollouts"

{models}

[routes.lengths]
default = "1.0.0"
shadow = {{ version = "2.0.0", percent = 100, window = 100000 }}

[routes.split]
default = "1.0.0"
canary = {{ version = "2.0.0", percent = 10, sticky = "X-User-ID" }}

[routes.constant]
default = "1.0.0"
shadow = {{ version = "3.0.0", percent = 100, max_disagreement = 0.1, window = 20 }}

[routes.flaky]
default = "1.0.0"
canary = {{ version = "2.0.0", percent = 50, max_error_rate = 0.05, window = 20 }}

[routes.strict]
default = "1.0.0"
canary = {{ version = "2.0.0", percent = 50, max_error_rate = 0.05, window = 20 }}
"""


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    folder = tmp_path_factory.mktemp("rollouts")
    stable = _bundle(folder / "v1", "1.0.0", _CLASSIFIER.format(threshold=3), _by_threshold(3))
    candidate = _bundle(folder / "v2", "2.0.0", _CLASSIFIER.format(threshold=2), _by_threshold(2))
    constant = _bundle(folder / "v3", "3.0.0", _CONSTANT, lambda text: "short")
    failing = _bundle(folder / "v2-failing", "2.0.0", _FAILING, _by_threshold(3))
    pairs = {"lengths": (stable, candidate), "split": (stable, candidate), "constant": (stable, constant),
             "flaky": (stable, failing), "strict": (stable, _integers_only(folder / "v2-integers"))}
    models = "\n".join(f'[[models]]\nbundle = "{bundle}"\nname = "{name}"\n'
                       for name, pair in pairs.items() for bundle in pair)
    service = folder / "mlship.toml"
    service.write_text(SERVICE.format(models=models))
    port, log = free_port(), folder / "front.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-B", "-m", "mlship.runtime", "serve-service", str(service), "--port", str(port),
             "--workers", "1", "--pid-file", str(folder / "front.pid")],
            stdout=out, stderr=subprocess.STDOUT, env=clean_env(MLSHIP_SHADOW_LOG=str(folder / "shadow.jsonl")))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(f"{url}/readyz", process, log=log, timeout=120)
        yield url, folder
    finally:
        code = shut_down(process)
    assert code == [0], log.read_text()


def _post_many(url: str, path: str, texts: list[Any], users: list[str | None] | None = None,
               threads: int = 8) -> list[tuple[int, str, Any]]:
    """POST {"instances": [text]} for every text from `threads` kept-alive connections at once: (status,
    X-Model-Version, predictions or error) in the order of `texts`."""
    host, port = url.removeprefix("http://").split(":")
    results: list[tuple[int, str, Any]] = [(0, "", None)] * len(texts)

    def work(offset: int) -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        for index in range(offset, len(texts), threads):
            headers = {"Content-Type": "application/json"}
            user = users[index] if users is not None else None
            if user is not None:
                headers["X-User-ID"] = user
            connection.request("POST", path, json.dumps({"instances": [texts[index]]}), headers)
            response = connection.getresponse()
            answer = json.loads(response.read())
            results[index] = (response.status, response.getheader("X-Model-Version") or "",
                              answer.get("predictions", answer))
        connection.close()

    workers = [threading.Thread(target=work, args=(offset,)) for offset in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return results


def _get(url: str) -> Any:
    host, port = url.removeprefix("http://").split("/", 1)[0].split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    path = "/" + url.removeprefix("http://").split("/", 1)[1]
    connection.request("POST" if path.endswith("/index") else "GET", path, "{}" if path.endswith("/index") else None)
    body = connection.getresponse().read().decode()
    connection.close()
    return body if path == "/metrics" else json.loads(body)


def _samples(url: str, family: str, **labels: str) -> float:
    total = 0.0
    for metric in text_string_to_metric_families(_get(f"{url}/metrics")):
        for sample in metric.samples:
            if sample.name == family and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def _wait_for(condition: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not {what} after {timeout:g} s"
        time.sleep(0.2)


def test_shadow_counts_agreement_under_load_and_logs_each_disagreement(front: tuple[str, Path]) -> None:
    url, folder = front
    texts = ["x" * (1 + n % 5) for n in range(400)]  # lengths 1..5: the versions disagree on length 2 only
    answers = _post_many(url, "/models/lengths/predict", texts)
    assert all(status == 200 and version == "1.0.0" for status, version, _ in answers), answers[:3]
    assert [predictions[0] for _, _, predictions in answers] == [_by_threshold(3)(text) for text in texts]
    # What `mlship compare` (the offline comparison, each bundle in its own process) says about the same rows.
    (folder / "rows.jsonl").write_text("".join(json.dumps(text) + "\n" for text in texts))
    compared = subprocess.run(
        [sys.executable, "-m", "mlship", "compare", str(folder / "v1"), str(folder / "v2"), "--data",
         str(folder / "rows.jsonl"), "--diff-out", str(folder / "offline.jsonl")],
        capture_output=True, text=True, env=clean_env(), timeout=120)
    assert compared.returncode == 0, compared.stderr
    offline = [json.loads(line) for line in (folder / "offline.jsonl").read_text().splitlines()]
    disagreeing = sum(row["input_set"] == "data" for row in offline)
    assert disagreeing == sum(len(text) == 2 for text in texts)  # 80 of 400
    labels = {"model": "lengths", "stable": "1.0.0", "candidate": "2.0.0"}
    family = "mlship_shadow_comparisons_total"
    _wait_for(lambda: _samples(url, family, **labels) == len(texts), "every copy compared")
    assert _samples(url, family, result="agree", **labels) == len(texts) - disagreeing
    assert _samples(url, family, result="disagree", **labels) == disagreeing
    assert _samples(url, family, result="error", **labels) == 0
    records = [json.loads(line) for line in (folder / "shadow.jsonl").read_text().splitlines()]
    mine = [record for record in records if record["model"] == "lengths"]
    assert len(mine) == disagreeing  # the shadow's log holds the rows the offline comparison names
    assert sorted(r["input"]["instances"][0] for r in mine) == sorted(r["input"] for r in offline
                                                                      if r["input_set"] == "data")
    assert mine[0]["input"] == {"instances": ["xx"]} and mine[0]["stable_output"] == ["short"]
    assert mine[0]["candidate_output"] == ["long"] and mine[0]["request_id"]


def test_canary_splits_by_weight_sticks_per_user_and_names_the_version(front: tuple[str, Path]) -> None:
    url, _ = front
    answers = _post_many(url, "/models/split/predict", ["xx"] * 1000)
    assert all(status == 200 for status, _, _ in answers)
    versions = [version for _, version, _ in answers]
    share = versions.count("2.0.0") / len(versions)
    assert abs(share - 0.10) <= 0.015, share
    for _, version, predictions in answers:  # each answer is the one the version it names gives
        assert predictions == [{"1.0.0": "short", "2.0.0": "long"}[version]]
    users = [f"user-{n % 100}" for n in range(1000)]
    sticky = _post_many(url, "/models/split/predict", ["xx"] * 1000, users)
    seen: dict[str, set[str]] = {}
    for user, (status, version, _) in zip(users, sticky, strict=True):
        assert status == 200
        seen.setdefault(user, set()).add(version)
    assert all(len(versions) == 1 for versions in seen.values()), seen  # one user, one version, every time
    assert {version for versions in seen.values() for version in versions} == {"1.0.0", "2.0.0"}
    for version in ("1.0.0", "2.0.0"):  # explicit versions always answer, whatever the split
        explicit = _post_many(url, f"/models/split/versions/{version}/predict", ["xx"] * 20, threads=2)
        assert {answer[1] for answer in explicit} == {version}
    assert _samples(url, "mlship_canary_requests_total", model="split", version="2.0.0") >= 100


def test_the_guard_takes_a_constant_shadow_out_with_zero_client_errors(front: tuple[str, Path]) -> None:
    url, _ = front
    texts = ["x" * (1 + n % 5) for n in range(300)]  # the constant predictor is wrong on 3 rows of 5
    answers = _post_many(url, "/models/constant/predict", texts)
    assert all(status == 200 and version == "1.0.0" for status, version, _ in answers)
    labels = {"model": "constant", "stable": "1.0.0", "candidate": "3.0.0"}
    _wait_for(lambda: _samples(url, "mlship_guard_trips_total", **labels) == 1, "the guard tripped")
    compared = _samples(url, "mlship_shadow_comparisons_total", **labels)
    assert 20 <= compared < len(texts)  # it tripped after its window, and got no copies after that
    entry = next(e for e in _get(f"{url}/v2/repository/index") if e["name"] == "constant" and e["version"] == "3.0.0")
    assert entry["rollout"] == "shadow tripped" and "disagreement rate" in entry["reason"], entry
    model = next(m for m in _get(f"{url}/models")["models"] if m["name"] == "constant")
    assert model["rollout"]["state"] == "tripped" and model["default"] == "1.0.0"


def test_a_failing_canary_is_retried_on_the_default_then_taken_out(front: tuple[str, Path]) -> None:
    url, _ = front
    texts = ["x" * 6] * 200  # the candidate fails every one of these
    answers = _post_many(url, "/models/flaky/predict", texts)
    assert [status for status, _, _ in answers] == [200] * len(texts)  # zero client errors
    assert {version for _, version, _ in answers} == {"1.0.0"}
    labels = {"model": "flaky", "stable": "1.0.0", "candidate": "2.0.0"}
    assert _samples(url, "mlship_guard_trips_total", **labels) == 1
    assert 20 <= _samples(url, "mlship_canary_retries_total", **labels) < 50  # until the guard tripped
    entry = next(e for e in _get(f"{url}/v2/repository/index") if e["name"] == "flaky" and e["version"] == "2.0.0")
    assert entry["rollout"] == "canary tripped" and "error rate" in entry["reason"]
    assert entry["state"] == "READY"  # it still answers its explicit version route


def test_a_canary_that_refuses_what_the_default_takes_is_answered_by_the_default(front: tuple[str, Path]) -> None:
    url, _ = front
    answers = _post_many(url, "/models/strict/predict", ["xx"] * 100)
    assert {(status, version) for status, version, _ in answers} == {(200, "1.0.0")}  # its 400s never reach a client
    labels = {"model": "strict", "stable": "1.0.0", "candidate": "2.0.0"}
    assert _samples(url, "mlship_guard_trips_total", **labels) == 1
    after = _post_many(url, "/models/strict/predict", [7] * 10, threads=2)  # what only the candidate takes
    assert {(status, version) for status, version, _ in after} == {(400, "1.0.0")}  # out of traffic: the default's
    entry = next(e for e in _get(f"{url}/v2/repository/index") if e["name"] == "strict" and e["version"] == "2.0.0")
    assert entry["rollout"] == "canary tripped" and "error rate" in entry["reason"]


def test_a_reload_applies_changed_rollouts_and_a_promoted_candidate_splits_nothing(front: tuple[str, Path]) -> None:
    """Last in this module: it rewrites the service file. lengths: its shadow promoted (default = the candidate);
    split: canary 10% -> shadow; the unchanged rollouts keep their counts and their guard's verdict."""
    url, folder = front
    service = folder / "mlship.toml"
    text = service.read_text()
    first = text.index('default = "1.0.0"')
    text = text[:first] + 'default = "2.0.0"' + text[first + len('default = "1.0.0"'):]  # [routes.lengths]
    text = text.replace('canary = { version = "2.0.0", percent = 10, sticky = "X-User-ID" }',
                        'shadow = { version = "2.0.0", percent = 100 }')
    service.write_text(text)
    os.kill(int((folder / "front.pid").read_text()), signal.SIGHUP)

    def rollouts() -> dict[str, Any]:
        return {m["name"]: m.get("rollout") for m in _get(f"{url}/models")["models"]}

    _wait_for(lambda: rollouts()["split"] is not None and rollouts()["split"]["mode"] == "shadow", "reloaded")
    now = rollouts()
    assert now["lengths"] is None  # its candidate is the default now
    assert now["constant"]["state"] == "tripped" and now["flaky"]["state"] == "tripped"  # kept
    answers = _post_many(url, "/models/lengths/predict", ["xx"] * 20, threads=2)
    assert {(status, version) for status, version, _ in answers} == {(200, "2.0.0")}
    answers = _post_many(url, "/models/split/predict", ["xx"] * 50, threads=2)
    assert {(status, version) for status, version, _ in answers} == {(200, "1.0.0")}
    labels = {"model": "split", "stable": "1.0.0", "candidate": "2.0.0"}
    _wait_for(lambda: _samples(url, "mlship_shadow_comparisons_total", result="disagree", **labels) == 50,
              "the new shadow compared")

