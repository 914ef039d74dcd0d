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

__all__ = ["SparkResult", "bundle_udf", "predict_frame", "predict_parquet", "result_type"]

ERROR_COLUMN = "error"
PREDICTION_COLUMN = "prediction"
_MARKER = re.compile(r"mlship-spark-error: (.*?)(?: \| hint: (.*?))?$", re.MULTILINE)


@dataclass(frozen=True)
class ResultType:
    ddl: str  # Spark SQL type: "bigint", "double", "array<double>", ...
    kind: str  # "value" (one value per row) or "list" (an array per row)


def result_type(golden: Golden, method: str) -> ResultType:
    """The Spark type of `method`'s output for one row, from the golden cases' outputs (what the notebook gave)."""
    rows = [row for case in golden.for_method(method) for row in _rows(case.expected, len(case.instances))]
    rows = [row for row in rows if row is not None]
    if not rows:
        raise BatchError(f"the bundle has no golden output of {method} to tell its Spark result type from",
                         hint="package the notebook again (its golden cases record every method's output)")
    if all(isinstance(row, list) for row in rows):
        items = [item for row in rows for item in row if item is not None]
        return ResultType(f"array<{_scalar(items, method)}>", "list")
    if any(isinstance(row, (list, dict)) for row in rows):
        raise BatchError(f"{method} returns {'objects' if any(isinstance(r, dict) for r in rows) else 'mixed rows'}"
                         " per row, which Spark scoring does not map to a column type yet",
                         hint="score it with `mlship predict` (without --engine spark), or pick another --method")
    return ResultType(_scalar(rows, method), "value")


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
) -> Any:
    """A pandas UDF that scores rows with the bundle's `method` (default: predict, else the first).

    Call it with the input columns in the order of `columns` (default: the schema's columns), then the columns
    `ids` names, if any (they only name a bad row in the job's error). Without
    `skip_invalid` it returns the prediction, and an invalid row fails the job naming it; with it, a struct
    of `prediction` (null for an invalid row) and `error` (why). `env` only words the errors: "shipped" when
    the session ships the bundle's environment (mlship.spark_env), "executor" when it uses the executors' own.
    Raises BatchError (the bundle cannot be read, its method does not exist, its result has no Spark type).
    """
    from pyspark import cloudpickle
    from pyspark.sql.functions import pandas_udf  # type: ignore[attr-defined, unused-ignore]

    checked = _read(bundle)
    name = _method(checked, method)
    result = result_type(checked.golden, name)
    if columns is None:
        if not checked.manifest.input.has_columns:
            raise BatchError("the model takes no named columns; pass columns=[...] in the order its input "
                             "takes them")
        columns = checked.manifest.input.column_names
    spec = {"method": name, "fields": tuple(columns), "output": result.kind, "output_names": (),
            "skip_invalid": skip_invalid, "env": env, "ids": tuple(ids)}
    archive = _ship(spark, checked.path)
    # The worker's entry point travels by value: executors have neither mlship nor this runtime installed.
    cloudpickle.register_pickle_by_value(_spark_boot)  # type: ignore[no-untyped-call, unused-ignore]
    # Without skip_invalid the UDF returns the prediction column alone, not the worker's frame.
    column = None if skip_invalid else PREDICTION_COLUMN
    body = _spark_boot.make_body(Path(str(_boot.__file__)).read_bytes(), archive, spec, column)
    returns = f"{PREDICTION_COLUMN} {result.ddl}, {ERROR_COLUMN} string" if skip_invalid else result.ddl
    _annotate(body, len(columns) + len(ids), frame=skip_invalid)
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
) -> Any:
    """`frame`'s id columns and the prediction (plus `error` with `skip_invalid`), as `mlship predict` writes
    them; the model's columns are found in `frame` as in a parquet file (BatchError when some are missing)."""
    checked = _read(bundle)
    fields = Layout(checked.manifest.input, tuple(id_columns)).fields(list(frame.columns), "the input")
    udf = bundle_udf(frame.sparkSession, checked.path, method=method, columns=fields,
                     skip_invalid=skip_invalid, env=env, ids=id_columns)
    scored = udf(*[frame[name] for name in [*fields, *id_columns]]).alias(PREDICTION_COLUMN)
    ids = [frame[name] for name in id_columns]
    out = frame.select(*ids, scored)
    if skip_invalid:
        out = out.select(*id_columns, f"{PREDICTION_COLUMN}.{PREDICTION_COLUMN}", f"{PREDICTION_COLUMN}.{ERROR_COLUMN}")
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


def predict_parquet(
    spark: Any,
    bundle: str | os.PathLike[str],
    source: str,
    target: str,
    *,
    method: str | None = None,
    id_columns: Sequence[str] = (),
    skip_invalid: bool = False,
    env: str = "shipped",
) -> SparkResult:
    """Score the parquet files `source` (a path or glob Spark reads) into the parquet folder `target`; raise
    BatchError naming the executor and the row or golden case when the job fails."""
    from pyspark.errors import AnalysisException

    checked = _read(bundle)
    name = _method(checked, method)
    local = _local_path(target)
    if local is not None:
        _check_target(local)
    started = time.perf_counter()
    try:
        frame = spark.read.parquet(source)
    except AnalysisException as exc:
        raise BatchError(f"Spark cannot read {source} as parquet: {_first_line(exc)}",
                         hint="pass --input the parquet files to score, e.g. 'data/*.parquet'") from None
    scored = predict_frame(frame, checked.path, method=name, id_columns=id_columns, skip_invalid=skip_invalid,
                           env=env)
    try:
        scored.write.mode("overwrite").parquet(target)
    except Exception as exc:
        if local is not None:
            shutil.rmtree(local, ignore_errors=True)
        raise job_error(exc) from None
    seconds = time.perf_counter() - started
    written = spark.read.parquet(target)
    rejected = written.where(written[ERROR_COLUMN].isNotNull()).count() if skip_invalid else None
    return SparkResult(target, name, written.count(), seconds, rejected)


def job_error(exc: BaseException) -> BatchError:
    """A failed Spark job as one BatchError: the worker's own message when it raised one, else Spark's."""
    text = str(exc)
    found = list(_MARKER.finditer(text))
    if found:
        message, hint = found[0].group(1), found[0].group(2)
        return BatchError(message.strip(), hint=hint.strip() if hint else None)
    python = re.search(r"^(\w*(?:Error|Exception): .*)$", text, re.MULTILINE)
    return BatchError(f"the Spark job failed: {python.group(1) if python else _first_line(exc)}",
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
