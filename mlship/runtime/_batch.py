"""Batch predictions over a file: the server's decoding, preprocessing and model, chunk by chunk, in order.

Rows are validated exactly as HTTP requests are (`decode_request`), a chunk at a time; only when a chunk fails is
it decoded row by row, to name the bad row's line. The model is called once per chunk when the manifest says
`batch_safe: true`, and once per row otherwise (slow, but each row then gets the answer the notebook gave it,
as the server does). Memory is bounded by the chunk size: nothing is kept from one chunk to the next.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._batch_input import BadRow, BatchError, Chunk, Layout, detect_format, open_reader
from ._batch_output import Output, Rejects
from ._build import split_rows
from ._bundle import LoadedBundle
from ._codec import to_jsonable
from ._progress import format_seconds
from ._rejection import rejection
from ._schema import InputError, decode_request

__all__ = ["DEFAULT_CHUNK_ROWS", "BatchError", "BatchOptions", "BatchResult", "predict_file", "rejects_path"]

# Large enough that per-call overhead (pandas, scikit-learn input checks) is noise, small enough that a chunk of
# wide rows stays a few MiB.
DEFAULT_CHUNK_ROWS = 10_000
SKIP_HINT = "--skip-invalid writes such rows to a rejects file and goes on"


@dataclass(frozen=True)
class BatchOptions:
    method: str | None = None  # default: "predict", or the bundle's first method
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    id_columns: tuple[str, ...] = ()
    input_format: str | None = None  # default: from the input's extension
    output_format: str | None = None  # default: from the output's extension
    skip_invalid: bool = False
    strict_columns: bool = False  # fields the model does not take stop the job [env var: MLSHIP_STRICT_COLUMNS]


@dataclass(frozen=True)
class BatchResult:
    output: Path
    method: str
    rows: int
    seconds: float
    row_by_row: bool
    rejects: Path | None = None
    rejected: int = 0
    ignored: tuple[str, ...] = ()  # the input's fields the model does not take (nor --id-column): not read

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        text = (
            f"{self.method}: {self.rows:,} rows in {format_seconds(self.seconds)} "
            f"({self.rows_per_second:,.0f} rows/s) -> {self.output}"
        )
        if self.ignored:
            more = f", … {len(self.ignored) - 20} more" if len(self.ignored) > 20 else ""
            text += f"; ignored the fields the model does not take: {', '.join(self.ignored[:20])}{more}"
        if self.rejects is not None:
            text += f"; {self.rejected:,} rejected -> {self.rejects}"
        if self.row_by_row:
            text += " (row by row: mlship.json says batch_safe: false)"
        return text


def rejects_path(output: Path) -> Path:
    """Where --skip-invalid writes the rows it skipped: beside the output, `preds.csv` -> `preds.rejects.jsonl`."""
    return output.with_name(f"{output.stem}.rejects.jsonl")


def predict_file(
    bundle: LoadedBundle,
    source: str | Path,
    target: str | Path,
    options: BatchOptions | None = None,
    on_progress: Callable[[int, float | None], None] | None = None,
) -> BatchResult:
    """Predict every row of `source` into `target`; raise BatchError (and write nothing) when it cannot.

    `on_progress(rows_done, fraction_of_input_read)` is called after each chunk.
    """
    options = options or BatchOptions()
    source, target = Path(source), Path(target)
    method = _choose_method(bundle, options.method)
    in_format = detect_format(source, options.input_format, "--input-format")
    out_format = detect_format(target, options.output_format, "--format")
    if source.exists() and target.exists() and source.samefile(target):
        raise BatchError(f"--output {target} is the input file", hint="write the predictions to another file")
    if not target.parent.is_dir():
        raise BatchError(f"cannot write {target}: the folder {target.parent} does not exist",
                         hint=f"create it first (mkdir -p {target.parent}) or pass another --output")
    job = _Job(bundle, method, options.id_columns, f"{source}, ")
    output = Output(target, out_format)  # opens nothing yet, but fails now if parquet cannot be written
    start = time.perf_counter()
    layout = Layout(bundle.schema, options.id_columns, strict=options.strict_columns)
    reader = open_reader(source, in_format, layout, options.chunk_rows)
    rejects: Rejects | None = None
    try:
        rejects = Rejects(rejects_path(target)) if options.skip_invalid else None
        for chunk in reader.chunks:
            job.run(chunk, output, rejects)
            if on_progress is not None:
                on_progress(job.rows, reader.fraction())
        output.commit(job.names())
        if rejects is not None:
            rejects.commit()
    except BaseException:
        output.discard()
        if rejects is not None:
            rejects.discard()
        raise
    finally:
        reader.close()
    return BatchResult(
        target,
        method,
        job.rows,
        time.perf_counter() - start,
        row_by_row=not job.batch_safe,
        rejects=None if rejects is None else rejects.path,
        rejected=0 if rejects is None else rejects.count,
        ignored=tuple(sorted(layout.ignored)),
    )


def _choose_method(bundle: LoadedBundle, method: str | None) -> str:
    if method is None:
        return bundle.manifest.default_method
    if method not in bundle.methods:
        raise BatchError(f"the bundle has no method {method!r}; it has {', '.join(bundle.methods)}",
                         hint=f"pass one of them, e.g. --method {next(iter(bundle.methods))}, or leave --method out")
    return method


# The messages of a one-row request speak of "row 0"; in a file, the line number says where instead.
_ROW_ZERO = re.compile(r"(?:^|(?<=; ))row 0(?:: |, )|, row 0(?=:)")


def row_message(message: str) -> str:
    """A one-row decode_request message, without its "row 0" (the caller prefixes the line instead)."""
    return _ROW_ZERO.sub("", message).replace(": row 0 is null,", ": it is null,")


class _Job:
    def __init__(self, bundle: LoadedBundle, method: str, id_columns: tuple[str, ...], prefix: str) -> None:
        self.schema = bundle.schema
        self.method_name = method
        self.method = bundle.methods[method]
        self.batch_safe = bundle.manifest.batch_safe
        self.id_columns = id_columns
        self.prefix = prefix  # "data.csv, ": errors name the file, then the line
        self.rows = 0
        self.output_kind = ""  # "value", "list" or "dict", from the first output row
        self.output_names: list[str] = []

    def names(self) -> list[str]:
        return [*self.id_columns, *(self.output_names or ["prediction"])]

    def run(self, chunk: Chunk, output: Output, rejects: Rejects | None) -> None:
        problems = list(chunk.bad)
        value, chunk = self._decode(chunk, problems, stop_early=rejects is None)
        problems.sort(key=lambda bad: bad.number)
        if problems and rejects is None:
            raise BatchError(f"{self.prefix}{problems[0].where}: {problems[0].message}", hint=SKIP_HINT)
        if len(chunk):
            # Rows the model's own input validation refuses (see _rejection) are rejected like invalid rows.
            outputs, chunk = self._call(value, chunk, problems, skip=rejects is not None)
            if len(chunk):
                output.write({**chunk.ids, **self._columns(outputs, chunk)})
                self.rows += len(chunk)
        if rejects is not None:
            for bad in sorted(problems, key=lambda bad: bad.number):
                rejects.add(bad)

    def _decode(self, chunk: Chunk, problems: list[BadRow], stop_early: bool) -> tuple[Any, Chunk]:
        if not len(chunk):
            return None, chunk
        try:
            return decode_request(chunk.body(), self.schema), chunk
        except Exception as exc:  # which row? the message counts rows from the chunk's start, not the file's
            together = exc
        keep = []
        for index in range(len(chunk)):
            problem = self._problem(chunk.select([index]))
            if problem is None:
                keep.append(index)
                continue
            problems.append(BadRow(chunk.unit, chunk.numbers[index], problem, chunk.raw(index)))
            if stop_early:
                return None, chunk.select([])
        if len(keep) == len(chunk):
            # Each row is fine alone but not with the others: an array whose rows differ in length.
            raise BatchError(
                f"{self.prefix}{chunk.span()}: these rows cannot be decoded together: {_message(together)}"
            )
        chunk = chunk.select(keep)
        return (decode_request(chunk.body(), self.schema) if keep else None), chunk

    def _problem(self, single: Chunk) -> str | None:
        try:
            decode_request(single.body(), self.schema)
        except Exception as exc:
            return row_message(_message(exc))
        return None

    def _call(self, value: Any, chunk: Chunk, problems: list[BadRow], skip: bool) -> tuple[list[Any], Chunk]:
        """The chunk's outputs, and the chunk without the rows the model rejected (added to `problems` when
        `skip`, else a BatchError); any other failure of the model is a BatchError naming the row."""
        if self.batch_safe:
            try:
                return self._check_rows(to_jsonable(self.method(value)), chunk), chunk
            except BatchError:
                raise
            except Exception as exc:
                keep = self._blame(chunk, exc, problems, skip)
            chunk = chunk.select(keep)
            if not keep:
                return [], chunk
            try:
                outputs = to_jsonable(self.method(decode_request(chunk.body(), self.schema)))
            except Exception as exc:  # every row passed alone, not together
                raise BatchError(f"{self.prefix}{chunk.span()}: {self._raised(exc)}") from exc
            return self._check_rows(outputs, chunk), chunk
        outputs, keep = [], []
        for index, row in enumerate(split_rows(self.schema.kind, value)):
            try:
                output = to_jsonable(self.method(row))
            except Exception as exc:
                self._refused(chunk, index, exc, problems, skip)
                continue
            keep.append(index)
            # One row in, one entry out, as the server does: unwrap the row axis of a one-row output.
            outputs.extend(output if isinstance(output, list) and len(output) == 1 else [output])
        chunk = chunk if len(keep) == len(chunk) else chunk.select(keep)
        return (self._check_rows(outputs, chunk) if keep else []), chunk

    def _blame(self, chunk: Chunk, exc: Exception, problems: list[BadRow], skip: bool) -> list[int]:
        """The model failed on a chunk: try each row alone, to name the line it fails on (or to reject the rows
        it refuses); the rows that pass alone."""
        if len(chunk) == 1:
            self._refused(chunk, 0, exc, problems, skip)
            return []
        keep = []
        for index in range(len(chunk)):
            single = chunk.select([index])
            try:
                to_jsonable(self.method(decode_request(single.body(), self.schema)))
            except Exception as row_exc:
                self._refused(chunk, index, row_exc, problems, skip)
                continue
            keep.append(index)
        if len(keep) == len(chunk):
            raise BatchError(f"{self.prefix}{chunk.span()}: {self._raised(exc)}")
        return keep

    def _refused(self, chunk: Chunk, index: int, exc: Exception, problems: list[BadRow], skip: bool) -> None:
        """Row `index` failed alone with `exc`: a rejection goes to `problems` when `skip`; else BatchError."""
        message = rejection(exc)
        if message is None:
            raise BatchError(f"{self.prefix}{chunk.where(index)}: {self._raised(exc)}") from exc
        if not skip:
            raise BatchError(f"{self.prefix}{chunk.where(index)}: {message}", hint=SKIP_HINT) from exc
        problems.append(BadRow(chunk.unit, chunk.numbers[index], message, chunk.raw(index)))

    def _raised(self, exc: Exception) -> str:
        return f"{self.method_name} raised {type(exc).__name__}: {exc}"

    def _check_rows(self, outputs: Any, chunk: Chunk) -> list[Any]:
        if not isinstance(outputs, list) or len(outputs) != len(chunk):
            got = f"{len(outputs)} values" if isinstance(outputs, list) else "a single value"
            raise BatchError(
                f"{self.prefix}{chunk.span()}: {self.method_name} returned {got} for {len(chunk)} rows; "
                "a batch job needs one output per input row"
            )
        return outputs

    def _columns(self, outputs: list[Any], chunk: Chunk) -> dict[str, list[Any]]:
        """Output columns: `prediction`, or `<method>_0..k-1` for rows of k values, or a dict row's keys."""
        if not self.output_kind:
            self._set_shape(outputs[0])
        if self.output_kind == "value":
            for index, value in enumerate(outputs):
                if isinstance(value, (list, dict)):
                    self._unlike(chunk, index, "a list or object")
            return {"prediction": outputs}
        if self.output_kind == "list":
            width = len(self.output_names)
            for index, value in enumerate(outputs):
                if not isinstance(value, list) or len(value) != width:
                    self._unlike(chunk, index, f"not a list of {width} values")
            return {
                name: list(values)
                for name, values in zip(self.output_names, zip(*outputs, strict=True), strict=True)
            }
        for index, value in enumerate(outputs):
            if not isinstance(value, dict) or list(value) != self.output_names:
                self._unlike(chunk, index, "an object with other keys")
        return {name: [row[name] for row in outputs] for name in self.output_names}

    def _set_shape(self, first: Any) -> None:
        if isinstance(first, list):
            self.output_kind = "list"
            self.output_names = [f"{self.method_name}_{index}" for index in range(len(first))]
        elif isinstance(first, dict):
            self.output_kind = "dict"
            self.output_names = list(first)
        else:
            self.output_kind = "value"
            self.output_names = ["prediction"]
        clash = [name for name in self.output_names if name in self.id_columns]
        if clash:
            raise BatchError(f"--id-column {', '.join(clash)} has the name of an output column; rename it")

    def _unlike(self, chunk: Chunk, index: int, what: str) -> None:
        raise BatchError(
            f"{self.prefix}{chunk.where(index)}: {self.method_name} returned {what} for this row, unlike the "
            f"first row's output; the output columns are {', '.join(self.output_names)}"
        )


def _message(exc: Exception) -> str:
    # Words as the server's 400 response would put them (`_app._decode`).
    if isinstance(exc, InputError):
        return exc.message
    return f"cannot decode the input: {type(exc).__name__}: {exc}"
