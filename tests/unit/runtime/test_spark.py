"""Spark scoring without a JVM: the result types, the worker's scoring of pandas batches, and error extraction.

tests/e2e/test_spark.py runs the same code on a real local Spark.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mlship.runtime._batch_input import BatchError
from mlship.runtime._contract import Golden, GoldenCase
from mlship.runtime._spark_worker import MARKER, Scorer, ScoringError, Spec, load
from mlship.runtime.spark import job_error, result_type
from tests.unit.runtime.sample_bundles import edit_golden

COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]


def golden(*outputs: Any) -> Golden:
    return Golden(tuple(GoldenCase(f"c{i}", "m", [{}], [out]) for i, out in enumerate(outputs)))


@pytest.mark.parametrize(
    ("outputs", "ddl", "kind"),
    [
        ((0, 2), "bigint", "value"),
        ((0, 2.5), "double", "value"),
        (("setosa",), "string", "value"),
        ((True, None, False), "boolean", "value"),
        (([0.9, 0.1], [0, 1]), "array<double>", "list"),
        (([1, 2],), "array<bigint>", "list"),
        # An object per row with the same keys: a struct of them; nested values, and several types, as JSON text.
        (({"a": 1, "b": [0.5], "c": {"d": 1}, "e": 1},), "struct<`a`:bigint,`b`:array<double>,`c`:string,`e`:bigint>",
         "dict"),
        (({"a": 1, "e": "x"}, {"a": 2.5, "e": 3}), "struct<`a`:double,`e`:string>", "dict"),
        # No one shape (keys that differ, lists and objects, values of several types): the output as JSON text.
        (({"a": 1}, {"b": 1}), "string", "json"),
        (([1], {"b": 1}), "string", "json"),
        (([[1, 2]],), "string", "json"),
        ((1, "a"), "string", "json"),
    ],
)
def test_the_result_type_follows_the_golden_outputs(outputs: tuple[Any, ...], ddl: str, kind: str) -> None:
    found = result_type(golden(*outputs), "m")
    assert (found.ddl, found.kind) == (ddl, kind)


def test_a_struct_knows_its_keys_and_which_are_json_text() -> None:
    found = result_type(golden({"a b": 1, "c": {"d": 1}}), "m")
    assert (found.names, found.json_fields) == (("a b", "c"), ("c",))
    assert found.columns(error=True) == "`a b` bigint, `c` string, `error` string"
    assert result_type(golden([0.2, 0.8]), "m").width == 2


def test_a_method_without_golden_outputs_is_refused_by_name() -> None:
    with pytest.raises(BatchError, match="no golden output of other"):
        result_type(golden(1), "other")


@pytest.fixture
def loaded(sample_bundle: Callable[[str], Path]) -> Iterator[Callable[..., Scorer]]:
    def make(method: str = "predict", skip: bool = False, env: str = "shipped", ids: tuple[str, ...] = ()) -> Scorer:
        spec = Spec(method, tuple(COLUMNS), "list" if method == "predict_proba" else "value", (), skip, env, ids)
        return Scorer(load(sample_bundle("iris_frame"), spec), spec)

    yield make
    sys.modules.pop("mlship_predictor", None)


def batch(rows: int, *, null_at: int | None = None) -> list[Any]:
    import numpy
    import pandas
    from sklearn.datasets import load_iris

    data = numpy.resize(load_iris().data, (rows, 4))
    if null_at is not None:
        data[null_at, 3] = numpy.nan  # Spark hands a null of a double column to a pandas UDF as NaN
    return [pandas.Series(data[:, i]) for i in range(4)]


def test_the_worker_scores_a_batch_as_mlship_predict_does(loaded: Callable[..., Scorer]) -> None:
    from mlship.runtime._schema import decode_request

    scorer = loaded()
    frame = scorer.score(batch(300))
    rows = [dict(zip(COLUMNS, values, strict=True)) for values in zip(*(s.tolist() for s in batch(300)), strict=True)]
    want = scorer.bundle.methods["predict"](decode_request({"instances": rows}, scorer.bundle.schema)).tolist()
    assert list(frame.columns) == ["prediction"]
    assert frame["prediction"].tolist() == want


def test_several_values_per_row_become_one_list(loaded: Callable[..., Scorer]) -> None:
    frame = loaded("predict_proba").score(batch(5))
    values = frame["prediction"].tolist()
    assert all(isinstance(v, list) and len(v) == 3 and abs(sum(v) - 1) < 1e-9 for v in values)


def test_a_bad_row_stops_the_batch_naming_the_row_and_its_id(loaded: Callable[..., Scorer]) -> None:
    import pandas

    scorer = loaded(ids=("id",))
    scorer.score([*batch(10), pandas.Series(range(10))])  # the worker counts on: the next batch starts at row 11
    with pytest.raises(ScoringError) as caught:
        scorer.score([*batch(10, null_at=6), pandas.Series(range(100, 110))])
    message = str(caught.value)
    assert message.startswith(MARKER + "executor ")
    assert ', row 17: column "petal width (cm)": ' in message and "got null" in message
    assert '"id": 106' in message
    assert "--skip-invalid" not in message  # that is the CLI's flag: the worker does not know who called it


def test_skip_invalid_gives_null_and_the_error(loaded: Callable[..., Scorer]) -> None:
    frame = loaded(skip=True).score(batch(10, null_at=2))
    assert list(frame.columns) == ["prediction", "error"]
    assert frame["prediction"][2] is None and 'column "petal width (cm)"' in frame["error"][2]
    assert frame["error"].isna().sum() == 9 and frame["prediction"].notna().sum() == 9


def test_a_golden_case_that_does_not_replay_names_the_case_and_both_values(
    make_bundle: Callable[[str], Path],
) -> None:
    bundle = make_bundle("iris_frame")

    def wrong(data: dict[str, Any]) -> None:
        data["cases"][1]["expected"] = [0]

    edit_golden(bundle, wrong)
    spec = Spec("predict", tuple(COLUMNS), "value", (), False, "executor")
    try:
        with pytest.raises(ScoringError) as caught:
            load(bundle, spec)
    finally:
        sys.modules.pop("mlship_predictor", None)
    message = str(caught.value)
    assert "golden case predict-1 (predict) does not replay on executor " in message
    assert "expected [0], got [1]" in message
    assert message.endswith("so that the bundle's locked wheels are shipped to the executors")


def test_job_error_finds_the_workers_message_in_sparks_trace() -> None:
    trace = ("An error occurred while calling o66.parquet.\n: org.apache.spark.SparkException: Job aborted\n"
             "  File \"/x/_spark_worker.py\", line 9, in score\n"
             f"mlship._spark_worker.ScoringError: {MARKER}executor h, row 3: bad | hint: do this\n"
             "\tat org.apache.spark.api.python...\n")
    error = job_error(RuntimeError(trace))
    assert (error.message, error.hint) == ("executor h, row 3: bad", "do this")
    other = job_error(RuntimeError("Job aborted\nValueError: something else\n\tat ..."))
    assert other.message == "the Spark job failed: ValueError: something else"
    wrapped = job_error(RuntimeError("An exception was thrown from the Python worker:\n"
                                     "org.apache.spark.api.python.PythonException: Traceback (most recent call last):\n"
                                     "_csv.Error: iterator should return strings\n"))
    assert wrapped.message == "the Spark job failed: _csv.Error: iterator should return strings"


def scorer_for(bundle: Path, method: str, **spec: Any) -> Scorer:
    from mlship.runtime._bundle import read_servable

    found = result_type(read_servable(bundle).golden, method)
    made = Spec(method, tuple(COLUMNS), found.kind, found.names, spec.pop("skip", False), "shipped",
                json_fields=found.json_fields, **spec)
    return Scorer(load(bundle, made), made)


@pytest.fixture
def objects(sample_bundle: Callable[[str], Path]) -> Iterator[Path]:
    yield sample_bundle("iris_objects")
    sys.modules.pop("mlship_predictor", None)


def test_an_object_per_row_becomes_the_columns_of_a_struct(objects: Path) -> None:
    import json

    frame = scorer_for(objects, "explain").score(batch(3))
    assert list(frame.columns) == ["label", "name", "confidence", "proba", "top"]
    assert frame["name"].tolist() == ["setosa"] * 3 and len(frame["proba"][0]) == 3
    assert json.loads(frame["top"][0]) == {"name": "setosa", "rank": 1}  # a nested object: JSON text


def test_objects_of_no_one_shape_become_json_text(objects: Path) -> None:
    import json

    frame = scorer_for(objects, "likely", skip=True).score(batch(150))
    rows = [json.loads(text) for text in frame["prediction"]]
    assert list(rows[0]) == ["setosa"] and {"versicolor", "virginica"} <= {key for row in rows for key in row}
    assert frame["error"].isna().all()


def test_csv_text_is_typed_as_mlship_predict_types_it(loaded: Callable[..., Scorer]) -> None:
    import pandas

    text = [pandas.Series([str(v) for v in series], dtype=object) for series in batch(4)]
    text[3][1] = None  # an empty cell: a missing value
    text[0][2] = "five"  # does not parse: stays text, for the validator to name
    malformed = pandas.Series([None, None, None, "1,2"], dtype=object)
    spec = Spec("predict", tuple(COLUMNS), "value", (), True, "shipped", input="csv", malformed=True)
    scorer = loaded()
    frame = Scorer(scorer.bundle, spec).score([*text, malformed])
    assert frame["prediction"][0] == scorer.score(batch(1))["prediction"][0]
    assert [frame["prediction"][i] for i in (1, 2, 3)] == [None, None, None]
    assert 'column "petal width (cm)"' in frame["error"][1] and "null" in frame["error"][1]
    assert "five" in frame["error"][2]
    assert frame["error"][3] == "has 2 fields, unlike the header"


def test_jsonl_lines_are_read_as_mlship_predict_reads_them(loaded: Callable[..., Scorer]) -> None:
    import json

    import pandas

    row = dict(zip(COLUMNS, [5.1, 3.5, 1.4, 0.2], strict=True))
    lines = pandas.Series([json.dumps({**row, "id": 7}), "{not json", json.dumps(list(row.values())),
                           json.dumps(row)], dtype=object)
    spec = Spec("predict", ("value",), "value", (), True, "shipped", ids=("id",), input="jsonl")
    frame = Scorer(loaded().bundle, spec).score([lines])
    assert frame["prediction"][0] == 0 and frame["error"][0] is None
    assert frame["error"][1].startswith("not valid JSON")
    assert frame["error"][2] == "--id-column needs every line to be a JSON object with that field"
    assert 'no id column "id"' in frame["error"][3]


@pytest.mark.parametrize(
    ("path", "given", "fmt"),
    [("data/*.csv", None, "csv"), ("s3a://b/in.ndjson", None, "jsonl"), ("hdfs:///scores/", None, "parquet"),
     ("data/*", None, "parquet"), ("preds.pq", None, "parquet"), ("preds", "jsonl", "jsonl")],
)
def test_the_format_comes_from_the_extension_as_in_mlship_predict(path: str, given: str | None, fmt: str) -> None:
    from mlship.runtime._spark_files import file_format

    assert file_format(path, given, "--format") == fmt


def test_an_unknown_format_is_refused_by_name() -> None:
    from mlship.runtime._spark_files import file_format

    with pytest.raises(BatchError, match=r"cannot tell the format of in\.xlsx"):
        file_format("in.xlsx", None, "--input-format")
    with pytest.raises(BatchError, match="--format must be csv, jsonl or parquet, got 'avro'"):
        file_format("out", "avro", "--format")
