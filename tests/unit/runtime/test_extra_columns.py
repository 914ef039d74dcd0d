"""Columns a request sends that the model does not take: dropped and named (header, log), or 400 in strict mode."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mlship.runtime._batch import BatchError, BatchOptions, predict_file
from mlship.runtime._bundle import load_bundle
from tests.unit.runtime.sample_bundles import edit_manifest

Serve = Callable[..., Any]
COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
ROW = dict.fromkeys(COLUMNS, 1.5)
EXTRA = {**ROW, "species": "setosa", "customer id": 7}
HEADER = "mlship-ignored-columns"


def test_predict_drops_extra_columns_and_names_them_in_a_header(serve: Serve, caplog: Any) -> None:
    client = serve("iris_frame")
    plain = client.post("/predict", json={"instances": [ROW]})
    assert plain.status_code == 200 and HEADER not in plain.headers
    with caplog.at_level(logging.INFO, logger="mlship"):
        answer = client.post("/predict", json={"instances": [EXTRA, EXTRA]})
        again = client.post("/predict", json={"instances": [EXTRA]})
    assert answer.status_code == 200 and again.status_code == 200
    assert answer.json()["predictions"] == plain.json()["predictions"] * 2
    assert json.loads(answer.headers[HEADER]) == ["customer id", "species"]
    assert json.loads(again.headers[HEADER]) == ["customer id", "species"]
    logged = [r.getMessage() for r in caplog.records if "ignoring columns" in r.getMessage()]
    assert len(logged) == 1 and '"customer id", "species"' in logged[0]  # once per set of names


@pytest.mark.parametrize("path", ["/predict", "/invocations"])
def test_strict_mode_answers_400_naming_the_extras(serve: Serve, monkeypatch: Any, path: str) -> None:
    monkeypatch.setenv("MLSHIP_STRICT_COLUMNS", "1")
    client = serve("iris_frame")
    answer = client.post(path, json={"dataframe_records": [EXTRA]})
    assert answer.status_code == 400
    message = answer.json().get("error") or answer.json()["message"]
    assert 'unexpected columns "customer id", "species" (strict mode: MLSHIP_STRICT_COLUMNS=1)' in message
    assert client.post(path, json={"dataframe_records": [ROW]}).status_code == 200


def test_mlflow_json_and_csv_drop_and_name_extras(serve: Serve) -> None:
    client = serve("iris_frame")
    split = {"dataframe_split": {"columns": ["id", *COLUMNS], "data": [[3, 1.5, 1.5, 1.5, 1.5]]}}
    answer = client.post("/invocations", json=split)
    assert answer.status_code == 200 and json.loads(answer.headers[HEADER]) == ["id"]
    csv = "id," + ",".join(f'"{c}"' for c in COLUMNS) + "\n3,1.5,1.5,1.5,1.5\n"
    answer = client.post("/invocations", content=csv, headers={"content-type": "text/csv"})
    assert answer.status_code == 200 and json.loads(answer.headers[HEADER]) == ["id"]


def test_strict_mode_refuses_csv_extras(serve: Serve, monkeypatch: Any) -> None:
    monkeypatch.setenv("MLSHIP_STRICT_COLUMNS", "1")
    csv = "id," + ",".join(f'"{c}"' for c in COLUMNS) + "\n3,1.5,1.5,1.5,1.5\n"
    answer = serve("iris_frame").post("/invocations", content=csv, headers={"content-type": "text/csv"})
    assert answer.status_code == 400 and "strict mode" in answer.json()["message"]


def test_the_header_is_bounded_and_ascii(serve: Serve) -> None:
    row = {**ROW, **{f"extra {i:03d}": i for i in range(100)}, "prénom": "é"}
    answer = serve("iris_frame").post("/predict", json={"instances": [row]})
    names = json.loads(answer.headers[HEADER])
    assert answer.status_code == 200 and len(names) == 65 and names[-1] == "… 37 more"
    assert all(value.isascii() for key, value in answer.headers.items() if key == HEADER)


def test_openapi_allows_extra_keys_unless_strict(serve: Serve, monkeypatch: Any) -> None:
    row = serve("iris_frame").get("/openapi.json").json()["components"]["schemas"]["Row"]
    assert row["additionalProperties"] is True and row["required"] == COLUMNS
    monkeypatch.setenv("MLSHIP_STRICT_COLUMNS", "1")
    row = serve("iris_frame").get("/openapi.json").json()["components"]["schemas"]["Row"]
    assert row["additionalProperties"] is False


def test_metadata_and_the_example_carry_only_the_client_columns(serve: Serve, make_bundle: Any) -> None:
    bundle = make_bundle("iris_frame")
    schema = json.loads((bundle / "mlship.json").read_text())["input"]
    edit_manifest(bundle, input={**schema, "ignored": ["species", "customer id"]})
    assert load_bundle(bundle).schema.ignored == ("species", "customer id")
    client = serve(bundle)
    metadata = client.get("/metadata").json()["input"]
    assert "ignored" not in metadata and [c["name"] for c in metadata["columns"]] == COLUMNS
    assert set(metadata["example"]) == set(COLUMNS)
    document = client.get("/openapi.json").json()["components"]["schemas"]
    assert set(document["PredictRequest"]["example"]["instances"][0]) == set(COLUMNS)


# -- mlship predict files ----------------------------------------------------------------------------------------


def _csv(path: Path) -> Path:
    path.write_text("id,species," + ",".join(f'"{c}"' for c in COLUMNS) + "\n1,setosa,5.1,3.5,1.4,0.2\n")
    return path


def test_a_file_s_extra_fields_are_ignored_and_named(sample_bundle: Any, tmp_path: Path) -> None:
    bundle = load_bundle(sample_bundle("iris_frame"))
    result = predict_file(bundle, _csv(tmp_path / "in.csv"), tmp_path / "out.csv", BatchOptions(id_columns=("id",)))
    assert result.rows == 1 and result.ignored == ("species",)
    assert "ignored the fields the model does not take: species" in result.summary()
    lines = tmp_path / "in.jsonl"
    lines.write_text(json.dumps({**dict(zip(COLUMNS, [5.1, 3.5, 1.4, 0.2], strict=True)), "note": "x"}) + "\n")
    assert predict_file(bundle, lines, tmp_path / "out.jsonl").ignored == ("note",)


def test_strict_mode_stops_a_file_with_extra_fields(sample_bundle: Any, tmp_path: Path) -> None:
    bundle = load_bundle(sample_bundle("iris_frame"))
    with pytest.raises(BatchError, match='fields the model does not take: "species"') as raised:
        predict_file(bundle, _csv(tmp_path / "in.csv"), tmp_path / "out.csv",
                     BatchOptions(id_columns=("id",), strict_columns=True))
    assert raised.value.hint is not None and "MLSHIP_STRICT_COLUMNS" in raised.value.hint
    assert not (tmp_path / "out.csv").exists()
