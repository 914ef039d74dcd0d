"""Log injection: what a client sends cannot break a log line, forge one, or turn a 400 into a 500."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from mlship.runtime._app import check_ready, create_app
from mlship.runtime._bundle import load_bundle
from mlship.runtime._logs import AccessLog, JsonFormatter, TextFormatter, configure_logging
from mlship.runtime._settings import Settings
from mlship.runtime._values import escape_text, quote, quote_names

FORGED = '"}\n{"level":"error","logger":"mlship.access","message":"forged"}\nINFO:  mlship.access: forged'


@pytest.fixture
def logged(sample_bundle: Callable[[str], Path]) -> Iterator[Callable[[str], tuple[TestClient, io.StringIO]]]:
    """An iris app whose records (configure_logging) and access lines go to one StringIO, in JSON or text."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)

    def start(fmt: str, level: str = "warning", **settings: Any) -> tuple[TestClient, io.StringIO]:
        stream = io.StringIO()
        configure_logging(level, fmt)  # by default the access lines and what goes wrong, not "ready"
        handler = root.handlers[-1]
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(stream)
        path = sample_bundle("iris_frame")
        limits = Settings(log_format=fmt, **settings)
        app = create_app(path, bundle=load_bundle(path), settings=limits,
                         access_log=AccessLog(True, fmt, stream))
        check_ready(app.state.mlship)
        return TestClient(app, raise_server_exceptions=False), stream

    yield start
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    text = stream.getvalue()
    text.encode("utf-8")  # no lone surrogate reached the stream
    return [json.loads(line) for line in text.splitlines()]


def post(client: TestClient, path: str, body: bytes) -> tuple[int, dict[str, object]]:
    response = client.post(path, content=body, headers={"content-type": "application/json"})
    return response.status_code, json.loads(response.content.decode("utf-8"))


@pytest.mark.parametrize("path, body", [
    ("/predict", b'{"instances": [{"\\ud800": 1}]}'),
    ("/predict", b'{"inputs": {"\\udfff\\ud800": [1]}}'),
    ("/invocations", b'{"dataframe_split": {"columns": ["\\ud800"], "data": [[1]]}}'),
    ("/invocations", b'{"\\ud800": 1}'),
])
def test_a_lone_surrogate_in_a_column_name_is_a_400_with_clean_json_and_clean_logs(
    logged: Callable[[str], tuple[TestClient, io.StringIO]], path: str, body: bytes
) -> None:
    client, stream = logged("json", strict_columns=True)  # strict: the extra column is named in the error
    status, answer = post(client, path, body)
    assert status == 400
    message = str(answer.get("error", answer.get("message")))
    assert "\\ud800" in message or "\\udfff" in message
    entries = json_lines(stream)
    assert [entry["status"] for entry in entries if entry["logger"] == "mlship.access"] == [400]
    assert not [entry for entry in entries if entry["level"] == "error"]


def test_a_column_name_is_quoted_json_escaped_and_bounded_in_the_error(
    logged: Callable[[str], tuple[TestClient, io.StringIO]]
) -> None:
    client, stream = logged("json", strict_columns=True)
    name = FORGED + "x" * 5000
    status, answer = post(client, "/predict", json.dumps({"instances": [{name: 1}]}).encode())
    assert status == 400
    message = str(answer["error"])
    assert "\n" not in message and len(message) < 600
    assert quote(name) in message and quote(name).endswith('…"')
    assert quote(name).startswith(r'"\"}\n{\"level\":\"error\"')
    assert len(json_lines(stream)) == 1


def test_many_unexpected_columns_are_named_up_to_a_bound(
    logged: Callable[[str], tuple[TestClient, io.StringIO]]
) -> None:
    client, _ = logged("json", strict_columns=True)
    row = {f"c{index}": 1 for index in range(5000)}
    status, answer = post(client, "/predict", json.dumps({"instances": [row]}).encode())
    assert status == 400 and "and 4980 more" in str(answer["error"]) and len(str(answer["error"])) < 1000


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_an_ignored_column_s_name_is_escaped_in_the_header_and_the_log(
    logged: Callable[[str], tuple[TestClient, io.StringIO]], fmt: str
) -> None:
    client, stream = logged(fmt, "info")
    row = {"sepal length (cm)": 1.0, "sepal width (cm)": 1.0, "petal length (cm)": 1.0, "petal width (cm)": 1.0}
    body = json.dumps({"instances": [{**row, FORGED: 1, "\ud800": 2}]}).encode()
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200
    assert json.loads(response.headers["mlship-ignored-columns"]) == sorted([FORGED, "\ud800"])
    text = stream.getvalue()
    text.encode("utf-8")  # no lone surrogate reached the stream
    lines = [line for line in text.splitlines() if "ignoring columns" in line]
    assert len(lines) == 1 and "forg…" in lines[0]  # quoted, escaped and cut short
    assert not any(line.startswith("INFO:  mlship.access: forged") or '"message":"forged"' in line
                   for line in text.splitlines())


def test_a_newline_in_the_url_does_not_forge_a_text_access_line(
    logged: Callable[[str], tuple[TestClient, io.StringIO]]
) -> None:
    client, stream = logged("text")
    client.get("/a%0AINFO:%20%20mlship.access:%20forged%0D%1B[2J%E2%80%AE")
    lines = stream.getvalue().splitlines()
    access = [line for line in lines if line.startswith("INFO:  mlship.access:")]
    assert len(access) == 1 and len(lines) == 1
    assert r"/a\x0aINFO:  mlship.access: forged\x0d\x1b[2J\u202e 404" in access[0]


def test_a_newline_in_the_url_is_escaped_in_the_json_access_line(
    logged: Callable[[str], tuple[TestClient, io.StringIO]]
) -> None:
    client, stream = logged("json")
    client.get("/a%0A%7B%22level%22:%22error%22%7D")
    (entry,) = json_lines(stream)
    assert entry["path"] == '/a\n{"level":"error"}' and entry["status"] == 404


def record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("mlship.x", logging.WARNING, __file__, 1, message, args, None)


def test_the_json_formatter_survives_what_orjson_refuses() -> None:
    entry = record("column %s", "\ud800")
    entry.column = "\udfff"
    entry.weird = {("a", 1): object()}
    line = JsonFormatter().format(entry)
    line.encode("utf-8")
    parsed = json.loads(line)
    assert parsed["message"] == "column \ud800" and parsed["column"] == "\udfff" and "\n" not in line


def test_the_text_formatter_escapes_messages_and_indents_tracebacks() -> None:
    try:
        raise ValueError("bad\nINFO:  mlship.access: forged")
    except ValueError:
        entry = record("got %s", "a\nINFO:  mlship.access: forged\ud800")
        entry.exc_info = sys.exc_info()
    text = TextFormatter().format(entry)
    text.encode("utf-8")
    lines = text.splitlines()
    assert lines[0] == r"WARNING:  mlship.x: got a\x0aINFO:  mlship.access: forged\ud800"
    assert all(line.startswith("    ") for line in lines[1:]) and len(lines) > 2
    # A traceback keeps its lines, each indented: the forged one does not start at the margin.
    assert lines[-2:] == ["    ValueError: bad", "    INFO:  mlship.access: forged"]


def test_quote_and_escape_text() -> None:
    assert quote("plain é") == '"plain é"'
    assert quote('a"b\\c\n') == r'"a\"b\\c\n"'
    assert quote("\ud800\u2028\u202e\x85") == r'"\ud800\u2028\u202e\x85"'
    assert quote("x" * 100) == '"' + "x" * 60 + '…"'
    assert escape_text("ok\tno\x7f") == r"ok\x09no\x7f"
    assert quote_names(["a", "b", "c"], limit=2) == '"a", "b" and 1 more'


def test_v2_input_and_output_names_are_quoted_safely(
    logged: Callable[[str], tuple[TestClient, io.StringIO]]
) -> None:
    client, stream = logged("json", strict_columns=True)  # else an unknown tensor is an ignored column
    tensor = {"name": FORGED + "\ud800", "shape": [1], "datatype": "FP64", "data": [1.0]}
    status, answer = post(client, "/v2/models/iris-frame/infer", json.dumps({"inputs": [tensor]}).encode())
    assert status == 400 and f"unknown input {quote(tensor['name'])}" in str(answer["error"])
    assert "\n" not in str(answer["error"])
    assert len(json_lines(stream)) == 1
