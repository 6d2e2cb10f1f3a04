"""Pareto frontier and the curve metrics of MMR-Bench (nAUC, Ps, QNC) plus a fixed-range AUC.

Conventions follow the reference ``mmrbench/eval.py``:

* frontier: points sorted by (cost ascending, accuracy descending), keeping each point whose
  accuracy is strictly above every cheaper kept point (so among equal costs only the most
  accurate survives, and equal accuracies keep only the cheapest);
* nAUC: trapezoid area under the frontier divided by (max - min frontier cost). With a single
  frontier point (or zero cost span) it is undefined: NaN, as in the reference. ``fixed_AUC`` is
  always defined and is the metric to compare such routers on;
* Ps: highest frontier accuracy;
* QNC: the lowest frontier cost whose accuracy reaches the best single model's accuracy, divided
  by that model's mean cost; ``inf`` if never reached (or if that model's cost is 0). "Reaches"
  allows ``QNC_TOLERANCE`` below, because the fast sweep sums in a different order than
  ``np.mean`` and a router that copies the best model must not miss it by one rounding error.
"""

from __future__ import annotations

import math

import numpy as np

from mmroute.arrays import ArrayLike, BoolArray, FloatArray

__all__ = ["QNC_TOLERANCE", "pareto_frontier", "pareto_mask", "frontier_auc", "fixed_range_auc",
           "curve_metrics"]

QNC_TOLERANCE = 1e-12


def _trapezoid(y: FloatArray, x: FloatArray) -> float:
    # np.trapezoid only exists from numpy 2.0 and np.trapz is gone in 2.4; pyproject allows 1.26.
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2.0)


def _curve_arrays(costs: ArrayLike, accs: ArrayLike) -> tuple[FloatArray, FloatArray]:
    c = np.asarray(costs, dtype=np.float64).ravel()
    a = np.asarray(accs, dtype=np.float64).ravel()
    if c.shape != a.shape:
        raise ValueError(f"costs and accs must have the same length, got {c.shape[0]} and {a.shape[0]}")
    return c, a


def pareto_frontier(costs: ArrayLike, accs: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """The cost-accuracy Pareto frontier of curve points.

    Parameters
    ----------
    costs, accs : array of shape (T,)
        Curve points; NaN points are dropped.

    Returns
    -------
    (frontier_costs, frontier_accs) : two arrays of shape (K,), costs ascending and accuracies
    strictly increasing.
    """
    c, a = _curve_arrays(costs, accs)
    mask = pareto_mask(c, a)
    order = np.argsort(c[mask], kind="stable")
    return c[mask][order], a[mask][order]


def pareto_mask(costs: ArrayLike, accs: ArrayLike) -> BoolArray:
    """Boolean mask of shape (T,): which curve points are on the frontier.

    Of exactly duplicated points only the first (in the sort order) is marked.
    """
    c, a = _curve_arrays(costs, accs)
    valid = ~(np.isnan(c) | np.isnan(a))
    idx = np.flatnonzero(valid)
    mask = np.zeros(c.shape[0], dtype=bool)
    if idx.size == 0:
        return mask
    order = idx[np.lexsort((-a[idx], c[idx]))]
    srt = a[order]
    # Strictly above the running maximum of all earlier (cheaper or equally cheap) points.
    prev_max = np.concatenate([[-np.inf], np.maximum.accumulate(srt)[:-1]])
    mask[order[srt > prev_max]] = True
    return mask


def frontier_auc(front_costs: ArrayLike, front_accs: ArrayLike) -> float:
    """Trapezoid area under a frontier divided by its own cost span (nAUC); NaN if undefined."""
    c, a = _curve_arrays(front_costs, front_accs)
    if c.size < 2 or not c[-1] > c[0]:
        return math.nan
    return float(_trapezoid(a, c) / (c[-1] - c[0]))


def fixed_range_auc(front_costs: ArrayLike, front_accs: ArrayLike, lo: float, hi: float) -> float:
    """Mean frontier accuracy over the cost range ``[lo, hi]``.

    The frontier is interpolated linearly between its points and extended flat beyond its ends
    (``np.interp``). With ``hi == lo`` this is the frontier's value at ``lo`` (the limit of the
    mean); with no frontier point it is NaN.
    """
    c, a = _curve_arrays(front_costs, front_accs)
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi < lo:
        raise ValueError(f"cost_range must be finite with lo <= hi, got ({lo!r}, {hi!r})")
    if c.size == 0:
        return math.nan
    if hi == lo:
        return float(np.interp(lo, c, a))
    inside = c[(c > lo) & (c < hi)]
    xs = np.concatenate([[lo], inside, [hi]])
    return float(_trapezoid(np.interp(xs, c, a), xs) / (hi - lo))


def curve_metrics(costs: ArrayLike, accs: ArrayLike, *, best_single_acc: float,
                  best_single_cost: float, cost_range: tuple[float, float] | None = None) -> dict[str, float]:
    """nAUC, Ps, QNC, fixed-range AUC and frontier size of one curve.

    Parameters
    ----------
    costs, accs : array of shape (T,)
        Curve points (any order); the frontier is taken here.
    best_single_acc, best_single_cost : float
        Accuracy and mean cost of the best single model on the same rows (QNC's reference).
    cost_range : (lo, hi), optional
        Range of ``fixed_AUC``; by convention [cheapest single model's mean cost, most expensive
        single model's mean cost]. Without it ``fixed_AUC`` is NaN.

    Returns
    -------
    dict with float values ``nAUC``, ``Ps``, ``QNC``, ``fixed_AUC`` and int ``n_pareto``.
    """
    fc, fa = pareto_frontier(costs, accs)
    ps = float(fa.max()) if fa.size else math.nan
    qnc = math.inf
    reach = np.flatnonzero(fa >= best_single_acc - QNC_TOLERANCE)
    if reach.size and best_single_cost > 0:
        qnc = float(fc[reach[0]] / best_single_cost)
    fixed = math.nan if cost_range is None else fixed_range_auc(fc, fa, *cost_range)
    return {"nAUC": frontier_auc(fc, fa), "Ps": ps, "QNC": qnc, "fixed_AUC": fixed,
            "n_pareto": int(fc.size)}
