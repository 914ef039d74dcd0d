"""The protocols as units: every served route is in /openapi.json and everything there is served."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from mlship.runtime._app import PROTOCOLS, create_app
from mlship.runtime._settings import Settings

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def app_and_document(path: Path) -> tuple[Any, dict[str, Any]]:
    app = create_app(path, settings=Settings(access_log=False))
    return app, TestClient(app).get("/openapi.json").json()  # no lifespan: the model is not even loaded


def served(app: Any) -> set[tuple[str, str]]:
    # Starlette adds HEAD to every GET route by itself; the document does not list it.
    return {(route.path, method) for route in app.routes if isinstance(route, Route)
            for method in (route.methods or set()) - {"HEAD"}}


def documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method.upper()) for path, item in document["paths"].items() for method in item
            if method in HTTP_METHODS}


@pytest.mark.parametrize("sample", ["iris_frame", "iris_array", "text", "mixed"])
def test_every_route_is_documented_and_every_documented_route_is_served(
    sample_bundle: Callable[[str], Path], sample: str
) -> None:
    app, document = app_and_document(sample_bundle(sample))
    routes, paths = served(app), documented(document)
    # The one undocumented form is a trailing-slash alias of a documented path (the protocol's GET /v2/).
    undocumented = {(path, method) for path, method in routes - paths
                    if not (path.endswith("/") and (path.rstrip("/"), method) in paths)}
    assert undocumented == set(), "served but missing from /openapi.json"
    assert paths - routes == set(), "in /openapi.json but not served"
    assert ("/v2/", "GET") in routes


def test_every_reference_resolves_and_operation_ids_are_unique(sample_bundle: Callable[[str], Path]) -> None:
    _, document = app_and_document(sample_bundle("iris_frame"))
    schemas = document["components"]["schemas"]

    def refs(value: Any) -> list[str]:
        if isinstance(value, dict):
            own = [value["$ref"]] if isinstance(value.get("$ref"), str) else []
            return own + [ref for item in value.values() for ref in refs(item)]
        return [ref for item in value for ref in refs(item)] if isinstance(value, list) else []

    missing = {ref for ref in refs(document) if ref.removeprefix("#/components/schemas/") not in schemas}
    assert missing == set()
    ids = [operation["operationId"] for item in document["paths"].values() for operation in item.values()]
    assert len(ids) == len(set(ids))


def test_each_protocol_contributes_its_own_routes_and_schemas(sample_bundle: Callable[[str], Path]) -> None:
    app, document = app_and_document(sample_bundle("iris_frame"))
    state = app.state.mlship
    owners: dict[str, str] = {}
    for protocol in PROTOCOLS:
        for endpoint in protocol.endpoints(state):
            assert owners.setdefault(endpoint.path, protocol.name) == protocol.name  # no path claimed twice
        assert set(protocol.schemas(state.model)) <= set(document["components"]["schemas"])
    assert owners["/predict"] == "mlship" and owners["/invocations"] == "mlflow" and owners["/v2"] == "v2"
    assert set(owners) | {"/openapi.json"} == set(document["paths"])


def test_an_unknown_path_lists_each_protocols_entry_points(serve: Callable[..., TestClient]) -> None:
    answer = serve("iris_frame").get("/nope")
    assert answer.status_code == 404
    assert answer.json() == {"error": "no endpoint /nope; this server has POST /predict, POST /predict_proba, "
                                      "POST /invocations, POST /v2/...; GET /openapi.json lists them all"}
