"""The budget decision rule of MMR-Bench and its exact, fast cost-accuracy sweep.

Rule (the reference's ``evaluate_under_cost``): for a budget ``C`` each instance picks, among the
models whose *predicted* cost is ``<= C``, the one with the highest *predicted* performance; ties
go to the lowest model index (``np.argmax`` over a ``-inf``-masked row). An instance with no
model under ``C`` takes model index 0 (``fallback="first"``, what the reference's ``argmax`` of
an all ``-inf`` row does) or, with ``fallback="cheapest"``, the choice it makes at its own
cheapest predicted cost (the best predicted performance among its cheapest-predicted models).
The curve point for ``C`` is (mean actual cost, mean actual correctness) of the picks, and ``C``
is swept over every distinct predicted cost, ascending.

Evaluation defaults to ``"first"`` because that is what reproduces the reference figures
(ANCHORS); the served model (``mmroute.export.mmroute_runtime.decide``, a self-contained copy of
these rules) defaults to ``"cheapest"``, which honours a spending limit whatever the column order.
Both accept both fallbacks, and ``tests/export/test_decide_consistency.py`` requires identical
choices for each.

The reference re-scans the table once per threshold: ``O(T * n * M)`` with ``T`` up to ``n * M``.
Here each instance's choice can only change when one of *its* predicted costs is reached, so we
sort each row by predicted cost, take a prefix argmax with the tie rule, turn every step into an
event ``(threshold, delta cost, delta correct)``, and one global sort + cumulative sum gives the
whole curve: ``O(n * M * log(n * M))``. Models with equal predicted costs enter together: the
events of one cost value telescope, so only the state after the whole group is ever observed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmroute.arrays import ArrayLike, FloatArray, IndexArray, IntArray
from mmroute.evaluation._checks import check_outcomes, check_predictions
from mmroute.vocabulary import DEFAULT_FALLBACK, FALLBACKS  # the reference's fallback; see the docstring

__all__ = ["SweepCurve", "FALLBACKS", "DEFAULT_FALLBACK", "budget_decisions", "budget_sweep", "cost_accuracy_curve"]


@dataclass(frozen=True)
class SweepCurve:
    """One decision rule swept over its parameter.

    Attributes
    ----------
    thresholds : ndarray of shape (T,)
        The rule's parameter per point: the budget ``C`` (budget rule, ascending) or the
        trade-off weight ``lambda`` (trade-off rule, ascending; a point at ``lambda_k > 0`` holds
        for ``lambda`` just above ``lambda_k``).
    costs, accs : ndarray of shape (T,)
        Mean actual cost and mean actual correctness of the picks at each point.
    rule : str
        ``"budget"`` or ``"tradeoff"``.
    """

    thresholds: FloatArray
    costs: FloatArray
    accs: FloatArray
    rule: str

    def __len__(self) -> int:
        return int(self.costs.shape[0])


def _check_fallback(fallback: str) -> None:
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback={fallback!r} is not one of {FALLBACKS}")


def _prefix_best(perf_sorted: FloatArray, idx_sorted: IndexArray) -> IntArray:
    """Per row, the running best model over the first j+1 sorted columns.

    Best = highest predicted performance, ties -> lowest model index (the reference's argmax),
    whatever the order the models were sorted in. Shape (n, M), model indices.
    """
    n, m = perf_sorted.shape
    best = np.empty((n, m), dtype=np.int64)
    best_p = perf_sorted[:, 0].copy()
    best_i = idx_sorted[:, 0].copy()
    best[:, 0] = best_i
    for j in range(1, m):
        p, i = perf_sorted[:, j], idx_sorted[:, j]
        better = (p > best_p) | ((p == best_p) & (i < best_i))
        best_p = np.where(better, p, best_p)
        best_i = np.where(better, i, best_i)
        best[:, j] = best_i
    return best


def budget_decisions(perf_pred: ArrayLike, cost_pred: ArrayLike, budget: float, *,
                     fallback: str = "first") -> IntArray:
    """The model each instance picks under one budget.

    Parameters
    ----------
    perf_pred, cost_pred : array of shape (n, M)
    budget : float
        Largest acceptable predicted cost.
    fallback : {"first", "cheapest"}
        What an instance with no model under ``budget`` takes (see module docstring).

    Returns
    -------
    ndarray of int64, shape (n,): chosen model index per instance.
    """
    perf, cost = check_predictions(perf_pred, cost_pred)
    _check_fallback(fallback)
    masked = np.where(cost <= budget, perf, -np.inf)
    choice = np.argmax(masked, axis=1)
    none = ~(cost <= budget).any(axis=1)
    if none.any() and fallback == "cheapest":
        at_min = np.where(cost == cost.min(axis=1, keepdims=True), perf, -np.inf)
        choice[none] = np.argmax(at_min[none], axis=1)
    elif none.any():
        choice[none] = 0
    out: IntArray = choice.astype(np.int64)
    return out


def budget_sweep(perf_pred: ArrayLike, cost_pred: ArrayLike, correct: ArrayLike, cost: ArrayLike,
                 *, fallback: str = "first") -> SweepCurve:
    """The budget rule swept over every distinct predicted cost (see module docstring).

    Parameters
    ----------
    perf_pred, cost_pred : array of shape (n, M)
        Predicted performance and cost; finite.
    correct, cost : array of shape (n, M)
        Actual outcomes, no missing values (fill them first).
    fallback : {"first", "cheapest"}

    Returns
    -------
    SweepCurve with T = number of distinct predicted costs, thresholds ascending.
    """
    perf, cpred = check_predictions(perf_pred, cost_pred)
    corr, cact = check_outcomes(correct, cost, perf.shape)
    _check_fallback(fallback)
    n, m = perf.shape
    rows = np.arange(n)[:, None]

    # Stable sort keeps equal-cost models in index order; the tie rule is applied explicitly
    # in _prefix_best anyway, so the order inside an equal-cost group does not matter.
    order = np.argsort(cpred, axis=1, kind="stable")
    keys = np.take_along_axis(cpred, order, axis=1)
    state = _prefix_best(np.take_along_axis(perf, order, axis=1), order)

    if fallback == "first":
        start = np.zeros(n, dtype=np.int64)
    else:
        # The choice once the cheapest group has entered (the last column of that group).
        first_group_end = (keys == keys[:, :1]).sum(axis=1) - 1
        start = state[np.arange(n), first_group_end]
    prev = np.concatenate([start[:, None], state[:, :-1]], axis=1)

    d_cost = (cact[rows, state] - cact[rows, prev]).ravel()
    d_corr = (corr[rows, state] - corr[rows, prev]).ravel()
    flat_keys = keys.ravel()
    # Within one threshold the order of events does not matter (the curve is read after the last
    # event of each threshold), so the unstable sort, twice as fast on n*M keys, is enough.
    ev = np.argsort(flat_keys)
    flat_keys = flat_keys[ev]
    cum_cost = np.cumsum(d_cost[ev])
    cum_corr = np.cumsum(d_corr[ev])

    # The curve is read after the last event of each distinct threshold.
    last = np.empty(flat_keys.shape[0], dtype=bool)
    last[:-1] = flat_keys[1:] != flat_keys[:-1]
    last[-1] = True
    base_cost = cact[np.arange(n), start].sum()
    base_corr = corr[np.arange(n), start].sum()
    return SweepCurve(
        thresholds=flat_keys[last].copy(),
        costs=(base_cost + cum_cost[last]) / n,
        accs=(base_corr + cum_corr[last]) / n,
        rule="budget",
    )


def cost_accuracy_curve(perf_pred: ArrayLike, cost_pred: ArrayLike, correct: ArrayLike,
                        cost: ArrayLike, *, fallback: str = "first") -> tuple[FloatArray, FloatArray]:
    """Mean actual cost and accuracy per budget threshold, in threshold order.

    Identical (up to float summation order, <= 1e-9) to the MMR-Bench reference loop over
    ``np.sort(np.unique(cost_pred))``. Shapes: all inputs (n, M); outputs two float64 arrays of
    shape (T,), T = number of distinct predicted costs.
    """
    curve = budget_sweep(perf_pred, cost_pred, correct, cost, fallback=fallback)
    return curve.costs, curve.accs
