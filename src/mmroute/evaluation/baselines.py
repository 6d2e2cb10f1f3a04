"""Reference points of a routing evaluation: single models, the oracle and random routing.

Missing outcomes. The MMR-Bench reference fills every missing ``correct``/``cost`` with that
model's column mean *before* splitting, i.e. over the whole table. :func:`fill_missing` fills
with the column mean over the rows it is given; to reproduce the reference exactly, fill the
full table first (``table.filled()``) and slice the test rows afterwards.

Oracle. Two conventions, both run through the same sweep as the routers:

* ``"reference"``: predictions = the actual outcomes (what the reference's ``OracleRouter``
  does); under the budget rule ties among correct models go to the lowest model index, so its
  top point is not always the cheapest correct model;
* ``"cheapest"``: the actual correctness, with ties broken towards the cheaper actual cost, so
  every instance ends at its cheapest correct model (else its cheapest model).

The oracle *point* (``acc``, ``cost`` in :func:`oracle_metrics`) is always the per-instance
best correctness at the lowest cost.

Random. As the reference's ``RandomRouter``: ``n_trials`` uniform random assignments (seeded),
one curve point each; ``acc``/``cost`` are the exact expectation (mean of the single models).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mmroute.arrays import ArrayLike, FloatArray
from mmroute.evaluation._checks import check_outcomes
from mmroute.evaluation.metrics import curve_metrics

__all__ = ["fill_missing", "SinglePoints", "single_model_points", "oracle_predictions",
           "oracle_point", "oracle_metrics", "random_metrics", "ORACLE_CONVENTIONS"]

ORACLE_CONVENTIONS = ("reference", "cheapest")


def _fill_col_mean(a: FloatArray) -> FloatArray:
    out = np.array(a, dtype=np.float64, copy=True)
    nan = np.isnan(out)
    if nan.any():
        counts = (~nan).sum(axis=0)
        sums = np.where(nan, 0.0, out).sum(axis=0)
        # An all-missing column has no mean: 0 (OutcomeTable.filled() uses this function too).
        means = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
        r, c = np.nonzero(nan)
        out[r, c] = means[c]
    return out


def fill_missing(correct: ArrayLike, cost: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Copies of ``correct`` and ``cost`` (n, M) with NaNs replaced by each column's mean."""
    corr = np.asarray(correct, dtype=np.float64)
    cst = np.asarray(cost, dtype=np.float64)
    if corr.ndim != 2 or cst.shape != corr.shape:
        raise ValueError(f"correct and cost must be 2-D of the same shape, got {corr.shape} and {cst.shape}")
    return _fill_col_mean(corr), _fill_col_mean(cst)


@dataclass(frozen=True)
class SinglePoints:
    """Mean accuracy and cost of always routing to one model.

    Attributes
    ----------
    acc, cost : ndarray of shape (M,)
    best_index : int
        Highest accuracy; ties -> lower mean cost, then lower index. (The reference takes the
        first maximum; the two differ only on exact accuracy ties.)
    models : tuple of str or None
    """

    acc: FloatArray
    cost: FloatArray
    best_index: int
    models: tuple[str, ...] | None = None

    @property
    def best_acc(self) -> float:
        return float(self.acc[self.best_index])

    @property
    def best_cost(self) -> float:
        return float(self.cost[self.best_index])

    @property
    def cost_range(self) -> tuple[float, float]:
        """[cheapest, most expensive] mean cost: the range of ``fixed_AUC``."""
        return float(self.cost.min()), float(self.cost.max())

    def name(self, j: int) -> str:
        return self.models[j] if self.models is not None else f"model_{j}"

    def to_dict(self) -> dict[str, list[str] | list[float] | int | str]:
        return {"models": [self.name(j) for j in range(self.acc.size)],
                "acc": self.acc.tolist(), "cost": self.cost.tolist(),
                "best_index": self.best_index, "best_model": self.name(self.best_index)}


def single_model_points(correct: ArrayLike, cost: ArrayLike, *,
                        models: Sequence[str] | None = None) -> SinglePoints:
    """Per-model mean accuracy and cost over the given rows (NaNs ignored = column-mean fill).

    Parameters
    ----------
    correct, cost : array of shape (n, M)
    models : optional names, length M
    """
    corr, cst = fill_missing(correct, cost)
    if corr.size == 0:
        raise ValueError(f"need at least one instance and one model, got shape {corr.shape}")
    if models is not None and len(models) != corr.shape[1]:
        raise ValueError(f"{len(models)} model names for {corr.shape[1]} outcome columns")
    acc, mc = corr.mean(axis=0), cst.mean(axis=0)
    best = int(np.lexsort((np.arange(acc.size), mc, -acc))[0])
    return SinglePoints(acc=acc, cost=mc, best_index=best,
                        models=None if models is None else tuple(map(str, models)))


def oracle_predictions(correct: ArrayLike, cost: ArrayLike, *, convention: str = "reference",
                       ) -> tuple[FloatArray, FloatArray]:
    """Oracle ``(perf_pred, cost_pred)`` of shape (n, M) built from the actual outcomes.

    ``"cheapest"`` subtracts from the correctness a tie-breaker smaller than half the smallest
    gap between distinct correctness values, increasing with the model's actual cost rank in
    its row, so it reorders only exactly equal correctness.
    """
    if convention not in ORACLE_CONVENTIONS:
        raise ValueError(f"convention={convention!r} is not one of {ORACLE_CONVENTIONS}")
    corr, cst = check_outcomes(correct, cost)
    if convention == "reference":
        return corr.copy(), cst.copy()
    levels = np.unique(corr)
    gap = float(np.diff(levels).min()) if levels.size > 1 else 1.0
    n, m = corr.shape
    # Dense cost rank per row (equal costs share a rank, then the index rule decides).
    order = np.argsort(cst, axis=1, kind="stable")
    srt = np.take_along_axis(cst, order, axis=1)
    dense = np.concatenate([np.zeros((n, 1)), np.diff(srt, axis=1) > 0], axis=1).cumsum(axis=1)
    rank = np.empty_like(cst)
    np.put_along_axis(rank, order, dense, axis=1)
    return corr - (gap / 2.0) * rank / m, cst.copy()


def oracle_point(correct: ArrayLike, cost: ArrayLike) -> tuple[float, float]:
    """(mean cost, mean accuracy) when each instance takes its most correct, then cheapest model."""
    corr, cst = check_outcomes(correct, cost)
    pick = np.lexsort((np.broadcast_to(np.arange(corr.shape[1]), corr.shape), cst, -corr), axis=1)[:, 0]
    rows = np.arange(corr.shape[0])
    return float(cst[rows, pick].mean()), float(corr[rows, pick].mean())


def oracle_metrics(correct: ArrayLike, cost: ArrayLike, *, rule: str = "budget",
                   convention: str = "reference") -> dict[str, float]:
    """The oracle's point and curve metrics on these rows.

    Parameters
    ----------
    correct, cost : array of shape (n, M), no missing values
    rule : {"budget", "tradeoff"}
    convention : {"reference", "cheapest"} (see module docstring)

    Returns
    -------
    dict: ``acc``, ``cost`` (oracle point) and ``nAUC``, ``Ps``, ``QNC``, ``fixed_AUC``, ``n_pareto``
    of the oracle predictions swept with ``rule``.
    """
    from mmroute.evaluation.report import sweep_rule  # report imports this module

    perf_pred, cost_pred = oracle_predictions(correct, cost, convention=convention)
    curve = sweep_rule(rule, perf_pred, cost_pred, correct, cost)
    singles = single_model_points(correct, cost)
    c, a = oracle_point(correct, cost)
    out = {"acc": a, "cost": c}
    out.update(curve_metrics(curve.costs, curve.accs, best_single_acc=singles.best_acc,
                             best_single_cost=singles.best_cost, cost_range=singles.cost_range))
    return out


def random_metrics(correct: ArrayLike, cost: ArrayLike, *, seed: int = 0, n_trials: int = 50) -> dict[str, float]:
    """Random routing: expected point and the metrics of ``n_trials`` seeded random assignments.

    Returns
    -------
    dict: ``acc``, ``cost`` (exact expectation) and ``nAUC``, ``Ps``, ``QNC``, ``fixed_AUC``,
    ``n_pareto`` of the trial points (as the reference's ``RandomRouter``).
    """
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    corr, cst = check_outcomes(correct, cost)
    n, m = corr.shape
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, m, size=(n_trials, n))
    rows = np.arange(n)
    t_cost = cst[rows, picks].mean(axis=1)
    t_acc = corr[rows, picks].mean(axis=1)
    singles = single_model_points(corr, cst)
    out = {"acc": float(singles.acc.mean()), "cost": float(singles.cost.mean())}
    out.update(curve_metrics(t_cost, t_acc, best_single_acc=singles.best_acc,
                             best_single_cost=singles.best_cost, cost_range=singles.cost_range))
    return out
