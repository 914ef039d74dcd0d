"""Every example notebook: package (real kernel), verify in a fresh process, serve over real HTTP."""

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

from mlship.runtime._contract import FORMAT
from tests.support.servers import free_port, shut_down, wait_until_ready

pytestmark = pytest.mark.e2e

EXAMPLES = ["iris/iris.ipynb", "reviews/reviews.ipynb", "churn/churn.ipynb", "taxi/taxi.ipynb"]
NOT_SERVING = ("ipykernel", "ipython", "jupyter", "matplotlib", "seaborn", "nbformat", "nbclient", "typer", "rich",
               "docker", "jinja2", "mlship")


@pytest.fixture(scope="module")
def bundles(example_bundles: dict[str, Path]) -> dict[str, Path]:
    return example_bundles


@pytest.mark.parametrize("name", [Path(e).stem for e in EXAMPLES])
def test_bundle_layout_and_manifest(bundles: dict[str, Path], name: str) -> None:
    bundle = bundles[name]
    manifest = json.loads((bundle / "mlship.json").read_text())
    assert manifest["name"] == name and manifest["version"] == "0.1.0" and manifest["format"] == FORMAT
    assert manifest["python"]["version"].startswith(f"{sys.version_info.major}.{sys.version_info.minor}.")
    assert {m["name"] for m in manifest["methods"]} >= {"predict"}
    for rel, digest in manifest["artifacts"].items():
        import hashlib

        assert hashlib.sha256((bundle / rel).read_bytes()).hexdigest() == digest
    reqs = (bundle / "requirements.txt").read_text().split()
    assert reqs == manifest["requirements"]
    names = {r.split("==")[0].lower() for r in reqs}
    assert "scikit-learn" in names and {"starlette", "uvicorn"} <= names
    assert not names & set(NOT_SERVING), names
    assert all("==" in r for r in reqs)
    golden = json.loads((bundle / "golden.json").read_text())
    assert len(golden["cases"]) >= 5
    # the served code is readable source, and the notebook's training code is not in it
    predictor = (bundle / "predictor.py").read_text()
    assert ".fit(" not in predictor and "plt." not in predictor


def test_reviews_ships_the_cleaning_function_as_source(bundles: dict[str, Path]) -> None:
    predictor = (bundles["reviews"] / "predictor.py").read_text()
    assert "def clean_text(" in predictor
    assert "[clean_text(t) for t in X]" in predictor


def test_taxi_ships_the_inference_function_and_its_arguments(bundles: dict[str, Path]) -> None:
    predictor = (bundles["taxi"] / "predictor.py").read_text()
    assert "def predict(df, dv, model):" in predictor
    assert "return predict(X, dv, model)" in predictor
    assert 'dv = _mlship_values["dv"]' in predictor


def test_churn_custom_class_loads_without_the_notebook(bundles: dict[str, Path]) -> None:
    # A fresh interpreter that has never seen __main__'s class still loads the pipeline (cloudpickle by value).
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from mlship_runtime._bundle import load_bundle; "
            "b = load_bundle(sys.argv[1]); print(sorted(b.methods))")
    out = subprocess.run([sys.executable, "-c", code, str(bundles["churn"])], capture_output=True, text=True,
                         cwd="/", check=True)
    assert "predict" in out.stdout


@pytest.mark.parametrize("name", [Path(e).stem for e in EXAMPLES])
def test_verify_command(bundles: dict[str, Path], cli: Any, name: str) -> None:
    result = cli("verify", bundles[name])
    assert result.exit_code == 0, result.output
    assert "golden cases match the notebook" in result.output


def _post(url: str, body: bytes, content_type: str = "application/json") -> tuple[int, Any]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize("name", [Path(e).stem for e in EXAMPLES])
def test_serve_over_http(bundles: dict[str, Path], cli: Any, name: str, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "mlship", "serve", str(bundles[name]), "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "MLSHIP_PLAIN": "1"})
    try:
        wait_until_ready(f"{url}/readyz", proc, log=tmp_path / "server.log", interval=0.2)
        result = cli("verify", bundles[name], "--url", url)
        assert result.exit_code == 0, result.output
        golden = json.loads((bundles[name] / "golden.json").read_text())
        rows = [c["instances"][0] for c in golden["cases"] if c["method"] == "predict"]
        status, answer = _post(f"{url}/predict", json.dumps({"instances": rows}).encode())
        assert status == 200 and len(answer["predictions"]) == len(rows)
        # curl -d sends form-encoded by default; the README's example must work
        status, _ = _post(f"{url}/predict", json.dumps({"instances": rows}).encode(),
                          "application/x-www-form-urlencoded")
        assert status == 200
        assert _post(f"{url}/predict", b"{not json")[0] == 400
        assert _post(f"{url}/predict", json.dumps({"instances": []}).encode())[0] == 400
        with urllib.request.urlopen(f"{url}/metadata", timeout=5) as resp:
            assert json.loads(resp.read())["name"] == name
    finally:
        code = shut_down(proc, timeout=15)
        log.close()
    assert code == [0], (tmp_path / "server.log").read_text()


def test_package_is_reproducible(examples: Path, cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    nb = examples / "churn" / "churn.ipynb"
    for i in (1, 2):
        assert cli("package", nb, "-o", tmp_path / f"b{i}").exit_code == 0
    files = sorted(p.relative_to(tmp_path / "b1") for p in (tmp_path / "b1").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "b2") for p in (tmp_path / "b2").rglob("*") if p.is_file())
    for rel in files:
        assert (tmp_path / "b1" / rel).read_bytes() == (tmp_path / "b2" / rel).read_bytes(), rel
    assert json.loads((tmp_path / "b1" / "mlship.json").read_text())["created_at"] == "2023-11-14T22:13:20Z"
