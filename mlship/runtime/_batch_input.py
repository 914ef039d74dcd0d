"""Read a CSV, JSONL or parquet file in chunks of rows shaped like the body of a request to `/predict`.

A chunk holds at most `chunk_rows` rows, so memory stays bounded whatever the file's size. Its body is what
`decode_request` takes (`{"inputs": {column: values}}` for the column kinds, `{"instances": rows}` for the
others), so a file's rows are validated and decoded by the very code that serves HTTP requests. Fields that the
model does not take are ignored (and named in the job's summary), except the `--id-column`s, which are carried
beside the rows to the output; with MLSHIP_STRICT_COLUMNS=1 such fields are an error instead.

CSV values are text; they are given their schema type here (empty fields are missing values, as in
`pandas.read_csv`), and a value that does not parse stays text, so the validator's message shows it as written.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ._contract import COLUMN_KINDS, InputSchema
from ._values import describe

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
PYARROW_HINT = (
    "pip install pyarrow (for a bundle's image or on-prem install: package it with -r pyarrow==VERSION), "
    "or use CSV or JSONL"
)


class BatchError(Exception):
    """The batch job cannot go on; the message names the file, the line and the problem."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


@dataclass(frozen=True)
class BadRow:
    """A row that cannot be predicted: where it is, why, and the row as read (for the rejects file)."""

    unit: str
    number: int
    message: str
    row: Any

    @property
    def where(self) -> str:
        return f"{self.unit} {self.number}"


@dataclass
class Chunk:
    """Consecutive rows of the file, in order: a request body for decode_request plus each row's ids."""

    unit: str  # "line" (CSV, JSONL) or "row" (parquet)
    numbers: list[int]  # each row's line or row number, counted from 1
    columns: dict[str, list[Any]] | None  # column kinds: {schema column: values}
    rows: list[Any] | None  # other kinds: one instance per row
    ids: dict[str, list[Any]]
    raw: Callable[[int], Any]  # row i as read, for the rejects file
    bad: list[BadRow] = field(default_factory=list)  # rows the reader could not even shape

    def __len__(self) -> int:
        return len(self.numbers)

    def where(self, index: int) -> str:
        return f"{self.unit} {self.numbers[index]}"

    def span(self) -> str:
        """`line 12`, or `lines 12 to 40` for a chunk of several rows."""
        if len(self) == 1:
            return self.where(0)
        return f"{self.unit}s {self.numbers[0]} to {self.numbers[-1]}"

    def body(self) -> dict[str, Any]:
        return {"inputs": self.columns} if self.columns is not None else {"instances": self.rows}

    def select(self, keep: Sequence[int]) -> Chunk:
        """The chunk of rows `keep` (indices into this one), in that order."""
        return Chunk(
            self.unit,
            [self.numbers[i] for i in keep],
            None if self.columns is None else {k: [v[i] for i in keep] for k, v in self.columns.items()},
            None if self.rows is None else [self.rows[i] for i in keep],
            {k: [v[i] for i in keep] for k, v in self.ids.items()},
            lambda j: self.raw(keep[j]),
        )


@dataclass(frozen=True)
class Layout:
    """Which fields of a row the model takes (and in which order), and which are ids. `ignored` gathers the
    other fields of a column-kind input met so far (`strict`: they are a BatchError instead)."""

    schema: InputSchema
    id_columns: tuple[str, ...]
    strict: bool = False
    ignored: set[str] = field(default_factory=set, compare=False)

    def note_extra(self, header: Sequence[str], source: str) -> None:
        """Gather the fields of `header` that are neither the model's columns nor ids (column kinds only)."""
        known = {*self.names, *self.id_columns}
        extra = [name for name in header if name not in known]
        if extra and self.strict:
            raise BatchError(
                f"{source} has fields the model does not take: {_quoted(extra[:20])} (strict mode: "
                "MLSHIP_STRICT_COLUMNS=1)",
                hint="drop them, mark them --id-column, or unset MLSHIP_STRICT_COLUMNS to have them ignored",
            )
        self.ignored.update(extra)

    @property
    def kind(self) -> str:
        return self.schema.kind

    @property
    def names(self) -> list[str]:
        return self.schema.column_names

    def fields(self, header: Sequence[str], source: str) -> list[str]:
        """The fields of `header` that feed the model; raise BatchError when some are missing or ambiguous."""
        missing_ids = [name for name in self.id_columns if name not in header]
        if missing_ids:
            raise BatchError(
                f"{source} has no id column {_quoted(missing_ids)}; its fields: {_quoted(header)}",
                hint="pass --id-column with one of those fields, or leave it out",
            )
        if self.kind in COLUMN_KINDS:
            missing = [name for name in self.names if name not in header]
            if missing:
                raise BatchError(
                    f"{source} lacks the model's columns {_quoted(missing)}; it has {_quoted(header)}"
                )
            self.note_extra(header, source)
            return self.names
        rest = [name for name in header if name not in self.id_columns]
        shape = self.schema.shape
        if self.kind == "ndarray" and shape is not None and len(shape) > 2:
            raise BatchError(f"a {len(shape)}-D array input can be read from JSONL only, one row per line")
        if self.kind == "ndarray" and (shape is None or len(shape) == 2):
            return rest  # each row is one row of the array, its values in field order
        element = self.schema.fields[0]
        if self.kind == "series" and element.name in header:
            return [str(element.name)]
        if len(rest) != 1:
            raise BatchError(
                f"the model takes one value per row (a {self.kind} of {element.type} values), "
                f"but {source} has the fields {_quoted(rest)}; mark the others with --id-column, or drop them"
            )
        return rest

    @property
    def scalar_rows(self) -> bool:
        """Each row is one value (series, list, 1-D array), not a list of them."""
        return self.kind in ("series", "list") or (
            self.kind == "ndarray" and self.schema.shape == (None,)
        )

    def type_of(self, name: str) -> str:
        if self.schema.has_columns:
            return self.schema.column(name).type
        return self.schema.fields[0].type


class Reader:
    """Chunks of one input file; `fraction()` says how much of it has been read (None if unknown)."""

    def __init__(
        self, chunks: Iterator[Chunk], fraction: Callable[[], float | None], close: Callable[[], None]
    ) -> None:
        self.chunks = chunks
        self.fraction = fraction
        self.close = close


def detect_format(path: Path, given: str | None, option: str) -> str:
    if given:
        return given
    found = FORMATS.get(path.suffix.lower())
    if found is None:
        raise BatchError(
            f"cannot tell the format of {path} from its extension; name it .csv, .jsonl or .parquet, "
            f"or pass {option} csv|jsonl|parquet"
        )
    return found


def open_reader(path: Path, fmt: str, layout: Layout, chunk_rows: int) -> Reader:
    """Open `path` (raise BatchError when it cannot be read as `fmt` for this model) and read it lazily."""
    if not path.is_file():
        raise BatchError(f"{path} does not exist" if not path.exists() else f"{path} is not a file",
                         hint="check --input: it takes a .csv, .jsonl or .parquet file")
    if fmt == "parquet":
        return _parquet_reader(path, layout, chunk_rows)
    stream = path.open("rb")
    size = path.stat().st_size

    def fraction() -> float | None:
        # The binary stream's position: the text layer reads ahead by a few KiB, which is close enough here.
        return min(1.0, stream.tell() / size) if size and not stream.closed else None

    opened: IO[Any] = stream
    try:
        if fmt == "csv":
            # utf-8-sig: spreadsheet programs start their CSV files with a byte order mark.
            opened = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
            chunks = _csv_chunks(opened, path, layout, chunk_rows)
        else:
            chunks = _jsonl_chunks(stream, layout, chunk_rows)
    except BaseException:
        opened.close()
        raise
    return Reader(chunks, fraction, opened.close)


# -- CSV --------------------------------------------------------------------------------------------------------


def _csv_chunks(text: IO[str], path: Path, layout: Layout, chunk_rows: int) -> Iterator[Chunk]:
    """Reads the header now (raising BatchError if it does not suit the model), the rows lazily."""
    reader = csv.reader(text)
    try:
        header = next(reader)
    except StopIteration:
        raise BatchError(
            f"{path} is empty; a CSV file starts with a header line naming its columns"
        ) from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise BatchError(f"{path}, line 1: cannot read the header: {exc}") from None
    fields = layout.fields(header, f"{path}, line 1 (the header),")
    values = [(header.index(name), _CONVERTERS[layout.type_of(name)]) for name in fields]
    ids = [(name, header.index(name)) for name in layout.id_columns]
    return _csv_records(reader, header, _csv_builder(layout, fields, values, ids, header), chunk_rows)


def _csv_records(
    reader: Any,
    header: list[str],
    build: Callable[[list[list[str]], list[int], list[BadRow]], Chunk],
    chunk_rows: int,
) -> Iterator[Chunk]:
    records: list[list[str]] = []
    numbers: list[int] = []
    bad: list[BadRow] = []
    width = len(header)
    last = reader.line_num
    try:
        for record in reader:
            line, last = last + 1, reader.line_num
            if len(record) == width:
                records.append(record)
                numbers.append(line)
            elif record:  # a blank line reads as [], and is skipped as pandas skips it
                bad.append(
                    BadRow("line", line, f"has {len(record)} fields, but the header has {width}", record)
                )
            if len(records) + len(bad) >= chunk_rows:
                yield build(records, numbers, bad)
                records, numbers, bad = [], [], []
    except (csv.Error, UnicodeDecodeError) as exc:
        # The csv module cannot resume after a broken quote or bad bytes: the rest of the file is unknown.
        raise BatchError(f"line {last + 1}: cannot read on from here: {exc}") from None
    if records or bad:
        yield build(records, numbers, bad)


def _csv_builder(
    layout: Layout,
    fields: list[str],
    values: list[tuple[int, Callable[[str], Any]]],
    ids: list[tuple[str, int]],
    header: list[str],
) -> Callable[[list[list[str]], list[int], list[BadRow]], Chunk]:
    def build(records: list[list[str]], numbers: list[int], bad: list[BadRow]) -> Chunk:
        columns: dict[str, list[Any]] | None = None
        rows: list[Any] | None = None
        if layout.kind in COLUMN_KINDS:
            columns = {
                name: [cv(r[i]) for r in records] for name, (i, cv) in zip(fields, values, strict=True)
            }
        elif layout.scalar_rows:
            [(i, cv)] = values
            rows = [cv(r[i]) for r in records]
        else:
            rows = [[cv(r[i]) for i, cv in values] for r in records]
        return Chunk(
            "line",
            numbers,
            columns,
            rows,
            {name: [r[i] for r in records] for name, i in ids},
            lambda i: dict(zip(header, records[i], strict=True)),
            bad,
        )

    return build


def _number(text: str) -> Any:
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        return text


def _integer(text: str) -> Any:
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        return _number(text)  # "3.0" is an integer to the validator; "3.5" is refused there, by name


def _boolean(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    return text or None


def _text(text: str) -> Any:
    return text or None


_CONVERTERS: dict[str, Callable[[str], Any]] = {
    "number": _number,
    "integer": _integer,
    "boolean": _boolean,
    "string": _text,
    "datetime": _text,
    "any": _text,
}


# -- JSONL ------------------------------------------------------------------------------------------------------


def _jsonl_chunks(stream: IO[bytes], layout: Layout, chunk_rows: int) -> Iterator[Chunk]:
    """One JSON value per line, each a row as in `{"instances": [row, ...]}`; objects may carry more fields."""
    gather = _JsonlGather(layout)
    for number, line in enumerate(stream, start=1):
        if line.strip():
            gather.add(number, line)
        if gather.count >= chunk_rows:
            yield gather.chunk()
            gather = _JsonlGather(layout)
    if gather.count:
        yield gather.chunk()


class _JsonlGather:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.names = layout.names
        self.width = len({*layout.names, *layout.id_columns})
        self.numbers: list[int] = []
        self.columns: dict[str, list[Any]] | None = (
            {name: [] for name in self.names} if layout.kind in COLUMN_KINDS else None
        )
        self.rows: list[Any] | None = None if layout.kind in COLUMN_KINDS else []
        self.ids: dict[str, list[Any]] = {name: [] for name in layout.id_columns}
        self.raw: list[Any] = []
        self.bad: list[BadRow] = []

    @property
    def count(self) -> int:
        return len(self.numbers) + len(self.bad)

    def add(self, number: int, line: bytes) -> None:
        try:
            row = json.loads(line)
        except ValueError as exc:
            self.bad.append(
                BadRow("line", number, f"not valid JSON: {exc}", line.decode("utf-8", "replace").rstrip())
            )
            return
        try:
            values = self._values(row)
        except BatchError as exc:
            self.bad.append(BadRow("line", number, exc.message, row))
            return
        for name in self.ids:
            self.ids[name].append(row[name])
        if self.columns is not None:
            for name, value in zip(self.names, values, strict=True):
                self.columns[name].append(value)
        else:
            assert self.rows is not None
            self.rows.append(values)
        self.numbers.append(number)
        self.raw.append(row)

    def _values(self, row: Any) -> Any:
        """The row's values in schema order (column kinds), or the instance itself."""
        if isinstance(row, dict):
            if self.columns is not None and self.ids.keys() <= row.keys():
                try:
                    values = [row[name] for name in self.names]  # the usual case, without building messages
                except KeyError:
                    pass
                else:
                    if len(row) != self.width:
                        self.layout.note_extra(list(row), "the line")
                    return values
            fields = self.layout.fields(list(row), "the line")
            if self.layout.scalar_rows:
                return row[fields[0]]
            return [row[name] for name in fields]
        if self.layout.id_columns:
            raise BatchError("--id-column needs every line to be a JSON object with that field")
        if self.columns is None:
            return row
        if self.layout.kind == "dataframe" and isinstance(row, list) and len(row) == len(self.names):
            return row
        wanted = "a JSON object keyed by column name"
        if self.layout.kind == "dataframe":
            wanted += f" or a list of {len(self.names)} values in column order"
        raise BatchError(f"expected {wanted}, got {describe(row)}")

    def chunk(self) -> Chunk:
        raw = self.raw
        return Chunk("line", self.numbers, self.columns, self.rows, self.ids, lambda i: raw[i], self.bad)


# -- parquet ----------------------------------------------------------------------------------------------------


def _parquet_reader(path: Path, layout: Layout, chunk_rows: int) -> Reader:
    try:
        import pyarrow.parquet as pq  # type: ignore[import-untyped, import-not-found, unused-ignore]
    except ImportError:
        raise BatchError(f"{path}: reading parquet needs pyarrow, which is not installed", hint=PYARROW_HINT) from None
    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises its own ArrowInvalid, OSError and more for a damaged file
        raise BatchError(f"{path} cannot be read as parquet: {exc}") from None
    try:
        fields = layout.fields(parquet.schema_arrow.names, str(path))
    except BatchError:
        parquet.close()
        raise
    total = parquet.metadata.num_rows
    done = [0]

    def chunks() -> Iterator[Chunk]:
        wanted = list(dict.fromkeys([*fields, *layout.id_columns]))
        for batch in parquet.iter_batches(batch_size=chunk_rows, columns=wanted):
            data = batch.to_pydict()
            start = done[0]
            done[0] += batch.num_rows
            yield _parquet_chunk(layout, fields, data, start, batch.num_rows)

    return Reader(chunks(), lambda: done[0] / total if total else None, parquet.close)


def _parquet_chunk(
    layout: Layout, fields: list[str], data: dict[str, list[Any]], start: int, count: int
) -> Chunk:
    values = {name: _iso(data[name]) if layout.type_of(name) == "datetime" else data[name] for name in fields}
    columns: dict[str, list[Any]] | None = None
    rows: list[Any] | None = None
    if layout.kind in COLUMN_KINDS:
        columns = values
    elif layout.scalar_rows:
        rows = values[fields[0]]
    else:
        rows = [list(row) for row in zip(*(values[name] for name in fields), strict=True)]
    return Chunk(
        "row",
        list(range(start + 1, start + count + 1)),
        columns,
        rows,
        {name: data[name] for name in layout.id_columns},
        lambda i: {name: column[i] for name, column in data.items()},
    )


def _iso(values: list[Any]) -> list[Any]:
    # Parquet stores timestamps, the schema's datetime type is an ISO 8601 string (what JSON clients send).
    return [value.isoformat() if hasattr(value, "isoformat") else value for value in values]


def _quoted(names: Sequence[Any]) -> str:
    return ", ".join(f'"{name}"' for name in names)
