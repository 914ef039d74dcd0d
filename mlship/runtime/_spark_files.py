"""The files of a Spark scoring job (the driver's side): parquet, CSV or JSONL in, parquet, CSV or JSONL out.

The rules are `mlship predict`'s (_batch_input, _batch_output), applied where Spark allows:

- parquet is read as Spark reads it (typed columns);
- CSV is read with a header and RFC 4180 quoting, every column as text; the executors give each cell the
  schema's type as `mlship predict` gives it (an empty cell is a missing value, a cell that does not parse stays
  text for the validator to name); a line with another number of fields than the header is an invalid row;
- JSONL is read as lines (spark.read.text), each parsed by the executors as `mlship predict` parses a line
  (objects keyed by column, or the instance itself); the id columns are taken out of the lines by Spark, typed as
  in the first line;
- the output is a folder of part files, as Spark writes them: parquet and JSONL hold arrays and structs as they
  are (JSONL keeps its nulls), CSV has `METHOD_0..k` columns for a list per row (as `mlship predict` writes them)
  and nested values as JSON text.

pyspark is imported inside the functions only, as in spark.py.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any

from ._batch_input import FORMATS, BatchError

MALFORMED_COLUMN = "_mlship_malformed"  # the CSV reader's columnNameOfCorruptRecord
LINE_COLUMN = "value"  # spark.read.text's one column: a JSONL input's lines
_SPARK_TYPES = {bool: "boolean", int: "bigint", float: "double", str: "string"}


def file_format(path: str, given: str | None, option: str) -> str:
    """The format `given`, else the one the path's extension names; a folder or glob without one is parquet
    (Spark's usual), any other extension a BatchError."""
    if given is not None:
        if given not in ("parquet", "csv", "jsonl"):
            raise BatchError(f"{option} must be csv, jsonl or parquet, got {given!r}",
                             hint=f"pass {option} csv, {option} jsonl or {option} parquet, or leave it out")
        return given
    suffix = PurePosixPath(path.rstrip("/")).suffix.lower()
    if not suffix or "*" in suffix:
        return "parquet"
    if suffix not in FORMATS:
        raise BatchError(f"cannot tell the format of {path} from its extension; name it .csv, .jsonl or .parquet, "
                         f"or pass {option} csv|jsonl|parquet")
    return FORMATS[suffix]


def read_input(spark: Any, source: str, fmt: str, id_columns: Sequence[str]) -> Any:
    """The DataFrame spark.predict_frame takes for `fmt`; BatchError when Spark cannot read it."""
    from pyspark.errors import AnalysisException

    try:
        if fmt == "parquet":
            return spark.read.parquet(source)
        if fmt == "csv":
            return _read_csv(spark, source)
        return _read_jsonl(spark, source, id_columns)
    except AnalysisException as exc:
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise BatchError(f"Spark cannot read {source} as {fmt}: {first[:500]}",
                         hint=f"pass --input the {fmt} files to score, e.g. 'data/*.{fmt}'") from None


def _read_csv(spark: Any, source: str) -> Any:
    from pyspark.sql.types import StringType, StructField, StructType

    options = {"header": "true", "escape": '"', "mode": "PERMISSIVE", "columnNameOfCorruptRecord": MALFORMED_COLUMN}
    header = spark.read.options(**options).csv(source).columns  # the first file's header line only
    if header:
        header[0] = header[0].removeprefix("\ufeff")  # spreadsheet programs start a CSV file with a BOM
    schema = StructType([*(StructField(name, StringType()) for name in header), StructField(MALFORMED_COLUMN, StringType())])
    return spark.read.options(**options).schema(schema).csv(source)


def _read_jsonl(spark: Any, source: str, id_columns: Sequence[str]) -> Any:
    from pyspark.sql.functions import col, from_json, trim

    lines = spark.read.text(source)
    lines = lines.where(trim(col(LINE_COLUMN)) != "")  # blank lines are skipped, as `mlship predict` skips them
    if not id_columns:
        return lines
    first = lines.first()
    try:
        row = json.loads(first[LINE_COLUMN]) if first is not None else {}
    except ValueError:
        row = None
    if not isinstance(row, dict):
        row = {}
    missing = [name for name in id_columns if name not in row]
    if missing:
        raise BatchError(f"the first line of {source} has no field {', '.join(missing)}, so its type is unknown",
                         hint="--id-column needs every line to be a JSON object with that field")
    types = {name: _SPARK_TYPES.get(type(row[name]), "string") for name in id_columns}
    parsed = from_json(col(LINE_COLUMN), ", ".join(f"`{name.replace('`', '``')}` {types[name]}" for name in id_columns))
    return lines.select(*(parsed.getField(name).alias(name) for name in id_columns), col(LINE_COLUMN))


def write_output(scored: Any, target: str, fmt: str, result: Any, method: str, *, counted: bool) -> tuple[int, int]:
    """Write `scored` (spark.predict_frame's) to the folder `target`; its rows, and those with an error (when
    `counted`), counted as they are written (no second pass)."""
    from pyspark.sql import Observation
    from pyspark.sql.functions import col, count, lit, to_json

    observation = Observation("mlship")
    figures = [count(lit(1)).alias("rows")]
    if counted:
        figures.append(count(col("error")).alias("rejected"))
    frame = scored.observe(observation, *figures)
    writer = frame.write.mode("overwrite")
    if fmt == "parquet":
        writer.parquet(target)
    elif fmt == "jsonl":
        writer.option("ignoreNullFields", "false").json(target)
    else:
        columns = []
        for field in frame.schema.fields:
            kind = field.dataType.typeName()
            if field.name == "prediction" and result.kind == "list" and result.width is not None:
                columns += [col("prediction")[index].alias(f"{method}_{index}") for index in range(result.width)]
            elif kind in ("array", "struct", "map"):
                columns.append(to_json(col(f"`{field.name}`")).alias(field.name))
            else:
                columns.append(col(f"`{field.name}`"))
        frame.select(*columns).write.mode("overwrite").options(header="true", escape='"').csv(target)
    got = observation.get
    return int(got["rows"]), int(got.get("rejected", 0))
