"""The tracked pipeline steps behind ``mmroute prepare | train | sweep | run | evaluate``.

Each step resolves and checks the tracking location first (an unreachable server fails before any
data is loaded), then records into one MLflow run (reusing ``MLFLOW_RUN_ID`` under ``mlflow run``).
Each returns a JSON-friendly summary dict with the run id(s) and headline metrics.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from mmroute.pipeline.config import PipelineConfig, check_router_options, expand_routers
from mmroute.pipeline.data import Prepared, data_params, dataset_tag, embed, load, prepare, rows_by_id, write_table
from mmroute.pipeline.routers import (
    RouterRun,
    load_logged_router,
    log_context,
    log_feature_pipeline,
    log_pareto_plots,
    train_in_active_run,
)
from mmroute.tracking import record
from mmroute.vocabulary import selection_metric

__all__ = ["run_prepare", "run_train", "run_sweep", "run_main", "run_evaluate"]

log = logging.getLogger(__name__)


def _start(run_name: str, *, nested: bool = False, system_metrics: bool = False):
    from mmroute.tracking import start_run  # tagged with host and pid, closed KILLED on a stop

    return start_run(run_name, nested=nested, log_system_metrics=system_metrics or None)


def _headline(metrics: dict[str, float], rules) -> dict[str, float]:
    keys = [f"{r}/{m}" for r in rules for m in ("nAUC", "Ps", "QNC")]
    return {k: round(metrics[k], 6) for k in keys if k in metrics}


# ---------------------------------------------------------------- prepare
def run_prepare(data: str, *, images: str = "warn", dataset: str | None = None, out: str | None = None,
                experiment: str | None = None, image_root: str | None = None,
                allow_outside_images: bool = False) -> dict[str, Any]:
    """Load and validate a table; log its params, summary (``data/summary.json``), the dataset input
    (context ``"prepare"``) and, with ``out``, the written table (``data/<file>``)."""
    import mlflow

    from mmroute.tracking import log_metrics, log_params, log_table_input, run_tags, setup_tracking

    setup_tracking(experiment)
    # A broken table fails before any run exists.
    table = load(data, images=images, dataset=dataset, image_root=image_root, allow_outside_images=allow_outside_images)
    with _start("prepare") as run:
        mlflow.set_tags(run_tags(step="prepare", dataset=dataset_tag(table)))
        log_params(data_params(data, table, images=images, dataset=dataset))
        summary = table.summary()
        mlflow.log_dict(summary, record.DATA_SUMMARY)
        log_metrics({"data/n_instances": table.n_instances, "data/n_models": table.n_models,
                     "data/n_with_image": int(table.has_images.sum()),
                     "data/missing_outcomes": int(table.missing.sum())})
        log_table_input(table, context="prepare", name=dataset_tag(table)[:80] or "table", source=data)
        written = None
        if out:
            written = write_table(table, out)
            mlflow.log_artifact(str(written), artifact_path="data")
    return {"step": "prepare", "run_id": run.info.run_id, "n_instances": table.n_instances,
            "n_models": table.n_models, "hash": table.content_hash(), "out": None if written is None else str(written)}


# ---------------------------------------------------------------- train
def run_train(cfg: PipelineConfig) -> dict[str, Any]:
    """Train and evaluate exactly one router in one run."""
    from mmroute.tracking import setup_tracking

    names = expand_routers(cfg.routers, hidden_states=cfg.probes)
    if len(names) != 1:
        raise ValueError(f"train takes exactly one router, got {names}; use sweep for several")
    check_router_options(cfg, names)
    setup_tracking(cfg.experiment)
    prepared = prepare(cfg)  # load, validate and split before a run exists
    with _start(names[0], system_metrics=cfg.system_metrics) as run:
        prepared = embed(cfg, prepared)
        prepared = _hidden_states(cfg, prepared, names)
        features_uri = log_feature_pipeline(prepared.pipeline) if cfg.log_model else None
        done = train_in_active_run(names[0], cfg, prepared, step="train", features_uri=features_uri)
        _log_embed_metrics(prepared)
    return {"step": "train", "run_id": run.info.run_id, "router": names[0], **_headline(done.metrics, cfg.rules)}


def _log_embed_metrics(prepared: Prepared) -> None:
    from mmroute.tracking import log_metrics

    log_metrics({"embed_seconds": prepared.embed_seconds,
                 "features/n_features": prepared.train_features.n_features})
    if prepared.probe_train_features is not None:
        log_metrics({"probe_extract_seconds": prepared.probe_seconds,
                     "probe/hidden_size": prepared.probe_train_features.n_features})


def _hidden_states(cfg: PipelineConfig, prepared: Prepared, names: list[str]) -> Prepared:
    """The small model's hidden states, when a probe router is among ``names``."""
    from mmroute.routers import router_class

    if not any(router_class(n).reads == "hidden_states" for n in names):
        return prepared
    from mmroute.pipeline.probe import hidden_state_features

    return hidden_state_features(cfg, prepared)


# ---------------------------------------------------------------- sweep / main
def run_sweep(cfg: PipelineConfig, *, step: str = "sweep") -> dict[str, Any]:
    """One parent run (data, split, features, comparison) with a nested child run per router.

    A router that fails is recorded as a FAILED child (its error in the tag ``mmroute.error``) and
    the sweep goes on; the summary lists it under ``failed``.
    """
    import mlflow

    from mmroute.tracking import comparison_frame, log_comparison, setup_tracking

    names = expand_routers(cfg.routers, hidden_states=cfg.probes)
    check_router_options(cfg, names)
    setup_tracking(cfg.experiment)
    started = time.perf_counter()
    prepared = prepare(cfg)  # load, validate and split before a run exists
    with _start(step, system_metrics=cfg.system_metrics) as parent:
        prepared = embed(cfg, prepared)
        prepared = _hidden_states(cfg, prepared, names)
        log_context(cfg, prepared, step=step, extra_params={"sweep.routers": names,
                                                             "sweep.select_metric": cfg.select_metric})
        mlflow.log_dict(prepared.table.summary(), record.DATA_SUMMARY)
        _log_embed_metrics(prepared)
        features_uri = log_feature_pipeline(prepared.pipeline) if cfg.log_model else None
        done: list[RouterRun] = []
        failed: dict[str, str] = {}
        for name in names:
            _start(name, nested=True, system_metrics=cfg.system_metrics)
            mlflow.set_tag(record.TAG_ROUTER, name)  # first, so even a router that fails to build is findable
            try:
                done.append(train_in_active_run(name, cfg, prepared, step=f"{step}-child",
                                                features_uri=features_uri))
            except Exception as exc:  # one broken router must not cost the whole sweep
                log.exception("router %s failed", name)
                failed[name] = f"{type(exc).__name__}: {exc}"
                mlflow.set_tag(record.TAG_ERROR, failed[name][:5000])
                mlflow.end_run(status="FAILED")
            else:
                mlflow.end_run()
        if not done:
            raise RuntimeError(f"every router failed: {failed}")
        frame = comparison_frame([r.row() for r in done])
        # Evaluation baselines (the oracle reads the true outcomes, random is noise) are reference
        # lines, never the router to pick: the best child is the best deployable one, the one
        # `register` would take.
        from mmroute.routers import router_class

        references = [r.router for r in done if not router_class(r.router).deployable]
        if len(references) == len(done):
            references = []
        # The best child is chosen on its validation score (out-of-fold on training rows); its test
        # metrics are reported alongside, never used to choose.
        select = selection_metric(cfg.select_metric)
        best = log_comparison(frame, metric=select, exclude=references)
        log_pareto_plots({r.router: r.results for r in done}, title_prefix="all routers",
                         artifact_dir=record.COMPARISON_DIR)
        mlflow.log_metric("sweep_seconds", time.perf_counter() - started)
        if failed:
            mlflow.set_tag(record.TAG_FAILED_ROUTERS, ",".join(sorted(failed)))
    summary = {"step": step, "run_id": parent.info.run_id, "best_router": str(best["router"]),
               "best_child_run_id": str(best["run_id"]), "selected_by": select,
               select: _finite(best[select]), cfg.select_metric: _finite(best[cfg.select_metric]),
               "children": {r.router: r.run_id for r in done}, "failed": failed,
               "seconds": round(time.perf_counter() - started, 1)}
    return summary


def _finite(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def run_main(cfg: PipelineConfig, *, register_model: str | None = "mmroute-router") -> dict[str, Any]:
    """The default pipeline (``mlflow run .``): data -> embed -> every router -> evaluate -> compare,
    then register the best deployable router as a new version of ``register_model`` and point its
    ``staging`` alias at it (``register_model=None`` stops after the comparison).
    """
    import mlflow

    from mmroute.pipeline.register import register_run

    summary = run_sweep(cfg, step="main")
    if register_model:
        registered = register_run(summary["run_id"], register_model, metric=summary["selected_by"], stage="staging")
        summary["registered"] = registered
        mlflow.MlflowClient().set_tag(summary["run_id"], record.TAG_REGISTERED_MODEL,
                                      f"{register_model}/{registered['version']}")
    return summary


# ---------------------------------------------------------------- evaluate
def run_evaluate(run_id: str, *, data: str | None = None, rows: str = "test", images: str = "warn",
                 mode: int | None = None, cache_dir: str | None = None,
                 experiment: str | None = None, image_root: str | None = None,
                 allow_outside_images: bool = False) -> dict[str, Any]:
    """Re-score the router run ``run_id`` logged (pickled feature pipeline + router) on a table.

    ``data`` defaults to the run's own table; ``rows="test"`` scores the run's test rows (matched
    by instance id, so re-evaluating the same table reproduces the run's metrics), ``"all"`` every
    row. Logged into a new run tagged ``mmroute.source_run_id``.
    """
    import mlflow

    from mmroute.data import apply_mode
    from mmroute.evaluation import evaluate_predictions
    from mmroute.tracking import (
        eval_metrics,
        log_curves,
        log_metrics,
        log_params,
        log_table_input,
        run_tags,
        setup_tracking,
    )

    if rows not in ("test", "all"):
        raise ValueError(f"rows={rows!r} (expected 'test' or 'all')")
    setup_tracking(experiment)
    source = mlflow.MlflowClient().get_run(run_id)
    router, pipeline, meta = load_logged_router(run_id)
    if cache_dir is not None:
        pipeline.cache_dir = cache_dir
    spec = data or meta["data"]
    if data is None:  # the run's own table, read with the run's own image access unless overridden
        image_root = image_root or meta.get("image_root")
        allow_outside_images = allow_outside_images or bool(meta.get("allow_outside_images"))
    table = load(spec, images=images, dataset=meta.get("dataset") if data is None else None,
                 image_root=image_root, allow_outside_images=allow_outside_images)
    table = table.select_models(meta["models"])
    if rows == "test":
        ids = record.load_test_ids(source)
        if ids is None:
            raise FileNotFoundError(f"run {run_id} logged no {record.TEST_IDS}; pass rows='all'")
        table = table.subset(rows_by_id(table, ids))
    mode = mode if mode is not None else meta.get("mode")
    if mode is not None:
        table = apply_mode(table, "test", mode)
    name = meta["router"]
    with _start(f"evaluate-{name}") as run:
        mlflow.set_tags(run_tags(step="evaluate", dataset=dataset_tag(table), mode=mode,
                                 extra={record.TAG_ROUTER: name, record.TAG_SOURCE_RUN: run_id}))
        params = data_params(spec, table, images=images, dataset=meta.get("dataset") if data is None else None)
        params.update({"evaluate.source_run_id": run_id, "evaluate.rows": rows, "data.mode": mode or ""})
        params.update({k: v for k, v in source.data.params.items() if k.startswith(("router.", "features."))})
        log_params(params)
        log_table_input(table, context="evaluation", name=f"{dataset_tag(table)[:80]}-{rows}", source=spec)
        features = pipeline.transform(table)
        kwargs = {"correct": table.correct, "cost": table.cost} if router.needs_outcomes else {}
        perf, cost = router.predict(features, **kwargs)
        # Same call as fit_and_evaluate, so re-scoring the run's own test rows reproduces its metrics.
        datasets = table.datasets if len(table.dataset_names) > 1 else None
        results = {rule: evaluate_predictions(perf, cost, table.correct, table.cost, rule=rule,
                                              datasets=datasets, models=table.models)
                   for rule in meta.get("rules", ["budget", "tradeoff"])}
        metrics: dict[str, float] = {}
        for rule, res in results.items():
            metrics.update(eval_metrics(res, rule, best_single_cost=res.singles.best_cost))
        log_metrics(metrics)
        log_curves(results)
        log_pareto_plots({name: results}, title_prefix=f"{name} re-evaluated")
    return {"step": "evaluate", "run_id": run.info.run_id, "source_run_id": run_id, "router": name,
            "rows": rows, "n_instances": table.n_instances, **_headline(metrics, results)}
