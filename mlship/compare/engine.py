"""`mlship compare OLD NEW`: both bundles predict the same rows, each in its own process with its own runtime
(runner.py), over OLD's and NEW's golden inputs and every row of --data; the outputs are then read side by side,
a row at a time (stats.py), so memory stays bounded whatever the size of the file."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..bundle.manifest import open_bundle
from ..errors import MlshipError
from ..runtime._batch import DEFAULT_CHUNK_ROWS
from ..runtime._contract import Bundle
from . import changes as ch
from .metrics import METRICS
from .report import BundleFacts, CompareReport, Gates, MetricResult
from .rows import input_format, read_output_row, read_rejects, read_rows
from .runner import Job, run_both
from .stats import MethodStats, Tolerance


@dataclass(frozen=True)
class CompareOptions:
    data: Path | None = None
    data_format: str | None = None
    label: str | None = None
    metric: str | None = None
    methods: tuple[str, ...] = ()
    tolerance: float | None = None
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    old_python: str | None = None
    new_python: str | None = None
    diff_out: Path | None = None
    gates: Gates = Gates()


def _open(path: Path, role: str) -> Bundle:
    try:
        return open_bundle(path.resolve())
    except MlshipError as exc:
        raise MlshipError(f"{role}: {exc.message}", hint=exc.hint, exit_code=2) from None


def _check(options: CompareOptions) -> None:
    if options.metric is not None and options.metric not in METRICS:
        raise MlshipError(f"--metric {options.metric!r} is not one mlship computes", exit_code=2,
                          hint=f"pass one of {', '.join(METRICS)}")
    if options.label is not None and options.data is None:
        raise MlshipError("--label names a column of --data, but no --data was given", exit_code=2,
                          hint="pass --data FILE with the true labels in that column")
    if options.gates.min_delta is not None and options.label is None:
        raise MlshipError("--min-delta needs the true labels: pass --data FILE --label COLUMN", exit_code=2)
    if options.data is not None and not options.data.is_file():
        raise MlshipError(f"--data {options.data} does not exist", exit_code=2,
                          hint="pass a .csv, .jsonl or .parquet file of input rows")


def _methods(old: Bundle, new: Bundle, chosen: tuple[str, ...]) -> list[str]:
    common = [m for m in old.manifest.method_names if m in new.manifest.method_names]
    for name in chosen:
        if name not in common:
            raise MlshipError(f"--method {name!r} is not a method of both bundles", exit_code=2,
                              hint=f"both have {', '.join(common) or 'no method in common'}")
    if not common:
        raise MlshipError("OLD and NEW have no method in common: nothing to compare", exit_code=2,
                          hint="compare two versions of the same notebook")
    if chosen:
        return list(dict.fromkeys(chosen))
    primary = old.manifest.default_method if old.manifest.default_method in common else common[0]
    return [primary, *(m for m in common if m != primary)]


def _golden_file(old: Bundle, new: Bundle, path: Path) -> Path:
    """Every distinct golden input row of both bundles, one JSON row a line, OLD's first."""
    seen: set[str] = set()
    with path.open("w", encoding="utf-8") as stream:
        for bundle in (old, new):
            for case in bundle.golden.cases:
                for row in case.instances:
                    line = json.dumps(row, sort_keys=True)
                    if line not in seen:
                        seen.add(line)
                        stream.write(json.dumps(row) + "\n")
    return path


def compare_bundles(old_path: Path, new_path: Path, options: CompareOptions) -> CompareReport:
    """The comparison; MlshipError with exit code 2 when it cannot run."""
    _check(options)
    old, new = _open(old_path, "OLD"), _open(new_path, "NEW")
    methods = _methods(old, new, options.methods)
    schema = [*ch.schema_changes(old.manifest.input, new.manifest.input), *ch.method_changes(old, new)]
    tolerance = (Tolerance(0.0, options.tolerance) if options.tolerance is not None
                 else Tolerance(old.golden.rtol, old.golden.atol))
    with tempfile.TemporaryDirectory(prefix="mlship-compare-") as tmp:
        work = Path(tmp)
        sets: list[tuple[str, Path, str, tuple[str, ...]]] = [
            ("golden", _golden_file(old, new, work / "golden.jsonl"), "jsonl", ())]
        if options.data is not None:
            ids = (options.label,) if options.label else ()
            sets.append(("data", options.data.resolve(), input_format(options.data, options.data_format), ids))
        jobs = {role: [Job(m, path, work / f"{role}-{name}-{m}.jsonl", fmt, options.chunk_rows, ids)
                       for name, path, fmt, ids in sets for m in methods] for role in ("old", "new")}
        old_answer, new_answer = run_both((old.path, options.old_python, jobs["old"]),
                                          (new.path, options.new_python, jobs["new"]), work)
        stats = {m: MethodStats(m, tolerance) for m in methods}
        with ExitStack() as stack:
            diff_out = stack.enter_context(_DiffFile(options.diff_out))
            for index, (oj, nj, o_res, n_res) in enumerate(zip(jobs["old"], jobs["new"], old_answer["jobs"],
                                                                new_answer["jobs"], strict=True)):
                where = sets[index // len(methods)]
                for role, result in (("OLD", o_res), ("NEW", n_res)):
                    if "error" in result:
                        raise MlshipError(
                            f"{role} cannot predict {oj.method} over {_shown(where)}: {result['error']}",
                            exit_code=2, hint=_job_hint(schema, result))
                method = stats[oj.method]
                method.old.rows += o_res["rows"]
                method.old.seconds += o_res["seconds"]
                method.new.rows += n_res["rows"]
                method.new.seconds += n_res["seconds"]
                _merge(method, where[0], where[1], where[2], oj, nj, o_res, n_res, options.label, diff_out)
    facts = (BundleFacts.of(old, old_answer["load_seconds"]), BundleFacts.of(new, new_answer["load_seconds"]))
    metric = _metric(stats, methods[0], options) if options.label else None
    requirements = ch.requirement_changes(old.manifest.requirements, new.manifest.requirements)
    return CompareReport(facts[0], facts[1], methods, stats, schema, requirements, metric, options.gates,
                         data=str(options.data) if options.data else None, label=options.label,
                         diff_out=str(options.diff_out) if options.diff_out else None)


def _shown(where: tuple[str, Path, str, tuple[str, ...]]) -> str:
    return "the golden inputs" if where[0] == "golden" else str(where[1])


def _job_hint(schema: list[ch.Change], result: dict[str, Any]) -> str:
    breaking = [c.what for c in schema if c.breaking]
    if breaking:
        return "the input schema changed in a way clients see: " + "; ".join(breaking)
    return str(result.get("hint") or "mlship predict BUNDLE --input FILE shows the same error")


class _Diffs:
    def __init__(self, stream: IO[str] | None) -> None:
        self.stream = stream

    def write(self, record: dict[str, Any]) -> None:
        if self.stream is not None:
            self.stream.write(json.dumps(record, default=str) + "\n")


class _DiffFile:
    """--diff-out FILE, written to a temporary name and renamed into place when the comparison completes."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.temp = None if path is None else path.with_name(f".{path.name}.tmp")

    def __enter__(self) -> _Diffs:
        if self.temp is None:
            return _Diffs(None)
        try:
            self.stream: IO[str] = self.temp.open("w", encoding="utf-8")
        except OSError as exc:
            raise MlshipError(f"cannot write --diff-out {self.path}: {exc.strerror}", exit_code=2) from None
        return _Diffs(self.stream)

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if self.temp is None or self.path is None:
            return
        self.stream.close()
        if exc_type is None:
            self.temp.replace(self.path)
        else:
            self.temp.unlink(missing_ok=True)


def _outputs(path: Path, method: str, ids: tuple[str, ...]) -> Iterator[Any]:
    if not path.is_file():
        return
    with path.open("rb") as stream:
        for line in stream:
            yield read_output_row(line, method, ids)


def _merge(stats: MethodStats, name: str, source: Path, fmt: str, old_job: Job, new_job: Job,
           old_result: dict[str, Any], new_result: dict[str, Any], label: str | None, diffs: _Diffs) -> None:
    """Walk the input rows with both outputs: a row a bundle refused is in its rejects file, not its output."""
    old_refused, new_refused = read_rejects(old_result.get("rejects")), read_rejects(new_result.get("rejects"))
    old_rows = _outputs(old_job.output, old_job.method, old_job.id_columns)
    new_rows = _outputs(new_job.output, new_job.method, new_job.id_columns)
    for number, row in read_rows(source, fmt):
        old_error, new_error = old_refused.get(number), new_refused.get(number)
        old_value = None if old_error is not None else next(old_rows, None)
        new_value = None if new_error is not None else next(new_rows, None)
        if stats.add(name, old_value, new_value, old_error, new_error):
            diffs.write({"input_set": name, "row": number, "method": stats.method, "input": row,
                         "old": old_value if old_error is None else {"error": old_error},
                         "new": new_value if new_error is None else {"error": new_error}})
        if label is not None and isinstance(row, dict) and label in row:
            stats.add_truth(row[label], old_value, new_value, old_error, new_error)


def _metric(stats: dict[str, MethodStats], primary: str, options: CompareOptions) -> MetricResult:
    main = stats[primary]
    name = options.metric or ("accuracy" if main.kind == "label" else "rmse")
    source = main
    if METRICS[name][1] == "score":
        scored = [stats[m] for m in ("predict_proba", "decision_function") if m in stats]
        if not scored:
            raise MlshipError(f"--metric {name} needs scores: both bundles' predict_proba or decision_function",
                              exit_code=2, hint="pick a label metric (accuracy, f1, ...) or compare --method "
                              "predict_proba too")
        source = scored[0]
    old_value, new_value = source.old.metric(name), source.new.metric(name)
    if old_value is None or new_value is None:
        raise MlshipError(f"cannot compute {name} of {source.method} from --label {options.label}", exit_code=2,
                          hint="the label column must hold the true values of what the method returns "
                          "(class labels for accuracy, f1, precision, recall; numbers for rmse, mae, r2; both "
                          "classes for roc_auc)")
    return MetricResult(name, source.method, old_value, new_value, METRICS[name][0])
