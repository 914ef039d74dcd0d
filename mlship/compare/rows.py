"""The input rows as the host reads them, numbered as the bundle's batch reader numbers them (a CSV record by the
line it starts on, a JSONL row by its line, a parquet row from 1), to line up both bundles' outputs and rejects
and to write the disagreeing rows' inputs. Each row is read once, as it streams past."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from ..errors import MlshipError
from ..runtime._batch_input import FORMATS


def input_format(path: Path, given: str | None) -> str:
    if given is not None and given not in ("csv", "jsonl", "parquet"):
        raise MlshipError(f"--data-format must be csv, jsonl or parquet, got {given!r}", exit_code=2,
                          hint="pass --data-format csv, jsonl or parquet, or leave it out")
    fmt = given or FORMATS.get(path.suffix.lower())
    if fmt not in ("csv", "jsonl", "parquet"):
        raise MlshipError(f"cannot tell the format of {path} from its extension", exit_code=2,
                          hint="name it .csv, .jsonl or .parquet, or pass --data-format csv|jsonl|parquet")
    return fmt


def read_rows(path: Path, fmt: str) -> Iterator[tuple[int, Any]]:
    """(number, row) for every row the batch reader would read or reject: a CSV row is {header: text}."""
    if fmt == "csv":
        yield from _csv_rows(path)
    elif fmt == "jsonl":
        with path.open("rb") as stream:
            for number, line in enumerate(stream, start=1):
                if line.strip():
                    try:
                        yield number, orjson.loads(line)
                    except orjson.JSONDecodeError:
                        yield number, line.decode("utf-8", "replace").rstrip()
    else:
        yield from _parquet_rows(path)


def _csv_rows(path: Path) -> Iterator[tuple[int, Any]]:
    with path.open("rb") as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as text:
        reader = csv.reader(text)
        try:
            header = next(reader)
        except StopIteration:
            return
        last = reader.line_num
        for record in reader:
            line, last = last + 1, reader.line_num
            if record:
                yield line, dict(zip(header, record, strict=False)) if len(record) == len(header) else record


def _parquet_rows(path: Path) -> Iterator[tuple[int, Any]]:
    try:
        import pyarrow.parquet as pq  # type: ignore[import-untyped, import-not-found, unused-ignore]
    except ImportError:
        raise MlshipError(f"reading {path} needs pyarrow, which mlship's Python lacks", exit_code=2,
                          hint="pip install pyarrow beside mlship, or compare over a CSV or JSONL file") from None
    number = 0
    with pq.ParquetFile(path) as parquet:
        for batch in parquet.iter_batches(batch_size=10_000):
            for row in batch.to_pylist():
                number += 1
                yield number, {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in row.items()}


def read_output_row(line: bytes, method: str, id_columns: tuple[str, ...]) -> Any:
    """One output row of a batch job (JSONL) as the method's value: `prediction`, `METHOD_0..k` or a dict's keys."""
    row = orjson.loads(line)  # a core dependency (the runtime's), and the merge's hot spot
    for name in id_columns:
        row.pop(name, None)
    if list(row) == ["prediction"]:
        return row["prediction"]
    if row and all(key == f"{method}_{i}" for i, key in enumerate(row)):
        return list(row.values())
    return row


def read_rejects(path: str | None) -> dict[int, str]:
    """Row number -> why the bundle refused it (the job's --skip-invalid rejects file)."""
    if not path or not Path(path).is_file():
        return {}
    refused = {}
    with open(path, "rb") as stream:
        for line in stream:
            record = json.loads(line)
            refused[int(str(record["where"]).rsplit(" ", 1)[-1])] = str(record["error"])
    return refused
