"""The bundle format (docs/BUNDLE.md) as one typed contract: what `mlship package` writes and everything else reads.

Standard library only, because it travels inside every bundle with the runtime and the host imports it from
here (never the reverse). Every file of the format is a frozen dataclass with `from_json` (validating, raising
BundleLoadError that names the file and the field) and `to_json`; `read(bundle_dir)` checks the format version,
the required files and every digest; `write(bundle_dir, manifest, golden)` is the one writer. Defaults such as
`batch_safe` live here and nowhere else.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from ._boot import (
    IGNORED_DIRS,
    SIGNATURE_NAME,
    UNLISTED,
    BundleLoadError,
    bundle_files,
    check_tree,
    read_checked,
    sha256_file,
)
from ._values import TYPES

__all__ = ["BundleLoadError", "IGNORED_DIRS", "SIGNATURE_NAME", "UNLISTED", "read_checked", "sha256_file"]

# The format written today, and every format this runtime still reads. Format 1 (mlship 0.1.0 before the typed
# contract) may omit batch_safe, local_modules, selection, source, mlship_version and created_at; format 2
# writes every field; format 3 adds the input's `ignored` columns (a client need not send them), which formats
# 1 and 2 read as none.
FORMAT = 3
READABLE_FORMATS = (1, 2, 3)

MANIFEST_NAME = "mlship.json"
PREDICTOR_NAME = "predictor.py"
GOLDEN_NAME = "golden.json"
VALUES_NAME = "artifacts/values.pkl"
REQUIREMENTS_NAME = "requirements.txt"
# The bundle's software bill of materials, CycloneDX and SPDX (docs/BUNDLE.md "SBOM"): listed in `artifacts` and
# digest-checked like every file, and optional (bundles from before it have none). Adding it changed no field and
# no format, so every format-3 reader reads a bundle that has one.
SBOM_FILES = {"cyclonedx": "sbom/sbom.cdx.json", "spdx": "sbom/sbom.spdx.json"}

COLUMN_KINDS = ("dataframe", "records", "columns")
ROW_KINDS = ("ndarray", "series", "list")
KINDS = COLUMN_KINDS + ROW_KINDS

DEFAULT_RTOL = 1e-6
DEFAULT_ATOL = 1e-9

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# The manifest keys every format has, and those format 1 could leave out (see FORMAT).
_REQUIRED = ("name", "version", "runtime_version", "python", "requirements", "artifacts", "methods", "input", "golden")
_REQUIRED_SINCE_2 = ("mlship_version", "created_at", "source", "batch_safe", "local_modules", "selection")


# -- the input schema --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """One named column (dataframe, records, columns), or the element of a row-kind input (series, ndarray, list).

    `type` is the JSON-level type requests are validated against, `dtype` what the value is converted to.
    """

    name: str | None
    type: str = "any"
    dtype: str | None = None
    nullable: bool = True

    @classmethod
    def from_json(cls, data: Any, where: str, *, named: bool = True) -> Column:
        obj = _object(data, where)
        name = obj.get("name")
        if named and not isinstance(name, str):
            raise BundleLoadError(f"{where}: every column needs a string 'name', got {name!r}")
        if name is not None and not isinstance(name, str):
            raise BundleLoadError(f"{where}: 'name' must be a string or null, got {name!r}")
        type_ = obj.get("type", "any")
        if type_ not in TYPES:
            raise BundleLoadError(f"{where}: unknown type {type_!r}; expected one of {', '.join(TYPES)}")
        dtype = obj.get("dtype")
        if dtype is not None and not isinstance(dtype, str):
            raise BundleLoadError(f"{where}: 'dtype' must be a string, got {dtype!r}")
        return cls(name, type_, dtype, _bool(obj, "nullable", where, True))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.dtype is not None:
            out["dtype"] = self.dtype
        out["type"] = self.type
        out["nullable"] = self.nullable
        return out


@dataclass(frozen=True)
class InputSchema:
    """What the served function takes (BUNDLE.md "Input schema").

    Column kinds (dataframe, records, columns) have `columns`; row kinds (series, ndarray, list) have one
    `element` spec (its `name` is the series name), and ndarray a `shape` whose None entries match any size.
    `example` is the first golden input row, as JSON. `column_labels` is "int" for a dataframe whose labels were
    integers in the notebook (`read_csv(header=None)`): names stay strings on the wire ("0", "1", ...) and the
    runtime builds the frame with int labels; "str" (the default, and what bundles without the key mean) otherwise.
    `ignored` (column kinds) names the columns the notebook's input frame had that the served path does not
    read (found at packaging, BUNDLE.md "Client columns"): a client need not send them, and the runtime drops
    them, like any other extra column, when sent.
    """

    kind: str
    columns: tuple[Column, ...] = ()
    element: Column | None = None
    shape: tuple[int | None, ...] | None = None
    example: Any = None
    column_labels: str = "str"
    ignored: tuple[str, ...] = ()

    @property
    def has_columns(self) -> bool:
        return self.kind in COLUMN_KINDS

    @property
    def column_names(self) -> list[str]:
        return column_names(self.columns)

    @property
    def fields(self) -> tuple[Column, ...]:
        """The columns, or the one element spec of a row kind: what every value of a request is checked against."""
        return self.columns if self.has_columns else (self.element or Column(None),)

    def frame_label(self, name: str) -> str | int:
        """The label a column named `name` (as on the wire) has in the frame the served function receives."""
        return int(name) if self.column_labels == "int" else name

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)

    @property
    def modules(self) -> tuple[str, ...]:
        """What the runtime imports to build the served function's input value of this kind."""
        if self.kind in ("dataframe", "series"):
            return ("pandas", "numpy")
        if self.kind in ("ndarray", "columns"):
            return ("numpy",)
        return ()

    @classmethod
    def from_json(cls, data: Any, where: str = "input schema") -> InputSchema:
        obj = _object(data, where)
        kind = obj.get("kind")
        if kind not in KINDS:
            raise BundleLoadError(f"{where}: unknown input kind {kind!r}; this runtime knows {', '.join(KINDS)}")
        example = obj.get("example")
        if kind in COLUMN_KINDS:
            specs = obj.get("columns")
            if not isinstance(specs, list) or not specs:
                raise BundleLoadError(f"{where}: a {kind} schema needs a non-empty list of 'columns'")
            columns = tuple(Column.from_json(spec, f"{where}, column {i}") for i, spec in enumerate(specs))
            names = [column.name for column in columns]
            if len(set(names)) != len(names):
                raise BundleLoadError(f"{where}: a column name appears twice in {names}")
            ignored = tuple(_strings(obj, "ignored", where, required=False))
            both = sorted(set(ignored) & {str(name) for name in names})
            if both:
                raise BundleLoadError(f"{where}: {both} are both columns and 'ignored'")
            return cls(kind, columns=columns, example=example, column_labels=_column_labels(obj, kind, names, where),
                       ignored=ignored)
        element = Column.from_json(obj, where, named=False)
        if kind != "series":
            element = replace(element, name=None)
        shape = None
        if kind == "ndarray" and obj.get("shape") is not None:
            raw = obj["shape"]
            if not isinstance(raw, list) or not raw or not all(
                size is None or (type(size) is int and size >= 0) for size in raw
            ):
                raise BundleLoadError(f"{where}: 'shape' must be a list of sizes (null: any), got {raw!r}")
            shape = tuple(raw)
        return cls(kind, element=element, shape=shape, example=example)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.has_columns:
            out["columns"] = [column.to_json() for column in self.columns]
            if self.column_labels != "str":  # written only when set: string labels' manifests stay as they were
                out["column_labels"] = self.column_labels
            out["ignored"] = list(self.ignored)
        else:
            element = self.fields[0].to_json()
            if self.kind != "series":
                del element["name"]
            out.update(element)
            if self.kind == "ndarray":
                out["shape"] = None if self.shape is None else list(self.shape)
        out["example"] = self.example
        return out


def _column_labels(obj: dict[str, Any], kind: str, names: list[str | None], where: str) -> str:
    labels = obj.get("column_labels", "str")
    if labels not in ("str", "int"):
        raise BundleLoadError(f"{where}: 'column_labels' must be \"str\" or \"int\", got {labels!r}")
    if labels == "int":
        if kind != "dataframe":
            raise BundleLoadError(f"{where}: 'column_labels': \"int\" applies to a dataframe, not a {kind}")
        bad = [name for name in names if not is_int_label(str(name))]
        if bad:
            raise BundleLoadError(f"{where}: integer column labels must be written as integers, got {bad[:5]!r}")
    return str(labels)


def is_int_label(name: str) -> bool:
    """Whether `name` is how an integer column label is written: str(int) ("0", "60", "-1"), nothing else."""
    try:
        return str(int(name)) == name
    except ValueError:
        return False


def column_names(columns: tuple[Column, ...]) -> list[str]:
    return [str(column.name) for column in columns]


# -- the manifest -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Method:
    """A served method: its name (the endpoint /<name>) and the notebook expression it evaluates."""

    name: str
    expression: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "expression": self.expression}


@dataclass(frozen=True)
class Source:
    notebook: str
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"notebook": self.notebook, "sha256": self.sha256}


@dataclass(frozen=True)
class PythonInfo:
    version: str
    implementation: str = "CPython"

    @property
    def minor(self) -> tuple[int, int]:
        major, minor = self.version.split(".")[:2]
        return int(major), int(minor)

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "implementation": self.implementation}


@dataclass(frozen=True)
class Selection:
    """How the served path was chosen: `source` is auto, flag, directive or config."""

    source: str
    reason: str
    cell: int | None = None
    sample: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "reason": self.reason, "cell": self.cell, "sample": self.sample}


@dataclass(frozen=True)
class Manifest:
    """mlship.json. `artifacts` maps bundle-relative POSIX paths to sha256 hex digests."""

    name: str
    version: str
    runtime_version: str
    python: PythonInfo
    methods: tuple[Method, ...]
    input: InputSchema
    requirements: tuple[str, ...] = ()
    artifacts: Mapping[str, str] = field(default_factory=dict)
    batch_safe: bool = True
    golden: str = GOLDEN_NAME
    mlship_version: str = ""
    created_at: str = ""
    source: Source | None = None
    local_modules: tuple[str, ...] = ()
    selection: Selection | None = None
    format: int = FORMAT

    @property
    def method_names(self) -> list[str]:
        return [method.name for method in self.methods]

    @property
    def default_method(self) -> str:
        """What a caller that names no method gets (MLflow's /invocations, batch predict): predict, else the first."""
        names = self.method_names
        return "predict" if "predict" in names else names[0]

    def method(self, name: str) -> Method:
        for method in self.methods:
            if method.name == name:
                return method
        raise KeyError(name)

    @classmethod
    def from_json(cls, data: Any, where: str = MANIFEST_NAME) -> Manifest:
        obj = _object(data, where)
        fmt = obj.get("format")
        if type(fmt) is not int:
            raise BundleLoadError(f"{where}: 'format' must be an integer, got {fmt!r}")
        if fmt not in READABLE_FORMATS:
            raise BundleLoadError(_format_message(where, fmt, obj.get("mlship_version")))
        strict = fmt >= 2  # format 1 may omit the fields documented above
        required = _REQUIRED + (_REQUIRED_SINCE_2 if strict else ())
        missing = [key for key in required if key not in obj]
        if missing:
            raise BundleLoadError(f"{where} lacks {', '.join(repr(key) for key in missing)}")
        methods = _list(obj, "methods", where)
        if not methods:
            raise BundleLoadError(f"{where}: 'methods' must list at least one method")
        parsed = tuple(_method(item, f"{where}, methods[{i}]") for i, item in enumerate(methods))
        if len({m.name for m in parsed}) != len(parsed):
            raise BundleLoadError(f"{where}: a method name appears twice in 'methods'")
        # Format 2 writes both keys (null when unknown); format 1 may leave them out.
        source = _required(obj, "source", where) if strict else obj.get("source")
        selection = _required(obj, "selection", where) if strict else obj.get("selection")
        return cls(
            name=_str(obj, "name", where, nonempty=True),
            version=_str(obj, "version", where, nonempty=True),
            runtime_version=str(_required(obj, "runtime_version", where)),
            python=_python(_required(obj, "python", where), f"{where}, python"),
            methods=parsed,
            input=InputSchema.from_json(_required(obj, "input", where), f"{where}, input"),
            requirements=tuple(_strings(obj, "requirements", where, required=True)),
            artifacts=_artifacts(_required(obj, "artifacts", where), f"{where}, artifacts"),
            batch_safe=_bool(obj, "batch_safe", where, None if strict else True),
            golden=_path(_str(obj, "golden", where), f"{where}, golden"),
            mlship_version=_str(obj, "mlship_version", where, default=None if strict else ""),
            created_at=_str(obj, "created_at", where, default=None if strict else ""),
            source=None if source is None else _source(source, f"{where}, source"),
            local_modules=tuple(_strings(obj, "local_modules", where, required=strict)),
            selection=None if selection is None else _selection(selection, f"{where}, selection"),
            format=fmt,
        )

    def to_json(self) -> dict[str, Any]:
        """Always the current format, every field written (the manifest of a bundle this mlship writes)."""
        return {
            "format": FORMAT,
            "name": self.name,
            "version": self.version,
            "mlship_version": self.mlship_version,
            "runtime_version": self.runtime_version,
            "created_at": self.created_at,
            "source": None if self.source is None else self.source.to_json(),
            "python": self.python.to_json(),
            "requirements": list(self.requirements),
            "artifacts": dict(sorted(self.artifacts.items())),
            "methods": [method.to_json() for method in self.methods],
            "batch_safe": self.batch_safe,
            "input": self.input.to_json(),
            "golden": self.golden,
            "local_modules": list(self.local_modules),
            "selection": None if self.selection is None else self.selection.to_json(),
        }


# -- golden cases and their replay ------------------------------------------------------------------------------


@dataclass(frozen=True)
class GoldenCase:
    """One sample input row (a ready-to-send `instances` list) and the notebook's own output for it. `source` is
    the notebook expression the row was taken from (None in bundles from before it was recorded)."""

    id: str
    method: str
    instances: list[Any]
    expected: Any
    source: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = {"id": self.id, "method": self.method, "instances": self.instances, "expected": self.expected}
        if self.source is not None:
            out["source"] = self.source
        return out


@dataclass(frozen=True)
class GoldenSource:
    """Where golden rows came from: the inference call's own data, and, when it had fewer rows than asked for,
    another notebook value of the same schema (a test split); `reason` says why that one."""

    expr: str
    rows: int
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"expr": self.expr, "rows": self.rows, "reason": self.reason}

    @classmethod
    def from_json(cls, data: Any, where: str) -> GoldenSource:
        obj = _object(data, where)
        rows = obj.get("rows")
        if type(rows) is not int or rows < 0:
            raise BundleLoadError(f"{where}: 'rows' must be a count, got {rows!r}")
        return cls(_str(obj, "expr", where), rows, _str(obj, "reason", where, default=""))


@dataclass(frozen=True)
class Golden:
    """golden.json: the cases, and the tolerance floats are compared with: abs(a - b) <= atol + rtol * abs(b).
    `sources` (optional, written when known) says where the cases' input rows came from."""

    cases: tuple[GoldenCase, ...]
    rtol: float = DEFAULT_RTOL
    atol: float = DEFAULT_ATOL
    sources: tuple[GoldenSource, ...] = ()

    def for_method(self, method: str) -> list[GoldenCase]:
        return [case for case in self.cases if case.method == method]

    @classmethod
    def from_json(cls, data: Any, where: str = GOLDEN_NAME, methods: list[str] | None = None) -> Golden:
        obj = _object(data, where)
        raw = obj.get("cases")
        if not isinstance(raw, list) or not raw:
            raise BundleLoadError(f"{where} must be an object with a non-empty list of 'cases'")
        cases = []
        for index, item in enumerate(raw):
            if not isinstance(item, dict) or not {"id", "method", "instances", "expected"} <= item.keys():
                raise BundleLoadError(f"{where}: every case needs id, method, instances and expected (case {index})")
            if not isinstance(item["instances"], list) or not item["instances"]:
                raise BundleLoadError(f"{where}: case {item['id']!r}: 'instances' must be a non-empty list")
            if methods is not None and item["method"] not in methods:
                raise BundleLoadError(
                    f"{where}: case {item['id']!r} uses method {item['method']!r}, which mlship.json does not list"
                )
            source = item.get("source")
            if source is not None and not isinstance(source, str):
                raise BundleLoadError(f"{where}: case {item['id']!r}: 'source' must be a string, got {source!r}")
            cases.append(GoldenCase(str(item["id"]), str(item["method"]), item["instances"], item["expected"], source))
        raw_sources = obj.get("sources", [])
        if not isinstance(raw_sources, list):
            raise BundleLoadError(f"{where}: 'sources' must be a list, got {raw_sources!r}")
        sources = tuple(GoldenSource.from_json(s, f"{where}, sources[{i}]") for i, s in enumerate(raw_sources))
        return cls(tuple(cases), _float(obj, "rtol", where, DEFAULT_RTOL), _float(obj, "atol", where, DEFAULT_ATOL),
                   sources)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rtol": self.rtol, "atol": self.atol}
        if self.sources:
            out["sources"] = [source.to_json() for source in self.sources]
        out["cases"] = [case.to_json() for case in self.cases]
        return out


@dataclass(frozen=True)
class CaseResult:
    """One golden case replayed. `actual` is None when no output was produced (`detail` says why)."""

    id: str
    method: str
    ok: bool
    detail: str
    expected: Any
    actual: Any

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "method": self.method, "ok": self.ok, "detail": self.detail,
                "expected": self.expected, "actual": self.actual}

    # The name older callers used.
    to_dict = to_json

    @classmethod
    def from_json(cls, data: Any) -> CaseResult:
        obj = _object(data, "case result")
        return cls(str(obj["id"]), str(obj["method"]), bool(obj["ok"]), str(obj["detail"]),
                   obj.get("expected"), obj.get("actual"))


# -- a bundle directory -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bundle:
    """A bundle directory whose manifest, golden cases and digests have been checked (nothing imported or run)."""

    path: Path
    manifest: Manifest
    golden: Golden

    def file(self, name: str) -> Path:
        return bundle_file(self.path, name)


def read(bundle_dir: str | os.PathLike[str], *, check_digests: bool = True) -> Bundle:
    """Read and check the bundle at `bundle_dir`: format version, fields, required files, digests, golden cases.

    Raises BundleLoadError naming the file and the field. Nothing is unpickled or imported.
    """
    root = Path(bundle_dir).resolve()
    manifest = read_manifest(root)
    if check_digests:
        check_artifacts(root, manifest)
    golden_path = bundle_file(root, manifest.golden)
    golden = Golden.from_json(_read_json(golden_path), str(golden_path), manifest.method_names)
    return Bundle(root, manifest, golden)


def read_manifest(bundle_dir: str | os.PathLike[str]) -> Manifest:
    """mlship.json alone, validated (no digests checked)."""
    root = Path(bundle_dir)
    path = root / MANIFEST_NAME
    if not path.is_file():
        if not root.exists():
            raise BundleLoadError(f"{root} does not exist")
        raise BundleLoadError(f"{root} is not a bundle: it has no {MANIFEST_NAME}")
    return Manifest.from_json(_read_json(path), str(path))


def check_artifacts(root: str | os.PathLike[str], manifest: Manifest) -> None:
    """predictor.py and the golden file are listed, every file under `root` is listed (but mlship.json, mlship.sig
    and what `__pycache__` folders hold, which nothing loads), none is a symbolic link, and each has its recorded
    sha256 (_boot.check_tree)."""
    for required in (PREDICTOR_NAME, manifest.golden):
        if required not in manifest.artifacts:
            # An unlisted predictor.py could be changed without anyone noticing.
            raise BundleLoadError(f"{MANIFEST_NAME}: 'artifacts' does not list {required}")
    check_tree(Path(root), manifest.artifacts)


def write(bundle_dir: str | os.PathLike[str], manifest: Manifest, golden: Golden) -> Manifest:
    """Write golden.json, digest every file of the bundle, then write mlship.json; return the manifest as written.

    Call it last: every other file must already be in place, since the digests cover them all. Bytecode caches
    are removed (nothing loads them) and so is a signature, which no longer matches the new manifest.
    """
    root = Path(bundle_dir)
    for cache in sorted(root.rglob(IGNORED_DIRS[0]), reverse=True):
        if cache.is_dir() and not cache.is_symlink():
            shutil.rmtree(cache)
    (root / SIGNATURE_NAME).unlink(missing_ok=True)
    methods = set(manifest.method_names)
    unknown = sorted({case.method for case in golden.cases} - methods)
    if unknown:
        raise ValueError(f"golden cases use methods {unknown} that the manifest does not list")
    write_json(bundle_file(root, manifest.golden), golden.to_json())
    artifacts = {name: sha256_file(bundle_file(root, name)) for name in bundle_files(root)}
    final = replace(manifest, artifacts=artifacts, format=FORMAT)
    write_json(root / MANIFEST_NAME, final.to_json())
    return final


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def bundle_file(root: Path, name: str) -> Path:
    """`name` (a manifest path, forward slashes) inside `root`; refuses absolute paths and `..`."""
    relative = PurePosixPath(name)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise BundleLoadError(f"{MANIFEST_NAME} names {name!r}, which is not a path inside the bundle")
    return root.joinpath(*relative.parts)


# -- field readers: each names the file and the field in its error ----------------------------------------------


def _format_message(where: str, fmt: int, writer: Any) -> str:
    readable = " and ".join(str(n) for n in READABLE_FORMATS)
    if fmt > FORMAT:
        by = f"mlship {writer}" if isinstance(writer, str) and writer else "a newer mlship"
        return (
            f"{where} is in bundle format {fmt}, written by {by}; this mlship runtime reads formats {readable}: "
            f"use {by if by.startswith('mlship ') else 'that mlship'} or newer to serve, verify or build it"
        )
    return f"{where} is in bundle format {fmt}, which this mlship runtime does not read (it reads {readable})"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        raise BundleLoadError(f"{path} is missing") from None
    except (OSError, ValueError) as exc:
        raise BundleLoadError(f"{path} cannot be read as JSON: {exc}") from None


def _object(data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise BundleLoadError(f"{where} must be a JSON object, got {type(data).__name__}")
    return data


def _required(obj: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in obj:
        raise BundleLoadError(f"{where} lacks {key!r}")
    return obj[key]


def _str(obj: Mapping[str, Any], key: str, where: str, *, nonempty: bool = False,
         default: str | None = None) -> str:
    if key not in obj and default is not None:
        return default
    value = _required(obj, key, where)
    if not isinstance(value, str) or (nonempty and not value):
        raise BundleLoadError(f"{where}: {key!r} must be a{' non-empty' if nonempty else ''} string, got {value!r}")
    return value


def _bool(obj: Mapping[str, Any], key: str, where: str, default: bool | None) -> bool:
    if key not in obj and default is not None:
        return default
    value = _required(obj, key, where)
    if not isinstance(value, bool):
        raise BundleLoadError(f"{where}: {key!r} must be true or false, got {value!r}")
    return value


def _float(obj: Mapping[str, Any], key: str, where: str, default: float) -> float:
    value = obj.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise BundleLoadError(f"{where}: {key!r} must be a non-negative number, got {value!r}")
    return float(value)


def _list(obj: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = _required(obj, key, where)
    if not isinstance(value, list):
        raise BundleLoadError(f"{where}: {key!r} must be a list, got {value!r}")
    return value


def _strings(obj: Mapping[str, Any], key: str, where: str, *, required: bool) -> list[str]:
    if key not in obj and not required:
        return []
    value = _list(obj, key, where)
    if not all(isinstance(item, str) for item in value):
        raise BundleLoadError(f"{where}: {key!r} must be a list of strings")
    return value


def _path(name: str, where: str) -> str:
    relative = PurePosixPath(name)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise BundleLoadError(f"{where}: {name!r} is not a path inside the bundle")
    return name


def _method(data: Any, where: str) -> Method:
    obj = _object(data, where)
    name = obj.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise BundleLoadError(f"{where}: 'name' must be a Python identifier, got {name!r}")
    expression = obj.get("expression", "")
    if not isinstance(expression, str):
        raise BundleLoadError(f"{where}: 'expression' must be a string, got {expression!r}")
    return Method(name, expression)


def _python(data: Any, where: str) -> PythonInfo:
    obj = _object(data, where)
    version = obj.get("version")
    parts = version.split(".") if isinstance(version, str) else []
    if len(parts) < 2 or not all(part.isdigit() for part in parts[:2]):
        raise BundleLoadError(f"{where}: 'version' must look like '3.11.7', got {version!r}")
    return PythonInfo(str(version), _str(obj, "implementation", where, default="CPython"))


def _source(data: Any, where: str) -> Source:
    obj = _object(data, where)
    return Source(_str(obj, "notebook", where), _str(obj, "sha256", where))


def _selection(data: Any, where: str) -> Selection:
    obj = _object(data, where)
    cell, sample = obj.get("cell"), obj.get("sample")
    if cell is not None and type(cell) is not int:
        raise BundleLoadError(f"{where}: 'cell' must be a cell number or null, got {cell!r}")
    if sample is not None and not isinstance(sample, str):
        raise BundleLoadError(f"{where}: 'sample' must be an expression or null, got {sample!r}")
    return Selection(_str(obj, "source", where), _str(obj, "reason", where), cell, sample)


def _artifacts(data: Any, where: str) -> dict[str, str]:
    obj = _object(data, where)
    out = {}
    for name, digest in obj.items():
        _path(name, where)
        if not isinstance(digest, str) or not _SHA256.match(digest.lower()):
            raise BundleLoadError(f"{where}: {name!r} must map to a sha256 hex digest, got {digest!r}")
        out[name] = digest.lower()
    return out
