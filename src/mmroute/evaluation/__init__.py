"""Decision rules, exact cost-accuracy sweeps and metrics.

Everything routers are judged by lives here, once: the MMR-Bench budget rule
(:func:`cost_accuracy_curve`), the cost-quality trade-off rule (:func:`tradeoff_curve`), and the
Pareto frontier and its metrics (:func:`curve_metrics`: nAUC, Ps, QNC, fixed-range AUC).
"""

from mmroute.evaluation.metrics import (
    QNC_TOLERANCE, curve_metrics, fixed_range_auc, frontier_auc, pareto_frontier, pareto_mask,
)
from mmroute.evaluation.sweep import (
    FALLBACKS, SweepCurve, budget_decisions, budget_sweep, cost_accuracy_curve,
)
from mmroute.evaluation.tradeoff import tradeoff_curve, tradeoff_decisions, tradeoff_sweep

__all__ = [
    "FALLBACKS", "QNC_TOLERANCE", "SweepCurve",
    "budget_decisions", "budget_sweep", "cost_accuracy_curve",
    "tradeoff_decisions", "tradeoff_sweep", "tradeoff_curve",
    "pareto_frontier", "pareto_mask", "frontier_auc", "fixed_range_auc", "curve_metrics",
]
