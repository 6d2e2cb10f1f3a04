"""Run a logged router model on Spark: ``mlflow.pyfunc.spark_udf`` over a table of queries.

The pyfunc model is the unit that is served online, so batch routing uses the very same model:
:func:`route_dataframe` wraps it in MLflow's Spark UDF (``env_manager="local"``: the executors'
Python is the driver's), whose ``SparkModelCache`` loads the model once per Python worker process
and reuses it for every batch that worker scores. On top of the model's own output (chosen model,
``within_budget``, per-model predicted performance and cost) each row gets its ``ranking`` (model
names, best first, under the same decision rule) and the chosen model's ``expected_perf`` and
``expected_cost``, computed by :func:`rank_models` in the executors; the in-process path applies
the same function to the in-process pyfunc output (:func:`decisions_frame`), so both agree row
for row.

PySpark is an optional dependency (``pip install 'mmroute[spark]'`` plus a Java runtime); it is
imported only when a function here runs.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Sequence

import numpy as np

__all__ = ["spark_session", "model_input_columns", "model_output_models", "rank_models",
           "decisions_frame", "route_dataframe", "DECISION_COLUMNS"]

log = logging.getLogger(__name__)

DECISION_COLUMNS = ("model", "model_index", "within_budget", "expected_perf", "expected_cost", "ranking")


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
    if info.signature is None or info.signature.inputs is None or info.signature.outputs is None:
        raise ValueError(f"{model_uri} has no input/output signature; batch routing needs a logged "
                         "mmroute router model")
    return info.signature


def model_input_columns(model_uri: str) -> tuple[list[str], list[str]]:
    """(required, optional) input column names of the model's signature."""
    inputs = _signature(model_uri).inputs
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


def rank_models(perf: np.ndarray, cost: np.ndarray, *, budget: float | None = None,
                tradeoff: float | None = None) -> np.ndarray:
    """Model indices per row, best first, shape (n, M), under the served model's decision rule.

    ``budget``: models whose predicted cost fits, by predicted performance, then the others from
    the cheapest; ``tradeoff`` (lambda): by ``perf - lambda * cost``; neither: by predicted
    performance. Ties go to the lower model index, so column 0 is the model the pyfunc picks.
    """
    perf = np.asarray(perf, dtype=np.float64)
    cost = np.asarray(cost, dtype=np.float64)
    if budget is not None and tradeoff is not None:
        raise ValueError("give either budget or tradeoff, not both")
    if budget is not None:
        fits = cost <= float(budget)
        # Primary key: fitting first; then -perf among fitting, cost among the others.
        secondary = np.where(fits, -perf, cost)
        return np.lexsort((secondary, ~fits), axis=-1)
    score = perf - float(tradeoff) * cost if tradeoff is not None else perf
    return np.argsort(-score, axis=1, kind="stable")


def decisions_frame(predictions, models: Sequence[str], params: dict[str, Any] | None = None,
                    *, keep_predictions: bool = False):
    """The pyfunc output frame -> decisions: ``model``, ``model_index``, ``within_budget``,
    ``expected_perf``, ``expected_cost``, ``ranking`` (list of names), plus ``perf_<m>``/``cost_<m>``
    when ``keep_predictions``."""
    import pandas as pd

    params = params or {}
    perf = predictions[[f"perf_{m}" for m in models]].to_numpy(dtype=np.float64)
    cost = predictions[[f"cost_{m}" for m in models]].to_numpy(dtype=np.float64)
    order = rank_models(perf, cost, budget=params.get("budget"), tradeoff=params.get("tradeoff"))
    choice = predictions["model_index"].to_numpy(dtype=np.int64)
    rows = np.arange(len(choice))
    names = np.asarray(list(models), dtype=object)
    out = pd.DataFrame({
        "model": predictions["model"].astype(str).to_numpy(),
        "model_index": choice,
        "within_budget": predictions["within_budget"].astype(bool).to_numpy(),
        "expected_perf": perf[rows, choice] if len(choice) else np.zeros(0),
        "expected_cost": cost[rows, choice] if len(choice) else np.zeros(0),
        "ranking": [list(names[o]) for o in order],
    })
    if keep_predictions:
        for j, m in enumerate(models):
            out[f"perf_{m}"] = perf[:, j]
        for j, m in enumerate(models):
            out[f"cost_{m}"] = cost[:, j]
    return out


def route_dataframe(spark, model_uri: str, frame, *, params: dict[str, Any] | None = None,
                    keep_columns: Sequence[str] = ("id",), keep_predictions: bool = False):
    """Decisions of ``model_uri`` for every row of the Spark DataFrame ``frame`` (lazy).

    ``frame`` holds the model's input columns (its signature: ``features`` for a feature-vector
    router; the raw query columns for a raw-query model). The result has ``keep_columns`` that are
    present (default the ``id``), then :data:`DECISION_COLUMNS` (and ``perf_<m>``, ``cost_<m>`` with
    ``keep_predictions``).
    """
    import mlflow
    import pandas as pd
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    params = {k: v for k, v in (params or {}).items() if v is not None}
    required, optional = model_input_columns(model_uri)
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"the query table has no column(s) {missing} that {model_uri} needs; "
                         f"it has {list(frame.columns)}")
    models = model_output_models(model_uri)
    inputs = required + [c for c in optional if c in frame.columns]
    udf = mlflow.pyfunc.spark_udf(spark, model_uri, env_manager="local", params=params or None)
    kept = [c for c in keep_columns if c in frame.columns]
    scored = frame.select(*kept, udf(F.struct(*inputs)).alias("_pred"))

    fields = ["model", "model_index", "within_budget"] + [f"perf_{m}" for m in models] + \
        [f"cost_{m}" for m in models]
    decision_type = T.StructType(
        [T.StructField("model", T.StringType()), T.StructField("model_index", T.LongType()),
         T.StructField("within_budget", T.BooleanType()), T.StructField("expected_perf", T.DoubleType()),
         T.StructField("expected_cost", T.DoubleType()),
         T.StructField("ranking", T.ArrayType(T.StringType()))]
        + ([T.StructField(f"{p}_{m}", T.DoubleType()) for p in ("perf", "cost") for m in models]
           if keep_predictions else []))
    model_names = list(models)

    def _decide(pred):
        return decisions_frame(pred, model_names, params, keep_predictions=keep_predictions)

    # Real types, not the strings `from __future__ import annotations` would leave for Spark to read.
    _decide.__annotations__ = {"pred": pd.DataFrame, "return": pd.DataFrame}
    _decide = F.pandas_udf(_decide, decision_type)

    decided = scored.select(*kept, _decide(F.struct(*[F.col(f"_pred.{f}") for f in fields])).alias("_d"))
    return decided.select(*kept, "_d.*")
