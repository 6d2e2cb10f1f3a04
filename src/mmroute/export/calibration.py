"""Calibrate a router's operating points at export, on training rows it was not fitted on.

The router being exported was fitted on all training rows, so its own predictions on them are
optimistic. Every training row needs a prediction from a router that never saw it:

* a router fitted with its guard (``guard="oof"``, the default) already made them, to fit the guard,
  and keeps them (``router.oof_``, :class:`~mmroute.routers.guard.OutOfFold`): they are used as they
  are, through the fitted guard, as served predictions go; nothing is refitted;
* otherwise :func:`out_of_fold_predictions` refits ``n_folds`` clones of it (same config), each on
  the other folds of the training rows, and predicts the held-out fold.

Those predictions and the rows' actual outcomes are the calibration rows stored in the model
(:class:`~mmroute.export.mmroute_runtime.calibration.Calibration`); test rows are never used.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from mmroute.export.mmroute_runtime.calibration import DEFAULT_POINTS, Calibration
from mmroute.export.mmroute_runtime.decide import SERVING_FALLBACK
from mmroute.features.types import Features

__all__ = ["out_of_fold_predictions", "calibrate", "plot_operating_points", "DEFAULT_FOLDS",
           "DEFAULT_MAX_ROWS"]

log = logging.getLogger(__name__)

DEFAULT_FOLDS = 3
DEFAULT_MAX_ROWS = 20_000


def out_of_fold_predictions(router: Any, features: Features, correct: np.ndarray, cost: np.ndarray, *,
                            n_folds: int = DEFAULT_FOLDS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(perf, cost)`` (n, M): each row predicted by a clone of ``router`` fitted without its fold.

    Parameters
    ----------
    router : a router (fitted or not); only its class and config are used.
    features : Features of the n training rows; ``correct``, ``cost`` : (n, M), NaN = missing.
    n_folds : int >= 2 (at most n).
    """
    from sklearn.model_selection import KFold

    n = len(features)
    if not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise ValueError(f"n_folds must be an integer >= 2, got {n_folds!r}")
    if n < n_folds:
        raise ValueError(f"out-of-fold calibration needs at least n_folds={n_folds} training rows, got {n}")
    correct = np.asarray(correct, dtype=np.float64)
    cost = np.asarray(cost, dtype=np.float64)
    perf_out = np.full(correct.shape, np.nan)
    cost_out = np.full(correct.shape, np.nan)
    for k, (fit_rows, held) in enumerate(KFold(n_folds, shuffle=True, random_state=seed).split(np.arange(n))):
        clone = type(router)(copy.deepcopy(router.config))
        clone.fit(features.subset(fit_rows), correct[fit_rows], cost[fit_rows])
        p, c = clone.predict(features.subset(held))
        perf_out[held], cost_out[held] = p, c
        log.info("calibration fold %d/%d: fitted on %d rows, predicted %d", k + 1, n_folds,
                 fit_rows.size, held.size)
    return perf_out, cost_out


def calibrate(router: Any, features: Features | None, correct: np.ndarray, cost: np.ndarray,
              models: Sequence[str], *, n_folds: int = DEFAULT_FOLDS, seed: int = 0,
              fallback: str = SERVING_FALLBACK, n_points: int = DEFAULT_POINTS,
              max_rows: int = DEFAULT_MAX_ROWS) -> Calibration:
    """Out-of-fold calibration of ``router`` on training rows (see the module docstring).

    ``features`` of the training rows are only read when the router kept no out-of-fold rows
    (``router.oof_`` is None): then it may not be None. Missing outcomes are filled with each model's
    column mean over these rows (as evaluation does); beyond ``max_rows`` rows a seeded subset is
    kept, so the stored table stays small.
    """
    from mmroute.evaluation import fill_missing

    oof = getattr(router, "oof_", None)
    if oof is not None:
        perf_pred = router.apply_guard(oof.perf.astype(np.float64))
        cost_pred = oof.cost_pred.astype(np.float64)
        correct, cost = oof.correct.astype(np.float64), oof.cost.astype(np.float64)
        source = "the router's out-of-fold training rows (kept from its guard fit)"
        log.info("calibration: the %d out-of-fold training rows the router kept from its guard fit; no refit",
                 perf_pred.shape[0])
    else:
        if features is None:
            raise ValueError(f"calibrating {getattr(router, 'name', router)!r} means refitting it out of fold "
                             "(it kept no out-of-fold rows from a guard fit): pass the training rows' features")
        perf_pred, cost_pred = out_of_fold_predictions(router, features, correct, cost, n_folds=n_folds,
                                                       seed=seed)
        source = "out-of-fold training rows"
    corr, cst = fill_missing(correct, cost)
    if perf_pred.shape[0] > max_rows:
        keep = np.sort(np.random.default_rng(seed).choice(perf_pred.shape[0], max_rows, replace=False))
        perf_pred, cost_pred, corr, cst = perf_pred[keep], cost_pred[keep], corr[keep], cst[keep]
    cal = Calibration(perf_pred=perf_pred, cost_pred=cost_pred, correct=corr, cost=cst,
                      models=tuple(models), fallback=fallback, n_points=n_points)
    cal.info.update(n_folds=int(n_folds) if oof is None else None, seed=int(seed), n_rows=cal.n_rows,
                    source=source)
    return cal


def plot_operating_points(calibration: Calibration, title: str = "calibrated operating points"):
    """A matplotlib Figure: expected accuracy against expected cost per query, one line per rule."""
    from matplotlib.figure import Figure  # no pyplot state, no backend switch

    table = calibration.table()
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for rule, group in table.groupby("rule", sort=False):
        group = group.sort_values("expected_cost")
        ax.plot(group["expected_cost"], group["expected_accuracy"], marker=".", label=f"{rule} rule")
    singles_cost = calibration.cost.mean(axis=0)
    singles_acc = calibration.correct.mean(axis=0)
    ax.scatter(singles_cost, singles_acc, marker="x", color="grey", label="single models")
    ax.set_xlabel("expected mean cost per query (USD)")
    ax.set_ylabel("expected accuracy")
    ax.set_xscale("log" if (table["expected_cost"] > 0).all() else "linear")
    ax.set_title(f"{title} ({calibration.n_rows} out-of-fold rows)")
    ax.legend()
    fig.tight_layout()
    return fig
