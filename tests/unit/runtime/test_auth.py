"""Opt-in bearer tokens for the API and for /metrics, probes always open; what /metadata publishes."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from mlship.runtime import _auth
from mlship.runtime._app import check_ready, create_app
from mlship.runtime._bundle import load_bundle
from mlship.runtime._logs import AccessLog
from mlship.runtime._settings import Settings, SettingsError

API = "a" * 16 + "-api-token-0123456789"
METRICS = "m" * 16 + "-metrics-token-0123"
ROW = [5.1, 3.5, 1.4, 0.2]
PROBES = ["/livez", "/readyz", "/ping", "/health", "/v2/health/live", "/v2/health/ready"]


def served(path: Path, **settings: Any) -> tuple[TestClient, io.StringIO]:
    stream = io.StringIO()
    limits = Settings(**settings)
    app = create_app(path, bundle=load_bundle(path), settings=limits, access_log=AccessLog(True, "json", stream))
    check_ready(app.state.mlship)
    return TestClient(app), stream


@pytest.fixture
def iris(sample_bundle: Callable[[str], Path]) -> Path:
    return sample_bundle("iris_frame")


def bearer(token: str, scheme: str = "Bearer") -> dict[str, str]:
    return {"Authorization": f"{scheme} {token}"}


API_CALLS: list[tuple[str, str, Any]] = [
    ("POST", "/predict", {"instances": [ROW]}),  # the plain-ASGI fast path
    ("POST", "/predict_proba", {"instances": [ROW]}),
    ("POST", "/invocations", {"instances": [ROW]}),
    ("POST", "/v2/models/iris-frame/infer",
     {"inputs": [{"name": n, "shape": [1], "datatype": "FP64", "data": [v]} for n, v in zip(
         ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"], ROW, strict=True)]}),
    ("GET", "/metadata", None),
    ("GET", "/openapi.json", None),
    ("GET", "/version", None),
    ("GET", "/v2", None),
    ("GET", "/v2/models/iris-frame", None),
]


@pytest.mark.parametrize("method, path, body", API_CALLS)
def test_the_api_requires_the_token_when_one_is_set(iris: Path, method: str, path: str, body: Any) -> None:
    client, _ = served(iris, api_token=API)
    missing = client.request(method, path, json=body)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == 'Bearer realm="mlship"'
    assert missing.headers["content-type"] == "application/json"
    assert "requires a bearer token" in missing.json()["error"] and "MLSHIP_API_TOKEN" in missing.json()["error"]
    wrong = client.request(method, path, json=body, headers=bearer(API + "x"))
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"] == 'Bearer realm="mlship", error="invalid_token"'
    assert wrong.json() == {"error": "the bearer token is not valid for this endpoint"}
    for headers in (bearer(API[:-1]), bearer(API, "Basic"), {"Authorization": API}, bearer(METRICS)):
        assert client.request(method, path, json=body, headers=headers).status_code == 401, headers
    assert client.request(method, path, json=body, headers=bearer(API)).status_code == 200
    assert client.request(method, path, json=body, headers=bearer(API, "bearer")).status_code == 200


def test_unknown_paths_and_wrong_methods_say_401_not_what_exists(iris: Path) -> None:
    client, _ = served(iris, api_token=API)
    for method, path in (("GET", "/nowhere"), ("GET", "/predict"), ("DELETE", "/metadata")):
        response = client.request(method, path)
        assert response.status_code == 401 and "predict" not in response.text, (method, path)
    assert client.get("/nowhere", headers=bearer(API)).status_code == 404


@pytest.mark.parametrize("settings", [{"api_token": API}, {"api_token": API, "metrics_token": METRICS}])
def test_probes_stay_open(iris: Path, settings: dict[str, str]) -> None:
    client, _ = served(iris, **settings)
    for path in PROBES:
        assert client.get(path).status_code == 200, path


def test_metrics_has_its_own_token(iris: Path) -> None:
    client, _ = served(iris, api_token=API)
    assert client.get("/metrics").status_code == 200  # the API token alone leaves /metrics open
    client, _ = served(iris, metrics_token=METRICS)
    assert client.post("/predict", json={"instances": [ROW]}).status_code == 200  # and the reverse
    response = client.get("/metrics")
    assert response.status_code == 401 and "MLSHIP_METRICS_TOKEN" in response.json()["error"]
    assert client.get("/metrics", headers=bearer(API)).status_code == 401
    assert client.get("/metrics", headers=bearer(METRICS)).status_code == 200
    client, _ = served(iris, api_token=API, metrics_token=METRICS)
    assert client.get("/metrics", headers=bearer(API)).status_code == 401
    assert client.get("/metrics", headers=bearer(METRICS)).status_code == 200
    assert client.get("/metadata", headers=bearer(METRICS)).status_code == 401


def test_tokens_are_compared_in_constant_time(iris: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = _auth.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(_auth.hmac, "compare_digest", spy)
    client, _ = served(iris, api_token=API)
    client.get("/metadata", headers=bearer("short"))
    client.get("/metadata", headers=bearer(API))
    # Digests of equal length whatever the presented token's: neither its content nor its length shows.
    assert len(calls) == 2 and all(len(a) == len(b) == 32 for a, b in calls)


def test_a_401_is_logged_with_a_request_id_and_no_token(iris: Path) -> None:
    client, stream = served(iris, api_token=API)
    response = client.get("/metadata", headers=bearer("not-the-token-but-long-enough"))
    assert response.status_code == 401 and len(response.headers["x-request-id"]) == 32
    (line,) = stream.getvalue().splitlines()
    entry = json.loads(line)
    assert entry["status"] == 401 and entry["path"] == "/metadata"
    assert "not-the-token" not in stream.getvalue()


def test_the_document_declares_the_bearer_schemes_in_use(iris: Path) -> None:
    client, _ = served(iris, api_token=API)
    document = client.get("/openapi.json", headers=bearer(API)).json()
    schemes = document["components"]["securitySchemes"]
    assert schemes == {"apiToken": {"type": "http", "scheme": "bearer", "description": schemes["apiToken"]["description"]}}
    predict = document["paths"]["/predict"]["post"]
    assert predict["security"] == [{"apiToken": []}] and "401" in predict["responses"]
    for path in ("/livez", "/readyz", "/ping", "/v2/health/ready", "/metrics"):
        operation = document["paths"][path]["get"]
        assert "security" not in operation and "401" not in operation["responses"], path
    client, _ = served(iris, api_token=API, metrics_token=METRICS)
    document = client.get("/openapi.json", headers=bearer(API)).json()
    assert set(document["components"]["securitySchemes"]) == {"apiToken", "metricsToken"}
    assert document["paths"]["/metrics"]["get"]["security"] == [{"metricsToken": []}]


# -- the settings ---------------------------------------------------------------------------------------------


def test_a_token_from_a_mounted_secret_file(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text(API + "\n")  # as `echo` and editors write it
    settings = Settings.from_env({"MLSHIP_API_TOKEN_FILE": str(secret), "MLSHIP_METRICS_TOKEN": METRICS})
    assert settings.api_token == API and settings.metrics_token == METRICS
    assert API not in repr(settings) and METRICS not in repr(settings)
    assert Settings.from_env({}).api_token == "" and Settings.from_env({}).metrics_token == ""


@pytest.mark.parametrize("env, message", [
    ({"MLSHIP_API_TOKEN": "short"}, "use at least 16 random ones"),
    ({"MLSHIP_API_TOKEN": "two words that are long enough"}, "visible ASCII characters (no spaces)"),
    ({"MLSHIP_API_TOKEN": "   "}, "must hold one token"),
    ({"MLSHIP_API_TOKEN": API, "MLSHIP_API_TOKEN_FILE": "/x"}, "are both set; set one of them"),
    ({"MLSHIP_METRICS_TOKEN_FILE": "/nonexistent/token"}, "cannot be read: No such file or directory"),
])
def test_bad_tokens_are_refused_at_startup_without_echoing_them(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match="MLSHIP_") as caught:
        Settings.from_env(env)
    assert message in str(caught.value)
    assert "two words" not in str(caught.value) and API not in str(caught.value)


def test_an_empty_or_binary_token_file_is_refused(tmp_path: Path) -> None:
    empty, binary = tmp_path / "empty", tmp_path / "binary"
    empty.write_text("\n")
    binary.write_bytes(b"\xff" * 20)
    for path in (empty, binary):
        with pytest.raises(SettingsError, match="MLSHIP_API_TOKEN_FILE="):
            Settings.from_env({"MLSHIP_API_TOKEN_FILE": str(path)})


# -- what /metadata publishes ---------------------------------------------------------------------------------


def test_metadata_versions_can_be_left_out(iris: Path) -> None:
    client, _ = served(iris)
    metadata = client.get("/metadata").json()
    assert any("==" in requirement for requirement in metadata["requirements"])
    assert metadata["python"]["version"].count(".") == 2
    client, _ = served(iris, publish_versions=False)
    metadata = client.get("/metadata").json()
    assert "scikit-learn" in metadata["requirements"]
    assert not [r for r in metadata["requirements"] if set(r) & set("=<>!~;@ ")]
    assert metadata["python"]["version"].count(".") == 1 and metadata["python"]["implementation"] == "CPython"
    assert Settings.from_env({"MLSHIP_PUBLISH_VERSIONS": "0"}).publish_versions is False


def test_the_published_example_is_synthetic_unless_asked(iris: Path, sample_bundle: Callable[[str], Path]) -> None:
    real = dict(zip(["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"], ROW,
                    strict=True))
    client, _ = served(iris)
    assert client.get("/metadata").json()["input"]["example"] == dict.fromkeys(real, 1.0)
    client, _ = served(iris, publish_example=True)
    assert client.get("/metadata").json()["input"]["example"] == real
    assert Settings.from_env({"MLSHIP_PUBLISH_EXAMPLE": "1"}).publish_example is True
    for sample in ("iris_array", "text", "mixed"):
        path = sample_bundle(sample)
        golden = json.loads((path / "mlship.json").read_text())["input"]["example"]
        client, _ = served(path)
        published = client.get("/metadata").json()["input"]["example"]
        assert published != golden and _shape(published) == _shape(golden), sample
        document = client.get("/openapi.json").json()
        assert json.dumps(golden) not in json.dumps(document), sample


def _shape(value: Any) -> Any:
    if isinstance(value, list):
        return [_shape(item) for item in value]
    if isinstance(value, dict):
        return sorted(value)
    return None
