"""One call from predictions to a full evaluation: curve, frontier, metrics, baselines, breakdowns.

Missing actual outcomes are filled with each model's column mean over the rows given (the
reference fills over its whole table before splitting; pass outcomes already filled from the
full table, e.g. ``table.filled()`` sliced to the test rows, to reproduce that exactly).

``EvalResult.metrics`` (flat, for logging) holds the curve metrics (``nAUC``, ``Ps``, ``QNC``,
``fixed_AUC``, ``n_pareto``) and, for the same rows: ``n_instances``, ``n_points``,
``best_single_acc``/``_cost``/``_index``, ``cost_range_lo``/``_hi`` (the fixed-AUC range),
``oracle_acc``/``_cost`` (oracle point), ``oracle_nAUC``/``_Ps``/``_fixed_AUC`` (oracle
predictions swept with the same rule), ``random_acc``/``_cost`` (expectation),
``max_acc_cost`` (cheapest cost at which the router reaches Ps) and ``acc_at_best_single_cost``.

Budgets: ``EvalResult.at_single_costs`` gives, for each single model, the router's best
frontier accuracy at a mean cost no higher than that model's mean cost (NaN if the frontier starts
above it) next to that model's accuracy: "what does the router buy for the money of model m".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias, TypedDict, TypeVar, overload

import numpy as np

from mmroute.arrays import ArrayLike, FloatArray
from mmroute.evaluation.baselines import (
    SinglePoints,
    fill_missing,
    oracle_metrics,
    single_model_points,
)
from mmroute.evaluation.metrics import curve_metrics, pareto_frontier, pareto_mask
from mmroute.evaluation.sweep import SweepCurve, budget_sweep
from mmroute.evaluation.tradeoff import tradeoff_sweep
from mmroute.vocabulary import RULES

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["RULES", "EvalResult", "SingleCostPoint", "JSONValue", "sweep_rule", "evaluate_predictions", "json_safe"]

#: What :func:`json_safe` returns: JSON's value types, nested.
JSONValue: TypeAlias = bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"] | None
K = TypeVar("K")
V = TypeVar("V")

def sweep_rule(rule: str, perf_pred: ArrayLike, cost_pred: ArrayLike, correct: ArrayLike,
               cost: ArrayLike, *, fallback: str = "first") -> SweepCurve:
    """Dispatch to :func:`budget_sweep` or :func:`tradeoff_sweep` by rule name."""
    if rule == "budget":
        return budget_sweep(perf_pred, cost_pred, correct, cost, fallback=fallback)
    if rule == "tradeoff":
        return tradeoff_sweep(perf_pred, cost_pred, correct, cost)
    raise ValueError(f"rule={rule!r} is not one of {RULES}")


@overload
def json_safe(x: dict[K, V]) -> dict[str, JSONValue]: ...


@overload
def json_safe(x: object) -> JSONValue: ...


def json_safe(x: object) -> JSONValue:
    """Recursively convert to JSON-safe values: numpy -> Python, +-inf -> "inf"/"-inf", NaN -> None.

    Dicts, lists, tuples and arrays are converted item by item (dict keys become ``str``), numpy
    scalars become Python ones; anything else is returned as it is (``str`` and ``None`` are JSON
    already; other objects are left for the caller's encoder)."""
    if isinstance(x, dict):
        return _json_dict(x)
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, np.ndarray):
        return [json_safe(v) for v in x.tolist()]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        f = float(x)
        if math.isnan(f):
            return None
        if math.isinf(f):
            return "inf" if f > 0 else "-inf"
        return f
    return x  # type: ignore[return-value]  # str/None, or an object left to the caller's encoder


def _json_dict(d: dict[K, V]) -> dict[str, JSONValue]:
    return {str(k): json_safe(v) for k, v in d.items()}


class SingleCostPoint(TypedDict):
    """One entry of :attr:`EvalResult.at_single_costs`."""

    model: str
    budget: float
    router_acc: float
    single_acc: float


@dataclass
class EvalResult:
    """Evaluation of one router's predictions under one decision rule.

    Attributes
    ----------
    rule : str
    metrics : dict of str -> float/int (see module docstring)
    curve_threshold, curve_cost, curve_acc : ndarray of shape (T,)
        The swept curve in threshold order (budget ``C`` or trade-off ``lambda``).
    frontier_cost, frontier_acc : ndarray of shape (K,)
    per_dataset : dict of dataset name -> metrics dict (same keys as ``metrics``)
    singles : SinglePoints of these rows
    at_single_costs : list of SingleCostPoint dicts (model, budget, router_acc, single_acc)
    """

    rule: str
    metrics: dict[str, float]
    curve_threshold: FloatArray
    curve_cost: FloatArray
    curve_acc: FloatArray
    frontier_cost: FloatArray
    frontier_acc: FloatArray
    singles: SinglePoints
    at_single_costs: list[SingleCostPoint] = field(default_factory=list)
    per_dataset: dict[str, dict[str, float]] = field(default_factory=dict)
    fallback: str = "first"

    def to_dict(self) -> dict[str, JSONValue]:
        """JSON-safe dict: +-inf become the strings "inf"/"-inf", NaN becomes null."""
        return _json_dict({
            "rule": self.rule, "fallback": self.fallback, "metrics": self.metrics,
            "curve": {"threshold": self.curve_threshold, "cost": self.curve_cost, "acc": self.curve_acc},
            "frontier": {"cost": self.frontier_cost, "acc": self.frontier_acc},
            "singles": self.singles.to_dict(), "at_single_costs": self.at_single_costs,
            "per_dataset": self.per_dataset,
        })

    def curve_frame(self) -> pd.DataFrame:
        """pandas DataFrame (T rows): threshold, cost, acc, on_frontier — for CSV logging."""
        import pandas as pd

        frame: pd.DataFrame = pd.DataFrame({
            "threshold": self.curve_threshold, "cost": self.curve_cost, "acc": self.curve_acc,
            "on_frontier": pareto_mask(self.curve_cost, self.curve_acc),
        })
        return frame


def _best_acc_within(front_cost: FloatArray, front_acc: FloatArray, budget: float) -> float:
    ok = front_cost <= budget
    return float(front_acc[ok].max()) if ok.any() else math.nan


def _metrics_for(curve: SweepCurve, correct: FloatArray, cost: FloatArray, rule: str,
                 oracle_convention: str, singles: SinglePoints) -> tuple[dict[str, float], FloatArray, FloatArray]:
    fc, fa = pareto_frontier(curve.costs, curve.accs)
    lo, hi = singles.cost_range
    m = curve_metrics(curve.costs, curve.accs, best_single_acc=singles.best_acc,
                      best_single_cost=singles.best_cost, cost_range=(lo, hi))
    om = oracle_metrics(correct, cost, rule=rule, convention=oracle_convention)
    ps_idx = np.flatnonzero(fa == fa.max())[0] if fa.size else None
    m.update({
        "n_instances": int(correct.shape[0]), "n_points": len(curve),
        "best_single_acc": singles.best_acc, "best_single_cost": singles.best_cost,
        "best_single_index": singles.best_index, "cost_range_lo": lo, "cost_range_hi": hi,
        "oracle_acc": om["acc"], "oracle_cost": om["cost"], "oracle_nAUC": om["nAUC"], "oracle_Ps": om["Ps"],
        "oracle_fixed_AUC": om["fixed_AUC"],
        "random_acc": float(singles.acc.mean()), "random_cost": float(singles.cost.mean()),
        "max_acc_cost": math.nan if ps_idx is None else float(fc[ps_idx]),
        "acc_at_best_single_cost": _best_acc_within(fc, fa, singles.best_cost),
    })
    return m, fc, fa


def evaluate_predictions(perf_pred: ArrayLike, cost_pred: ArrayLike, correct: ArrayLike,
                         cost: ArrayLike, *, rule: str = "budget",
                         datasets: ArrayLike | Sequence[str] | None = None, fallback: str = "first",
                         models: Sequence[str] | None = None,
                         oracle_convention: str = "reference") -> EvalResult:
    """Evaluate predictions against actual outcomes.

    Parameters
    ----------
    perf_pred, cost_pred : array of shape (n, M)
        A router's predicted performance and cost; finite.
    correct, cost : array of shape (n, M)
        Actual outcomes; NaN = missing, filled with the column mean over these rows.
    rule : {"budget", "tradeoff"}
    datasets : optional array of shape (n,)
        Dataset name per row; adds ``per_dataset`` metrics (outcomes filled over all rows first).
    fallback : {"first", "cheapest"}
        Budget rule only: the pick of an instance with no model under the budget.
    models : optional model names (M,), used in ``singles`` and ``at_single_costs``.
    oracle_convention : {"reference", "cheapest"}, see :mod:`mmroute.evaluation.baselines`.

    Returns
    -------
    EvalResult
    """
    if rule not in RULES:
        raise ValueError(f"rule={rule!r} is not one of {RULES}")
    corr, cst = fill_missing(correct, cost)
    curve = sweep_rule(rule, perf_pred, cost_pred, corr, cst, fallback=fallback)
    singles = single_model_points(corr, cst, models=models)
    metrics, fc, fa = _metrics_for(curve, corr, cst, rule, oracle_convention, singles)
    at_costs: list[SingleCostPoint] = [{"model": singles.name(j), "budget": float(singles.cost[j]),
                 "router_acc": _best_acc_within(fc, fa, float(singles.cost[j])),
                 "single_acc": float(singles.acc[j])} for j in range(singles.acc.size)]

    per_dataset: dict[str, dict[str, float]] = {}
    if datasets is not None:
        ds = np.asarray(datasets).astype(str)
        if ds.shape != (corr.shape[0],):
            raise ValueError(f"datasets must have shape ({corr.shape[0]},), got {ds.shape}")
        perf = np.asarray(perf_pred, dtype=np.float64)
        cpred = np.asarray(cost_pred, dtype=np.float64)
        for name in dict.fromkeys(ds.tolist()):
            rows = ds == name
            sub = sweep_rule(rule, perf[rows], cpred[rows], corr[rows], cst[rows], fallback=fallback)
            sub_singles = single_model_points(corr[rows], cst[rows])
            per_dataset[name] = _metrics_for(sub, corr[rows], cst[rows], rule, oracle_convention,
                                             sub_singles)[0]
    return EvalResult(rule=rule, metrics=metrics, curve_threshold=curve.thresholds,
                      curve_cost=curve.costs, curve_acc=curve.accs, frontier_cost=fc, frontier_acc=fa,
                      singles=singles, at_single_costs=at_costs, per_dataset=per_dataset,
                      fallback=fallback)
