"""The runtime stays light (mlship/runtime/__init__.py): it is copied into every bundle and must import there."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlship.bundle.manifest import RUNTIME_REQUIREMENTS

RUNTIME_DIR = Path(__file__).resolve().parents[3] / "mlship" / "runtime"
SOURCES = sorted(RUNTIME_DIR.glob("*.py"))
# The runtime's own dependencies, pinned into every bundle's requirements.txt (import names of the distributions).
# httptools: uvicorn's parser, which the multi-model front's client to its backends uses too (_upstream).
TOP_LEVEL_ALLOWED = {"starlette", "uvicorn", "orjson", "prometheus_client", "httptools"}
# pyarrow only for batch jobs on parquet files, and optional: without it they say `pip install pyarrow`.
LAZY_ALLOWED = {"numpy", "pandas", "pyarrow"}
# pyspark only where Spark scoring runs (the driver's spark.py, the executors' bootstrap), inside functions: a
# bundle never needs it.
SPARK_SOURCES = {"spark.py", "_spark_boot.py", "_spark_files.py"}


def imports(tree: ast.AST, *, top_level: bool) -> Iterator[tuple[int, str]]:
    """(line, top-level package) of absolute imports: those outside functions and classes, or those inside."""

    def walk(node: ast.AST, nested: bool) -> Iterator[tuple[int, str]]:
        for child in ast.iter_child_nodes(node):
            inside = nested or isinstance(
                child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
            )
            if isinstance(child, ast.Import) and inside != top_level:
                yield from ((child.lineno, alias.name.split(".")[0]) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and inside != top_level:
                yield child.lineno, (child.module or "").split(".")[0]
            yield from walk(child, inside)

    return walk(tree, False)


def parse(path: Path) -> ast.AST:
    return ast.parse(path.read_text(), filename=str(path))


def test_what_the_runtime_imports_is_pinned_into_bundles() -> None:
    assert {name.replace("_", "-") for name in TOP_LEVEL_ALLOWED} <= set(RUNTIME_REQUIREMENTS)


def test_the_runtime_sources_are_found() -> None:
    assert {path.name for path in SOURCES} >= {
        "__init__.py",
        "__main__.py",
        "_app.py",
        "_bundle.py",
        "_codec.py",
        "_schema.py",
        "_verify.py",
    }


def imports_outside(path: Path, allowed: set[str], *, top_level: bool) -> list[tuple[int, str]]:
    """(line, module) of each import in `path` that is neither the standard library nor in `allowed`."""
    return [(line, name) for line, name in imports(parse(path), top_level=top_level)
            if name not in sys.stdlib_module_names and name not in allowed]


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: path.name)
def test_top_level_imports_are_stdlib_pinned_deps_or_relative(path: Path) -> None:
    bad = imports_outside(path, TOP_LEVEL_ALLOWED, top_level=True)
    assert bad == [], f"{path.name} imports at module level: {bad}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: path.name)
def test_lazy_imports_are_only_numpy_and_pandas(path: Path) -> None:
    bad = imports_outside(path, LAZY_ALLOWED | ({"pyspark"} if path.name in SPARK_SOURCES else set()),
                          top_level=False)
    assert bad == [], f"{path.name} imports inside functions: {bad}"


def test_codec_imports_only_the_standard_library() -> None:
    # mlship sends _codec's source into the notebook's kernel, which may have nothing else installed.
    tree = parse(RUNTIME_DIR / "_codec.py")
    names = [name for _, name in [*imports(tree, top_level=True), *imports(tree, top_level=False)]]
    relative = [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level > 0]
    assert all(name in sys.stdlib_module_names for name in names) and relative == []


def test_the_copied_runtime_imports_under_another_name_without_numpy_or_pandas(tmp_path: Path) -> None:
    shutil.copytree(RUNTIME_DIR, tmp_path / "mlship_runtime", ignore=shutil.ignore_patterns("__pycache__"))
    modules = ", ".join(f"mlship_runtime.{path.stem}" for path in SOURCES if path.stem != "__init__")
    script = (
        f"import sys, {modules}\n"
        "print(sorted(m for m in ('numpy', 'pandas', 'mlship', 'httpx') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-E", "-c", script], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[]\n"
