"""MLflow's side of benchmarks/spark_batch.py; runs in MLflow's own venv (never mlship's), one JVM of its own.

    python _mlflow_spark.py '{"pickle": ..., "model_dir": ..., "source": ..., "target": ..., "columns": [...],
                             "master": "local[2]"}'

Saves the fitted estimator (the same pickle the mlship bundle loads) as an MLflow model (mlflow.sklearn.save_model,
cloudpickle format, signature from the first rows of the input), then scores the parquet input with
`mlflow.pyfunc.spark_udf(env_manager="local")` into a parquet folder: the id column and `prediction`. Prints one
JSON line: rows and the job's seconds (read, score, write), timed as mlship's SparkResult times its own job.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import time


def main() -> int:
    plan = json.loads(sys.argv[1])
    # The executors' Python workers: this venv, which has MLflow and scikit-learn (env_manager="local").
    os.environ["PYSPARK_PYTHON"] = sys.executable
    import mlflow.pyfunc
    import mlflow.sklearn
    import pandas
    from mlflow.models import infer_signature
    from pyspark.sql import SparkSession
    from pyspark.sql.functions import struct

    with open(plan["pickle"], "rb") as stream:
        estimator = pickle.load(stream)
    sample = pandas.read_parquet(plan["source"], columns=plan["columns"]).head(150)
    signature = infer_signature(sample, estimator.predict(sample))
    mlflow.sklearn.save_model(estimator, plan["model_dir"], signature=signature, serialization_format="cloudpickle")

    spark = (SparkSession.builder.master(plan["master"]).appName("mlflow spark_udf")
             .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false").getOrCreate())
    try:
        udf = mlflow.pyfunc.spark_udf(spark, plan["model_dir"], result_type="long", env_manager="local")
        started = time.perf_counter()
        frame = spark.read.parquet(plan["source"])
        scored = frame.select("id", udf(struct(*[frame[name] for name in plan["columns"]])).alias("prediction"))
        scored.write.mode("overwrite").parquet(plan["target"])
        seconds = time.perf_counter() - started
        rows = spark.read.parquet(plan["target"]).count()
    finally:
        spark.stop()
    print(json.dumps({"rows": rows, "seconds": seconds, "mlflow": mlflow.__version__}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
