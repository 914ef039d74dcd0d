"""The page for people (GET /) and the API docs (GET /docs) in a real headless browser: Debian's chromium driven by
Selenium through chromium-driver.

Each test drives the page as a person would (fills the try-it form with a golden input, sends it, reads the
answer off the page, or copies a snippet and runs it: curl, `requests`, MLflow's client in its own venv,
`tritonclient.http`) and compares with the notebook's own output; every request the browser made is read back
from Chrome's performance log (CDP Network events) and must have gone to the server under test. Screenshots
are written to tmp/artifacts/browser/ at the repository root (kept out of git). Without chromium and
chromium-driver the tests skip, unless MLSHIP_REQUIRE_BROWSER=1 (set by .ci/run): then they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mlship.runtime._codec import outputs_match
from tests.support.mlflow_client import mlflow_client_python
from tests.support.servers import clean_env, free_port, wait_until_ready

pytestmark = [pytest.mark.e2e, pytest.mark.requires_browser]

ARTIFACTS = Path(__file__).resolve().parents[2] / "tmp" / "artifacts" / "browser"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
TOKEN = "page-test-token-0123456789abcdef"
WAIT = 30.0
SNIPPET_RUNNER = Path(__file__).resolve().parents[1] / "support" / "snippet_runner.py"


class Server:
    def __init__(self, bundle: Path, **env: str) -> None:
        self.bundle = bundle
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlship_runtime", "serve", ".", "--port", str(self.port)],
            cwd=bundle, env=clean_env(**env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_until_ready(f"{self.url}/livez", self.process)

    def golden(self) -> list[dict[str, Any]]:
        cases: list[dict[str, Any]] = json.loads((self.bundle / "golden.json").read_text())["cases"]
        return cases

    def get(self, path: str, token: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        with urllib.request.urlopen(urllib.request.Request(self.url + path, headers=headers), timeout=WAIT) as answer:
            return json.load(answer)

    def stop(self) -> None:
        self.process.terminate()
        self.process.communicate(timeout=15)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        message = "no chromium/chromium-driver (apt-get install chromium chromium-driver)"
        if os.environ.get("MLSHIP_REQUIRE_BROWSER") == "1":
            pytest.fail(f"MLSHIP_REQUIRE_BROWSER=1 but {message}")
        pytest.skip(f"{message}; MLSHIP_REQUIRE_BROWSER=1 makes this fatal")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,1500",
                     "--disable-gpu", "--no-first-run", "--disable-extensions"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(WAIT)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


Bundles = Callable[[str], Path]


def served(sample_bundle: Bundles, tmp_path_factory: pytest.TempPathFactory, sample: str, **env: str
           ) -> Iterator[Server]:
    """A copy of the sample bundle served with `env`, for a module-scoped fixture to yield from."""
    bundle = Path(shutil.copytree(sample_bundle(sample), tmp_path_factory.mktemp("page") / sample))
    server = Server(bundle, **env)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def iris(sample_bundle: Bundles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # The real example row published: the form is prefilled with the notebook's first golden row.
    yield from served(sample_bundle, tmp_path_factory, "iris_frame", MLSHIP_PUBLISH_EXAMPLE="1")


@pytest.fixture(scope="module")
def text(sample_bundle: Bundles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from served(sample_bundle, tmp_path_factory, "text", MLSHIP_PUBLISH_EXAMPLE="1")


@pytest.fixture(scope="module")
def text_with_token(sample_bundle: Bundles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from served(sample_bundle, tmp_path_factory, "text", MLSHIP_API_TOKEN=TOKEN)


def requests_made(driver: Any) -> list[str]:
    """The URLs of every request the page made since the last call (Chrome's performance log, CDP events)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def assert_only_this_server(driver: Any, server: Server, answered_503: str | None = None) -> list[str]:
    """Every request the page made went to `server`, and the console shows no error (but the 4xx answers a
    test provokes, and a 503 from the path `answered_503`)."""
    urls = requests_made(driver)
    outside = [url for url in urls if not url.startswith(server.url + "/") and not url.startswith("data:")]
    assert urls and outside == [], f"requests outside {server.url}: {outside}"
    expected_503 = f"{server.url}{answered_503} - Failed to load resource" if answered_503 else None
    problems = [entry["message"] for entry in driver.get_log("browser")
                if "Content Security Policy" in entry["message"] or entry["level"] == "SEVERE"
                and "favicon" not in entry["message"] and " 4" not in entry["message"]
                and not (expected_503 and entry["message"].startswith(expected_503) and " 503 " in entry["message"])]
    assert problems == [], problems
    return urls


def wait_for(driver: Any, css: str, condition: Callable[[Any], Any] | None = None) -> Any:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def found(d: Any) -> Any:
        elements = [e for e in d.find_elements(By.CSS_SELECTOR, css) if e.is_displayed()]
        if not elements:
            return False
        return elements[0] if condition is None or condition(elements[0]) else False

    return WebDriverWait(driver, WAIT).until(found, f"nothing matched {css!r}")


def fill(element: Any, value: str) -> None:
    element.clear()
    element.send_keys(value)


def test_the_page_answers_a_golden_case_like_the_notebook(browser: Any, iris: Server) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(iris.url + "/")
    form = wait_for(browser, "#try-form")
    manifest = json.loads((iris.bundle / "mlship.json").read_text())
    about = browser.find_element(By.ID, "about").text
    assert f"{manifest['name']} {manifest['version']}" in about and "ready" in about
    assert browser.find_element(By.ID, "source-sha256").text == manifest["source"]["sha256"]
    assert browser.find_element(By.ID, "methods").text == "predict, predict_proba"
    schema = browser.find_element(By.ID, "schema-table").text
    assert "sepal length (cm) number float64 no 5.1" in schema
    golden = browser.find_element(By.ID, "golden-table").text
    # Every case replayed at start-up, each with its own result.
    assert "predict-0 predict 1 passed" in golden and "predict_proba-5 predict_proba 1 passed" in golden
    assert golden.count("passed") == len(iris.golden()) and "not replayed" not in golden
    assert f"replayed all {len(iris.golden())} at start-up: {len(iris.golden())} passed, 0 failed" in \
        browser.find_element(By.ID, "golden").text
    snippets = browser.find_element(By.ID, "snippets").text
    # Filled with the real example row (published here) and this server's URL.
    assert '"sepal length (cm)": 5.1' in snippets and f"curl -s '{iris.url}/predict'" in snippets
    assert "ScoringServerClient" in snippets and "InferenceServerClient" in snippets

    case = next(case for case in iris.golden() if case["method"] == "predict_proba" and case["id"].endswith("-5"))
    row = case["instances"][0]
    for index, column in enumerate(manifest["input"]["columns"]):
        fill(form.find_element(By.ID, f"field-{index}"), repr(row[column["name"]]))
    Select(form.find_element(By.ID, "method")).select_by_value("predict_proba")
    form.find_element(By.ID, "send").click()
    answer = wait_for(browser, "#answer")
    ok, detail = outputs_match(json.loads(answer.text), case["expected"], 1e-6, 1e-9)
    assert ok, detail
    browser.save_screenshot(str(ARTIFACTS / "page-answer.png"))
    assert_only_this_server(browser, iris)


def test_a_bad_value_shows_the_servers_message_next_to_its_field(browser: Any, iris: Server) -> None:
    from selenium.webdriver.common.by import By

    browser.get(iris.url + "/")
    form = wait_for(browser, "#try-form")
    fill(form.find_element(By.ID, "field-2"), "long")
    form.find_element(By.ID, "send").click()
    error = wait_for(browser, "#error-2", lambda e: e.text)
    assert error.text.startswith('column "petal length (cm)", row 0: expected a number')
    assert "invalid" in (form.find_element(By.ID, "field-2").get_attribute("class") or "")
    assert browser.find_element(By.ID, "error-0").text == "" and not browser.find_element(By.ID, "answer").is_displayed()
    browser.save_screenshot(str(ARTIFACTS / "page-bad-value.png"))
    assert_only_this_server(browser, iris)


def test_a_csv_row_fills_the_form_and_a_csv_file_is_sent_whole(browser: Any, iris: Server,
                                                               tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    browser.get(iris.url + "/")
    form = wait_for(browser, "#try-form")
    browser.find_element(By.CSS_SELECTOR, "#csv summary").click()
    cases = [case for case in iris.golden() if case["method"] == "predict"]
    columns = [column["name"] for column in json.loads((iris.bundle / "mlship.json").read_text())["input"]["columns"]]
    values = [[case["instances"][0][name] for name in columns] for case in cases]
    fill(form.find_element(By.ID, "csv-row"), ",".join(map(str, values[1])))
    form.find_element(By.ID, "csv-fill").click()
    assert float(form.find_element(By.ID, "field-3").get_attribute("value") or "nan") == values[1][3]
    form.find_element(By.ID, "send").click()
    assert json.loads(wait_for(browser, "#answer").text) == cases[1]["expected"]

    csv = tmp_path / "rows.csv"
    csv.write_text(",".join(f'"{name}"' for name in columns) + "\n"
                   + "".join(",".join(map(str, row)) + "\n" for row in values))
    form.find_element(By.ID, "csv-file").send_keys(str(csv))
    expected = [case["expected"][0] for case in cases]
    wait_for(browser, "#answer", lambda e: e.text and json.loads(e.text) == expected)
    assert_only_this_server(browser, iris)


def test_a_case_that_does_not_replay_shows_both_outputs_and_the_server_not_ready(
    browser: Any, sample_bundle: Bundles, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    from tests.unit.runtime.sample_bundles import edit_golden

    bundle = Path(shutil.copytree(sample_bundle("iris_frame"), tmp_path / "wrong"))
    edit_golden(bundle, lambda golden: golden["cases"][5].update(expected=[[0.5, 0.25, 0.25]]))
    server = Server(bundle)
    try:
        browser.get(server.url + "/")
        golden = wait_for(browser, "#golden-table")
        assert "predict_proba-5 predict_proba 1 failed" in golden.text
        detail = browser.find_element(By.CSS_SELECTOR, "#golden-table tr.case-detail").text
        assert detail.startswith("at [0][0]: expected 0.5, got ") and "expected\n[[0.5,0.25,0.25]]" in detail
        assert "this server\n[[" in detail
        about = browser.find_element(By.ID, "about").text
        assert "not ready" in about and "golden case predict_proba-5 does not match" in about
        assert "5 passed, 1 failed, so it is not ready" in browser.find_element(By.ID, "golden").text
        browser.save_screenshot(str(ARTIFACTS / "page-failed-case.png"))
        assert_only_this_server(browser, server, answered_503="/readyz")
    finally:
        server.stop()


def test_the_docs_page_executes_a_call(browser: Any, iris: Server) -> None:
    from selenium.webdriver.common.by import By

    browser.get(iris.url + "/docs")
    block = wait_for(browser, "#operations-default-metadata")
    block.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
    wait_for(browser, "#operations-default-metadata .execute").click()
    code = wait_for(browser, "#operations-default-metadata .live-responses-table tr.response td.response-col_status",
                    lambda e: e.text.strip())
    assert code.text.strip() == "200"
    body = browser.find_element(By.CSS_SELECTOR, "#operations-default-metadata .live-responses-table pre").text
    assert '"iris-frame"' in body
    browser.save_screenshot(str(ARTIFACTS / "docs-metadata.png"))
    urls = assert_only_this_server(browser, iris)
    assert f"{iris.url}/docs/swagger-ui-bundle.js" in urls and f"{iris.url}/metadata" in urls


def test_with_a_token_the_page_asks_for_it_and_a_text_model_gets_a_text_area(
    browser: Any, text_with_token: Server
) -> None:
    from selenium.webdriver.common.by import By

    server = text_with_token
    browser.get(server.url + "/")
    token = wait_for(browser, "#token")
    assert "requires a bearer token" in browser.find_element(By.ID, "status").text
    token.send_keys(TOKEN)
    browser.find_element(By.CSS_SELECTOR, "#auth button").click()
    form = wait_for(browser, "#try-form")
    area = form.find_element(By.ID, "field-0")
    assert area.tag_name == "textarea" and area.get_attribute("value") == "text"  # synthetic: not published
    case = next(case for case in server.golden() if case["method"] == "label")
    fill(area, case["instances"][0])
    form.find_element(By.CSS_SELECTOR, "#method option[value='label']").click()
    form.find_element(By.ID, "send").click()
    assert json.loads(wait_for(browser, "#answer").text) == case["expected"]
    assert "Authorization: Bearer $MLSHIP_API_TOKEN" in browser.find_element(By.ID, "snippets").text
    browser.save_screenshot(str(ARTIFACTS / "page-text-token.png"))
    assert_only_this_server(browser, server)
    browser.execute_script("window.sessionStorage.clear()")


def page_snippets(browser: Any, server: Server) -> dict[str, str]:
    """{title: code} of the page's snippets, as its copy buttons copy them (textContent)."""
    from selenium.webdriver.common.by import By

    browser.get(server.url + "/")
    wait_for(browser, "#snippets")
    snippets = {}
    for block in browser.find_elements(By.CSS_SELECTOR, "#snippets .snippet"):
        title = block.find_element(By.TAG_NAME, "h3").get_attribute("textContent").removesuffix("copy")
        snippets[title] = block.find_element(By.CSS_SELECTOR, "pre code").get_attribute("textContent")
    return snippets


def run_snippet(title: str, code: str, **env: str) -> Any:
    """What the snippet printed: curl's JSON answer's predictions, or a Python snippet's last printed value (run
    by tests/support/snippet_runner.py with the python that has its client)."""
    if title == "curl":
        command, stdin = ["bash", "-c", code], None
    else:
        python = mlflow_client_python() if title == "MLflow client" else Path(sys.executable)
        command, stdin = [str(python), str(SNIPPET_RUNNER)], code
    out = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=120, env=clean_env(**env))
    assert out.returncode == 0 and out.stdout, f"{title} snippet failed:\n{code}\n{out.stderr[-3000:]}"
    printed = json.loads(out.stdout)
    return printed["predictions"] if title == "curl" else printed


TITLES = ["curl", "Python (requests)", "MLflow client", "Open Inference Protocol client (tritonclient)"]


@pytest.mark.parametrize("name", ["iris", "text"])
def test_each_snippet_runs_as_shown_and_prints_the_notebooks_output(browser: Any, request: pytest.FixtureRequest,
                                                                    name: str) -> None:
    # iris: a table (a field per column); text: one string per row. The example row is published, so the
    # snippets send the notebook's first golden row and must print its golden output.
    server: Server = request.getfixturevalue(name)
    snippets = page_snippets(browser, server)
    assert list(snippets) == TITLES
    metadata = server.get("/metadata")
    method = "predict"
    case = next(case for case in server.golden()
                if case["method"] == method and case["instances"] == [metadata["input"]["example"]])
    golden = json.loads((server.bundle / "golden.json").read_text())
    for title, code in snippets.items():
        assert server.url.split("//")[1] in code or title == "MLflow client", code
        printed = run_snippet(title, code)
        ok, detail = outputs_match(printed, case["expected"], golden["rtol"], golden["atol"])
        assert ok, f"{title}: {detail}\n{code}"


def test_with_a_token_the_snippets_send_it_from_the_environment(browser: Any, text_with_token: Server) -> None:
    from selenium.webdriver.common.by import By

    server = text_with_token
    browser.get(server.url + "/")
    wait_for(browser, "#token").send_keys(TOKEN)
    browser.find_element(By.CSS_SELECTOR, "#auth button").click()
    wait_for(browser, "#try-form")
    snippets = page_snippets(browser, server)
    assert TOKEN not in "".join(snippets.values())  # the token is read from $MLSHIP_API_TOKEN, never shown
    example = server.get("/metadata", TOKEN)["input"]["example"]  # synthetic here: compare with the server
    request = urllib.request.Request(f"{server.url}/predict", data=json.dumps({"instances": [example]}).encode(),
                                     headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=WAIT) as answer:
        expected = json.load(answer)["predictions"]
    for title in ("curl", "Python (requests)", "Open Inference Protocol client (tritonclient)"):
        assert run_snippet(title, snippets[title], MLSHIP_API_TOKEN=TOKEN) == expected, title
    # Without $MLSHIP_API_TOKEN the snippet sends an empty one, and the server says so.
    failed = subprocess.run(["bash", "-c", snippets["curl"]], capture_output=True, text=True, env=clean_env())
    assert json.loads(failed.stdout) == {"error": "the bearer token is not valid for this endpoint"}
    browser.execute_script("window.sessionStorage.clear()")
