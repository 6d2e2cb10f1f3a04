"""Input validation shared by the decision rules, sweeps and metrics."""

from __future__ import annotations

import numpy as np

from mmroute.arrays import ArrayLike, FloatArray

__all__ = ["check_predictions", "check_outcomes"]


def _as_2d(name: str, a: ArrayLike, shape: tuple[int, ...] | None) -> FloatArray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_instances, n_models), got shape {arr.shape}")
    if shape is not None and arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape} like perf_pred, got {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}); need at least one instance and one model")
    return arr


def _require_finite(name: str, arr: FloatArray, hint: str) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        rows, cols = np.nonzero(bad)
        raise ValueError(f"{name} has {int(bad.sum())} non-finite value(s) (first at row {rows[0]}, "
                         f"model column {cols[0]}: {arr[rows[0], cols[0]]!r}); expected finite floats. "
                         f"{hint}")


def check_predictions(perf_pred: ArrayLike, cost_pred: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Float64 copies of the predictions; both (n, M), finite."""
    perf = _as_2d("perf_pred", perf_pred, None)
    cost = _as_2d("cost_pred", cost_pred, perf.shape)
    hint = "Routers must predict a number for every instance and model."
    _require_finite("perf_pred", perf, hint)
    _require_finite("cost_pred", cost, hint)
    return perf, cost


def check_outcomes(correct: ArrayLike, cost: ArrayLike, shape: tuple[int, ...] | None = None,
                   ) -> tuple[FloatArray, FloatArray]:
    """Float64 actual outcomes (n, M) with no missing values.

    The sweeps need every outcome; fill missing ones first (``evaluate_predictions`` and
    :func:`mmroute.evaluation.fill_missing` fill each model's column mean, as the reference does).
    """
    corr = _as_2d("correct", correct, shape)
    cst = _as_2d("cost", cost, corr.shape)
    hint = "Fill missing outcomes first, e.g. with mmroute.evaluation.fill_missing(correct, cost)."
    _require_finite("correct", corr, hint)
    _require_finite("cost", cst, hint)
    return corr, cst
