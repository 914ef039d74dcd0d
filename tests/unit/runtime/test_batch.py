"""Batch predictions over files (`python -m mlship_runtime predict`), in-process on the sample bundles."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mlship.runtime import __main__ as cli
from mlship.runtime._batch import BatchError, BatchOptions, BatchResult, predict_file, row_message
from mlship.runtime._bundle import LoadedBundle, load_bundle
from mlship.runtime._codec import to_jsonable
from mlship.runtime._progress import ProgressLine, format_seconds, render_progress
from mlship.runtime._schema import decode_request

COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
FORMATS = ["csv", "jsonl", "parquet"]


@pytest.fixture
def bundle(sample_bundle: Callable[[str], Path]) -> Iterator[Callable[[str], LoadedBundle]]:
    def load(sample: str) -> LoadedBundle:
        return load_bundle(sample_bundle(sample))

    yield load
    sys.modules.pop("mlship_predictor", None)


def iris_rows(count: int) -> list[dict[str, Any]]:
    from sklearn.datasets import load_iris

    data = load_iris().data.tolist()
    return [{"id": f"r{i}", **dict(zip(COLUMNS, data[(i * 7) % 150], strict=True))} for i in range(count)]


def server_predictions(bundle: LoadedBundle, rows: list[Any], method: str = "predict") -> list[Any]:
    """What POST /<method> answers for these rows, one request per row (the notebook's own answer)."""
    out = []
    for row in rows:
        instance = {k: v for k, v in row.items() if k != "id"} if isinstance(row, dict) else row
        [prediction] = to_jsonable(
            bundle.methods[method](decode_request({"instances": [instance]}, bundle.schema))
        )
        out.append(prediction)
    return out


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Rows (dicts) as CSV, JSONL or parquet, by the extension."""
    if path.suffix == ".csv":
        with path.open("w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    else:
        pyarrow = pytest.importorskip("pyarrow")
        import pyarrow.parquet as pq

        pq.write_table(pyarrow.Table.from_pylist(rows), path)
    return path


def read_rows(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".csv":
        with path.open(newline="") as stream:
            return list(csv.DictReader(stream))
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = pq.read_table(path).to_pylist()
    return rows


def run(bundle: LoadedBundle, source: Path, target: Path, **options: Any) -> BatchResult:
    return predict_file(bundle, source, target, BatchOptions(**options))


# -- formats, order, chunks ------------------------------------------------------------------------------------


@pytest.mark.parametrize("out_format", FORMATS)
@pytest.mark.parametrize("in_format", FORMATS)
def test_every_format_in_and_out_keeps_order_and_ids(
    bundle: Callable[[str], LoadedBundle], tmp_path: Path, in_format: str, out_format: str
) -> None:
    iris = bundle("iris_frame")
    rows = iris_rows(25)
    source = write_rows(tmp_path / f"in.{in_format}", rows)
    result = run(iris, source, tmp_path / f"out.{out_format}", chunk_rows=4, id_columns=("id",))
    assert (result.rows, result.method, result.row_by_row) == (25, "predict", False)
    written = read_rows(tmp_path / f"out.{out_format}")
    assert [row["id"] for row in written] == [row["id"] for row in rows]
    predictions = [int(row["prediction"]) for row in written]  # CSV cells are text
    assert predictions == server_predictions(iris, rows)
    assert list(written[0]) == ["id", "prediction"]


@pytest.mark.parametrize("chunk_rows", [1, 2, 3, 10, 11, 1000])
def test_chunk_boundaries_do_not_change_the_output(
    bundle: Callable[[str], LoadedBundle], tmp_path: Path, chunk_rows: int
) -> None:
    iris = bundle("iris_frame")
    rows = iris_rows(10)
    source = write_rows(tmp_path / "in.csv", rows)
    run(iris, source, tmp_path / "out.csv", chunk_rows=chunk_rows, method="predict_proba")
    written = read_rows(tmp_path / "out.csv")
    expected = server_predictions(iris, rows, "predict_proba")
    # Equal up to rounding: BLAS may sum a batch of rows in another order than one row alone.
    assert [[float(row[f"predict_proba_{k}"]) for k in range(3)] for row in written] == [
        pytest.approx(probabilities, rel=1e-9, abs=1e-15) for probabilities in expected
    ]


def test_two_dimensional_outputs_get_one_column_per_value(
    bundle: Callable[[str], LoadedBundle], tmp_path: Path
) -> None:
    iris = bundle("iris_frame")
    source = write_rows(tmp_path / "in.jsonl", iris_rows(3))
    run(iris, source, tmp_path / "out.jsonl", method="predict_proba", id_columns=("id",))
    [first, *_] = read_rows(tmp_path / "out.jsonl")
    assert list(first) == ["id", "predict_proba_0", "predict_proba_1", "predict_proba_2"]
    assert first["id"] == "r0" and abs(sum(first[f"predict_proba_{k}"] for k in range(3)) - 1) < 1e-9


def test_without_id_columns_only_predictions_are_written(
    bundle: Callable[[str], LoadedBundle], tmp_path: Path
) -> None:
    iris = bundle("iris_frame")
    rows = iris_rows(30)
    run(iris, write_rows(tmp_path / "in.csv", rows), tmp_path / "out.csv")
    expected = server_predictions(iris, rows)
    assert set(expected) == {0, 1, 2}
    assert (tmp_path / "out.csv").read_text().splitlines() == ["prediction", *map(str, expected)]


def test_dataframe_rows_as_lists_in_jsonl(bundle: Callable[[str], LoadedBundle], tmp_path: Path) -> None:
    # As over HTTP, a dataframe row may be a list in column order.
    (tmp_path / "in.jsonl").write_text("[5.1, 3.5, 1.4, 0.2]\n\n[6.7, 3.0, 5.2, 2.3]\n")
    run(bundle("iris_frame"), tmp_path / "in.jsonl", tmp_path / "out.csv")
    assert read_rows(tmp_path / "out.csv") == [{"prediction": "0"}, {"prediction": "2"}]


def test_ndarray_input_from_csv_columns_and_jsonl_lists(
    bundle: Callable[[str], LoadedBundle], tmp_path: Path
) -> None:
    iris = bundle("iris_array")
    rows = iris_rows(6)
    write_rows(tmp_path / "in.csv", rows)
    run(iris, tmp_path / "in.csv", tmp_path / "from_csv.jsonl", id_columns=("id",), chunk_rows=4)
    (tmp_path / "in.jsonl").write_text("".join(json.dumps([row[c] for c in COLUMNS]) + "\n" for row in rows))
    run(iris, tmp_path / "in.jsonl", tmp_path / "from_jsonl.jsonl", chunk_rows=4)
    expected = server_predictions(iris, [[row[c] for c in COLUMNS] for row in rows])
    assert [row["prediction"] for row in read_rows(tmp_path / "from_csv.jsonl")] == expected
    assert [row["prediction"] for row in read_rows(tmp_path / "from_jsonl.jsonl")] == expected
    assert [row["id"] for row in read_rows(tmp_path / "from_csv.jsonl")] == [row["id"] for row in rows]


@pytest.mark.parametrize("in_format", FORMATS)
def test_one_value_per_row_input(
    bundle: Callable[[str], LoadedBundle], tmp_path: Path, in_format: str
) -> None:
    rows = [{"id": 1, "text": "one two three"}, {"id": 2, "text": "four"}, {"id": 3, "text": "five six"}]
    write_rows(tmp_path / f"in.{in_format}", rows)
    run(bundle("text_length"), tmp_path / f"in.{in_format}", tmp_path / "out.jsonl", id_columns=("id",))
    assert read_rows(tmp_path / "out.jsonl") == [
        {"id": row["id"] if in_format != "csv" else str(row["id"]), "prediction": words}
        for row, words in zip(rows, [3, 1, 2], strict=True)
    ]


def test_one_value_per_row_jsonl_scalars(bundle: Callable[[str], LoadedBundle], tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text('"a b"\n"c"\n')
    run(bundle("text_length"), tmp_path / "in.jsonl", tmp_path / "out.csv")
    assert (tmp_path / "out.csv").read_text().splitlines() == ["prediction", "2", "1"]


def test_one_value_per_row_needs_one_field(bundle: Callable[[str], LoadedBundle], tmp_path: Path) -> None:
    write_rows(tmp_path / "in.csv", [{"id": 1, "text": "a"}])
    with pytest.raises(BatchError, match=r'has the fields "id", "text"; mark the others with --id-column'):
        run(bundle("text_length"), tmp_path / "in.csv", tmp_path / "out.csv")


def test_extra_columns_are_ignored(bundle: Callable[[str], LoadedBundle], tmp_path: Path) -> None:
    rows = [{**row, "species": "setosa"} for row in iris_rows(2)]
    write_rows(tmp_path / "in.csv", rows)
    run(bundle("iris_frame"), tmp_path / "in.csv", tmp_path / "out.csv")
    assert len(read_rows(tmp_path / "out.csv")) == 2


def test_an_empty_input_writes_just_the_header(bundle: Callable[[str], LoadedBundle], tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("id," + ",".join(f'"{c}"' for c in COLUMNS) + "\n")
    result = run(bundle("iris_frame"), tmp_path / "in.csv", tmp_path / "out.csv", id_columns=("id",))
    assert result.rows == 0
    assert (tmp_path / "out.csv").read_text() == "id,prediction\n"


# -- row by row when the model is not batch-safe ---------------------------------------------------------------


def test_not_batch_safe_predicts_row_by_row(bundle: Callable[[str], LoadedBundle], tmp_path: Path) -> None:
    # The model centres x on the mean of the rows it gets together: alone, every row gives the offset, 10.
    model = bundle("not_batch_safe")
    (tmp_path / "in.csv").write_text("x\n1\n5\n9\n")
    result = run(model, tmp_path / "in.csv", tmp_path / "out.csv", chunk_rows=2)
    assert (tmp_path / "out.csv").read_text().splitlines() == ["prediction", "10.0", "10.0", "10.0"]
    assert result.row_by_row and result.summary().endswith("(row by row: mlship.json says batch_safe: false)")


# -- bad rows --------------------------------------------------------------------------------------------------

HEADER = "id," + ",".join(f'"{c}"' for c in COLUMNS) + "\n"


def test_a_bad_row_stops_the_job_naming_its_line(
    bundle: Callable[[str], LoadedBundle], tmp_path: Path
) -> None:
    source = tmp_path / "in.csv"
    source.write_text(
        HEADER + "a,5.1,3.5,1.4,0.2\nb,5.1,3.5,1.4,0.2\nc,5.1,wide,1.4,0.2\nd,5.1,3.5,1.4,0.2\n"
    )
    with pytest.raises(BatchError) as error:
        run(bundle("iris_frame"), source, tmp_path / "out.csv", chunk_rows=2)
    assert (
        error.value.message
        == f'{source}, line 4: column "sepal width (cm)": expected a number, got the string "wide"'
    )
    assert error.value.hint == "--skip-invalid writes such rows to a rejects file and goes on"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in.csv"]  # nothing half-written


def test_the_first_bad_line_is_named_whatever_kind_of_problem(
    bundle: Callable[[str], LoadedBundle], tmp_path: Path
) -> None:
    source = tmp_path / "in.csv"
    source.write_text(HEADER + "a,5.1,3.5,1.4,0.2\nb,5.1,oops,1.4,0.2\nc,5.1,3.5\n")
    with pytest.raises(BatchError, match=r"line 3: column"):
        run(bundle("iris_frame"), source, tmp_path / "out.csv")
    source.write_text(HEADER + "a,5.1,3.5\nb,5.1,oops,1.4,0.2\n")
    with pytest.raises(BatchError, match=r"line 2: has 3 fields, but the header has 5$"):
        run(bundle("iris_frame"), source, tmp_path / "out.csv")


def test_skip_invalid_writes_rejects_and_goes_on(
    bundle: Callable[[str], LoadedBundle], tmp_path: Path
) -> None:
    good = iris_rows(4)
    lines = [
        json.dumps(good[0]),
        "{not json",
        json.dumps({**good[1], COLUMNS[0]: "wide"}),
        json.dumps(good[2]),
        json.dumps({"id": "x", COLUMNS[0]: 1.0}),
        json.dumps(good[3]),
        "[1, 2, 3, 4]",
    ]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    result = run(
        bundle("iris_frame"),
        tmp_path / "in.jsonl",
        tmp_path / "out.csv",
        chunk_rows=3,
        id_columns=("id",),
        skip_invalid=True,
    )
    assert (result.rows, result.rejected, result.rejects) == (3, 4, tmp_path / "out.rejects.jsonl")
    assert [row["id"] for row in read_rows(tmp_path / "out.csv")] == ["r0", "r2", "r3"]
    rejects = read_rows(tmp_path / "out.rejects.jsonl")
    assert [(r["where"], r["error"]) for r in rejects] == [
        (
            "line 2",
            "not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        ),
        ("line 3", 'column "sepal length (cm)": expected a number, got the string "wide"'),
        (
            "line 5",
            'the line lacks the model\'s columns "sepal width (cm)", "petal length (cm)", "petal width (cm)"; '
            'it has "id", "sepal length (cm)"',
        ),
        ("line 7", "--id-column needs every line to be a JSON object with that field"),
    ]
    assert [r["row"] for r in rejects] == [
        "{not json",
        {"id": "r1", **{c: good[1][c] for c in COLUMNS}, COLUMNS[0]: "wide"},
        {"id": "x", COLUMNS[0]: 1.0},
        [1, 2, 3, 4],
    ]


def test_skip_invalid_with_nothing_to_skip_still_writes_an_empty_rejects_file(
    bundle: Callable[[str], LoadedBundle], tmp_path: Path
) -> None:
    write_rows(tmp_path / "in.csv", iris_rows(2))
    result = run(bundle("iris_frame"), tmp_path / "in.csv", tmp_path / "out.csv", skip_invalid=True)
    assert result.rejected == 0 and (tmp_path / "out.rejects.jsonl").read_text() == ""
    assert result.summary().endswith(f"; 0 rejected -> {tmp_path / 'out.rejects.jsonl'}")


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ('column "x", row 0: expected a number, got null', 'column "x": expected a number, got null'),
        ("row 0: expected a string, got the number 3", "expected a string, got the number 3"),
        ("row 0, value [2]: expected a number, got null", "value [2]: expected a number, got null"),
        ('column "a", row 0: bad; column "b", row 0: worse', 'column "a": bad; column "b": worse'),
        (
            'column "n": cannot convert the values to int64: row 0 is null, and int64 has no missing values',
            'column "n": cannot convert the values to int64: it is null, and int64 has no missing values',
        ),
        ('missing columns "x" (expected columns: "x")', 'missing columns "x" (expected columns: "x")'),
    ],
)
def test_row_messages_lose_their_row_zero(message: str, expected: str) -> None:
    assert row_message(message) == expected


def test_a_model_error_names_the_first_row_it_fails_on(
    bundle: Callable[[str], LoadedBundle], tmp_path: Path
) -> None:
    (tmp_path / "in.csv").write_text("x\n1\n2\n3\n-4\n5\n")
    with pytest.raises(BatchError) as error:
        run(bundle("raises"), tmp_path / "in.csv", tmp_path / "out.csv", chunk_rows=3)
    assert (
        error.value.message
        == f"{tmp_path / 'in.csv'}, line 5: predict raised ValueError: x must not be negative"
    )
    assert not (tmp_path / "out.csv").exists()


# -- files, formats, options -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"method": "explain"}, "the bundle has no method 'explain'; it has predict, predict_proba"),
        ({"id_columns": ("key",)}, 'line 1 (the header), has no id column "key"; its fields: "id", "sepal'),
    ],
)
def test_bad_options(
    bundle: Callable[[str], LoadedBundle], tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    write_rows(tmp_path / "in.csv", iris_rows(1))
    with pytest.raises(BatchError, match=message.replace("(", r"\(").replace(")", r"\)")) as caught:
        run(bundle("iris_frame"), tmp_path / "in.csv", tmp_path / "out.csv", **options)
    assert caught.value.hint


def test_unusable_files(bundle: Callable[[str], LoadedBundle], tmp_path: Path) -> None:
    iris = bundle("iris_frame")
    with pytest.raises(BatchError, match=r"in.csv does not exist") as caught:
        run(iris, tmp_path / "in.csv", tmp_path / "out.csv")
    assert caught.value.hint == "check --input: it takes a .csv, .jsonl or .parquet file"
    (tmp_path / "in.txt").write_text("")
    with pytest.raises(BatchError, match=r"cannot tell the format of .*in.txt .* or pass --input-format"):
        run(iris, tmp_path / "in.txt", tmp_path / "out.csv")
    (tmp_path / "in.csv").write_text("")
    with pytest.raises(BatchError, match=r"in.csv is empty; a CSV file starts with a header line"):
        run(iris, tmp_path / "in.csv", tmp_path / "out.csv")
    (tmp_path / "in.csv").write_text("a,b\n1,2\n")
    with pytest.raises(
        BatchError, match=r'lacks the model\'s columns "sepal length \(cm\)", .*; it has "a", "b"'
    ):
        run(iris, tmp_path / "in.csv", tmp_path / "out.csv")
    with pytest.raises(BatchError, match=r"the folder .*nowhere does not exist") as caught:
        run(iris, tmp_path / "in.csv", tmp_path / "nowhere" / "out.csv")
    assert caught.value.hint == f"create it first (mkdir -p {tmp_path / 'nowhere'}) or pass another --output"
    with pytest.raises(BatchError, match=r"is the input file"):
        run(iris, tmp_path / "in.csv", tmp_path / "in.csv")


def test_formats_can_be_named_explicitly(bundle: Callable[[str], LoadedBundle], tmp_path: Path) -> None:
    write_rows(tmp_path / "in.jsonl", iris_rows(2))
    (tmp_path / "in.jsonl").rename(tmp_path / "in.data")
    run(
        bundle("iris_frame"),
        tmp_path / "in.data",
        tmp_path / "out.txt",
        input_format="jsonl",
        output_format="csv",
    )
    assert (tmp_path / "out.txt").read_text().splitlines() == ["prediction", "0", "0"]


def test_parquet_without_pyarrow_says_how_to_get_it(
    bundle: Callable[[str], LoadedBundle], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # makes `import pyarrow...` raise ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    (tmp_path / "in.parquet").write_bytes(b"PAR1")
    write_rows(tmp_path / "in.csv", iris_rows(1))
    for source, target, verb in (("in.parquet", "out.csv", "reading"), ("in.csv", "out.parquet", "writing")):
        with pytest.raises(BatchError, match=rf"{verb} parquet needs pyarrow, which is not installed$") as caught:
            run(bundle("iris_frame"), tmp_path / source, tmp_path / target)
        assert caught.value.hint is not None and caught.value.hint.startswith("pip install pyarrow")


def test_csv_values_get_their_schema_types(bundle: Callable[[str], LoadedBundle], tmp_path: Path) -> None:
    # Integers where numbers belong, and a byte order mark, as spreadsheet programs write it.
    (tmp_path / "in.csv").write_bytes("\ufeffx\n2\n3.5\n".encode())
    run(bundle("raises"), tmp_path / "in.csv", tmp_path / "out.csv")
    assert (tmp_path / "out.csv").read_text().splitlines() == ["prediction", "4.0", "7.0"]


def test_csv_output_cells(tmp_path: Path) -> None:
    from mlship.runtime._batch_output import Output

    output = Output(tmp_path / "out.csv", "csv")
    output.write({"a": [1, None, float("nan"), [1, 2], {"k": "v"}, "text", 2.5, True], "b": list(range(8))})
    output.commit(["a", "b"])
    assert (tmp_path / "out.csv").read_text().splitlines() == [
        "a,b",
        "1,0",
        ",1",
        ",2",
        '"[1,2]",3',
        '"{""k"":""v""}",4',
        "text,5",
        "2.5,6",
        "True,7",
    ]


# -- progress and the command line -----------------------------------------------------------------------------


def test_progress_redraws_at_most_every_interval() -> None:
    now = [0.0]
    stream = io.StringIO()
    line = ProgressLine(stream, "iris predict", interval=0.25, live=True, clock=lambda: now[0])
    for step in range(1, 11):
        now[0] = step * 0.1
        line.update(step * 1000, step / 10)
    assert stream.getvalue().count("\r") == 4  # at 0.1, 0.4, 0.7 and 1.0 s
    line.finish("done")
    assert stream.getvalue().endswith("\rdone\n")


def test_progress_is_quiet_off_a_terminal() -> None:
    stream = io.StringIO()
    line = ProgressLine(stream, "iris predict")
    line.update(10, 0.5)
    line.finish("summary")
    assert stream.getvalue() == "summary\n"


def test_render_progress() -> None:
    text = render_progress("iris predict", 310_000, 0.31, 2.0, width=10)
    assert text == "iris predict  [###.......]  31%  310,000 rows  155,000 rows/s  ETA 4.5 s"
    assert render_progress("x", 5, None, 0.0) == "x  5 rows"
    assert [format_seconds(s) for s in (0.25, 75, 7300)] == ["0.2 s", "1 min 15 s", "2 h 01 min"]


def test_main_predict_prints_a_summary(
    sample_bundle: Callable[[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_rows(tmp_path / "in.csv", iris_rows(3))
    argv = [
        "predict",
        str(sample_bundle("iris_frame")),
        "-i",
        str(tmp_path / "in.csv"),
        "-o",
        str(tmp_path / "o.csv"),
    ]
    assert cli.main([*argv, "--id-column", "id", "--chunk-rows", "2"]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("predict: 3 rows in ") and captured.err.endswith(
        f"-> {tmp_path / 'o.csv'}\n"
    )
    assert (tmp_path / "o.csv").read_text().splitlines() == ["id,prediction", "r0,0", "r1,0", "r2,0"]


def test_main_predict_failures(
    sample_bundle: Callable[[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "in.csv").write_text("x\n1\n-1\n")
    bundle = str(sample_bundle("raises"))
    assert cli.main(["predict", bundle, "-i", str(tmp_path / "in.csv"), "-o", str(tmp_path / "o.csv")]) == 1
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'in.csv'}, line 3: predict raised ValueError: x must not be negative\n"
    )
    (tmp_path / "in.csv").write_text("x\n1\nminus one\n")
    assert cli.main(["predict", bundle, "-i", str(tmp_path / "in.csv"), "-o", str(tmp_path / "o.csv")]) == 1
    assert capsys.readouterr().err.endswith(
        'line 3: column "x": expected a number, got the string "minus one"\n'
        "hint: --skip-invalid writes such rows to a rejects file and goes on\n"
    )
    assert cli.main(["predict", str(tmp_path), "-i", "in.csv", "-o", "o.csv"]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path} is not a bundle: it has no mlship.json\n"
