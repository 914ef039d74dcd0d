"""The one function of Spark scoring that travels by value: it starts the bundle's runtime inside an executor.

Spark pickles a UDF's function with cloudpickle and unpickles it in each Python worker of the executors, where
neither mlship nor this runtime is installed. So spark.py registers this module to be pickled by value: the code
below must use the standard library only, and import nothing of the runtime. It checks the bundle (shipped to
every executor as an archive) with the driver's own copy of _boot.py, sent as text, before anything of the
bundle runs, then imports the bundle's digest-checked `mlship_runtime._spark_worker` and hands it the batches.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

_WORKER = "mlship_runtime._spark_worker"


def make_body(
    boot_source: bytes, archive: str, spec: dict[str, Any], column: str | None
) -> Callable[[Iterator[Any]], Iterator[Any]]:
    """The pandas UDF's function: `archive` is the bundle's archive name (SparkFiles.get finds it unpacked);
    it yields the worker's frames, or their `column` alone."""

    def score(batches: Iterator[Any]) -> Iterator[Any]:
        from pyspark import SparkFiles

        root = Path(SparkFiles.get(archive)).resolve()
        worker = sys.modules.get(_WORKER)
        if worker is None:
            boot = types.ModuleType("mlship_spark_driver_boot")
            exec(compile(boot_source, "_boot.py (the driver's)", "exec", dont_inherit=True), boot.__dict__)
            try:
                boot.prepare(root)
            except boot.BundleLoadError as exc:
                raise RuntimeError(f"mlship-spark-error: the bundle shipped to this executor is refused: "
                                   f"{exc.message}") from None
            worker = importlib.import_module(_WORKER)
        loaded = Path(str(sys.modules["mlship_runtime"].__file__)).resolve().parent.parent
        if loaded != root:
            raise RuntimeError(f"mlship-spark-error: this Python worker already runs the bundle {loaded}; "
                               "score one bundle per Spark application")
        try:
            asked = worker.Spec(**spec)
        except TypeError:  # a bundle packaged by an older mlship, asked for what its runtime cannot do
            raise RuntimeError(f"mlship-spark-error: the bundle's runtime ({loaded / 'mlship_runtime'}) is older "
                               f"than this job needs ({', '.join(sorted(spec))}) | hint: package the notebook "
                               "again with this mlship") from None
        for frame in worker.score_batches(batches, root, asked):
            yield frame if column is None else frame[column]

    return score
