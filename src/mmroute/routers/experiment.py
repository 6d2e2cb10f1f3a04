"""Fit one router on a split and evaluate it under the shared decision rules (no tracking here).

The tracking layer wraps :func:`fit_and_evaluate` with MLflow logging; the benchmark command
calls it once per router. Training uses the raw outcomes (missing = NaN, masked by the routers);
evaluation fills missing *actual* outcomes with column means (see
:func:`mmroute.evaluation.evaluate_predictions`); pass ``outcomes=`` to score against outcomes
filled some other way, e.g. over the whole table as the MMR-Bench reference does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mmroute.features.types import Features
from mmroute.routers.base import Router

__all__ = ["RouterResult", "fit_and_evaluate"]

log = logging.getLogger(__name__)


@dataclass
class RouterResult:
    """One router fitted and evaluated on one split.

    Attributes
    ----------
    name : str, the router's registry name
    params : dict, its flat config
    fit_seconds, predict_seconds : float
    perf_pred, cost_pred : ndarray of shape (n_test, M)
    results : dict of rule -> :class:`~mmroute.evaluation.EvalResult`
    """

    name: str
    params: dict[str, Any]
    fit_seconds: float
    predict_seconds: float
    perf_pred: np.ndarray
    cost_pred: np.ndarray
    results: dict[str, Any] = field(default_factory=dict)

    def metrics(self, keys: Sequence[str] = ("nAUC", "fixed_AUC", "Ps", "QNC", "n_pareto")
                ) -> dict[str, dict[str, float]]:
        """rule -> {metric: value} for the given metric keys."""
        return {rule: {k: res.metrics[k] for k in keys if k in res.metrics}
                for rule, res in self.results.items()}

    def summary(self) -> dict[str, Any]:
        """JSON-safe: name, params, timings and per-rule headline metrics."""
        from mmroute.evaluation import json_safe

        return json_safe({"name": self.name, "params": self.params, "fit_seconds": self.fit_seconds,
                          "predict_seconds": self.predict_seconds, **self.metrics()})


def fit_and_evaluate(router: Router, train_features: Features, train_table, test_features: Features,
                     test_table, *, rules: Sequence[str] = ("budget", "tradeoff"), fallback: str = "first",
                     outcomes: tuple[np.ndarray, np.ndarray] | None = None,
                     per_dataset: bool = True) -> RouterResult:
    """Fit ``router`` on the training rows, predict the test rows, evaluate under each rule.

    Parameters
    ----------
    router : an unfitted :class:`~mmroute.routers.Router`
    train_features, test_features : Features with as many rows as ``train_table`` / ``test_table``
    train_table, test_table : OutcomeTable (same models, same order)
    rules : decision rules, a subset of ("budget", "tradeoff")
    fallback : budget rule only: what an instance with no model under the budget picks
    outcomes : optional ``(correct, cost)`` of shape (n_test, M) to score against (and to hand
        to routers that read the actual outcomes); default ``test_table``'s
    per_dataset : add per-dataset breakdowns when the test rows span several datasets

    Returns
    -------
    RouterResult
    """
    from mmroute.evaluation import RULES, evaluate_predictions

    bad = [r for r in rules if r not in RULES]
    if bad or not rules:
        raise ValueError(f"rules {list(rules)!r}: expected a non-empty subset of {list(RULES)}")
    if tuple(train_table.models) != tuple(test_table.models):
        raise ValueError(f"train and test tables list different models: {train_table.models} vs {test_table.models}")
    for what, feats, table in (("train", train_features, train_table), ("test", test_features, test_table)):
        if len(feats) != table.n_instances:
            raise ValueError(f"{what} features have {len(feats)} rows but the {what} table has {table.n_instances}")
    correct, cost = (test_table.correct, test_table.cost) if outcomes is None else outcomes
    correct, cost = np.asarray(correct, dtype=np.float64), np.asarray(cost, dtype=np.float64)
    if correct.shape != test_table.correct.shape or cost.shape != test_table.correct.shape:
        raise ValueError(f"outcomes must have shape {test_table.correct.shape}, got {correct.shape} and {cost.shape}")

    t0 = time.perf_counter()
    router.fit(train_features, train_table.correct, train_table.cost)
    fit_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    if router.needs_outcomes:
        perf_pred, cost_pred = router.predict(test_features, correct=correct, cost=cost)
    else:
        perf_pred, cost_pred = router.predict(test_features)
    predict_seconds = time.perf_counter() - t0

    datasets = test_table.datasets if per_dataset and len(test_table.dataset_names) > 1 else None
    results = {rule: evaluate_predictions(perf_pred, cost_pred, correct, cost, rule=rule, datasets=datasets,
                                          fallback=fallback, models=test_table.models)
               for rule in rules}
    log.info("%s: fit %.2fs, predict %.2fs; %s", router.name, fit_seconds, predict_seconds,
             "; ".join(f"{rule} nAUC={res.metrics['nAUC']:.4f} fixed_AUC={res.metrics['fixed_AUC']:.4f}"
                       for rule, res in results.items()))
    return RouterResult(name=router.name, params=router.get_params(), fit_seconds=fit_seconds,
                        predict_seconds=predict_seconds, perf_pred=perf_pred, cost_pred=cost_pred,
                        results=results)
