"""The served schema is what a client has (real kernel, fresh interpreter, real HTTP): columns the served path
never reads (ids, labels, helper bands, design-matrix terms, columns the served code derives again) are left out of
the schema and the golden rows, ignored and named when sent, refused in strict mode."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.servers import clean_env, free_port, shut_down, wait_until_ready

pytestmark = pytest.mark.e2e

# notebook -> (what a client sends, what is ignored if sent), as packaging must find them
CHOSEN = {
    "client_columns": (["plan", "tenure", "monthly_charges", "support_tickets"],
                       ["customer_id", "churn", "tenure_band", "charges_per_month", "tickets_per_year"]),
    "formula_model": (["x1", "x2", "group"], ["y", "Intercept", "C(group)[T.b]", "C(group)[T.c]", "x1:x2"]),
}
EXAMPLES = {
    "taxi": (["lpep_pickup_datetime", "PULocationID", "DOLocationID", "passenger_count", "trip_distance"],
             ["VendorID", "lpep_dropoff_datetime", "fare_amount", "payment_type", "duration", "PU_DO", "pickup_hour"]),
    "churn": (["signup_date", "last_login", "plan", "contract", "payment_method", "region", "monthly_charges",
               "total_charges", "support_tickets", "logins_30d"],
              ["customer_id", "churned", "tenure_months", "days_since_login", "churn"]),
}
EXTRAS = {"customer_id": "C99999", "churn": 1, "Intercept": 1.0, "note": "not a feature"}
HEADER = "Mlship-Ignored-Columns"


@pytest.fixture(scope="module")
def bundles(cli: Any, samples: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("client-columns")
    for name in CHOSEN:
        result = cli("package", samples / f"{name}.ipynb", "-o", out / name)
        assert result.exit_code == 0, result.output
        assert "golden cases verified in a fresh interpreter" in result.output
        assert f"a client sends: {', '.join(CHOSEN[name][0])}; ignored if sent: " in " ".join(result.output.split())
    return {name: out / name for name in CHOSEN}


def _manifest(bundle: Path) -> dict[str, Any]:
    return dict(json.loads((bundle / "mlship.json").read_text()))


def _cases(bundle: Path) -> list[dict[str, Any]]:
    return list(json.loads((bundle / "golden.json").read_text())["cases"])


def _check_schema(bundle: Path, sends: list[str], ignored: list[str]) -> None:
    schema = _manifest(bundle)["input"]
    assert [column["name"] for column in schema["columns"]] == sends
    assert schema["ignored"] == ignored
    assert list(schema["example"]) == sends
    assert all(list(case["instances"][0]) == sends for case in _cases(bundle))


@pytest.mark.parametrize("name", sorted(CHOSEN))
def test_sample_schema_is_what_a_client_has(bundles: dict[str, Path], name: str) -> None:
    _check_schema(bundles[name], *CHOSEN[name])


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_schema_is_what_a_client_has(example_bundles: dict[str, Path], name: str) -> None:
    _check_schema(example_bundles[name], *EXAMPLES[name])


def test_inspect_shows_the_client_schema(cli: Any, samples: Path) -> None:
    result = cli("inspect", samples / "formula_model.ipynb")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert ("a client sends: x1, x2, group; ignored if sent: y, Intercept, C(group)[T.b], C(group)[T.c], x1:x2"
            in text)


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    return bool(a == b)


def _post(url: str, body: Any) -> tuple[int, Any, str | None]:
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read()), resp.headers.get(HEADER)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), exc.headers.get(HEADER)


class _Server:
    def __init__(self, bundle: Path, log: Path, **env: str) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = log.open("wb")
        port = self.url.rsplit(":", 1)[1]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlship", "serve", str(bundle), "--port", port, "--workers", "1"],
            stdout=self.log, stderr=subprocess.STDOUT, env=clean_env(MLSHIP_PLAIN="1", **env))
        wait_until_ready(f"{self.url}/readyz", self.proc, log=log, interval=0.2)

    def stop(self) -> None:
        shut_down(self.proc, timeout=15)
        self.log.close()


@pytest.fixture(scope="module")
def servers(bundles: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, _Server]]:
    logs = tmp_path_factory.mktemp("client-columns-logs")
    started: dict[str, _Server] = {}
    try:
        for name, bundle in bundles.items():
            started[name] = _Server(bundle, logs / f"{name}.log")
        started["strict"] = _Server(bundles["client_columns"], logs / "strict.log", MLSHIP_STRICT_COLUMNS="1")
        yield started
    finally:
        for server in started.values():
            server.stop()


@pytest.mark.parametrize("name", sorted(CHOSEN))
def test_a_client_sending_only_the_features_gets_the_notebook_s_answers(
    bundles: dict[str, Path], servers: dict[str, _Server], name: str
) -> None:
    cases = _cases(bundles[name])
    for case in cases:
        status, answer, header = _post(f"{servers[name].url}/{case['method']}", {"instances": case["instances"]})
        assert status == 200 and header is None, answer
        assert _close(answer["predictions"], case["expected"]), (case["id"], answer, case["expected"])


@pytest.mark.parametrize("name", sorted(CHOSEN))
def test_extra_columns_are_ignored_and_named(
    bundles: dict[str, Path], servers: dict[str, _Server], name: str
) -> None:
    cases = [case for case in _cases(bundles[name]) if case["method"] == "predict"]
    rows = [{**EXTRAS, **case["instances"][0]} for case in cases]
    status, answer, header = _post(f"{servers[name].url}/predict", {"instances": rows})
    assert status == 200, answer
    assert _close(answer["predictions"], [case["expected"][0] for case in cases])
    assert header is not None and json.loads(header) == sorted(set(EXTRAS) - set(CHOSEN[name][0]))
    # MLflow's protocol the same way
    status, answer, header = _post(f"{servers[name].url}/invocations", {"dataframe_records": rows})
    assert status == 200 and header is not None and "note" in json.loads(header)
    log = servers[name].log.name
    assert "ignoring columns the model does not take" in Path(log).read_text()


def test_strict_mode_answers_400(bundles: dict[str, Path], servers: dict[str, _Server]) -> None:
    case = _cases(bundles["client_columns"])[0]
    status, answer, _ = _post(f"{servers['strict'].url}/predict", {"instances": [{**case["instances"][0], **EXTRAS}]})
    assert status == 400 and "strict mode: MLSHIP_STRICT_COLUMNS=1" in answer["error"], answer
    assert _post(f"{servers['strict'].url}/predict", {"instances": case["instances"]})[0] == 200


def test_mlship_predict_ignores_and_names_a_file_s_extra_fields(bundles: dict[str, Path], tmp_path: Path) -> None:
    bundle = bundles["formula_model"]
    cases = [case for case in _cases(bundle) if case["method"] == "predict"]
    source = tmp_path / "in.csv"
    with source.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["row_id", "y", *CHOSEN["formula_model"][0]])
        writer.writeheader()
        for index, case in enumerate(cases):
            writer.writerow({"row_id": index, "y": 0.0, **case["instances"][0]})
    run = [sys.executable, "-m", "mlship", "predict", str(bundle), "-i", str(source), "-o", str(tmp_path / "out.csv"),
           "--id-column", "row_id"]
    done = subprocess.run(run, capture_output=True, text=True, env=clean_env(MLSHIP_PLAIN="1"), timeout=120)
    assert done.returncode == 0, done.stderr
    assert "ignored the fields the model does not take: y" in done.stderr
    with (tmp_path / "out.csv").open() as fh:
        predicted = [float(row["prediction"]) for row in csv.DictReader(fh)]
    assert _close(predicted, [case["expected"][0] for case in cases])
    strict = subprocess.run(run, capture_output=True, text=True, timeout=120,
                            env=clean_env(MLSHIP_PLAIN="1", MLSHIP_STRICT_COLUMNS="1"))
    assert strict.returncode == 1 and 'fields the model does not take: "y"' in strict.stderr
