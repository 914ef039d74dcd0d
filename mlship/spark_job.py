"""`mlship predict BUNDLE --engine spark`: the environment (spark_env), the session, the job (runtime/spark.py).

The driver runs in mlship's own process, which needs pyspark (`pip install 'mlship[spark]'`); the executors run
the bundle's own runtime from the archive the driver ships, checked again on every executor.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .bundle.manifest import open_bundle
from .errors import MlshipError
from .spark_env import environment_archive, start_session

logger = logging.getLogger(__name__)

ENVS = ("shipped", "executor")


@dataclass(frozen=True)
class SparkJob:
    bundle: Path
    source: str  # a path, folder or glob of files, as Spark reads them (local, hdfs://, s3a://, ...)
    target: str
    master: str | None = None  # default: the session's own (spark-submit's --master, else local[*])
    conf: dict[str, str] = field(default_factory=dict)
    method: str | None = None
    id_columns: tuple[str, ...] = ()
    skip_invalid: bool = False
    env: str = "shipped"
    wheel_cache: Path | None = None
    input_format: str | None = None  # parquet, csv or jsonl; default: from the extension (none: parquet)
    output_format: str | None = None


def parse_conf(items: Sequence[str]) -> dict[str, str]:
    """`--conf KEY=VALUE` items, as spark-submit takes them."""
    conf = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise MlshipError(f"--conf takes KEY=VALUE, got {item!r}", exit_code=2,
                              hint="e.g. --conf spark.executor.memory=4g")
        conf[key.strip()] = value
    return conf


def run_spark_job(job: SparkJob, on_step: Callable[[str], None] | None = None) -> Any:
    """Run the job; its SparkResult. MlshipError for anything the user can fix (named, with a hint)."""
    from .runtime._batch_input import BatchError
    from .runtime._spark_files import file_format

    step = on_step or (lambda message: None)
    if job.env not in ENVS:
        raise MlshipError(f"--env must be shipped or executor, got {job.env!r}", exit_code=2,
                          hint="--env shipped (the default) ships the bundle's wheels; --env executor does not")
    open_bundle(job.bundle)
    try:  # before the environment and the session, which take a while
        for path, given, option in ((job.source, job.input_format, "--input-format"),
                                    (job.target, job.output_format, "--format")):
            file_format(path, given, option)
    except BatchError as exc:
        raise MlshipError(exc.message, hint=exc.hint, exit_code=2) from None
    environment = None
    if job.env == "shipped":
        environment = environment_archive(job.bundle, cache_dir=job.wheel_cache, on_step=step)
        step(f"shipping {environment.archive.name} ({environment.size / 2**20:,.0f} MiB) with spark.archives")
    spark = start_session(environment, master=job.master, conf=job.conf, name=f"mlship predict {job.bundle.name}")
    from .runtime.spark import predict_files

    try:
        step(f"scoring {job.source} on {spark.sparkContext.master}")
        return predict_files(spark, job.bundle, job.source, job.target, method=job.method,
                             id_columns=job.id_columns, skip_invalid=job.skip_invalid, env=job.env,
                             input_format=job.input_format, output_format=job.output_format)
    except BatchError as exc:
        raise MlshipError(exc.message, hint=exc.hint) from None
    finally:
        spark.stop()


