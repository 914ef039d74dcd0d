"""Notebook classes that a library pickles by reference to `__main__` (issue 10, item 2): skorch around a notebook
nn.Module (its __getstate__ pickles the module with the standard pickler), and a notebook class pickled with
`pickle.dumps` inside a library-style object's state; and PyTorch modules called directly (item 6): after
load_state_dict under inference_mode, and a whole module saved with torch.save and loaded back. Each is packaged once (real kernel, golden cases replayed in
a fresh interpreter), then served over real HTTP, where a client sending the notebook's rows gets its answers."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.servers import serving

pytestmark = pytest.mark.e2e

# notebook -> (served predict, names registered in __main__)
CHOSEN = {
    "skorch_module": ("net.predict(X)", ["ClassifierModule"]),
    "pickled_inside": ("pipe.predict(X)", ["Scale"]),
    "torch_direct_call": ("restored(torch.as_tensor(X, dtype=torch.float32))", []),
    "torch_saved_module": ("loaded(torch.tensor(X, dtype=torch.float32))", []),
}
# what a client sends: the input schema of each
INPUT = {
    "skorch_module": ("float32", [None, 4]),
    "pickled_inside": ("float64", [None, 3]),
    "torch_direct_call": ("float32", [None, 4]),
    "torch_saved_module": ("float64", [None, 3]),
}


@pytest.fixture(scope="module")
def packaged(cli: Any, samples: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("pickles")
    for name in CHOSEN:
        result = cli("package", samples / f"{name}.ipynb", "-o", out / name)
        assert result.exit_code == 0, result.output
        assert "golden cases verified in a fresh interpreter" in result.output
    return {name: out / name for name in CHOSEN}


@pytest.fixture(scope="module")
def urls(packaged: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    logs = tmp_path_factory.mktemp("pickle-logs")
    with serving(packaged, logs) as urls:
        yield urls


@pytest.mark.parametrize("name", sorted(CHOSEN))
def test_the_notebook_class_is_defined_and_registered_before_the_values_load(packaged: dict[str, Path],
                                                                             name: str) -> None:
    bundle = packaged[name]
    manifest = json.loads((bundle / "mlship.json").read_text())
    predict, registered = CHOSEN[name]
    assert manifest["methods"][0] == {"name": "predict", "expression": predict}
    assert (manifest["input"]["kind"], manifest["input"]["dtype"], manifest["input"]["shape"]) == \
        ("ndarray", *INPUT[name])
    source = (bundle / "predictor.py").read_text()
    assert ('setattr(_mlship_sys.modules["__main__"]' in source) == bool(registered)
    for cls in registered:
        assert source.index(f"class {cls}") < source.index('setattr(_mlship_sys.modules["__main__"]') \
            < source.index("_mlship_pickle.load(")


@pytest.mark.parametrize("name", sorted(CHOSEN))
def test_a_client_gets_the_notebooks_answers_over_http(packaged: dict[str, Path], urls: dict[str, str],
                                                       name: str) -> None:
    cases = [c for c in json.loads((packaged[name] / "golden.json").read_text())["cases"] if c["method"] == "predict"]
    body = json.dumps({"instances": [c["instances"][0] for c in cases]}).encode()
    request = urllib.request.Request(f"{urls[name]}/predict", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.loads(response.read())
    assert answer["predictions"] == [c["expected"][0] for c in cases]
