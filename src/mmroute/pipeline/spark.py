"""Spark recipes: batch routing of a query table, counterfactual replay of a version on logged
traffic (tracked like an evaluation), and embedding a table on Spark.

- :func:`route_spark`: a Parquet table of queries in, the decisions of a registered (or any
  logged) router model out, as Parquet partitioned by the chosen model. The model runs inside
  ``mlflow.pyfunc.spark_udf`` (loaded once per executor Python worker); decisions equal the
  in-process pyfunc's row for row (:func:`route_in_process` is that in-process reference).
- :func:`run_replay`: what a staged version would have done on a traffic log, against production
  (a second version, or the model the log says was served): one MLflow run with metrics, a plot,
  the summary JSON and the log as a dataset input.
- :func:`embed_spark`: :func:`mmroute.features.spark.embed_table` behind a session.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["route_spark", "route_in_process", "run_replay", "embed_spark", "ROUTE_PARTITION"]

log = logging.getLogger(__name__)

ROUTE_PARTITION = ("model",)


def _local_path(uri: str) -> Path | None:
    """A plain local path (no scheme), for the write-then-rename; None for hdfs://, s3a://..."""
    if "://" in uri and not uri.startswith("file://"):
        return None
    return Path(uri[len("file://"):] if uri.startswith("file://") else uri)


def route_spark(model_uri: str, source: str, out: str, *, master: str | None = "local[2]",
                params: dict[str, Any] | None = None, partition_by: Sequence[str] = ROUTE_PARTITION,
                keep_columns: Sequence[str] = ("id",), keep_predictions: bool = False,
                spark=None) -> dict[str, Any]:
    """Route every query of the Parquet table ``source`` with ``model_uri`` on Spark and write the
    decisions to ``out`` (Parquet, partitioned by ``partition_by``; existing ``out`` is an error).

    A local ``out`` is written to a sibling temporary folder and renamed into place, so a failed
    job leaves nothing at ``out``. Returns ``{"rows", "out", "seconds", "partitions"}``.
    """
    from mmroute.export.spark import route_dataframe, spark_session

    local = _local_path(out)
    if local is not None and local.exists():
        raise FileExistsError(f"{out} already exists; choose a new output folder for the decisions")
    spark = spark or spark_session(master)
    start = time.perf_counter()
    frame = spark.read.parquet(source)
    decisions = route_dataframe(spark, model_uri, frame, params=params, keep_columns=keep_columns,
                                keep_predictions=keep_predictions)
    bad = [c for c in partition_by if c not in decisions.columns]
    if bad:
        raise ValueError(f"partition_by={list(partition_by)}: {bad} are not decision columns "
                         f"({decisions.columns})")
    target = out if local is None else str(local.with_name(f".{local.name}.tmp-{uuid.uuid4().hex[:8]}"))
    try:
        writer = decisions.write.mode("errorifexists")
        if partition_by:
            writer = writer.partitionBy(*partition_by)
        writer.parquet(target)
        if local is not None:
            Path(target).rename(local)
    except BaseException:
        if local is not None:
            shutil.rmtree(target, ignore_errors=True)
        raise
    rows = spark.read.parquet(out).count()
    seconds = time.perf_counter() - start
    log.info("routed %d queries of %s with %s on Spark in %.1f s -> %s", rows, source, model_uri, seconds, out)
    return {"rows": int(rows), "out": out, "seconds": seconds, "partitions": list(partition_by)}


def route_in_process(model_uri: str, frame, *, params: dict[str, Any] | None = None,
                     keep_columns: Sequence[str] = ("id",), keep_predictions: bool = False,
                     chunk: int = 1024):
    """The in-process reference of :func:`route_spark`: :func:`mmroute.pipeline.route.route_frame`
    (the pyfunc on a pandas frame, ``chunk`` rows per call), shaped like the Spark decisions."""
    import mlflow
    import pandas as pd

    from mmroute.export.spark import decisions_frame, model_input_columns, model_output_models
    from mmroute.pipeline.route import route_frame

    params = {k: v for k, v in (params or {}).items() if v is not None}
    required, optional = model_input_columns(model_uri, frame.columns)
    inputs = required + [c for c in optional if c in frame.columns]
    models = model_output_models(model_uri)
    pred = route_frame(mlflow.pyfunc.load_model(model_uri), frame[inputs], params, chunk_size=chunk)
    kept = frame[[c for c in keep_columns if c in frame.columns]].reset_index(drop=True)
    return pd.concat([kept, decisions_frame(pred, models, keep_predictions=keep_predictions)], axis=1)


# ------------------------------------------------------------------------------------ replay
def _replay_plot(summary: dict[str, Any], candidate_label: str, baseline_label: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cand, base = summary["candidate"], summary["baseline"]
    models = sorted(set(cand["share"]) | set(base["share"]))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    pos = np.arange(len(models))
    ax1.bar(pos - 0.2, [base["share"].get(m, 0.0) for m in models], 0.4, label=baseline_label)
    ax1.bar(pos + 0.2, [cand["share"].get(m, 0.0) for m in models], 0.4, label=candidate_label)
    ax1.set_xticks(pos, models, rotation=45, ha="right", fontsize=8)
    ax1.set_ylabel("share of logged queries")
    ax1.legend()
    for side, label, marker in ((base, baseline_label, "o"), (cand, candidate_label, "s")):
        ax2.scatter([side["cost"]], [side["accuracy"]], marker=marker, s=80, label=label)
    ax2.set_xlabel("mean realised cost per query")
    ax2.set_ylabel("accuracy (rows with a logged outcome)")
    ax2.legend()
    fig.suptitle(f"replay on {summary['n_rows']} logged queries")
    fig.tight_layout()
    return fig


def run_replay(model_uri: str, log_path: str, *, baseline_uri: str | None = None,
               served_column: str | None = None, params: dict[str, Any] | None = None,
               baseline_params: dict[str, Any] | None = None, master: str | None = "local[2]",
               experiment: str | None = None, run_name: str = "replay", spark=None) -> dict[str, Any]:
    """Replay ``model_uri`` on the traffic log ``log_path`` (Parquet) against a baseline and record it.

    The MLflow run logs ``replay/<metric>`` and ``baseline/<metric>`` (accuracy, cost, coverage,
    total_cost), ``delta/<metric>``, ``replay/agreement``, ``replay/share/<model>`` and
    ``baseline/share/<model>``; the summary as ``replay/summary.json``; the plot
    ``replay/replay.png``; and the log as an ``evaluation`` dataset input. The run ends FAILED
    (and the error propagates) when anything fails midway.
    """
    import mlflow

    from mmroute.export.spark import spark_session
    from mmroute.registry.replay import replay_summary
    from mmroute.tracking import run_tags, setup_tracking, stop_aware

    setup_tracking(experiment)
    spark = spark or spark_session(master)
    frame = spark.read.parquet(log_path)   # an unreadable log fails before a run exists
    with stop_aware(mlflow.start_run(run_name=run_name)) as run:
        mlflow.set_tags(run_tags(step="replay"))
        mlflow.log_params({"replay.model_uri": model_uri, "replay.log": log_path,
                           "replay.baseline": baseline_uri or f"served column {served_column}",
                           **{f"replay.params.{k}": v for k, v in (params or {}).items()}})
        dataset = mlflow.data.from_spark(frame, path=str(log_path), name=Path(str(log_path)).name[:80])
        mlflow.log_input(dataset, context="evaluation")
        summary = replay_summary(spark, model_uri, frame, params=params, baseline_uri=baseline_uri,
                                 baseline_params=baseline_params, served_column=served_column)
        metrics = {"replay/agreement": summary["agreement"]}
        for key in ("accuracy", "cost", "coverage", "total_cost"):
            metrics[f"replay/{key}"] = summary["candidate"][key]
            metrics[f"baseline/{key}"] = summary["baseline"][key]
            metrics[f"delta/{key}"] = summary["delta"][key]
        for side, prefix in (("candidate", "replay"), ("baseline", "baseline")):
            for m, share in summary[side]["share"].items():
                metrics[f"{prefix}/share/{m}"] = share
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        mlflow.log_dict(json.loads(json.dumps(summary, default=float)), "replay/summary.json")
        fig = _replay_plot(summary, "candidate", "baseline")
        mlflow.log_figure(fig, "replay/replay.png")
        import matplotlib.pyplot as plt

        plt.close(fig)
    return {"step": "replay", "run_id": run.info.run_id, **summary}


# ------------------------------------------------------------------------------------ embedding
def embed_spark(spec: str, source: str, out: str, *, fit_table: str | None = None,
                master: str | None = "local[2]", cache_dir: str | None = None, device: str | None = None,
                spark=None, **encoder_options: Any) -> dict[str, Any]:
    """Embed the Parquet table ``source`` with encoder ``spec`` on Spark into ``out`` (.npy of the
    text embeddings, row-aligned with ``source``; images, when the encoder embeds them and the
    table has them, go to ``<out stem>.image.npy``), and store both in the embedding cache under
    the keys the in-process :class:`~mmroute.features.pipeline.FeaturePipeline` uses.

    Encoders fitted on data (``offline``) are fitted on ``fit_table`` (an outcome-table spec, the
    training rows) first; ``train`` then reads ``precomputed:<out>``.
    """
    from mmroute.export.spark import spark_session
    from mmroute.features.encoders import create_encoder
    from mmroute.features.spark import embed_table

    encoder = create_encoder(spec, device=device, **encoder_options)
    if encoder.requires_fit:
        if fit_table is None:
            raise ValueError(f"encoder {spec!r} is fitted on training texts: pass fit_table= (the training "
                             "table) so that every partition embeds with the same fitted encoder")
        from mmroute.data import load_table

        encoder.fit_text(load_table(fit_table, images="warn").texts())
    spark = spark or spark_session(master)
    return embed_table(spark, encoder, source, out, cache_dir=cache_dir)
