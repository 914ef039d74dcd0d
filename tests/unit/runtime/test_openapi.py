"""GET /openapi.json: the bundle's real input schema, and a bounded fuzz of the whole API from that document."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from mlship.runtime._app import check_ready, create_app
from mlship.runtime._bundle import load_bundle
from mlship.runtime._settings import Settings
from tests.support.fuzz import MAX_EXAMPLES, PHASES, fuzz_app

Serve = Callable[..., TestClient]
COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]


def test_the_document_names_columns_types_and_the_example(serve: Serve) -> None:
    document = serve("iris_frame").get("/openapi.json").json()
    assert document["openapi"] == "3.0.3" and document["info"]["title"] == "iris-frame 0.1.0"
    row = document["components"]["schemas"]["Row"]
    assert row["required"] == COLUMNS and row["additionalProperties"] is True  # extras are dropped, unless strict
    assert row["properties"]["sepal length (cm)"] == {"type": "number"}  # nullable: false
    assert row["example"] == dict.fromkeys(COLUMNS, 1.0)  # synthetic: the notebook's row is not published
    paths = set(document["paths"])
    assert {"/predict", "/predict_proba", "/invocations", "/livez", "/readyz", "/metadata", "/metrics",
            "/openapi.json", "/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/{name}",
            "/v2/models/{name}/versions/{version}/infer"} <= paths
    infer = document["components"]["schemas"]["InferenceRequest"]
    assert infer["properties"]["inputs"]["items"]["properties"]["name"]["enum"] == COLUMNS
    assert infer["example"]["inputs"][0] == {"name": COLUMNS[0], "shape": [1], "datatype": "FP64", "data": [1.0]}
    assert "securitySchemes" not in document["components"]  # no authentication unless a token is set


def test_the_examples_in_the_document_work(serve: Serve) -> None:
    client = serve("iris_frame")
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    response = client.post("/predict", json=schemas["PredictRequest"]["example"])
    assert response.status_code == 200 and len(response.json()["predictions"]) == 1
    assert client.post("/invocations", json=schemas["InvocationsRequest"]["example"]).status_code == 200
    infer = client.post("/v2/models/iris-frame/infer", json=schemas["InferenceRequest"]["example"])
    assert infer.status_code == 200


def test_the_real_example_row_only_when_asked(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLSHIP_PUBLISH_EXAMPLE", "1")
    client = serve("iris_frame")
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    real = dict(zip(COLUMNS, [5.1, 3.5, 1.4, 0.2], strict=True))
    assert schemas["Row"]["example"] == real and client.get("/metadata").json()["input"]["example"] == real
    assert schemas["InferenceRequest"]["example"]["inputs"][0]["data"] == [5.1]
    assert client.post("/predict", json=schemas["PredictRequest"]["example"]).json() == {"predictions": [0]}


def test_an_array_row_is_a_fixed_length_array(serve: Serve) -> None:
    row = serve("iris_array").get("/openapi.json").json()["components"]["schemas"]["Row"]
    assert row["type"] == "array" and row["minItems"] == row["maxItems"] == 4
    assert row["items"] == {"type": "number", "nullable": True}


def fuzz_target(sample_bundle: Callable[[str], Path], sample: str) -> Any:
    path = sample_bundle(sample)
    app = create_app(path, bundle=load_bundle(path), settings=Settings(access_log=False))
    check_ready(app.state.mlship)
    return app


HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


# numpy warns (RuntimeWarning: overflow) when a model computes on values near float64's limits, which the fuzzing
# sends on purpose; pytest's "error" filter would make those warnings exceptions that no served model raises.
NO_WARNINGS_AS_ERRORS = pytest.mark.filterwarnings("ignore::RuntimeWarning")


@NO_WARNINGS_AS_ERRORS
def test_fuzz_the_whole_api_with_every_phase(sample_bundle: Callable[[str], Path]) -> None:
    # Every documented operation, every phase (examples, coverage, fuzzing, stateful): valid and invalid requests
    # alike, never a 5xx, always a documented status and content type, bodies that match the documented schemas.
    # `mixed` takes any value its schema allows, so a 5xx is the runtime's fault, never the model's.
    app = fuzz_target(sample_bundle, "mixed")
    run = fuzz_app(app, operations="all")
    assert not run.failures and not run.errors, run.report()
    document = TestClient(app).get("/openapi.json").json()
    documented = {f"{method.upper()} {path}" for path, item in document["paths"].items()
                  for method in item if method in HTTP_METHODS}
    # All but the document itself, which schemathesis leaves out of the schema it read from there.
    assert run.operations == documented - {"GET /openapi.json"}, run.report()
    assert run.phases == dict.fromkeys(PHASES, "success"), run.report()
    for label in ("POST /predict", "POST /invocations", "POST /v2/models/{name}/infer"):
        assert run.fuzzed(label) >= MAX_EXAMPLES, run.report()


# The routes that depend on a bundle's schema and methods, on every other sample: each input kind, and models that
# refuse inputs their schema allows (scikit-learn and 1e308 or float32's overflow, an unseen category), which must
# be 4xx with the library's message, not 500s. `raises` and `slow` are left out: their 500s and timeouts are by
# design.
@NO_WARNINGS_AS_ERRORS
@pytest.mark.parametrize("sample", ["iris_frame", "iris_array", "iris_records", "iris_columns", "series", "text",
                                    "text_length", "categories", "not_batch_safe"])
def test_fuzz_the_model_routes_of_every_sample(sample_bundle: Callable[[str], Path], sample: str) -> None:
    run = fuzz_app(fuzz_target(sample_bundle, sample), operations="model")
    assert not run.failures and not run.errors, run.report()
    assert run.phases["fuzzing"] == run.phases["coverage"] == run.phases["examples"] == "success", run.report()
    for label in ("POST /predict", "POST /invocations", "POST /v2/models/{name}/infer"):
        assert run.fuzzed(label) >= MAX_EXAMPLES, run.report()
