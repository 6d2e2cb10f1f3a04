"""Pipeline step ``benchmark``: fit routers on one split and return their cost-accuracy metrics (untracked).

It shares the pipeline's configuration (:class:`~mmroute.pipeline.PipelineConfig`), router
expansion and option parsing (:func:`~mmroute.pipeline.config.expand_routers`,
:func:`~mmroute.pipeline.config.router_overrides`), split and modality mode
(:func:`~mmroute.pipeline.data.prepare`) and embedding (:func:`~mmroute.pipeline.data.embed`)
with ``train``/``sweep``/``run``; it records nothing in MLflow and returns one JSON-able dict.

As in the MMR-Bench reference: the split seed is also every router's seed (override with
``<router>.seed=N``), models are ordered by name (``model_order="table"`` keeps the file's order;
the budget rule breaks ties and falls back by model index), and missing actual outcomes are
filled with column means over the whole table before scoring (``fill="test"``: over the test
rows). Training always masks missing outcomes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from mmroute.constraints import Options, Validated
from mmroute.pipeline.config import PipelineConfig, expand_routers, parse_router_options, router_overrides
from mmroute.vocabulary import DEFAULT_FALLBACK, FALLBACKS

__all__ = ["BenchmarkOptions", "run_benchmark", "format_results", "METRIC_KEYS"]

log = logging.getLogger(__name__)

METRIC_KEYS = ("nAUC", "fixed_AUC", "Ps", "QNC", "n_pareto")


@dataclass
class BenchmarkOptions(Validated):
    """What a benchmark adds to a pipeline configuration.

    Attributes
    ----------
    fallback : {"first", "cheapest"}
        Budget rule: the pick of an instance with no model under the budget (reference: first).
    model_order : {"sorted", "table"}
        Models ordered by name (as the reference) or as in the table.
    fill : {"table", "test"}
        Fill missing actual outcomes with column means over the whole table or over the test rows.
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "fallback": [Options(FALLBACKS)], "model_order": [Options(("sorted", "table"))],
        "fill": [Options(("table", "test"))]}

    fallback: str = field(default=DEFAULT_FALLBACK, metadata={
        "group": "benchmark", "help": "budget rule: the pick of an instance with no model under the budget"})
    model_order: str = field(default="sorted", metadata={
        "group": "benchmark", "help": "models ordered by name (as the reference) or as in the table"})
    fill: str = field(default="table", metadata={
        "group": "benchmark", "help": "fill missing actual outcomes with column means over the whole table or "
                                      "the test rows"})


def _router_options(names: list[str], cfg: PipelineConfig) -> dict[str, dict[str, Any]]:
    """Per router: the split seed, then the pipeline's typed overrides (``*`` options, then its own)."""
    unknown = sorted(set(parse_router_options(cfg.router_options)) - set(names) - {"*"})
    if unknown:
        raise ValueError(f"--set names router(s) {unknown} that are not benchmarked; benchmarked: {names}")
    return {name: {"seed": cfg.split_seed, **router_overrides(name, cfg)} for name in names}


def run_benchmark(cfg: PipelineConfig, options: BenchmarkOptions | None = None) -> dict[str, Any]:
    """Load, split, embed, then fit and evaluate every router of ``cfg``; returns the JSON dict."""
    from mmroute.evaluation import json_safe
    from mmroute.pipeline.data import embed, load, prepare
    from mmroute.routers import create_router
    from mmroute.routers.experiment import fit_and_evaluate

    opts = options or BenchmarkOptions()
    names = expand_routers(cfg.routers)
    router_options = _router_options(names, cfg)
    table = load(cfg.data, images=cfg.images, dataset=cfg.dataset, image_root=cfg.image_root,
                 allow_outside_images=cfg.allow_outside_images)
    if opts.model_order == "sorted":
        table = table.select_models(sorted(table.models))
    prepared = prepare(cfg, table)
    split: dict[str, Any] = {"kind": cfg.split}
    if cfg.split == "in":
        split.update(train_frac=cfg.train_frac, seed=cfg.split_seed)
    elif cfg.split == "out":
        split.update(train_datasets="+".join(cfg.train_datasets),
                     test_datasets="+".join(cfg.test_datasets) or "all others")
    else:
        split.update(column=cfg.split_column)
    split.update(n_train=len(prepared.train_idx), n_test=len(prepared.test_idx), mode=cfg.mode)

    t0 = time.perf_counter()
    prepared = embed(cfg, prepared)
    log.info("features %s (%s fusion): %d dims in %.1fs", cfg.features, cfg.fusion,
             prepared.train_features.n_features, time.perf_counter() - t0)
    outcomes = None
    if opts.fill == "table":
        correct, cost = table.filled()
        outcomes = (correct[prepared.test_idx], cost[prepared.test_idx])

    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    reference: dict[str, Any] = {}
    for i, name in enumerate(names, 1):
        log.info("[%d/%d] %s %s", i, len(names), name, router_options[name])
        try:
            router = create_router(name, **router_options[name])
            res = fit_and_evaluate(router, prepared.train_features, prepared.train, prepared.test_features,
                                   prepared.test, rules=cfg.rules, fallback=opts.fallback, outcomes=outcomes,
                                   per_dataset=False)
        except (ValueError, RuntimeError, KeyError, TypeError, MemoryError) as err:
            # One failing router must not cost the others' results; the exit code reports it.
            log.error("%s failed: %s", name, err)
            errors[name] = f"{type(err).__name__}: {err}"
            continue
        results[name] = {"fit_seconds": res.fit_seconds, "predict_seconds": res.predict_seconds,
                         "params": res.params, **res.metrics(METRIC_KEYS),
                         # Out-of-fold scores on the training rows (what auto and sweeps choose by).
                         "validation": {rule: {k: v for k, v in m.items() if k in METRIC_KEYS + ("top_acc",)}
                                        for rule, m in (getattr(router, "validation_", None) or {}).items()}}
        if callable(getattr(router, "fit_report", None)):
            results[name]["fit_report"] = router.fit_report()
        for rule, ev in res.results.items():
            m = ev.metrics
            reference.setdefault(rule, {
                "best_single": {"model": ev.singles.name(ev.singles.best_index), "acc": m["best_single_acc"],
                                "cost": m["best_single_cost"]},
                "cost_range": [m["cost_range_lo"], m["cost_range_hi"]],
                "oracle": {"nAUC": m["oracle_nAUC"], "Ps": m["oracle_Ps"], "fixed_AUC": m["oracle_fixed_AUC"],
                           "acc": m["oracle_acc"], "cost": m["oracle_cost"]},
                "random": {"acc": m["random_acc"], "cost": m["random_cost"]},
            })
    return json_safe({
        "table": {"source": table.source, "n_instances": table.n_instances, "n_models": table.n_models,
                  "models": list(table.models)},
        "split": split,
        "features": {"spec": cfg.features, "fusion": cfg.fusion, "n_features": prepared.train_features.n_features},
        "rules": list(cfg.rules), "fallback": opts.fallback, "fill": opts.fill,
        "reference": reference, "routers": results, "errors": errors,
        "n_test_rows": int(np.asarray(prepared.test_idx).size),
    })


def format_results(out: dict[str, Any]) -> str:
    """A plain-text table: one line per router and rule."""
    lines = [f"{'router':<16} {'rule':<9} {'nAUC':>7} {'fixedAUC':>8} {'Ps':>7} {'QNC':>7} {'fit s':>7}"]

    def num(v: Any) -> str:
        return f"{v:7.4f}" if isinstance(v, (int, float)) else f"{str(v):>7}"

    for name, r in out["routers"].items():
        for rule in out["rules"]:
            m = r.get(rule, {})
            lines.append(f"{name:<16} {rule:<9} {num(m.get('nAUC'))} {num(m.get('fixed_AUC')):>8} "
                         f"{num(m.get('Ps'))} {num(m.get('QNC'))} {r['fit_seconds']:7.1f}")
    for rule, ref in out["reference"].items():
        lines.append(f"{rule}: best single {ref['best_single']['model']} acc {ref['best_single']['acc']:.4f}; "
                     f"oracle nAUC {ref['oracle']['nAUC']:.4f} Ps {ref['oracle']['Ps']:.4f}")
    return "\n".join(lines)
