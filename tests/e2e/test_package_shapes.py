"""Notebook shapes of issue 10, end to end: a one-row or literal inference call whose other golden rows come from
the test split, a frame with integer column labels, a clustering model used only through fit_predict. Each is
packaged once (real kernel, golden cases replayed in a fresh interpreter), then served over real HTTP, where a
client sending what the notebook sent gets the notebook's answers."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.servers import serving

pytestmark = pytest.mark.e2e

# notebook -> (served predict, other served methods, sample, golden sources as (expression, rows))
CHOSEN: dict[str, tuple[str, set[str], str, list[tuple[str, int]]]] = {
    "one_row_frame": ("clf.predict(X)", {"predict_proba", "predict_log_proba", "decision_function"}, "new_row",
                      [("new_row", 1), ("X_test", 4)]),
    "text_literal": ("clf.predict(X)", {"predict_proba", "predict_log_proba", "decision_function"},
                     "['the staff was friendly and the coffee was great']",
                     [("['the staff was friendly and the coffee was great']", 1), ("test_texts", 4)]),
    "int_labels": ("model.predict(X)", {"predict_proba", "predict_log_proba", "decision_function"}, "X_test",
                   [("X_test", 5)]),
    "kmeans_elbow": ("kmeans.predict(X)", {"transform"}, "customers", [("customers", 5)]),
}


@pytest.fixture(scope="module")
def packaged(cli: Any, samples: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Any]]:
    """Each sample packaged once for the module: its bundle and `package --json`'s answer."""
    out = tmp_path_factory.mktemp("shapes")
    found = {}
    for name in CHOSEN:
        result = cli("package", samples / f"{name}.ipynb", "-o", out / name, "--json")
        assert result.exit_code == 0, result.output
        found[name] = (out / name, json.loads(result.stdout))
    return found


@pytest.fixture(scope="module")
def urls(packaged: dict[str, tuple[Path, Any]], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """One server per bundle, all started at once (they load in parallel), stopped when the module ends."""
    logs = tmp_path_factory.mktemp("shape-logs")
    with serving({name: bundle for name, (bundle, _) in packaged.items()}, logs) as urls:
        yield urls


def post(url: str, body: Any, content_type: str = "application/json") -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def golden(bundle: Path) -> dict[str, Any]:
    return dict(json.loads((bundle / "golden.json").read_text()))


def expected(bundle: Path, method: str = "predict") -> list[Any]:
    return [case["expected"][0] for case in golden(bundle)["cases"] if case["method"] == method]


@pytest.mark.parametrize("name", sorted(CHOSEN))
def test_what_is_chosen_and_where_the_golden_rows_come_from(packaged: dict[str, tuple[Path, Any]],
                                                            name: str) -> None:
    bundle, report = packaged[name]
    predict, others, sample, sources = CHOSEN[name]
    assert report["methods"]["predict"] == predict and set(report["methods"]) - {"predict"} == others
    assert report["sample"] == sample
    assert [(s["expr"], s["rows"]) for s in report["golden"]["sources"]] == sources
    # every golden case, the test split's included, was replayed in a fresh interpreter by `package`
    assert report["golden"]["cases"] == report["golden"]["passed"] == report["golden"]["recorded"] > 0
    recorded = golden(bundle)
    assert [(s["expr"], s["rows"]) for s in recorded["sources"]] == sources
    in_predict = [case["source"] for case in recorded["cases"] if case["method"] == "predict"]
    assert in_predict == [expr for expr, rows in sources for _ in range(rows)]


@pytest.mark.parametrize("name", sorted(CHOSEN))
def test_every_golden_case_replays_over_http(cli: Any, packaged: dict[str, tuple[Path, Any]],
                                             urls: dict[str, str], name: str) -> None:
    result = cli("verify", packaged[name][0], "--url", urls[name])
    assert result.exit_code == 0, result.output


def test_a_client_sending_the_notebooks_one_row_gets_its_answer(packaged: dict[str, tuple[Path, Any]],
                                                                urls: dict[str, str]) -> None:
    bundle = packaged["one_row_frame"][0]
    row = {"sepal length (cm)": 5.9, "sepal width (cm)": 3.0, "petal length (cm)": 5.1, "petal width (cm)": 1.8}
    status, answer = post(f"{urls['one_row_frame']}/predict", {"instances": [row]})
    assert status == 200 and answer["predictions"] == expected(bundle)[:1]
    text = "the staff was friendly and the coffee was great"
    status, answer = post(f"{urls['text_literal']}/predict", {"instances": [text]})
    assert status == 200 and answer["predictions"] == expected(packaged["text_literal"][0])[:1]
    assert answer["predictions"] == ["pos"]


def test_integer_labels_are_named_by_their_digits_in_every_payload(
        packaged: dict[str, tuple[Path, Any]], urls: dict[str, str], tmp_path: Path) -> None:
    bundle, report = packaged["int_labels"]
    url = urls["int_labels"]
    assert report["input"]["column_labels"] == "int"
    assert [c["name"] for c in report["input"]["columns"]] == [str(i) for i in range(60)]
    rows = [case["instances"][0] for case in golden(bundle)["cases"] if case["method"] == "predict"]
    answers = expected(bundle)
    assert post(f"{url}/predict", {"instances": rows}) == (200, {"predictions": answers})
    # pandas' to_json(orient="split") of the notebook's frame names the columns by integers
    split = {"columns": list(range(60)), "data": [[row[str(i)] for i in range(60)] for row in rows]}
    assert post(f"{url}/invocations", {"dataframe_split": split}) == (200, {"predictions": answers})
    assert post(f"{url}/invocations", {"dataframe_records": rows}) == (200, {"predictions": answers})
    lines = [",".join(map(str, range(60)))] + [",".join(str(row[str(i)]) for i in range(60)) for row in rows]
    status, answer = post(f"{url}/invocations", ("\n".join(lines) + "\n").encode(), "text/csv")
    assert (status, answer) == (200, {"predictions": answers})
    # `mlship predict` over a CSV file with the same header
    source, target = tmp_path / "in.csv", tmp_path / "out.csv"
    source.write_text("\n".join(lines) + "\n")
    done = subprocess.run([sys.executable, "-m", "mlship", "predict", str(bundle), "-i", str(source), "-o",
                           str(target)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with target.open() as fh:
        assert [r["prediction"] for r in csv.DictReader(fh)] == answers


def test_clusters_served_through_predict_are_the_notebooks_fit_predict_labels(
        packaged: dict[str, tuple[Path, Any]], urls: dict[str, str], samples: Path) -> None:
    # The notebook wrote every customer with the segment fit_predict gave it.
    with (samples / "segments.csv").open() as fh:
        segments = list(csv.DictReader(fh))
    rows = [{"annual_income": float(s["annual_income"]), "spending_score": float(s["spending_score"])}
            for s in segments]
    status, answer = post(f"{urls['kmeans_elbow']}/predict", {"instances": rows})
    assert status == 200 and answer["predictions"] == [int(s["segment"]) for s in segments]
    status, answer = post(f"{urls['kmeans_elbow']}/transform", {"instances": rows[:5]})
    assert status == 200 and len(answer["predictions"][0]) == 4  # distance to each of the 4 centres
    bundle = packaged["kmeans_elbow"][0]
    for got, want in zip(answer["predictions"], expected(bundle, "transform"), strict=True):
        assert got == pytest.approx(want)
