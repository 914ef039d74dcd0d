"""The packaged iris example, served by `mlship serve`: a value its pipeline refuses is a 422 with scikit-learn's
message on every protocol, not a 500 (docs/RUNTIME.md, "A model's rejection of an input")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.support.servers import free_port, shut_down, wait_until_ready

pytestmark = pytest.mark.e2e

MESSAGE = "the model rejected the input: ValueError: Input X contains infinity or a value too large for dtype('float64')."


def _post(url: str, body: Any) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_iris_answers_422_to_a_value_its_scaler_makes_infinite(
    example_bundles: dict[str, Path], tmp_path: Path
) -> None:
    bundle = example_bundles["iris"]
    golden = json.loads((bundle / "golden.json").read_text())
    row = next(case["instances"][0] for case in golden["cases"] if case["method"] == "predict")
    first = next(iter(row))
    huge = {**row, first: 1.7e308}  # a finite float64; StandardScaler makes it inf
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "server.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "mlship", "serve", str(bundle), "--port", str(port)],
                               stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "MLSHIP_PLAIN": "1"})
    try:
        wait_until_ready(f"{url}/readyz", process, log=tmp_path / "server.log", interval=0.2)
        assert _post(f"{url}/predict", {"instances": [huge]}) == (422, {"error": MESSAGE})
        assert _post(f"{url}/invocations", {"dataframe_records": [huge]}) == (
            422, {"error_code": "BAD_REQUEST", "message": MESSAGE}
        )
        status, answer = _post(f"{url}/predict", {"instances": [row]})
        assert status == 200 and len(answer["predictions"]) == 1
    finally:
        code = shut_down(process, timeout=15)
        log.close()
    assert code == [0], (tmp_path / "server.log").read_text()
    assert "rejected the input" in (tmp_path / "server.log").read_text()
