"""The executor's side of Spark scoring (spark.py is the driver's): score Arrow batches with a bundle.

This module runs inside each Python worker of the executors, imported from the bundle's own digest-checked
`mlship_runtime/` (spark.py's bootstrap checks the bundle with the driver's copy of _boot.py first). A worker loads
the bundle once, replays every golden case once, then scores batch after batch with `mlship predict`'s own code
(_batch's _Job: the server's decoding, validation, preprocessing and model, chunk by chunk). Nothing here imports
pyspark; pandas comes in as the batches do.

Failures that must stop the job raise ScoringError, whose message starts with MARKER so that the driver can find
it in the Java stack trace Spark wraps it in.
"""

from __future__ import annotations

import csv
import platform
import re
import socket
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ._batch import SKIP_HINT, _Job
from ._batch_input import _CONVERTERS, BadRow, BatchError, Chunk, Layout, _JsonlGather, _parquet_chunk
from ._bundle import BundleLoadError, LoadedBundle, load_bundle
from ._codec import _short, encode_json
from ._verify import replay_golden

MARKER = "mlship-spark-error: "
HINT_MARKER = " | hint: "
ERROR_COLUMN = "error"
PREDICTION_COLUMN = "prediction"
_ROW_COLUMN = "\0row"  # carried through _Job as an id column: which row of the batch each output belongs to


class ScoringError(Exception):
    """The job must stop: the message names the executor, and the row or golden case, and says what to do."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(MARKER + message + (HINT_MARKER + hint if hint else ""))


@dataclass(frozen=True)
class Spec:
    """What the driver asks of every worker (plain values: it travels pickled inside the UDF)."""

    method: str
    fields: tuple[str, ...]  # the UDF's arguments, in order: the input fields the model takes
    output: str  # "value", "list", "dict" or "json" (spark.py's result type, from the golden outputs)
    output_names: tuple[str, ...]  # the struct's fields for "dict"
    skip_invalid: bool
    env: str  # "shipped" or "executor": only to word the errors
    ids: tuple[str, ...] = ()  # more arguments after the fields: id columns, only to name a bad row
    json_fields: tuple[str, ...] = ()  # "dict": the keys whose values go out as JSON text
    input: str = "parquet"  # "parquet" (typed columns), "csv" (text, as Spark's CSV reader gives it), "jsonl"
    malformed: bool = False  # one more, last argument: the CSV reader's malformed line, when it found one


def executor() -> str:
    return f"executor {socket.gethostname()} (Python {platform.python_version()} at {sys.executable})"


_SCORERS: dict[tuple[str, Spec], Scorer] = {}


def scorer(root: Path, spec: Spec) -> Scorer:
    """This worker's scorer for the bundle at `root`: loaded and golden-checked on first use, then reused (a
    Python worker serves many tasks: spark.python.worker.reuse)."""
    key = (str(root), spec)
    if key not in _SCORERS:
        _SCORERS[key] = Scorer(load(root, spec), spec)
    return _SCORERS[key]


def load(root: Path, spec: Spec) -> LoadedBundle:
    """Load the bundle and replay every golden case; ScoringError naming the executor, the case and both values
    when one does not match."""
    try:
        bundle = load_bundle(root)
    except BundleLoadError as exc:
        raise ScoringError(f"{executor()} cannot load the bundle: {exc.message}", _env_hint(spec)) from None
    for result in replay_golden(bundle):
        if not result.ok:
            raise ScoringError(
                f"golden case {result.id} ({result.method}) does not replay on {executor()}: expected "
                f"{_short(result.expected)}, got {_short(result.actual)} ({result.detail})",
                _env_hint(spec),
            )
    return bundle


def _env_hint(spec: Spec) -> str:
    if spec.env == "executor":
        return ("the executors' own Python differs from the notebook's environment; leave out --env executor "
                "(env='executor'), so that the bundle's locked wheels are shipped to the executors")
    return "the shipped environment should match the notebook's: package the notebook again, and rebuild it"


class Scorer:
    def __init__(self, bundle: LoadedBundle, spec: Spec) -> None:
        self.bundle = bundle
        self.spec = spec
        self.layout = Layout(bundle.schema, (_ROW_COLUMN,))
        self.rows = 0  # rows scored by this worker so far, to number the rows in messages

    def score(self, columns: Iterable[Any]) -> Any:
        """One Arrow batch (its pandas Series, in `spec.fields` order) -> a DataFrame of the prediction (and the
        error column when skipping invalid rows), one row per input row, in order."""
        import pandas  # type: ignore[import-untyped, unused-ignore]

        series = list(columns)
        count = len(series[0]) if series else 0
        start, self.rows = self.rows, self.rows + count
        if self.spec.input == "jsonl":
            lines = series[0].tolist()
            chunk, data = self._jsonl_chunk(lines, start), {"line": lines}
        else:
            chunk, data = self._column_chunk(series, start, count)
        job = (_JsonJob if self.spec.output == "json" else _Job)(
            self.bundle, self.spec.method, (_ROW_COLUMN,), f"{executor()}, ")
        sink, rejects = _Collect(), (_Rejects() if self.spec.skip_invalid else None)
        try:
            job.run(chunk, sink, rejects)  # type: ignore[arg-type]
        except BatchError as exc:
            raise ScoringError(_with_row(exc.message, start, data),
                               None if exc.hint == SKIP_HINT else exc.hint) from None
        predictions: list[Any] = [None] * count
        for row, value in zip(sink.rows, self._values(sink), strict=True):
            predictions[row] = value
        # object: a null among integers must not turn them into floats (NaN), which lose digits past 2**53.
        if self.spec.output == "dict":  # one column per key: the struct's fields
            frame = {name: pandas.Series([None if row is None else row[name] for row in predictions], dtype=object)
                     for name in self.spec.output_names}
        else:
            frame = {PREDICTION_COLUMN: pandas.Series(predictions, dtype=object)}
        if rejects is not None:
            errors: list[str | None] = [None] * count
            for bad in rejects.bad:
                errors[bad.number - start - 1] = bad.message
            frame[ERROR_COLUMN] = pandas.Series(errors, dtype=object)
        return pandas.DataFrame(frame)

    def _column_chunk(self, series: list[Any], start: int, count: int) -> tuple[Chunk, dict[str, list[Any]]]:
        """Parquet's typed columns as they are; CSV's text given its schema type as `mlship predict` gives it."""
        spec = self.spec
        width = len(spec.fields)
        data = {name: _plain(values) for name, values in zip(spec.fields, series[:width], strict=True)}
        if spec.input == "csv":
            data = {name: [None if v is None else _CONVERTERS[self.layout.type_of(name)](v) for v in values]
                    for name, values in data.items()}
        ids = {name: values.tolist() for name, values in zip(spec.ids, series[width:width + len(spec.ids)],
                                                               strict=True)}
        data[_ROW_COLUMN] = list(range(count))
        chunk = _parquet_chunk(self.layout, list(spec.fields), data, start, count)
        malformed = _plain(series[-1]) if spec.malformed else []
        if any(line is not None for line in malformed):
            keep = [index for index, line in enumerate(malformed) if line is None]
            bad = [BadRow("row", start + index + 1, f"has {_fields(line)} fields, unlike the header", line)
                   for index, line in enumerate(malformed) if line is not None]
            chunk = chunk.select(keep)
            chunk.bad = bad
        return chunk, {**ids, **data}

    def _jsonl_chunk(self, lines: list[Any], start: int) -> Chunk:
        """JSON lines read as `mlship predict` reads a JSONL file; each line is a row, numbered by this worker."""
        gather = _JsonlGather(Layout(self.layout.schema, self.spec.ids))
        for index, line in enumerate(lines):
            gather.add(start + index + 1, (line or "").encode())
        chunk = gather.chunk()
        return replace(chunk, unit="row", ids={_ROW_COLUMN: [number - start - 1 for number in chunk.numbers]},
                       bad=[replace(bad, unit="row") for bad in chunk.bad])

    def _values(self, sink: _Collect) -> list[Any]:
        """The outputs as the Spark result type wants them: a value (or JSON text), a list (array), or a dict
        (struct; the keys of spec.json_fields as JSON text)."""
        names = [name for name in sink.names if name != _ROW_COLUMN]
        if not names:  # no row of the batch was predicted (all invalid)
            return []
        if self.spec.output in ("value", "json"):
            return sink.columns.get(PREDICTION_COLUMN, [])
        columns = [sink.columns[name] for name in names]
        if self.spec.output == "list":
            return [list(values) for values in zip(*columns, strict=True)]
        if list(self.spec.output_names) != names:
            raise ScoringError(f"{executor()}: {self.spec.method} returned objects with the keys {', '.join(names)}, "
                               f"but its golden outputs have {', '.join(self.spec.output_names)}")
        rows = [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
        for row in rows:
            for name in self.spec.json_fields:
                row[name] = _json_text(row[name])
        return rows


class _JsonJob(_Job):
    """A method whose outputs have no one shape (objects with other keys, lists and objects mixed): each row's
    output as JSON text, whatever its shape."""

    def _columns(self, outputs: list[Any], chunk: Chunk) -> dict[str, list[Any]]:
        return {PREDICTION_COLUMN: [_json_text(value) for value in outputs]}


def _json_text(value: Any) -> str | None:
    return None if value is None else encode_json(value).decode()


def _fields(line: str) -> int:
    return len(next(csv.reader([line]), []))


def _plain(values: Any) -> list[Any]:
    """A pandas Series as the list pyarrow's to_pydict would give for the same parquet column: Spark hands the
    UDF nulls of number columns as NaN, which are nulls again here (JSON has no NaN: a missing value is null)."""
    items = values.tolist()
    if values.dtype.kind == "f":
        return [None if item != item else item for item in items]
    return [None if _missing(item) else item for item in items]


def _missing(item: Any) -> bool:
    return item is None or (isinstance(item, float) and item != item) or type(item).__name__ in ("NaTType", "NAType")


_ROW_NUMBER = re.compile(r"\brow (\d+)\b")


def _with_row(message: str, start: int, data: dict[str, list[Any]]) -> str:
    """A _Job message names "row N" of this worker's rows; add the row's values, which say more in Spark (whose
    rows have no line numbers)."""
    found = _ROW_NUMBER.search(message)
    if found is None:
        return message
    index = int(found.group(1)) - start - 1
    if not 0 <= index < len(next(iter(data.values()), [])):
        return message
    row = {name: values[index] for name, values in data.items() if name != _ROW_COLUMN}
    return f"{message} (the row: {_short(row, 300)})"


class _Collect:
    """_batch.Output's part that _Job uses: the columns of the rows it predicted (others are rejected)."""

    def __init__(self) -> None:
        self.columns: dict[str, list[Any]] = {}
        self.names: list[str] = []

    @property
    def rows(self) -> list[int]:
        return self.columns.get(_ROW_COLUMN, [])

    def write(self, columns: dict[str, list[Any]]) -> None:
        if not self.names:
            self.names = list(columns)
        for name, values in columns.items():
            self.columns.setdefault(name, []).extend(values)


class _Rejects:
    def __init__(self) -> None:
        self.bad: list[BadRow] = []

    def add(self, bad: BadRow) -> None:
        self.bad.append(bad)


def score_batches(batches: Iterator[Any], root: Path, spec: Spec) -> Iterator[Any]:
    """The pandas UDF's body: each batch is a tuple of Series (or one Series for a single field)."""
    worker = scorer(root, spec)
    for batch in batches:
        yield worker.score(batch if isinstance(batch, tuple) else (batch,))
