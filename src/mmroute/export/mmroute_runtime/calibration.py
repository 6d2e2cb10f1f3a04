"""Calibrated operating points: each rule's parameter against expected cost, accuracy and shares.

At export, the router's predictions on rows it was not trained on (out-of-fold predictions on the
training rows) and those rows' actual outcomes are stored in the model
(:data:`CALIBRATION_FILE`, an ``.npz``). From them :func:`operating_points` tabulates, for a grid
of budgets and trade-off weights, the mean actual cost per query, the mean actual correctness and
the share of queries each model receives when the rule is applied to the predictions. A request
naming a target is answered with one row of that table:

* ``target_cost`` (USD per query): the most accurate point whose expected cost is <= the target
  (ties -> the cheaper); none: the cheapest point, ``within_target = False``;
* ``target_quality`` (a fraction of the best single model's accuracy on the calibration rows):
  the cheapest point expected to reach it (ties -> the more accurate); none: the most accurate
  point, ``within_target = False``.

A request restricted to a subset of the pool gets a table computed on the same rows with only
those models (cached per subset), so targets hold for the models that are up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .decide import SERVING_FALLBACK, check_fallback, decide

__all__ = ["CALIBRATION_FILE", "Calibration", "OperatingPoint", "operating_points", "budget_grid",
           "tradeoff_grid", "TABLE_COLUMNS"]

CALIBRATION_FILE = "calibration.npz"
TABLE_COLUMNS = ("rule", "param", "expected_cost", "expected_accuracy")
DEFAULT_POINTS = 128
_CROSSING_ROWS = 2000


def budget_grid(cost_pred: np.ndarray, n_points: int = DEFAULT_POINTS) -> np.ndarray:
    """Budgets: just below the smallest predicted cost (every row falls back), then ``n_points``
    quantiles of the distinct predicted costs (each an exact predicted cost), largest included."""
    distinct = np.unique(cost_pred)
    pick = np.unique(np.round(np.linspace(0, distinct.size - 1, min(n_points, distinct.size))).astype(int))
    below = np.nextafter(distinct[0], -np.inf)
    return np.concatenate([[below], distinct[pick]])


def tradeoff_grid(perf_pred: np.ndarray, cost_pred: np.ndarray, n_points: int = DEFAULT_POINTS,
                  seed: int = 0) -> np.ndarray:
    """Weights: 0, then quantiles of the positive crossing weights ``(p_k - p_j) / (c_k - c_j)``
    (where two models' scores cross) over up to 2,000 rows, then one past the largest crossing
    (every row at its cheapest model)."""
    n, m = perf_pred.shape
    rows = np.arange(n) if n <= _CROSSING_ROWS else np.random.default_rng(seed).choice(
        n, _CROSSING_ROWS, replace=False)
    p, c = perf_pred[rows], cost_pred[rows]
    j, k = np.triu_indices(m, 1)
    dp, dc = p[:, k] - p[:, j], c[:, k] - c[:, j]
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = dp / dc
    lam = lam[np.isfinite(lam) & (lam > 0)]
    if lam.size == 0:
        return np.zeros(1)
    qs = np.unique(np.quantile(lam, np.linspace(0, 1, n_points)))
    return np.concatenate([[0.0], qs, [qs[-1] * 2.0]])


def operating_points(perf_pred: np.ndarray, cost_pred: np.ndarray, correct: np.ndarray, cost: np.ndarray,
                     models: Sequence[str], *, fallback: str = SERVING_FALLBACK,
                     n_points: int = DEFAULT_POINTS) -> pd.DataFrame:
    """The operating-point table of both rules on calibration rows.

    Parameters
    ----------
    perf_pred, cost_pred : (n, M) predictions on rows the router was not trained on.
    correct, cost : (n, M) actual outcomes of those rows, no missing values.
    models : the M names (columns ``share_<name>``).

    Returns
    -------
    DataFrame with columns ``rule``, ``param``, ``expected_cost``, ``expected_accuracy`` and
    ``share_<model>`` per model (fractions summing to 1), budget points first, each rule by
    ascending parameter.
    """
    check_fallback(fallback)
    n, m = perf_pred.shape
    rows = np.arange(n)
    records = []
    for rule, grid in (("budget", budget_grid(cost_pred, n_points)),
                       ("tradeoff", tradeoff_grid(perf_pred, cost_pred, n_points))):
        for param in grid:
            choice, _ = decide(perf_pred, cost_pred, rule, float(param), fallback)
            shares = np.bincount(choice, minlength=m) / n
            records.append((rule, float(param), float(cost[rows, choice].mean()),
                            float(correct[rows, choice].mean()), *shares))
    columns = list(TABLE_COLUMNS) + [f"share_{name}" for name in models]
    return pd.DataFrame.from_records(records, columns=columns)


@dataclass(frozen=True)
class OperatingPoint:
    """One row of the table chosen for a request."""

    rule: str
    param: float
    expected_cost: float
    expected_accuracy: float
    within_target: bool


@dataclass
class Calibration:
    """Calibration rows of a served router: predictions (n, M) and actual outcomes (n, M)."""

    perf_pred: np.ndarray
    cost_pred: np.ndarray
    correct: np.ndarray
    cost: np.ndarray
    models: tuple[str, ...]
    fallback: str = SERVING_FALLBACK
    n_points: int = DEFAULT_POINTS
    info: dict = field(default_factory=dict)
    _tables: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        shape = (self.perf_pred.shape[0], len(self.models))
        for name in ("perf_pred", "cost_pred", "correct", "cost"):
            arr = np.asarray(getattr(self, name), dtype=np.float64)
            if arr.shape != shape or not np.isfinite(arr).all():
                raise ValueError(f"calibration {name} must be finite with shape {shape}, got {arr.shape}")
            setattr(self, name, arr)
        if shape[0] == 0:
            raise ValueError("calibration needs at least one row")
        check_fallback(self.fallback)
        self.models = tuple(str(m) for m in self.models)

    @property
    def n_rows(self) -> int:
        return int(self.perf_pred.shape[0])

    def _cols(self, cols: Sequence[int] | None) -> tuple[int, ...]:
        return tuple(range(len(self.models))) if cols is None else tuple(int(c) for c in cols)

    def table(self, cols: Sequence[int] | None = None) -> pd.DataFrame:
        """The operating points with only models ``cols`` (indices into ``models``) available."""
        key = self._cols(cols)
        if key not in self._tables:
            c = list(key)
            self._tables[key] = operating_points(
                self.perf_pred[:, c], self.cost_pred[:, c], self.correct[:, c], self.cost[:, c],
                [self.models[i] for i in c], fallback=self.fallback, n_points=self.n_points)
        return self._tables[key]

    def best_single_accuracy(self, cols: Sequence[int] | None = None) -> float:
        return float(self.correct[:, list(self._cols(cols))].mean(axis=0).max())

    def expected(self, rule: str | None, param: float | None, cols: Sequence[int] | None = None,
                 fallback: str | None = None) -> tuple[float, float]:
        """(expected cost, expected accuracy) of one rule setting on the calibration rows."""
        c = list(self._cols(cols))
        choice, _ = decide(self.perf_pred[:, c], self.cost_pred[:, c], rule, param,
                           fallback or self.fallback)
        rows = np.arange(self.n_rows)
        sub_cost, sub_corr = self.cost[:, c], self.correct[:, c]
        return float(sub_cost[rows, choice].mean()), float(sub_corr[rows, choice].mean())

    def for_cost(self, target: float, cols: Sequence[int] | None = None) -> OperatingPoint:
        """The most accurate point with expected cost <= ``target``; else the cheapest point."""
        t = self.table(cols)
        ok = t[t["expected_cost"] <= target]
        if len(ok):
            row = ok.sort_values(["expected_accuracy", "expected_cost"], ascending=[False, True],
                                 kind="stable").iloc[0]
            return _point(row, True)
        row = t.sort_values(["expected_cost", "expected_accuracy"], ascending=[True, False],
                            kind="stable").iloc[0]
        return _point(row, False)

    def for_quality(self, fraction: float, cols: Sequence[int] | None = None) -> OperatingPoint:
        """The cheapest point expected to reach ``fraction`` x the best single model's accuracy;
        else the most accurate point."""
        t = self.table(cols)
        goal = fraction * self.best_single_accuracy(cols)
        ok = t[t["expected_accuracy"] >= goal]
        if len(ok):
            row = ok.sort_values(["expected_cost", "expected_accuracy"], ascending=[True, False],
                                 kind="stable").iloc[0]
            return _point(row, True)
        row = t.sort_values(["expected_accuracy", "expected_cost"], ascending=[False, True],
                            kind="stable").iloc[0]
        return _point(row, False)

    # ------------------------------------------------------------- storage
    def save(self, path) -> None:
        with open(path, "wb") as fh:
            np.savez_compressed(fh, perf_pred=self.perf_pred, cost_pred=self.cost_pred,
                                correct=self.correct, cost=self.cost,
                                models=np.asarray(self.models, dtype=str),
                                fallback=np.asarray(self.fallback), n_points=np.asarray(self.n_points))

    @classmethod
    def load(cls, path) -> Calibration:
        with np.load(path, allow_pickle=False) as data:
            return cls(perf_pred=data["perf_pred"], cost_pred=data["cost_pred"], correct=data["correct"],
                       cost=data["cost"], models=tuple(str(m) for m in data["models"]),
                       fallback=str(data["fallback"]), n_points=int(data["n_points"]))


def _point(row: pd.Series, within: bool) -> OperatingPoint:
    return OperatingPoint(rule=str(row["rule"]), param=float(row["param"]),
                          expected_cost=float(row["expected_cost"]),
                          expected_accuracy=float(row["expected_accuracy"]), within_target=within)
