"""Counterfactual replay on Spark: what a router version would have done on logged traffic.

A traffic log is an outcome table (Parquet, any size): one row per past query with the model's
input columns (``features``, or the raw query columns of a raw-query model), an ``id``, and
``<M>_correct`` / ``<M>_cost`` where the outcome of model M on that query is known (NaN or null
where it is not: a live log knows only the model that answered, an evaluated log knows more).

:func:`replay_summary` routes the log with a version on Spark (the pyfunc model in
``mlflow.pyfunc.spark_udf``) and reports, for that version and for a baseline (another version,
usually production, or the model the log says production served), the realised cost, accuracy
where the chosen model's outcome is known, and the share of traffic per model. Everything is
aggregated in Spark: only a few numbers per model reach the driver, so the log can exceed one
process. :func:`replay_score` gives one figure of it to the promotion gate (metrics
``replay/accuracy``, higher is better, and ``replay/cost``, lower is better).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from typing import Any

__all__ = ["ReplayLog", "REPLAY_METRICS", "replay_summary", "replay_score", "realised_outcomes"]

log = logging.getLogger(__name__)

REPLAY_METRICS = ("accuracy", "cost", "coverage", "total_cost")
MASTER_ENV = "MMROUTE_SPARK_MASTER"


@dataclasses.dataclass(frozen=True)
class ReplayLog:
    """A traffic log for the promotion gate: ``path`` (Parquet file or folder), the inference
    ``params`` the version serves with (``budget`` / ``tradeoff``), and the Spark ``master``
    (default ``$MMROUTE_SPARK_MASTER`` or ``local[2]``)."""

    path: str
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    master: str | None = None


def _outcome_models(columns: Sequence[str]) -> list[str]:
    return [c[:-len("_correct")] for c in columns
            if c.endswith("_correct") and f"{c[:-len('_correct')]}_cost" in columns]


def realised_outcomes(frame, choice_column: str, models: Sequence[str]):
    """``frame`` with ``realised_correct`` and ``realised_cost``: the logged outcome and cost of
    the model named in ``choice_column`` (null where the log does not know it)."""
    from pyspark.sql import functions as F

    correct = cost = F.lit(None).cast("double")
    for m in models:
        hit = F.col(choice_column) == F.lit(m)
        correct = F.when(hit, F.col(f"`{m}_correct`").cast("double")).otherwise(correct)
        cost = F.when(hit, F.col(f"`{m}_cost`").cast("double")).otherwise(cost)
    # NaN and null both mean "unknown" in an outcome table.
    nan_to_null = lambda c: F.when(F.isnan(c), F.lit(None).cast("double")).otherwise(c)  # noqa: E731
    return frame.withColumn("realised_correct", nan_to_null(correct)) \
                .withColumn("realised_cost", nan_to_null(cost))


def _side(frame, choice_column: str) -> dict[str, Any]:
    """Aggregates of one routing (Spark-side): rows, outcome coverage, accuracy, costs, shares."""
    from pyspark.sql import functions as F

    known = F.col("realised_correct").isNotNull() & F.col("realised_cost").isNotNull()
    row = frame.agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum(F.when(known, 1).otherwise(0)).alias("known"),
        F.avg(F.when(known, F.col("realised_correct"))).alias("accuracy"),
        F.avg(F.when(known, F.col("realised_cost"))).alias("cost"),
        F.sum(F.when(known, F.col("realised_cost"))).alias("total_cost"),
    ).collect()[0]
    counts = {r[choice_column]: int(r["count"]) for r in frame.groupBy(choice_column).count().collect()}
    rows = int(row["rows"])
    nan = float("nan")
    return {"rows": rows, "known_rows": int(row["known"] or 0),
            "coverage": (int(row["known"] or 0) / rows) if rows else nan,
            "accuracy": nan if row["accuracy"] is None else float(row["accuracy"]),
            "cost": nan if row["cost"] is None else float(row["cost"]),
            "total_cost": 0.0 if row["total_cost"] is None else float(row["total_cost"]),
            "share": {str(k): v / rows for k, v in sorted(counts.items(), key=lambda kv: str(kv[0]))}}


def replay_summary(spark, model_uri: str, log_frame, *, params: dict[str, Any] | None = None,
                   baseline_uri: str | None = None, baseline_params: dict[str, Any] | None = None,
                   served_column: str | None = None, id_column: str = "id") -> dict[str, Any]:
    """Replay ``model_uri`` (the candidate) on ``log_frame`` (a Spark DataFrame of logged traffic)
    against a baseline: ``baseline_uri`` routed the same way (with ``baseline_params``, default
    ``params``), or ``served_column`` naming the model production actually served per row.

    Returns ``{"n_rows", "models", "candidate": {...}, "baseline": {...}, "delta": {...},
    "agreement"}``; each side has ``rows``, ``known_rows``, ``coverage`` (share of rows whose chosen
    model's outcome is logged), ``accuracy`` and ``cost`` (means over those rows), ``total_cost``
    and ``share`` (model -> share of rows routed to it). ``delta`` is candidate minus baseline.
    """
    from pyspark.sql import functions as F

    from mmroute.export.spark import route_dataframe

    if (baseline_uri is None) == (served_column is None):
        raise ValueError("give exactly one baseline: baseline_uri= (a model version routed the same way) "
                         "or served_column= (the log's column naming the model that was served)")
    columns = list(log_frame.columns)
    models = _outcome_models(columns)
    if not models:
        raise ValueError("the traffic log has no <model>_correct / <model>_cost column pairs; columns: "
                         f"{columns[:20]}")
    if id_column not in columns:
        raise ValueError(f"the traffic log has no id column {id_column!r} (needed to compare routings "
                         f"row by row); columns: {columns[:20]}")
    if served_column is not None and served_column not in columns:
        raise ValueError(f"served_column={served_column!r} is not a column of the traffic log; "
                         f"columns: {columns[:20]}")
    keep = [id_column] + [f"{m}_{k}" for m in models for k in ("correct", "cost")]
    if served_column is not None:
        keep.append(served_column)

    cand = route_dataframe(spark, model_uri, log_frame, params=params, keep_columns=keep)
    cand = realised_outcomes(cand, "model", models).cache()
    try:
        if served_column is not None:
            base = realised_outcomes(log_frame.select(*keep).withColumn("model", F.col(served_column)),
                                     "model", models)
        else:
            base = route_dataframe(spark, baseline_uri, log_frame,
                                   params=params if baseline_params is None else baseline_params,
                                   keep_columns=keep)
            base = realised_outcomes(base, "model", models)
        base = base.cache()
        candidate, baseline = _side(cand, "model"), _side(base, "model")
        agree = (cand.select(id_column, F.col("model").alias("_a"))
                 .join(base.select(id_column, F.col("model").alias("_b")), on=id_column)
                 .agg(F.avg((F.col("_a") == F.col("_b")).cast("double"))).collect()[0][0])
        base.unpersist()
    finally:
        cand.unpersist()
    delta = {k: candidate[k] - baseline[k] for k in ("accuracy", "cost", "coverage", "total_cost")}
    summary = {"n_rows": candidate["rows"], "models": models, "candidate": candidate,
               "baseline": baseline, "delta": delta,
               "agreement": float("nan") if agree is None else float(agree),
               "baseline_kind": "served_column" if served_column is not None else "model"}
    log.info("replay of %s on %d logged rows: accuracy %.4f (baseline %.4f), mean cost %.6g (baseline %.6g)",
             model_uri, summary["n_rows"], candidate["accuracy"], baseline["accuracy"], candidate["cost"],
             baseline["cost"])
    return summary


def _session(master: str | None):
    from pyspark.sql import SparkSession

    from mmroute.export.spark import spark_session

    active = SparkSession.getActiveSession()
    if active is not None and master is None:
        return active
    return spark_session(master or os.environ.get(MASTER_ENV, "local[2]"))


def replay_score(model_uri: str, traffic: ReplayLog | str, metric: str, *, spark=None) -> float:
    """One figure of ``model_uri`` replayed alone on a traffic log, for the promotion gate.

    ``metric`` is ``replay/<name>`` with ``name`` in :data:`REPLAY_METRICS`: ``accuracy`` (where
    the chosen model's outcome is logged), ``cost`` (mean realised cost per such row; lower is
    better), ``coverage``, ``total_cost``.
    """
    from mmroute.export.spark import route_dataframe

    prefix, _, name = metric.partition("/")
    if prefix != "replay" or name not in REPLAY_METRICS:
        raise ValueError(f"metric {metric!r} is not a replay metric; expected one of "
                         f"{['replay/' + m for m in REPLAY_METRICS]}")
    log_spec = traffic if isinstance(traffic, ReplayLog) else ReplayLog(str(traffic))
    spark = spark or _session(log_spec.master)
    frame = spark.read.parquet(log_spec.path)
    models = _outcome_models(frame.columns)
    if not models:
        raise ValueError(f"traffic log {log_spec.path} has no <model>_correct / <model>_cost column pairs")
    keep = [f"{m}_{k}" for m in models for k in ("correct", "cost")]
    routed = route_dataframe(spark, model_uri, frame, params=log_spec.params, keep_columns=keep)
    value = float(_side(realised_outcomes(routed, "model", models), "model")[name])
    log.info("%s replayed on %s: %s = %.6g", model_uri, log_spec.path, metric, value)
    return value
