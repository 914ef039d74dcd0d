"""Write a batch job's predictions (CSV, JSONL or parquet) and its rejected rows, chunk by chunk.

Each file is written under a temporary name beside its destination and moved into place by `commit()`, so a
job that fails or is interrupted leaves no half-written output behind (and no file that looks complete).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any, Protocol

from ._batch_input import PYARROW_HINT, BadRow, BatchError
from ._codec import encode_json, to_jsonable


class _Sink(Protocol):
    def write(self, columns: dict[str, list[Any]]) -> None: ...

    def close(self) -> None: ...


class Output:
    """Rows for one output file, given as {column: values}; the first chunk's columns fix the header."""

    def __init__(self, path: Path, fmt: str) -> None:
        if fmt == "parquet":
            _require_pyarrow(path)  # before any prediction is made, not after the first chunk
        self.path = path
        self.fmt = fmt
        self.temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self._sink: _Sink | None = None

    def write(self, columns: dict[str, list[Any]]) -> None:
        if self._sink is None:
            self._sink = _SINKS[self.fmt](self.temp, list(columns))
        self._sink.write(columns)

    def commit(self, names: list[str]) -> None:
        """Finish the file (with just the header `names` when no row was written) and move it into place."""
        if self._sink is None:
            self._sink = _SINKS[self.fmt](self.temp, names)
        self._sink.close()
        os.replace(self.temp, self.path)

    def discard(self) -> None:
        try:
            if self._sink is not None:
                self._sink.close()
        finally:
            self.temp.unlink(missing_ok=True)


class Rejects:
    """The rows a job skipped (--skip-invalid), one JSON object per line: where, error, and the row as read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self.count = 0
        self._file: IO[bytes] = self.temp.open("wb")

    def add(self, bad: BadRow) -> None:
        self.count += 1
        record = {"where": bad.where, "error": bad.message, "row": _jsonable(bad.row)}
        self._file.write(encode_json(record) + b"\n")

    def commit(self) -> None:
        self._file.close()
        os.replace(self.temp, self.path)

    def discard(self) -> None:
        self._file.close()
        self.temp.unlink(missing_ok=True)


def _jsonable(row: Any) -> Any:
    try:
        return to_jsonable(row)
    except TypeError:  # a parquet Decimal or bytes value: the rejects file still says which row it was
        return repr(row)


class _CsvSink:
    def __init__(self, path: Path, names: list[str]) -> None:
        self.file = path.open("w", newline="", encoding="utf-8")
        self.writer = csv.writer(self.file)
        self.writer.writerow(names)

    def write(self, columns: dict[str, list[Any]]) -> None:
        self.writer.writerows(zip(*(_csv_cells(values) for values in columns.values()), strict=True))

    def close(self) -> None:
        self.file.close()


def _csv_cells(values: list[Any]) -> Iterable[Any]:
    """Cells as pandas writes and reads them: missing values (None, NaN) empty, nested values as JSON."""
    for value in values:
        kind = type(value)
        if kind is int or kind is str:
            yield value
        elif kind is float:
            yield "" if math.isnan(value) else value
        elif value is None:
            yield ""
        elif isinstance(value, (list, dict)):
            yield encode_json(value).decode()
        else:
            yield value


class _JsonlSink:
    def __init__(self, path: Path, names: list[str]) -> None:
        self.file = path.open("wb")

    def write(self, columns: dict[str, list[Any]]) -> None:
        names = list(columns)
        self.file.writelines(
            encode_json(dict(zip(names, row, strict=True))) + b"\n"
            for row in zip(*columns.values(), strict=True)
        )

    def close(self) -> None:
        self.file.close()


class _ParquetSink:
    def __init__(self, path: Path, names: list[str]) -> None:
        self.path = path
        self.names = names
        self.writer: Any = None
        self.schema: Any = None

    def write(self, columns: dict[str, list[Any]]) -> None:
        import pyarrow  # type: ignore[import-untyped, import-not-found, unused-ignore]
        import pyarrow.parquet as pq  # type: ignore[import-untyped, import-not-found, unused-ignore]

        if self.writer is None:
            table = pyarrow.Table.from_pydict(columns)
            self.schema = table.schema
            self.writer = pq.ParquetWriter(self.path, self.schema)
        else:
            try:
                table = pyarrow.Table.from_pydict(columns, schema=self.schema)
            except (pyarrow.ArrowException, TypeError, ValueError) as exc:
                raise BatchError(
                    f"the outputs changed type between chunks, which parquet cannot store in one column "
                    f"({exc}); write CSV or JSONL instead"
                ) from None
        self.writer.write_table(table)

    def close(self) -> None:
        if self.writer is None:
            import pyarrow  # type: ignore[import-untyped, import-not-found, unused-ignore]
            import pyarrow.parquet as pq  # type: ignore[import-untyped, import-not-found, unused-ignore]

            empty = pyarrow.table({name: pyarrow.array([], type=pyarrow.null()) for name in self.names})
            pq.write_table(empty, self.path)
            self.writer = False
        elif self.writer is not False:
            self.writer.close()
            self.writer = False


def _require_pyarrow(path: Path) -> None:
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise BatchError(f"{path}: writing parquet needs pyarrow, which is not installed", hint=PYARROW_HINT) from None


_SINKS: dict[str, type[_CsvSink] | type[_JsonlSink] | type[_ParquetSink]] = {
    "csv": _CsvSink,
    "jsonl": _JsonlSink,
    "parquet": _ParquetSink,
}
