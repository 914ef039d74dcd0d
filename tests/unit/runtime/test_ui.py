"""runtime/_ui.py: the page's static files, their headers, authentication, MLSHIP_UI=0, and /metadata's golden part.
What the page does in a browser is tested in tests/e2e/test_browser_page.py."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from mlship.runtime import _ui
from mlship.runtime._settings import Settings

from .sample_bundles import edit_golden

Serve = Callable[..., TestClient]
TOKEN = "unit-test-token-0123456789abcdef"
PATHS = ["/", "/ui/page.js", "/ui/page.css", "/docs", "/docs/docs.js", "/docs/swagger-ui-bundle.js",
         "/docs/swagger-ui.css"]


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


@pytest.mark.parametrize("path", PATHS)
def test_each_file_is_served_with_its_type_and_a_strict_policy(serve: Serve, path: str) -> None:
    answer = serve("iris_frame").get(path)
    assert answer.status_code == 200
    kind = {"": "text/html", "js": "text/javascript", "css": "text/css"}[path.rpartition(".")[2] if "." in path else ""]
    assert answer.headers["content-type"] == f"{kind}; charset=utf-8"
    assert answer.headers["content-security-policy"] == _ui.CONTENT_SECURITY_POLICY
    assert answer.headers["x-content-type-options"] == "nosniff" and answer.headers["referrer-policy"] == "no-referrer"
    assert answer.headers["content-encoding"] == "gzip"  # the test client accepts it
    assert answer.headers["x-request-id"]


def test_the_policy_allows_this_server_only_and_no_inline_script() -> None:
    policy = dict(part.strip().split(" ", 1) for part in _ui.CONTENT_SECURITY_POLICY.split(";"))
    assert policy["default-src"] == "'none'" and policy["script-src"] == "'self'"
    assert policy["connect-src"] == "'self'" and policy["frame-ancestors"] == "'none'"
    assert "unsafe" not in _ui.CONTENT_SECURITY_POLICY


@pytest.mark.parametrize("name", ["index.html", "docs.html"])
def test_the_html_has_no_inline_script_or_style_and_only_relative_urls(name: str) -> None:
    parser = _Tags()
    parser.feed((_ui.STATIC_DIR / name).read_text())
    scripts = [attrs for tag, attrs in parser.tags if tag == "script"]
    assert scripts and all(attrs.get("src") for attrs in scripts)
    assert not [tag for tag, _ in parser.tags if tag == "style"]
    assert not [key for _, attrs in parser.tags for key in attrs if key.startswith("on") or key == "style"]
    urls = [value for _, attrs in parser.tags for key, value in attrs.items() if key in ("src", "href") and value]
    assert urls and all(not re.match(r"^(/|[a-z]+:(?!,))", url) for url in urls), urls  # `data:,` favicon only


def test_the_scripts_name_no_other_host() -> None:
    for name in ("page.js", "docs.js"):
        text = (_ui.STATIC_DIR / name).read_text()
        assert not re.search(r"https?://", text), name
        assert "innerHTML" not in text and "eval(" not in text


def test_a_known_etag_is_answered_304_and_plain_bytes_without_gzip(serve: Serve) -> None:
    client = serve("iris_frame")
    first = client.get("/ui/page.js", headers={"accept-encoding": "identity"})
    assert "content-encoding" not in first.headers
    assert first.content == (_ui.STATIC_DIR / "page.js").read_bytes()
    again = client.get("/ui/page.js", headers={"if-none-match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


def test_gzip_is_deterministic() -> None:
    one, two = (_ui.StaticFile(b"x" * 1000, "text/css") for _ in range(2))
    assert one.gzipped == two.gzipped and gzip.decompress(one.gzipped) == b"x" * 1000 and one.etag == two.etag


def test_every_file_is_documented_as_public(serve: Serve) -> None:
    paths = serve("iris_frame").get("/openapi.json").json()["paths"]
    for path in PATHS:
        operation = paths[path]["get"]
        assert "security" not in operation and "200" in operation["responses"]


def test_with_a_token_the_files_stay_open_and_the_data_does_not(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLSHIP_API_TOKEN", TOKEN)
    client = serve("iris_frame")
    assert all(client.get(path).status_code == 200 for path in PATHS)
    assert client.get("/metadata").status_code == 401 and client.get("/openapi.json").status_code == 401
    assert client.get("/metadata", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_mlship_ui_0_serves_none_of_it(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLSHIP_UI", "0")
    client = serve("iris_frame")
    assert [client.get(path).status_code for path in PATHS] == [404] * len(PATHS)
    assert not set(PATHS) & set(client.get("/openapi.json").json()["paths"])
    assert client.post("/predict", json={"instances": [[5.1, 3.5, 1.4, 0.2]]}).status_code == 200


def test_the_swagger_ui_files_are_the_release_source_json_names(serve: Serve) -> None:
    source = json.loads((_ui.SWAGGER_DIR / "SOURCE.json").read_text())
    assert source["package"] == "swagger-ui-dist" and source["license"] == "Apache-2.0"
    client = serve("iris_frame")
    for name, sha256 in source["sha256"].items():
        answer = client.get(f"/docs/{name}", headers={"accept-encoding": "identity"})
        assert hashlib.sha256(answer.content).hexdigest() == sha256, name
        # Sent gzipped as stored: the bytes in the runtime are the bytes on the wire.
        stored = (_ui.SWAGGER_DIR / f"{name}.gz").read_bytes()
        assert _ui.StaticFile.read(_ui.SWAGGER_DIR / f"{name}.gz").gzipped == stored
    script = (_ui.SWAGGER_DIR / "swagger-ui-bundle.js.gz").read_bytes()
    assert f'PACKAGE_VERSION:"{source["version"]}"'.encode() in gzip.decompress(script)
    assert (_ui.SWAGGER_DIR / "LICENSE").is_file() and (_ui.SWAGGER_DIR / "NOTICE").is_file()


def test_metadata_says_which_golden_cases_passed_at_start_up(serve: Serve) -> None:
    metadata = serve("iris_frame").get("/metadata").json()
    assert metadata["example_published"] is False
    golden = metadata["golden"]
    assert golden[0] == {"id": "predict-0", "method": "predict", "rows": 1, "startup": "passed"}
    assert len(golden) == 6 and {case["startup"] for case in golden} == {"passed"}  # every case replayed
    assert all(set(case) == {"id", "method", "rows", "startup"} for case in golden)  # no inputs: real rows


def test_a_failed_case_shows_both_outputs_and_keeps_the_server_not_ready(
    serve: Serve, make_bundle: Callable[[str], Path]
) -> None:
    bundle = make_bundle("iris_frame")
    edit_golden(bundle, lambda golden: golden["cases"][5].update(expected=[[0.5, 0.25, 0.25]]))
    client = serve(bundle)
    golden = client.get("/metadata").json()["golden"]
    failed = [case for case in golden if case["startup"] == "failed"]
    assert [case["id"] for case in failed] == [golden[5]["id"]] and len(golden) == 6
    assert failed[0]["expected"] == [[0.5, 0.25, 0.25]] and failed[0]["detail"].startswith("at [0][0]: expected 0.5")
    assert len(failed[0]["actual"][0]) == 3 and failed[0]["actual"] != failed[0]["expected"]
    readyz = client.get("/readyz")
    assert readyz.status_code == 503
    assert readyz.json()["error"] == f"golden case {golden[5]['id']} does not match: {failed[0]['detail']}"


def test_mlship_ui_is_a_flag() -> None:
    assert Settings.from_env({}).ui is True and Settings.from_env({"MLSHIP_UI": "0"}).ui is False
