"""Run a logged router model on Spark: ``mlflow.pyfunc.spark_udf`` over a table of queries.

The pyfunc model is the unit that is served online, so batch routing uses the very same model:
:func:`route_dataframe` wraps it in MLflow's Spark UDF (``env_manager="local"``: the executors'
Python is the driver's). On a cluster MLflow ships the model and its ``SparkModelCache`` loads it
once per Python worker process; on a local master MLflow loads it from the driver's copy once per
task (partition). The decisions are the model's own output (chosen model, ``ranking`` best first,
``within_budget``, the operating point, the calibrated ``expected_cost`` / ``expected_accuracy``
when the model has them), plus the chosen model's predicted performance and cost per row, picked
in Spark from the model's ``perf_<m>`` / ``cost_<m>``; :func:`decisions_frame` does the same to the
in-process pyfunc output, so both agree row for row.

Throughput: one Python UDF per row batch and nothing else in Python. Row batches are 10,000 rows
on a local master (the model's ``max_rows`` is raised to the batch for the load; 1,024-row calls
cost twice as much per row) with one ONNX Runtime thread per task; on a cluster, where MLflow loads
the model without a ``model_config``, they are kept within the logged ``max_rows``
(``bench/spark_route.py`` measures it).

PySpark is an optional dependency (``pip install 'mmroute[spark]'`` plus a Java runtime); it is
imported only when a function here runs.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["spark_session", "model_input_columns", "model_output_models", "decisions_frame",
           "route_dataframe"]

log = logging.getLogger(__name__)

# Row batches handed to a Python UDF: Arrow batches, and (Spark 4's columnar path) Parquet reader batches.
BATCH_CONFS = (("spark.sql.execution.arrow.maxRecordsPerBatch", "10000"),
               ("spark.sql.parquet.columnarReaderBatchSize", "4096"))

def _require_pyspark():
    try:
        import pyspark  # noqa: F401
    except ImportError as exc:
        raise ImportError("Spark routing needs PySpark and a Java runtime: pip install 'mmroute[spark]' "
                          "(and e.g. Debian's default-jre-headless)") from exc


def spark_session(master: str | None = "local[2]", *, app_name: str = "mmroute",
                  conf: dict[str, str] | None = None):
    """A SparkSession for ``master`` (``local[N]``, ``spark://HOST:PORT``, ``yarn``...; None keeps
    whatever ``spark-submit`` configured).

    Local masters bind to the loopback interface (``SPARK_LOCAL_IP`` when set, else 127.0.0.1) and
    run the executors' Python with this interpreter, so the driver's environment (mmroute, mlflow,
    onnxruntime) is theirs too. ``conf`` entries are applied last.
    """
    _require_pyspark()
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    local = master is not None and master.startswith("local")
    if master is not None:
        builder = builder.master(master)
    if local:
        host = os.environ.get("SPARK_LOCAL_IP", "127.0.0.1")
        # The Python workers are launched from the environment as well as the conf; where neither
        # PYSPARK_PYTHON nor PATH points at this interpreter (make test calls .venv/bin/python
        # directly) they would start a bare python3 without pandas.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        builder = (builder.config("spark.driver.host", host).config("spark.driver.bindAddress", host)
                   .config("spark.pyspark.python", sys.executable)
                   .config("spark.pyspark.driver.python", sys.executable)
                   .config("spark.ui.enabled", "false")
                   .config("spark.sql.shuffle.partitions", "8"))
    builder = builder.config("spark.sql.execution.arrow.pyspark.enabled", "true")
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def _signature(model_uri: str):
    import mlflow

    info = mlflow.models.get_model_info(model_uri)
    if info.signature is None or info.signature.outputs is None:
        raise ValueError(f"{model_uri} has no output signature; batch routing needs a logged mmroute "
                         "router model")
    return info.signature


def model_input_columns(model_uri: str, columns: Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    """(required, optional) input columns: the signature's when it declares inputs; else (the
    mmroute served model, which validates its own requests) the query columns it reads, none
    required here (the model names what is missing), restricted to ``columns`` when given."""
    from mmroute.export.pyfunc import INPUT_COLUMNS

    inputs = _signature(model_uri).inputs
    if inputs is None:
        present = [c for c in INPUT_COLUMNS if columns is None or c in columns]
        return [], present
    required = [s.name for s in inputs.inputs if s.required]
    optional = [s.name for s in inputs.inputs if not s.required]
    return required, optional


def model_output_models(model_uri: str) -> list[str]:
    """The routed model names, in output order (from the ``perf_<name>`` output columns)."""
    names = [s.name[len("perf_"):] for s in _signature(model_uri).outputs.inputs
             if s.name.startswith("perf_")]
    if not names:
        raise ValueError(f"{model_uri} is not an mmroute router model: no perf_<model> outputs")
    return names


def _result_type(model_uri: str):
    """The Spark struct of the model's output columns; the optional calibrated columns only when the
    model carries a calibration (MLflow's UDF reads every field of the struct from the output)."""
    import mlflow
    from mlflow.pyfunc import _infer_spark_udf_return_type
    from pyspark.sql import types as T

    info = mlflow.models.get_model_info(model_uri)
    artifacts = (info.flavors.get("python_function", {}) or {}).get("artifacts", {}) or {}
    calibrated = "router_calibration" in artifacts
    full = _infer_spark_udf_return_type(info.signature.outputs)
    optional = {s.name for s in info.signature.outputs.inputs if not s.required}
    return T.StructType([f for f in full.fields if calibrated or f.name not in optional])


def _logged_config(model_uri: str) -> dict[str, Any]:
    """The model config logged with the model (MLflow keeps it under the flavor's ``config``)."""
    import mlflow

    conf = mlflow.models.get_model_info(model_uri).flavors.get("python_function", {}) or {}
    return dict(conf.get("config") or {})


def _max_rows(model_uri: str) -> int:
    """The model's per-request row limit: its logged ``max_rows``, else the served default."""
    from mmroute.export.mmroute_runtime.inputs import DEFAULT_MAX_ROWS

    return int(_logged_config(model_uri).get("max_rows", DEFAULT_MAX_ROWS))


def _loads_in_task(spark) -> bool:
    """Whether ``spark_udf`` loads the model inside each task with the ``model_config`` it is given.

    On a local master MLflow loads the model from the driver's download in the task (the executors
    share the driver's file system) and passes ``model_config``; on a cluster it ships the model as
    an archive and loads it in its ``SparkModelCache`` without one, so the logged config applies.
    """
    try:
        return str(spark.conf.get("spark.master", "")).startswith("local")
    except Exception:  # noqa: BLE001 - Spark Connect sessions may refuse to show the master
        return False


def _batch_config(spark, model_uri: str) -> dict[str, Any] | None:
    """Row batches within what the model accepts per call; the ``model_config`` for ``spark_udf``.

    Each row batch is one predict call and the model refuses calls above its ``max_rows``. Where
    the model is loaded in the task (local master) its ``max_rows`` is raised to the batch size
    (default 10,000 rows: 1,024-row calls double the cost per row) and its ONNX Runtime threads set
    to ``spark.task.cpus``, so ``local[N]``'s N tasks do not each start a pool of every core's
    threads. Elsewhere the batches are lowered to the logged ``max_rows``.
    """
    limit = _max_rows(model_uri)
    batches = {key: int(spark.conf.get(key, default)) for key, default in BATCH_CONFS}
    if _loads_in_task(spark):
        logged = _logged_config(model_uri)
        config: dict[str, Any] = {"max_rows": max(limit, *batches.values())}
        # MLflow overrides only keys logged with the model; models exported before intra_op_threads
        # was always logged keep onnxruntime's default.
        if "intra_op_threads" in logged:
            config["intra_op_threads"] = int(spark.conf.get("spark.task.cpus", "1"))
        return config
    for key, batch in batches.items():
        if batch > limit:
            log.info("Spark %s lowered from %d to the model's max_rows %d", key, batch, limit)
            spark.conf.set(key, str(limit))
    return None


def decisions_frame(predictions, models: Sequence[str], *, keep_predictions: bool = False):
    """The pyfunc output frame -> decisions: the model's own columns (``model``, ``model_index``,
    ``ranking``, ``within_budget``, ``rule``, ...), then ``predicted_perf`` and ``predicted_cost`` of
    the chosen model; ``perf_<m>``/``cost_<m>`` only with ``keep_predictions``."""
    perf = predictions[[f"perf_{m}" for m in models]].to_numpy(dtype=np.float64)
    cost = predictions[[f"cost_{m}" for m in models]].to_numpy(dtype=np.float64)
    choice = predictions["model_index"].to_numpy(dtype=np.int64)
    rows = np.arange(len(choice))
    per_model = {f"{p}_{m}" for p in ("perf", "cost") for m in models}
    out = predictions[[c for c in predictions.columns if c not in per_model and c != "id"]].copy()
    out["ranking"] = [list(r) for r in out["ranking"]]
    out["predicted_perf"] = perf[rows, choice]
    out["predicted_cost"] = cost[rows, choice]
    if keep_predictions:
        for c in [f"perf_{m}" for m in models] + [f"cost_{m}" for m in models]:
            out[c] = predictions[c].to_numpy(dtype=np.float64)
    return out.reset_index(drop=True)


def route_dataframe(spark, model_uri: str, frame, *, params: dict[str, Any] | None = None,
                    keep_columns: Sequence[str] = ("id",), keep_predictions: bool = False):
    """Decisions of ``model_uri`` for every row of the Spark DataFrame ``frame`` (lazy).

    ``frame`` holds the model's input columns (its signature: ``features`` for a feature-vector
    router; the raw query columns for a raw-query model). The result has ``keep_columns`` that are
    present (default the ``id``), then the columns of :func:`decisions_frame`.
    """
    import mlflow
    from pyspark.sql import functions as F

    params = {k: v for k, v in (params or {}).items() if v is not None}
    required, optional = model_input_columns(model_uri, frame.columns)
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"the query table has no column(s) {missing} that {model_uri} needs; "
                         f"it has {list(frame.columns)}")
    models = model_output_models(model_uri)
    inputs = required + [c for c in optional if c in frame.columns]
    if not [c for c in inputs if c != "id"]:
        raise ValueError(f"the query table has none of the columns {model_uri} reads; it has "
                         f"{list(frame.columns)}")
    result_type = _result_type(model_uri)
    udf = mlflow.pyfunc.spark_udf(spark, model_uri, result_type=result_type, env_manager="local",
                                  params=params or None, model_config=_batch_config(spark, model_uri))
    kept = [c for c in keep_columns if c in frame.columns]
    # The id stays on the Spark side: the model's output has no id, and rows keep their order.
    model_inputs = [c for c in inputs if c != "id"]
    pred = udf(F.struct(*model_inputs))
    scored = frame.select(*kept, pred.alias("_pred"))

    # The chosen model's predictions are picked in Spark (no second Python round trip): the same
    # doubles as decisions_frame's perf[row, model_index].
    field = F.col("_pred").getField
    choice = field("model_index").cast("int") + 1
    own = [f.name for f in result_type.fields if not f.name.startswith(("perf_", "cost_"))]
    columns = [field(name).alias(name) for name in own]
    for kind in ("perf", "cost"):
        columns.append(F.element_at(F.array(*[field(f"{kind}_{m}") for m in models]), choice)
                       .alias(f"predicted_{kind}"))
    if keep_predictions:
        columns += [field(f"{p}_{m}").alias(f"{p}_{m}") for p in ("perf", "cost") for m in models]
    return scored.select(*kept, *columns)
