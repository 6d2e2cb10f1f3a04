"""One router, trained and evaluated inside the active MLflow run, with everything it logs."""

from __future__ import annotations

import logging
import pickle
import time
from dataclasses import dataclass, field
from typing import Any

from mmroute.pipeline.config import PipelineConfig, router_overrides
from mmroute.pipeline.data import Prepared
from mmroute.tracking import record
from mmroute.vocabulary import VAL_PREFIX

__all__ = ["RouterRun", "train_in_active_run", "log_context", "log_feature_pipeline", "load_logged_router",
           "log_pareto_plots", "validation_metrics", "SUMMARY_METRICS", "VAL_PREFIX"]

log = logging.getLogger(__name__)

# Columns of a sweep's comparison table (when logged).
SUMMARY_METRICS = ("nAUC", "Ps", "QNC", "qnc_reached", "fixed_AUC", "acc_at_best_single_cost")


@dataclass
class RouterRun:
    """What one router's run produced (kept in memory for the sweep's comparison)."""

    router: str
    run_id: str
    results: dict[str, Any] = field(default_factory=dict)  # rule -> EvalResult
    metrics: dict[str, float] = field(default_factory=dict)  # everything logged as final metrics
    fit_seconds: float = float("nan")

    def row(self) -> dict[str, Any]:
        """One row of the comparison table."""
        out: dict[str, Any] = {"router": self.router, "run_id": self.run_id, "fit_seconds": self.fit_seconds}
        for rule in self.results:
            for name in SUMMARY_METRICS:
                for key in (f"{rule}/{name}", f"{VAL_PREFIX}/{rule}/{name}"):
                    out[key] = self.metrics.get(key, float("nan"))
        for key in ("deferral/auroc", "deferral/hybrid_area"):  # two-model pools ([small, large])
            if key in self.metrics:
                out[key] = self.metrics[key]
        return out


def log_context(cfg: PipelineConfig, prepared: Prepared, *, step: str, extra_params: dict | None = None,
                extra_tags: dict | None = None, config: dict | None = None) -> None:
    """Params, tags, resolved config, split ids and dataset inputs shared by every run of a pipeline."""
    import mlflow

    from mmroute.pipeline.data import data_params, dataset_tag, split_params
    from mmroute.tracking import log_params, log_split_ids, log_table_input, run_tags

    table = prepared.table
    mlflow.set_tags(run_tags(step=step, dataset=dataset_tag(table), mode=cfg.mode, extra=extra_tags))
    params = data_params(cfg.data, table, images=cfg.images, dataset=cfg.dataset)
    params.update(split_params(cfg, prepared))
    if prepared.pipeline is not None:
        params.update(prepared.pipeline.get_params())
    else:
        params.update({"features.spec": cfg.features, "features.fusion": cfg.fusion})
    if cfg.small is not None:
        params.update({"pool.small": cfg.small, "pool.large": cfg.large})
    if cfg.probes:
        params.update({"probe.backbone": cfg.probe_backbone, "probe.layer": cfg.probe_layer,
                       "probe.prefill": cfg.probe_prefill, "probe.token_cap": cfg.probe_token_cap or ""})
    params.update(extra_params or {})
    log_params(params)
    resolved = {"pipeline": cfg.to_dict(), "params": {k: _plain(v) for k, v in params.items()}}
    resolved.update(config or {})
    mlflow.log_dict(resolved, record.CONFIG)
    log_split_ids(prepared.train.ids, prepared.test.ids)
    name = dataset_tag(table) if len(dataset_tag(table)) <= 80 else f"{len(table.dataset_names)}-datasets"
    log_table_input(prepared.train, context="training", name=f"{name}-train", source=cfg.data)
    log_table_input(prepared.test, context="evaluation", name=f"{name}-test", source=cfg.data)


def _plain(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


def log_feature_pipeline(pipeline: Any) -> str | None:
    """Pickle the fitted feature pipeline into the active run; returns its ``runs:/`` URI (None if it
    cannot be pickled, e.g. an encoder holding an unpicklable handle: logged, not fatal)."""
    import mlflow

    try:
        blob = pickle.dumps(pipeline, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # pickling arbitrary encoders can fail in many ways
        log.warning("feature pipeline %r cannot be pickled (%s); evaluate will not be able to re-score "
                    "this run", pipeline, exc)
        return None
    _log_bytes(blob, record.FEATURES_PICKLE)
    return record.artifact_uri(mlflow.active_run().info.run_id, record.FEATURES_PICKLE)


def _log_bytes(blob: bytes, artifact_file: str) -> None:
    import os
    import tempfile

    import mlflow

    directory, _, name = artifact_file.rpartition("/")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, name)
        with open(path, "wb") as f:
            f.write(blob)
        mlflow.log_artifact(path, artifact_path=directory or None)


def train_in_active_run(name: str, cfg: PipelineConfig, prepared: Prepared, *, step: str,
                        features_uri: str | None, shared_context: bool = True) -> RouterRun:
    """Create, fit, evaluate and log router ``name`` into the active run.

    Logs the router's params (``router.name``, ``router.<field>``), per-epoch curves (Lightning
    routers), final metrics per rule, curve CSVs, one Pareto plot per rule and, when
    ``cfg.log_model``, the pickled router with ``model/meta.json`` pointing at the feature pipeline.
    """
    import mlflow

    from mmroute.routers import create_router, router_class
    from mmroute.routers.experiment import fit_and_evaluate
    from mmroute.tracking import bind_lightning_logger, eval_metrics, log_curves, log_metrics, unbind_lightning_logger

    run_id = mlflow.active_run().info.run_id
    overrides = router_overrides(name, cfg)
    hidden = router_class(name).reads == "hidden_states"
    if hidden:
        if prepared.probe_train_features is None:
            raise ValueError(f"router {name!r} reads hidden states, but none were extracted: give "
                             "--probe-backbone PATH --probe-layer L --small MODEL --large MODEL2")
        overrides.setdefault("backbone", cfg.probe_backbone)
    router = create_router(name, **overrides)
    router_params = {record.PARAM_ROUTER_NAME: name,
                     **{f"{record.PARAM_ROUTER_PREFIX}{k}": v for k, v in router.get_params().items()}}
    if shared_context:
        log_context(cfg, prepared, step=step, extra_params=router_params,
                    extra_tags={record.TAG_ROUTER: name},
                    config={"router": {"name": name, **{k: _plain(v) for k, v in router.get_params().items()}}})
    else:
        from mmroute.tracking import log_params

        log_params(router_params)
        mlflow.set_tag(record.TAG_ROUTER, name)
    train_f, train_t, test_f, test_t = prepared.train_features, prepared.train, prepared.test_features, prepared.test
    if hidden:
        from mmroute.pipeline.probe import billed_table

        # Probe routers run the small model on every query: a deferral also pays its prefill.
        train_f, test_f = prepared.probe_train_features, prepared.probe_test_features
        train_t, test_t = billed_table(train_t, cfg), billed_table(test_t, cfg)
    bind_lightning_logger(router)
    try:
        result = fit_and_evaluate(router, train_f, train_t, test_f, test_t, rules=tuple(cfg.rules))
    finally:
        unbind_lightning_logger(router)
    results = dict(result.results)
    fit_seconds = float(result.fit_seconds)
    metrics: dict[str, float] = {record.METRIC_FIT_SECONDS: fit_seconds,
                                 record.METRIC_PREDICT_SECONDS: float(result.predict_seconds)}
    for rule, res in results.items():
        metrics.update(eval_metrics(res, rule, best_single_cost=res.singles.best_cost))
    if cfg.small is not None:
        from mmroute.pipeline.probe import deferral_metrics

        metrics.update(deferral_metrics(result.perf_pred, test_t.correct))
    metrics.update(validation_metrics(router))
    log_metrics({k: v for k, v in metrics.items() if v == v})
    report = getattr(router, "fit_report", None)
    if callable(report):
        _log_fit_report(report())
    log_curves(results)
    log_pareto_plots({name: results}, title_prefix=name)
    if cfg.log_model:
        _log_router(router, name, cfg, prepared, features_uri)
        if hidden:
            from mmroute.pipeline.probe import log_probe_model

            log_probe_model(router, cfg, prepared, test_t)
    log.info("%s: %s", name, ", ".join(f"{k}={metrics[k]:.4f}" for k in
                                      (f"{r}/nAUC" for r in results) if k in metrics))
    return RouterRun(router=name, run_id=run_id, results=results, metrics=metrics, fit_seconds=fit_seconds)


def validation_metrics(router: Any) -> dict[str, float]:
    """``val/<rule>/<metric>``: the router's out-of-fold scores on its training rows (what a sweep
    chooses by; test metrics are reported, never used to choose)."""
    from mmroute.tracking import finite_metrics

    out: dict[str, float] = {}
    for rule, scores in (getattr(router, "validation_", None) or {}).items():
        out.update(finite_metrics(scores, f"{VAL_PREFIX}/{rule}"))
    return out


def _log_fit_report(report: dict[str, Any]) -> None:
    """A router's account of its own choices (``auto``): JSON artifact, headline params and metrics."""
    import mlflow

    from mmroute.tracking import log_metrics, log_params

    mlflow.log_dict(report, "router/fit_report.json")
    log_params({f"auto.{k}": report[k] for k in ("chosen", "rule", "members") if k in report})
    metrics = {f"auto/cv_seconds/{k}": float(v) for k, v in (report.get("cv_seconds") or {}).items()}
    for option, by_rule in (report.get("cv_nAUC") or {}).items():
        metrics.update({f"auto/cv/{option}/{rule}/nAUC": float(v) for rule, v in by_rule.items() if v is not None})
    log_metrics(metrics)


def log_pareto_plots(results_by_router: dict[str, dict[str, Any]], *, title_prefix: str,
                      artifact_dir: str = record.PLOTS_DIR) -> None:
    """One cost-accuracy plot per rule (frontiers, swept points, single models, the oracle point)."""
    import mlflow

    from mmroute.evaluation import plot_cost_accuracy

    rules = dict.fromkeys(r for by_rule in results_by_router.values() for r in by_rule)
    for rule in rules:
        shown = {name: by_rule[rule] for name, by_rule in results_by_router.items() if rule in by_rule}
        first = next(iter(shown.values()))
        oracle = (first.metrics.get("oracle_cost"), first.metrics.get("oracle_acc"))
        costs = [c for c in first.singles.cost if c > 0]
        # Model prices often span orders of magnitude; a linear axis would squash the cheap end.
        log_cost = bool(costs) and max(costs) / min(costs) > 30
        fig = plot_cost_accuracy(shown, oracle=oracle if None not in oracle else None, log_cost=log_cost,
                                 title=f"{title_prefix}: {rule} rule (test rows)")
        mlflow.log_figure(fig, f"{artifact_dir}/pareto_{rule}.png")


def _log_router(router: Any, name: str, cfg: PipelineConfig, prepared: Prepared, features_uri: str | None) -> None:
    import mlflow

    from mmroute import __version__

    try:
        blob = pickle.dumps(router, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        log.warning("router %s cannot be pickled (%s); evaluate will not be able to re-score it", name, exc)
        return
    _log_bytes(blob, record.ROUTER_PICKLE)
    meta = {"router": name, "models": list(prepared.train.models), "features_uri": features_uri,
            "features": cfg.features, "fusion": cfg.fusion, "mode": cfg.mode, "data": cfg.data,
            "images": cfg.images, "dataset": cfg.dataset, "rules": list(cfg.rules),
            "image_root": cfg.image_root, "allow_outside_images": cfg.allow_outside_images,
            "mmroute_version": __version__, "format": "pickle", "logged_at": time.time()}
    mlflow.log_dict(meta, record.ROUTER_META)


def load_logged_router(run_id: str) -> tuple[Any, Any, dict[str, Any]]:
    """(router, feature pipeline, meta) a run logged. Pickles: load only runs you trust."""
    meta = record.load_router_meta(run_id)
    router = pickle.loads(_download_bytes(record.artifact_uri(run_id, record.ROUTER_PICKLE)))
    if not meta.get("features_uri"):
        raise FileNotFoundError(f"run {run_id} logged no feature pipeline; it cannot be re-scored")
    pipeline = pickle.loads(_download_bytes(meta["features_uri"]))
    return router, pipeline, meta


def _download_bytes(uri: str) -> bytes:
    import tempfile
    from pathlib import Path

    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp)
        return Path(path).read_bytes()
