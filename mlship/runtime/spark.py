"""Score a bundle on Spark (docs/BATCH.md): `bundle_udf(spark, bundle)` and `predict_frame(df, bundle)`.

The driver's side: it reads the bundle (every digest checked, nothing imported), ships it to every executor as
an archive (`SparkContext.addArchive`), and builds an iterator-style pandas UDF whose workers check the bundle
again, load it once, replay its golden cases once, then score Arrow batches with `mlship predict`'s own code
(_spark_worker). The result type comes from the notebook's golden outputs: bigint, double, string, boolean, or
array<double> for a row of several values (probabilities).

pyspark is imported inside the functions only: this module is copied into every bundle, which never needs it.
The environment the executors' Python runs in is the session's: `mlship predict --engine spark` ships the
bundle's locked wheels with spark.archives (mlship/spark_env.py) unless told `--env executor`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _boot, _spark_boot
from ._batch_input import BatchError, Layout
from ._bundle import BundleLoadError, read_servable
from ._contract import Bundle, Golden
from ._spark_files import LINE_COLUMN, MALFORMED_COLUMN

__all__ = ["SparkResult", "bundle_udf", "predict_files", "predict_frame", "result_type"]

ERROR_COLUMN = "error"
PREDICTION_COLUMN = "prediction"
INPUT_FORMATS = ("parquet", "csv", "jsonl")
_MARKER = re.compile(r"mlship-spark-error: (.*?)(?: \| hint: (.*?))?$", re.MULTILINE)


@dataclass(frozen=True)
class ResultType:
    ddl: str  # Spark SQL type: "bigint", "double", "array<double>", "struct<...>", ...
    kind: str  # "value", "list" (an array per row), "dict" (a struct of the object's keys), "json" (JSON text)
    fields: tuple[tuple[str, str], ...] = ()  # "dict": the object's keys, in order, and each one's Spark type
    json_fields: tuple[str, ...] = ()  # "dict": the keys whose values are written as JSON text
    width: int | None = None  # "list": the number of values per row, when the golden outputs agree on it

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.fields)

    def columns(self, *, error: bool) -> str:
        """The schema of the worker's frame for a struct: `key type, ...` (then `error string`)."""
        fields = [*self.fields] if self.kind == "dict" else [(PREDICTION_COLUMN, self.ddl)]
        return ", ".join(f"{_quote(name)} {ddl}" for name, ddl in [*fields, *([(ERROR_COLUMN, "string")] * error)])


def result_type(golden: Golden, method: str) -> ResultType:
    """The Spark type of `method`'s output for one row, from the golden cases' outputs (what the notebook gave).

    A value per row is bigint, double, string or boolean; a list of values, an array of them. An object per row
    whose keys are the same in every golden output is a struct of those keys, each typed the same way (a key
    holding nested objects, or values of several types, is a string of JSON); any other shape (keys that
    differ between rows, lists and objects mixed) is the whole output as a string of JSON."""
    rows = [row for case in golden.for_method(method) for row in _rows(case.expected, len(case.instances))]
    rows = [row for row in rows if row is not None]
    if not rows:
        raise BatchError(f"the bundle has no golden output of {method} to tell its Spark result type from",
                         hint="package the notebook again (its golden cases record every method's output)")
    if all(isinstance(row, list) for row in rows):
        items = [item for row in rows for item in row if item is not None]
        widths = {len(row) for row in rows}
        nested = any(isinstance(item, (list, dict)) for item in items)
        scalar = None if nested else _field(items) if items else "double"
        if scalar is not None:
            return ResultType(f"array<{scalar}>", "list", width=widths.pop() if len(widths) == 1 else None)
    elif all(isinstance(row, dict) for row in rows) and len({tuple(row) for row in rows}) == 1:
        names = tuple(str(name) for name in rows[0])
        types = {name: _field([row[name] for row in rows if row[name] is not None]) for name in names}
        fields = tuple((name, types[name] or "string") for name in names)
        ddl = "struct<" + ",".join(f"{_quote(name)}:{kind}" for name, kind in fields) + ">"
        return ResultType(ddl, "dict", fields, tuple(name for name in names if types[name] is None))
    if any(isinstance(row, (list, dict)) for row in rows):
        return ResultType("string", "json")
    scalar = _field(rows)
    return ResultType(scalar, "value") if scalar else ResultType("string", "json")  # None: several types


def _field(values: list[Any]) -> str | None:
    """The Spark type of one key of an object output, or None when its values are written as JSON text."""
    try:
        if values and all(isinstance(value, list) for value in values):
            items = [item for value in values for item in value if item is not None]
            if any(isinstance(item, (list, dict)) for item in items):
                return None
            return f"array<{_scalar(items, 'it')}>"
        if not values or any(isinstance(value, (list, dict)) for value in values):
            return None
        return _scalar(values, "it")
    except BatchError:  # values of several types
        return None


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _rows(expected: Any, count: int) -> list[Any]:
    # One output per input row, as the server answers; a one-row case may give its value unwrapped.
    if isinstance(expected, list) and len(expected) == count:
        return expected
    return [expected] if count == 1 else []


def _scalar(values: list[Any], method: str) -> str:
    kinds = {bool if isinstance(v, bool) else int if isinstance(v, int) else type(v) for v in values}
    if kinds <= {int}:
        return "bigint"
    if kinds <= {int, float}:
        return "double"
    if kinds == {str}:
        return "string"
    if kinds == {bool}:
        return "boolean"
    raise BatchError(f"{method} returns values of several types ({', '.join(sorted(k.__name__ for k in kinds))}), "
                     "which one Spark column cannot hold",
                     hint="score it with `mlship predict` (without --engine spark)")


def bundle_udf(
    spark: Any,
    bundle: str | os.PathLike[str],
    *,
    method: str | None = None,
    columns: Sequence[str] | None = None,
    skip_invalid: bool = False,
    env: str = "shipped",
    ids: Sequence[str] = (),
    input_format: str = "parquet",
    malformed: bool = False,
) -> Any:
    """A pandas UDF that scores rows with the bundle's `method` (default: predict, else the first).

    Call it with the input columns in the order of `columns` (default: the schema's columns), then the columns
    `ids` names, if any (they only name a bad row in the job's error). Without
    `skip_invalid` it returns the prediction, and an invalid row fails the job naming it; with it, a struct
    of `prediction` (null for an invalid row) and `error` (why). A method that returns an object per row
    returns a struct of its keys (and `error`); see result_type. `env` only words the errors: "shipped" when
    the session ships the bundle's environment (mlship.spark_env), "executor" when it uses the executors' own.

    `input_format`: "parquet" (typed columns), "csv" (text columns as Spark's CSV reader gives them, given the
    schema's types as `mlship predict` gives a CSV file's cells; with `malformed`, one more, last column: the
    reader's columnNameOfCorruptRecord, whose rows are invalid), or "jsonl": one column, the line, read as
    `mlship predict` reads a JSONL line (the ids are found in it; `columns` is not used).
    Raises BatchError (the bundle cannot be read, its method does not exist, a key is named `error`).
    """
    from pyspark import cloudpickle
    from pyspark.sql.functions import pandas_udf  # type: ignore[attr-defined, unused-ignore]

    checked = _read(bundle)
    name = _method(checked, method)
    result = result_type(checked.golden, name)
    if input_format not in INPUT_FORMATS:
        raise BatchError(f"input_format must be one of {', '.join(INPUT_FORMATS)}, got {input_format!r}")
    if input_format == "jsonl":
        columns = [LINE_COLUMN]
    elif columns is None:
        if not checked.manifest.input.has_columns:
            raise BatchError("the model takes no named columns; pass columns=[...] in the order its input "
                             "takes them")
        columns = checked.manifest.input.column_names
    if skip_invalid and ERROR_COLUMN in result.names:
        raise BatchError(f"{name} returns objects with a key {ERROR_COLUMN!r}, which --skip-invalid needs for its "
                         "own column", hint="leave out --skip-invalid, or rename that key in the notebook")
    spec: dict[str, Any] = {"method": name, "fields": tuple(columns), "output": result.kind,
                            "output_names": result.names, "skip_invalid": skip_invalid, "env": env, "ids": tuple(ids)}
    # Only what differs from the defaults: a bundle packaged before these existed scores parquet as it did.
    extra = {"json_fields": result.json_fields, "input": input_format if input_format != "parquet" else None,
             "malformed": malformed and input_format == "csv"}
    spec.update({key: value for key, value in extra.items() if value})
    archive = _ship(spark, checked.path)
    # The worker's entry point travels by value: executors have neither mlship nor this runtime installed.
    cloudpickle.register_pickle_by_value(_spark_boot)  # type: ignore[no-untyped-call, unused-ignore]
    # The UDF returns the worker's frame (a struct) for objects and with skip_invalid, else its prediction alone.
    struct = skip_invalid or result.kind == "dict"
    body = _spark_boot.make_body(Path(str(_boot.__file__)).read_bytes(), archive, spec,
                                 None if struct else PREDICTION_COLUMN)
    returns = result.columns(error=skip_invalid) if struct else result.ddl
    arguments = len(columns) + (0 if input_format == "jsonl" else len(ids)) + int("malformed" in spec)
    _annotate(body, arguments, frame=struct)
    return pandas_udf(body, returns)


def _annotate(body: Any, arguments: int, *, frame: bool) -> None:
    """The type hints pyspark reads to make an iterator UDF: of Series (a tuple of them for several columns),
    yielding Series, or DataFrames for a struct."""
    from collections.abc import Iterator

    import pandas  # type: ignore[import-untyped, unused-ignore]

    batch: Any = pandas.Series if arguments == 1 else tuple.__class_getitem__((pandas.Series, ...))
    result: Any = pandas.DataFrame if frame else pandas.Series
    body.__annotations__ = {"batches": Iterator[batch], "return": Iterator[result]}


def predict_frame(
    frame: Any,
    bundle: str | os.PathLike[str],
    *,
    method: str | None = None,
    id_columns: Sequence[str] = (),
    skip_invalid: bool = False,
    env: str = "shipped",
    input_format: str = "parquet",
) -> Any:
    """`frame`'s id columns and the prediction (plus `error` with `skip_invalid`), as `mlship predict` writes
    them (an object per row: its keys, one column each); the model's columns are found in `frame` as in a
    parquet file (BatchError when some are missing). `input_format` says how `frame` was read (bundle_udf):
    "csv", all text, as read_input reads a CSV file; "jsonl", the `value` column of spark.read.text and the
    id columns taken out of it (read_input does both)."""
    checked = _read(bundle)
    names = [name for name in frame.columns if name != MALFORMED_COLUMN]
    malformed = input_format == "csv" and MALFORMED_COLUMN in frame.columns
    if input_format == "jsonl":
        fields, arguments = [LINE_COLUMN], [LINE_COLUMN]
    else:
        fields = Layout(checked.manifest.input, tuple(id_columns)).fields(names, "the input")
        arguments = [*fields, *id_columns, *([MALFORMED_COLUMN] if malformed else [])]
    result = result_type(checked.golden, _method(checked, method))
    clash = [name for name in result.names if name in id_columns]
    if clash:
        raise BatchError(f"--id-column {', '.join(clash)} has the name of an output column; rename it")
    udf = bundle_udf(frame.sparkSession, checked.path, method=method, columns=fields, skip_invalid=skip_invalid,
                     env=env, ids=id_columns, input_format=input_format, malformed=malformed)
    scored = udf(*[frame[name] for name in arguments]).alias(PREDICTION_COLUMN)
    out = frame.select(*[frame[name] for name in id_columns], scored)
    if skip_invalid or result.kind == "dict":  # the struct's fields as columns
        out = out.select(*[out[name] for name in id_columns], f"{PREDICTION_COLUMN}.*")
    return out


@dataclass(frozen=True)
class SparkResult:
    output: str
    method: str
    rows: int
    seconds: float
    rejected: int | None = None

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        text = f"{self.method}: {self.rows:,} rows in {self.seconds:.1f} s ({self.rows_per_second:,.0f} rows/s) " \
               f"-> {self.output}"
        if self.rejected is not None:
            text += f"; {self.rejected:,} invalid (null prediction, `error` says why)"
        return text


def predict_files(
    spark: Any,
    bundle: str | os.PathLike[str],
    source: str,
    target: str,
    *,
    method: str | None = None,
    id_columns: Sequence[str] = (),
    skip_invalid: bool = False,
    env: str = "shipped",
    input_format: str | None = None,
    output_format: str | None = None,
) -> SparkResult:
    """Score the files `source` (a path, folder or glob Spark reads; parquet, csv or jsonl, from the extension
    unless `input_format` says) into the folder `target` (parquet, csv or jsonl part files, likewise); raise
    BatchError naming the executor and the row or golden case when the job fails."""
    from ._spark_files import file_format, read_input, write_output

    checked = _read(bundle)
    name = _method(checked, method)
    fmt_in = file_format(source, input_format, "--input-format")
    fmt_out = file_format(target, output_format, "--format")
    local = _local_path(target)
    if local is not None:
        _check_target(local)
    started = time.perf_counter()
    frame = read_input(spark, source, fmt_in, id_columns)
    scored = predict_frame(frame, checked.path, method=name, id_columns=id_columns, skip_invalid=skip_invalid,
                           env=env, input_format=fmt_in)
    try:
        rows, rejected = write_output(scored, target, fmt_out, result_type(checked.golden, name), name,
                                      counted=skip_invalid)
    except Exception as exc:
        if local is not None:
            shutil.rmtree(local, ignore_errors=True)
        raise job_error(exc) from None
    return SparkResult(target, name, rows, time.perf_counter() - started, rejected if skip_invalid else None)


def job_error(exc: BaseException) -> BatchError:
    """A failed Spark job as one BatchError: the worker's own message when it raised one, else Spark's."""
    text = str(exc)
    found = list(_MARKER.finditer(text))
    if found:
        message, hint = found[0].group(1), found[0].group(2)
        return BatchError(message.strip(), hint=hint.strip() if hint else None)
    # The Python traceback's last line (`_csv.Error: ...`), not the Java exceptions that wrap it.
    raised = [line for line in re.findall(r"^((?:\w+\.)*\w*(?:Error|Exception): .*)$", text, re.MULTILINE)
              if not line.startswith(("org.", "java.", "py4j.", "pyspark.", "scala."))]
    return BatchError(f"the Spark job failed: {raised[0] if raised else _first_line(exc)}",
                      hint="the Spark driver's log has the whole story")


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[0][:500] if lines else type(exc).__name__


def _local_path(target: str) -> Path | None:
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", target) and not target.startswith("file://"):
        return None
    return Path(target.removeprefix("file://"))


def _check_target(path: Path) -> None:
    # Spark's overwrite removes the folder first: refuse anything but an earlier Spark output.
    if path.exists() and not (path.is_dir() and (path / "_SUCCESS").exists()):
        raise BatchError(f"--output {path} exists and is not the output of an earlier Spark job",
                         hint="pass a path that does not exist yet (Spark writes a folder of parquet files)")
    if not path.parent.is_dir():
        raise BatchError(f"cannot write {path}: the folder {path.parent} does not exist",
                         hint=f"create it first (mkdir -p {path.parent}) or pass another --output")


def _read(bundle: str | os.PathLike[str]) -> Bundle:
    try:
        return read_servable(bundle)
    except BundleLoadError as exc:
        raise BatchError(f"cannot score with {bundle}: {exc.message}",
                         hint="pass the directory `mlship package` wrote (e.g. dist/iris)") from None


def _method(bundle: Bundle, method: str | None) -> str:
    names = bundle.manifest.method_names
    if method is None:
        return bundle.manifest.default_method
    if method not in names:
        raise BatchError(f"the bundle has no method {method!r}; it has {', '.join(names)}",
                         hint=f"pass one of them, e.g. --method {names[0]}, or leave --method out")
    return method


def _ship(spark: Any, root: Path) -> str:
    """Add the bundle to the Spark application as an archive (unpacked in every executor's SparkFiles folder);
    its name, which SparkFiles.get takes. The same bundle is packed once per driver machine."""
    digest = hashlib.sha256((root / _boot.MANIFEST_NAME).read_bytes()).hexdigest()[:16]
    name = f"mlship-bundle-{digest}.tar.gz"
    path = Path(tempfile.gettempdir()) / "mlship-spark" / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{name}.{os.getpid()}.tmp")
        with tarfile.open(partial, "w:gz", compresslevel=1) as tar:
            for relative in sorted(_bundle_members(root)):
                tar.add(root / relative, arcname=relative, recursive=False)
        os.replace(partial, path)
    context = spark.sparkContext
    if name not in {Path(uri).name for uri in context.listArchives}:
        context.addArchive(str(path))
    return name


def _bundle_members(root: Path) -> list[str]:
    return [*_boot.bundle_files(root), *(name for name in _boot.UNLISTED if (root / name).is_file()),
            *(p.relative_to(root).as_posix() for p in (root / _boot.LOCK_DIR).glob("*.txt"))]
