"""The host numbers the input rows exactly as the bundle's batch reader does: the outputs and rejects of both
bundles are lined up by those numbers."""

from __future__ import annotations

import json
from pathlib import Path

from mlship.compare.rows import read_output_row, read_rejects, read_rows
from mlship.runtime._batch_input import Layout, open_reader
from mlship.runtime._contract import Column, InputSchema

SCHEMA = InputSchema("dataframe", columns=(Column("a", "number"), Column("b", "string")))


def runtime_numbers(path: Path, fmt: str) -> list[int]:
    reader = open_reader(path, fmt, Layout(SCHEMA, ()), chunk_rows=2)
    try:
        return [n for chunk in reader.chunks for n in [*chunk.numbers, *(bad.number for bad in chunk.bad)]]
    finally:
        reader.close()


def test_csv_rows_are_numbered_by_the_line_they_start_on(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text('a,b\n1,x\n\n2,"two\nlines"\n3,y,extra\n4,z\n')
    assert [n for n, _ in read_rows(path, "csv")] == sorted(runtime_numbers(path, "csv")) == [2, 4, 6, 7]
    rows = dict(read_rows(path, "csv"))
    assert rows[4] == {"a": "2", "b": "two\nlines"} and rows[6] == ["3", "y", "extra"]


def test_jsonl_rows_skip_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1, "b": "x"}\n\n{"a": 2, "b": "y"}\nnot json\n')
    assert [n for n, _ in read_rows(path, "jsonl")] == sorted(runtime_numbers(path, "jsonl")) == [1, 3, 4]


def test_parquet_rows_count_from_one(tmp_path: Path) -> None:
    import pyarrow as pa  # a test dependency (parquet input of `mlship predict`)
    import pyarrow.parquet as pq

    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"a": [1.0, 2.0, 3.0], "b": ["x", "y", "z"]}), path)
    assert list(read_rows(path, "parquet")) == [(1, {"a": 1.0, "b": "x"}), (2, {"a": 2.0, "b": "y"}),
                                                (3, {"a": 3.0, "b": "z"})]
    assert runtime_numbers(path, "parquet") == [1, 2, 3]


def test_output_rows_and_rejects(tmp_path: Path) -> None:
    assert read_output_row(b'{"label": 1, "prediction": 0}', "predict", ("label",)) == 0
    assert read_output_row(b'{"predict_proba_0": 0.2, "predict_proba_1": 0.8}', "predict_proba", ()) == [0.2, 0.8]
    assert read_output_row(b'{"low": 1, "high": 2}', "predict", ()) == {"low": 1, "high": 2}
    rejects = tmp_path / "out.rejects.jsonl"
    rejects.write_text(json.dumps({"where": "line 7", "error": "lacks b", "row": {}}) + "\n")
    assert read_rejects(str(rejects)) == {7: "lacks b"}
    assert read_rejects(None) == {}


def test_the_data_format_comes_from_the_option_or_the_extension(tmp_path: Path) -> None:
    import pytest

    from mlship.compare.rows import input_format
    from mlship.errors import MlshipError

    assert input_format(tmp_path / "a.csv", None) == "csv"
    assert input_format(tmp_path / "a.txt", "jsonl") == "jsonl"
    for path, given, words in ((tmp_path / "a.txt", None, "from its extension"),
                               (tmp_path / "a.csv", "xls", "--data-format must be")):
        with pytest.raises(MlshipError) as caught:
            input_format(path, given)
        assert words in caught.value.message and caught.value.exit_code == 2
