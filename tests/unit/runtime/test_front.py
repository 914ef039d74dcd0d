"""The multi-model front's pure parts: how paths name models, the routing table, the merged metrics and OpenAPI
document; and a single-bundle server answering under /models/{name}/ (in-process)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from mlship.runtime import _catalog
from mlship.runtime._backends import Backend, backend_env
from mlship.runtime._routes import ModelPath, RouteTable, parse_model_path, upstream_target

IRIS_ROW = {"sepal length (cm)": 5.1, "sepal width (cm)": 3.5, "petal length (cm)": 1.4, "petal width (cm)": 0.2}


@pytest.mark.parametrize(("path", "expected"), [
    ("/models/fraud/predict", ModelPath("fraud", None, "/predict")),
    ("/models/fraud/versions/2.0.0/predict_proba", ModelPath("fraud", "2.0.0", "/predict_proba")),
    ("/models/fraud/versions/2.0.0/", ModelPath("fraud", "2.0.0", "/")),
    ("/models/fraud/", ModelPath("fraud", None, "/")),
    ("/models/fraud/ui/page.js", ModelPath("fraud", None, "/ui/page.js")),
    ("/models/fraud", ModelPath("fraud", None, None)),
    ("/models/fraud/versions/1.0.0", ModelPath("fraud", "1.0.0", None)),
    ("/models/fraud/versions", ModelPath("fraud", None, None)),
    ("/v2/models/fraud/infer", ModelPath("fraud", None, "/v2/models/fraud/infer", v2=True)),
    ("/v2/models/fraud/versions/1.0.0/ready",
     ModelPath("fraud", "1.0.0", "/v2/models/fraud/versions/1.0.0/ready", v2=True)),
    ("/v2/models/fraud", ModelPath("fraud", None, "/v2/models/fraud", v2=True)),
    ("/predict", None), ("/models", None), ("/v2/repository/index", None), ("/v2/health/ready", None),
])
def test_paths_name_a_model_version_and_the_backends_own_path(path: str, expected: ModelPath | None) -> None:
    assert parse_model_path(path) == expected


def test_the_upstream_target_keeps_the_query_and_the_v2_path_as_sent() -> None:
    assert upstream_target(ModelPath("a", None, "/predict"), b"/models/a/predict", b"x=1") == b"/predict?x=1"
    v2 = ModelPath("a", None, "/v2/models/a/infer", v2=True)
    assert upstream_target(v2, b"/v2/models/a/infer", b"") == b"/v2/models/a/infer"
    assert upstream_target(ModelPath("a", None, "/a b"), None, b"") == b"/a%20b"


@dataclass
class FakeBackend:
    """What the catalog reads of a Backend."""

    name: str
    version: str
    ready: bool = True
    reason: str | None = None
    metadata: dict[str, Any] | None = None
    openapi: dict[str, Any] | None = None
    described: dict[str, Any] = field(default_factory=dict)
    restarts: int = 0

    @property
    def state(self) -> str:
        return "READY" if self.ready else "UNAVAILABLE"


def _table(*backends: FakeBackend, defaults: dict[str, str] | None = None) -> RouteTable:
    return RouteTable({(b.name, b.version): cast(Backend, b) for b in backends}, defaults or {})


def test_lookup_by_name_and_version_or_default_and_404_messages_list_what_exists() -> None:
    one, two, churn = FakeBackend("fraud", "1.0.0"), FakeBackend("fraud", "2.0.0"), FakeBackend("churn", "0.1.0")
    table = _table(one, two, churn, defaults={"fraud": "1.0.0", "churn": "0.1.0"})
    assert table.lookup("fraud", None) is one and table.lookup("fraud", "2.0.0") is two
    with pytest.raises(LookupError, match=r"no model 'nope'; this server serves 'fraud', 'churn'"):
        table.lookup("nope", None)
    with pytest.raises(LookupError, match=r"model 'fraud' has no version '3'; it has '1.0.0', '2.0.0'"):
        table.lookup("fraud", "3")
    assert "POST /models/fraud/versions/2.0.0/predict" in table.model_routes()


def test_repository_index_lists_every_version_with_its_state_and_reason() -> None:
    table = _table(FakeBackend("a", "1"), FakeBackend("b", "1", ready=False, reason="golden case predict-0 differs"))
    assert _catalog.repository_index(table) == [
        {"name": "a", "version": "1", "state": "READY", "reason": ""},
        {"name": "b", "version": "1", "state": "UNAVAILABLE", "reason": "golden case predict-0 differs"},
    ]
    assert [entry["name"] for entry in _catalog.repository_index(table, ready_only=True)] == ["a"]


def _backend_metrics(model: str) -> str:
    registry = CollectorRegistry()
    Counter("mlship_requests", "HTTP requests.", ["endpoint"], registry=registry).labels("/predict").inc(3)
    Histogram("mlship_batch_rows", "Rows.", ["method"], buckets=(1, 2), registry=registry).labels("predict").observe(1)
    Gauge("mlship_requests_in_flight", "In flight.", registry=registry).set(2)
    Gauge("mlship_model_info", "Info.", ["name", "version"], registry=registry).labels(model, "1").set(1)
    return bytes(generate_latest(registry)).decode()


def test_merged_metrics_label_every_sample_and_keep_one_help_and_type_per_family() -> None:
    a, b = FakeBackend("a", "1"), FakeBackend("b", "2")
    text = _catalog.merged_metrics([(cast(Backend, a), _backend_metrics("a")),
                                    (cast(Backend, b), _backend_metrics("b"))], []).decode()
    for family in ("mlship_requests_total", "mlship_batch_rows", "mlship_requests_in_flight"):
        assert text.count(f"# TYPE {family} ") == 1 and text.count(f"# HELP {family} ") == 1
    assert 'mlship_requests_total{endpoint="/predict",model="a",version="1"} 3.0' in text
    assert 'mlship_requests_in_flight{model="b",version="2"} 2.0' in text
    assert 'mlship_batch_rows_bucket{le="1.0",method="predict",model="b",version="2"} 1.0' in text
    # Parsed back, every family is whole: a scraper reads the samples of both models under one name.
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert {s.labels["model"] for s in families["mlship_requests"].samples} == {"a", "b"}


@pytest.fixture
def iris_app(sample_bundle: Callable[[str], Path]) -> Any:
    from mlship.runtime._app import create_app

    with TestClient(create_app(sample_bundle("iris_frame"))) as client:
        yield client


def test_merged_openapi_puts_each_models_operations_under_its_prefix_with_its_own_schemas(iris_app: Any) -> None:
    document = iris_app.get("/openapi.json").json()
    metadata = iris_app.get("/metadata").json()
    name, version = metadata["name"], metadata["version"]
    one = FakeBackend(name, version, metadata=metadata, openapi=document)
    two = FakeBackend(name, "2.0.0", metadata=metadata, openapi=document)
    merged = _catalog.merged_openapi(_table(one, two, defaults={name: version}), "svc",
                                     {"/models": {"get": {"operationId": "models"}}})
    paths = merged["paths"]
    assert "/models" in paths
    for prefix in (f"/models/{name}/versions/{version}", f"/models/{name}/versions/2.0.0", f"/models/{name}"):
        assert {f"{prefix}/predict", f"{prefix}/invocations", f"{prefix}/metadata"} <= set(paths)
    assert f"/v2/models/{name}/versions/2.0.0/infer" in paths and f"/v2/models/{name}/infer" in paths
    assert "/readyz" not in paths and "/predict" not in paths  # the backends' own service routes are not the front's
    infer = paths[f"/v2/models/{name}/versions/2.0.0/infer"]["post"]
    assert "parameters" not in infer  # name and version are in the path now
    operation_ids = [op["operationId"] for ops in paths.values() for op in ops.values()]
    assert len(operation_ids) == len(set(operation_ids))
    schemas = merged["components"]["schemas"]

    def refs(value: Any) -> list[str]:
        if isinstance(value, dict):
            return [v for k, v in value.items() if k == "$ref"] + [r for v in value.values() for r in refs(v)]
        return [r for v in value for r in refs(v)] if isinstance(value, list) else []

    assert all(ref.rsplit("/", 1)[-1] in schemas for ref in refs(merged))
    row = schemas[f"{name}_2.0.0_Row"]
    assert set(row["required"]) == set(IRIS_ROW)


def test_a_single_bundle_server_answers_under_models_name_too(iris_app: Any) -> None:
    name, version = iris_app.get("/metadata").json()["name"], iris_app.get("/metadata").json()["version"]
    expected = iris_app.post("/predict", json={"instances": [IRIS_ROW]}).json()
    for prefix in (f"/models/{name}", f"/models/{name}/versions/{version}"):
        assert iris_app.post(f"{prefix}/predict", json={"instances": [IRIS_ROW]}).json() == expected
        assert iris_app.post(f"{prefix}/invocations", json={"instances": [IRIS_ROW]}).json() == expected
        assert iris_app.get(f"{prefix}/metadata").json()["name"] == name
    answer = iris_app.post("/models/fraud/predict", json={"instances": [IRIS_ROW]})
    assert answer.status_code == 404 and f"no model 'fraud'; this server serves '{name}'" in answer.json()["error"]
    answer = iris_app.post(f"/models/{name}/versions/9/predict", json={"instances": [IRIS_ROW]})
    assert answer.status_code == 404 and "has no version '9'" in answer.json()["error"]


def test_each_backend_gets_its_own_metrics_directory_and_no_pythonpath() -> None:
    env = backend_env({"PYTHONPATH": "/x", "PROMETHEUS_MULTIPROC_DIR": "/shm/m", "HOME": "/h"}, "fraud-1.0.0")
    assert "PYTHONPATH" not in env and env["HOME"] == "/h"
    assert env["PROMETHEUS_MULTIPROC_DIR"] == "/shm/m/fraud-1.0.0"
    assert "PROMETHEUS_MULTIPROC_DIR" not in backend_env({}, "a-1")
