"""MLflow's own client (ScoringServerClient, in a venv of its own) against `mlship serve`, for every input kind.

Each sample bundle is served over real HTTP; the client sends the bundle's golden input rows in every form a
MLflow client uses (a DataFrame as `dataframe_split` with index and columns, the same without columns, records,
`instances`, `inputs` as rows, records or columns, numpy arrays, CSV), and what it reads back must be the
notebook's own outputs (golden.json). A bad body must be MLflow's error shape: a 400 whose message names the field.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mlship.runtime._codec import outputs_match
from tests.support.mlflow_client import CLIENT_SCRIPT, mlflow_client_python
from tests.support.servers import clean_env, free_port, shut_down, wait_until_ready

# One bundle per input kind: frames (iris_frame; mixed: every JSON type, with missing values), records, columns
# (MLflow's named tensors), an array (iris_array, MLflow's unnamed tensor), a list of strings (text), a named series.
SAMPLES = ("iris_frame", "mixed", "iris_records", "iris_columns", "iris_array", "text", "series")
COLUMN_FORMS = ("DataFrame", "dataframe_records", "CSV", "instances records", "instances columns", "inputs columns",
                "list of records (inputs)")
ROW_FORMS = ("DataFrame", "dataframe_records", "CSV", "ndarray (inputs)", "list (inputs)", "instances",
             "dataframe_split without columns")
ROW_SAMPLES = ("iris_array", "text", "series")
FRAME_SAMPLES = ("iris_frame", "mixed")  # also without column names: the values in schema order
CASES = [(sample, form) for sample in SAMPLES
         for form in (ROW_FORMS if sample in ROW_SAMPLES else COLUMN_FORMS)]
CASES += [(sample, "dataframe_split without columns") for sample in FRAME_SAMPLES]


def _plan_entry(sample: str, bundle: Path, url: str) -> dict[str, Any]:
    manifest = json.loads((bundle / "mlship.json").read_text())
    golden = json.loads((bundle / "golden.json").read_text())
    schema = manifest["input"]
    default = "predict" if "predict" in [m["name"] for m in manifest["methods"]] else manifest["methods"][0]["name"]
    cases = [case for case in golden["cases"] if case["method"] == default]
    rows = [case["instances"][0] for case in cases]
    if schema.get("columns"):
        names = [column["name"] for column in schema["columns"]]
        rows = [[row[name] for name in names] for row in rows]
    else:
        names = schema.get("name")
    return {"sample": sample, "url": url, "kind": schema["kind"], "names": names, "rows": rows,
            "expected": [value for case in cases for value in case["expected"]],
            "rtol": golden.get("rtol", 1e-6), "atol": golden.get("atol", 1e-9)}


@pytest.fixture(scope="module")
def servers(sample_bundle: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Any]]:
    """Every sample served by `mlship serve` (one worker each), started together."""
    logs = tmp_path_factory.mktemp("mlflow-client-logs")
    started = []
    try:
        for sample in SAMPLES:
            port, log = free_port(), logs / f"{sample}.log"
            with log.open("wb") as output:  # the server keeps its own copy of the descriptor
                process = subprocess.Popen(
                    [sys.executable, "-m", "mlship", "serve", str(sample_bundle(sample)), "--port", str(port),
                     "--workers", "1"],
                    stdout=output, stderr=subprocess.STDOUT, env=clean_env())
            started.append((sample, f"http://127.0.0.1:{port}", process, log))
        for _, url, process, log in started:
            wait_until_ready(f"{url}/readyz", process, log=log, timeout=120, interval=0.2)
        yield [_plan_entry(sample, sample_bundle(sample), url) for sample, url, _, _ in started]
    finally:
        shut_down(*(process for *_, process, _log in started))


@pytest.fixture(scope="module")
def answers(servers: list[Any]) -> dict[str, dict[str, Any]]:
    """What MLflow's client got from each server for each form: one run of the client venv for them all."""
    python = mlflow_client_python()
    result = subprocess.run([str(python), str(CLIENT_SCRIPT)], input=json.dumps(servers), capture_output=True,
                            text=True, timeout=600, env=clean_env())
    assert result.returncode == 0, result.stderr[-4000:]
    answers: dict[str, dict[str, Any]] = json.loads(result.stdout)
    return answers


@pytest.mark.parametrize(("sample", "form"), CASES)
def test_mlflows_client_gets_the_notebooks_outputs(servers: list[Any], answers: dict[str, Any], sample: str,
                                                   form: str) -> None:
    server = next(entry for entry in servers if entry["sample"] == sample)
    answer = answers[sample][form]
    assert answer["status"] == 200, answer
    same, detail = outputs_match(answer["predictions"], server["expected"], server["rtol"], server["atol"])
    assert same, f"{form}: {detail}: {answer['predictions']} != {server['expected']}"
    assert answer["rows"] == len(server["rows"])  # MLflow's get_predictions() read it into a frame of that many rows


@pytest.mark.parametrize("sample", SAMPLES)
def test_a_bad_body_is_mlflows_error_shape(answers: dict[str, Any], sample: str) -> None:
    answer = answers[sample]["bad body"]
    assert answer["status"] == 400
    assert set(answer["error"]) == {"error_code", "message"} and answer["error"]["error_code"] == "BAD_REQUEST"
    assert '"dataframe_split"' in answer["error"]["message"]
