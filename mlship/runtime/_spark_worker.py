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

import platform
import re
import socket
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._batch import SKIP_HINT, _Job
from ._batch_input import BadRow, BatchError, Chunk, Layout, _parquet_chunk
from ._bundle import BundleLoadError, LoadedBundle, load_bundle
from ._codec import _short
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
    output: str  # "value", "list" or "dict" (spark.py's result type, from the golden outputs)
    output_names: tuple[str, ...]  # the struct's fields for "dict"
    skip_invalid: bool
    env: str  # "shipped" or "executor": only to word the errors
    ids: tuple[str, ...] = ()  # more arguments after the fields: id columns, only to name a bad row


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
        width = len(self.spec.fields)
        data = {name: _plain(values) for name, values in zip(self.spec.fields, series[:width], strict=True)}
        ids = {name: values.tolist() for name, values in zip(self.spec.ids, series[width:], strict=True)}
        data[_ROW_COLUMN] = list(range(count))
        chunk = _parquet_chunk(self.layout, list(self.spec.fields), data, self.rows, count)
        self.rows += count
        job = _Job(self.bundle, self.spec.method, (_ROW_COLUMN,), f"{executor()}, ")
        sink, rejects = _Collect(), (_Rejects() if self.spec.skip_invalid else None)
        try:
            job.run(chunk, sink, rejects)  # type: ignore[arg-type]
        except BatchError as exc:
            raise ScoringError(_with_row(exc.message, chunk, {**ids, **data}),
                               None if exc.hint == SKIP_HINT else exc.hint) from None
        predictions: list[Any] = [None] * count
        for row, value in zip(sink.rows, self._values(sink), strict=True):
            predictions[row] = value
        # object: a null among integers must not turn them into floats (NaN), which lose digits past 2**53.
        frame = {PREDICTION_COLUMN: pandas.Series(predictions, dtype=object)}
        if rejects is not None:
            errors: list[str | None] = [None] * count
            for bad in rejects.bad:
                errors[_index(chunk, bad)] = bad.message
            frame[ERROR_COLUMN] = pandas.Series(errors, dtype=object)
        return pandas.DataFrame(frame)

    def _values(self, sink: _Collect) -> list[Any]:
        """The outputs as the Spark result type wants them: a value, a list (array), or a dict (struct)."""
        names = [name for name in sink.names if name != _ROW_COLUMN]
        if self.spec.output == "value":
            return sink.columns.get(PREDICTION_COLUMN, [])
        columns = [sink.columns[name] for name in names]
        if self.spec.output == "list":
            return [list(values) for values in zip(*columns, strict=True)]
        return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]


def _index(chunk: Chunk, bad: BadRow) -> int:
    return bad.number - chunk.numbers[0] if chunk.numbers else 0


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


def _with_row(message: str, chunk: Chunk, data: dict[str, list[Any]]) -> str:
    """A _Job message names "row N" of this worker's rows; add the row's values, which say more in Spark (whose
    rows have no line numbers)."""
    found = _ROW_NUMBER.search(message)
    if found is None or not chunk.numbers:
        return message
    index = int(found.group(1)) - chunk.numbers[0]
    if not 0 <= index < len(data[_ROW_COLUMN]):
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
