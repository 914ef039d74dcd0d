"""GET /openapi.json: the bundle's real input schema, and a bounded fuzz of the whole API from that document."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.testclient import TestClient

from mlship.runtime._app import check_ready, create_app
from mlship.runtime._bundle import load_bundle
from mlship.runtime._settings import Settings

Serve = Callable[..., TestClient]
COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]


def test_the_document_names_columns_types_and_the_example(serve: Serve) -> None:
    document = serve("iris_frame").get("/openapi.json").json()
    assert document["openapi"] == "3.0.3" and document["info"]["title"] == "iris-frame 0.1.0"
    row = document["components"]["schemas"]["Row"]
    assert row["required"] == COLUMNS and row["additionalProperties"] is False
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
    return schemathesis.openapi.from_asgi("/openapi.json", app)


FUZZ_CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
FUZZ_EXAMPLES = 40  # per operation, valid and invalid requests together: twice what the pytest plugin drew
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def fuzz(operation: Any) -> None:
    """Generated requests to one operation, valid and invalid ones alike, each checked against the document."""
    # As schemathesis' own runner does: one strategy over both generation modes, since an operation with nothing
    # to get wrong (GET /livez) has no invalid request at all.
    requests = st.one_of([operation.as_strategy(generation_mode=mode) for mode in GenerationMode])

    @given(case=requests)
    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case: Any) -> None:
        case.call_and_validate(checks=FUZZ_CHECKS)

    try:
        run()
    except Exception as exc:
        exc.add_note(f"while fuzzing {operation.label}")
        raise


# Models that accept every value their schema allows: a 5xx is then the runtime's fault, never the model's (a
# scikit-learn model refuses 1e308, which JSON and the schema allow, and that is a 500 by design).
@pytest.mark.parametrize("sample", ["mixed", "text"])
def test_fuzz_the_api_from_its_own_document(sample_bundle: Callable[[str], Path], sample: str) -> None:
    # Driven through schemathesis' Python API (each operation's Hypothesis strategy), not its pytest plugin: the
    # plugin's from_fixture() reads and writes pytest's private Node._nodeid, which pytest 9.2 removed.
    schema = fuzz_target(sample_bundle, sample)
    operations = [result.ok() for result in schema.get_all_operations()]
    documented = {f"{method.upper()} {path}" for path, item in schema.raw_schema["paths"].items()
                  for method in item if method in HTTP_METHODS}
    # Every documented operation, but the document itself, which schemathesis leaves out of the schema it read
    # from there (the tests above read it).
    assert sorted(operation.label for operation in operations) == sorted(documented - {"GET /openapi.json"})
    # Valid and invalid requests alike: never a 5xx, always a documented status and content type, and bodies
    # that match the documented schemas.
    for operation in operations:
        fuzz(operation)
