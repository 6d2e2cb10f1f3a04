"""Decision rules, exact cost-accuracy sweeps, metrics, baselines and plots.

Everything routers are judged by lives here, once: the MMR-Bench budget rule
(:func:`cost_accuracy_curve`), the cost-quality trade-off rule (:func:`tradeoff_curve`), the
Pareto frontier and its metrics (:func:`curve_metrics`: nAUC, Ps, QNC, fixed-range AUC), the
single-model / oracle / random baselines, :func:`evaluate_predictions` (all of it in one call)
and :func:`plot_cost_accuracy`.
"""

from mmroute.evaluation.baselines import (
    ORACLE_CONVENTIONS,
    SinglePoints,
    fill_missing,
    oracle_metrics,
    oracle_point,
    oracle_predictions,
    random_metrics,
    single_model_points,
)
from mmroute.evaluation.metrics import (
    QNC_TOLERANCE,
    curve_metrics,
    fixed_range_auc,
    frontier_auc,
    pareto_frontier,
    pareto_mask,
)
from mmroute.evaluation.plots import plot_cost_accuracy, save_figure
from mmroute.evaluation.report import RULES, EvalResult, evaluate_predictions, json_safe, sweep_rule
from mmroute.evaluation.sweep import (
    FALLBACKS,
    SweepCurve,
    budget_decisions,
    budget_sweep,
    cost_accuracy_curve,
)
from mmroute.evaluation.tradeoff import tradeoff_curve, tradeoff_decisions, tradeoff_sweep

__all__ = [
    "FALLBACKS", "ORACLE_CONVENTIONS", "QNC_TOLERANCE", "RULES",
    "EvalResult", "SinglePoints", "SweepCurve",
    "budget_decisions", "budget_sweep", "cost_accuracy_curve",
    "tradeoff_decisions", "tradeoff_sweep", "tradeoff_curve",
    "pareto_frontier", "pareto_mask", "frontier_auc", "fixed_range_auc", "curve_metrics",
    "fill_missing", "single_model_points", "oracle_predictions", "oracle_point", "oracle_metrics",
    "random_metrics", "evaluate_predictions", "sweep_rule", "json_safe",
    "plot_cost_accuracy", "save_figure",
]
