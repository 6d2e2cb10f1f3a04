"""The cost-quality trade-off rule and its exact sweep over lambda.

Rule: each instance picks ``argmax_m perf_pred[m] - lambda * cost_pred[m]`` for a weight
``lambda >= 0``. Ties (which only happen where lines cross, or between models with identical
predicted ``(perf, cost)``) follow one convention:

* at ``lambda = 0`` exactly: the highest predicted performance, ties -> lowest model index
  (the same tie rule as the budget rule);
* on an open interval between two consecutive breakpoints, the winner is unique up to models
  with identical predictions, which go to the lowest model index. The curve point recorded for a
  breakpoint ``lambda_k`` is the decision on ``(lambda_k, lambda_{k+1})``, i.e. just above it.

Breakpoints are exactly the ``lambda >= 0`` where some instance's decision changes, so the curve
runs from the best-performance choice (``lambda = 0``) to the cheapest-predicted choice (large
``lambda``; among equal cheapest costs the highest predicted performance), with one point per
change. A crossing between models ``k`` and ``j`` is ``(perf_k - perf_j) / (cost_k - cost_j)``.

Per instance the winners form the upper envelope of ``M`` lines; walking it from ``lambda = 0``
takes at most ``M - 1`` steps of ``O(M)`` work, vectorised over instances. The per-instance
events are then merged by one sort + cumulative sum, as in the budget sweep.
"""

from __future__ import annotations

import numpy as np

from mmroute.arrays import ArrayLike, BoolArray, FloatArray, IndexArray, IntArray
from mmroute.evaluation._checks import check_outcomes, check_predictions
from mmroute.evaluation.sweep import SweepCurve

__all__ = ["tradeoff_decisions", "tradeoff_sweep", "tradeoff_curve"]


def _lexi_argbest(primary: FloatArray, secondary: FloatArray, valid: BoolArray) -> IndexArray:
    """Per row, the column with the smallest ``primary``, then smallest ``secondary``, then index.

    Only ``valid`` entries count; rows need at least one valid entry. Shapes (n, M) -> (n,).
    """
    p = np.where(valid, primary, np.inf)
    at_min = valid & (p == p.min(axis=1, keepdims=True))
    s = np.where(at_min, secondary, np.inf)
    at_min &= s == s.min(axis=1, keepdims=True)
    first: IndexArray = np.argmax(at_min, axis=1)  # first True = lowest index
    return first


def tradeoff_decisions(perf_pred: ArrayLike, cost_pred: ArrayLike, lam: float) -> IntArray:
    """The model each instance picks at weight ``lam`` (ties -> lowest index). Shape (n,)."""
    if not np.isfinite(lam) or lam < 0:
        raise ValueError(f"lambda must be a finite number >= 0, got {lam!r}")
    perf, cost = check_predictions(perf_pred, cost_pred)
    choice: IntArray = np.argmax(perf - lam * cost, axis=1).astype(np.int64)
    return choice


def _envelope_events(perf: FloatArray, cost: FloatArray
                     ) -> tuple[IndexArray, IntArray, FloatArray, IntArray, IntArray]:
    """Walk each row's upper envelope. Returns (start choice (n,), rows, lambdas, old, new)."""
    n, m = perf.shape
    start = np.argmax(perf, axis=1)  # lambda = 0, ties -> lowest index
    # A cheaper model with the same performance crosses at lambda = 0 and is taken by the first
    # step of the walk, which yields the "just above 0" decision as an event at 0.
    cur = start.copy()
    ev_rows: list[IndexArray] = []
    ev_lam: list[FloatArray] = []
    ev_old: list[IndexArray] = []
    ev_new: list[IndexArray] = []
    active = np.arange(n)
    for _ in range(m - 1):
        c_cur = cost[active, cur[active]][:, None]
        p_cur = perf[active, cur[active]][:, None]
        cheaper = cost[active] < c_cur
        has_next = cheaper.any(axis=1)
        active = active[has_next]
        if active.size == 0:
            break
        cheaper, c_cur, p_cur = cheaper[has_next], c_cur[has_next], p_cur[has_next]
        with np.errstate(divide="ignore", invalid="ignore"):
            lam = np.where(cheaper, (p_cur - perf[active]) / (c_cur - cost[active]), np.inf)
        # Smallest crossing first; among lines crossing there, the cheapest wins just above it.
        nxt = _lexi_argbest(lam, cost[active], cheaper)
        ev_rows.append(active)
        ev_lam.append(lam[np.arange(active.size), nxt])
        ev_old.append(cur[active])
        ev_new.append(nxt)
        cur[active] = nxt
    if not ev_rows:
        empty = np.zeros(0, dtype=np.int64)
        return start, empty, np.zeros(0), empty, empty
    return (start, np.concatenate(ev_rows), np.concatenate(ev_lam),
            np.concatenate(ev_old), np.concatenate(ev_new))


def tradeoff_sweep(perf_pred: ArrayLike, cost_pred: ArrayLike, correct: ArrayLike,
                   cost: ArrayLike) -> SweepCurve:
    """The trade-off rule swept over every ``lambda`` where a decision changes.

    Parameters
    ----------
    perf_pred, cost_pred : array of shape (n, M), finite
    correct, cost : array of shape (n, M), actual outcomes without missing values

    Returns
    -------
    SweepCurve ordered by lambda: first the point at ``lambda = 0``, then one per distinct
    breakpoint (the decision just above it). ``thresholds`` holds the lambdas.
    """
    perf, cpred = check_predictions(perf_pred, cost_pred)
    corr, cact = check_outcomes(correct, cost, perf.shape)
    n = perf.shape[0]
    start, rows, lams, old, new = _envelope_events(perf, cpred)
    order = np.argsort(lams, kind="stable")
    lams = lams[order]
    rows, old, new = rows[order], old[order], new[order]
    cum_cost = np.cumsum(cact[rows, new] - cact[rows, old])
    cum_corr = np.cumsum(corr[rows, new] - corr[rows, old])
    base_cost = cact[np.arange(n), start].sum()
    base_corr = corr[np.arange(n), start].sum()

    last = np.empty(lams.shape[0], dtype=bool)
    if lams.size:
        last[:-1] = lams[1:] != lams[:-1]
        last[-1] = True
    thresholds = np.concatenate([[0.0], lams[last]])
    costs = np.concatenate([[base_cost], base_cost + cum_cost[last]]) / n
    accs = np.concatenate([[base_corr], base_corr + cum_corr[last]]) / n
    return SweepCurve(thresholds=thresholds, costs=costs, accs=accs, rule="tradeoff")


def tradeoff_curve(perf_pred: ArrayLike, cost_pred: ArrayLike, correct: ArrayLike,
                   cost: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Mean actual cost and accuracy per trade-off point, ordered by lambda. Two arrays (T,)."""
    curve = tradeoff_sweep(perf_pred, cost_pred, correct, cost)
    return curve.costs, curve.accs
