"""Deferral decisions of a probe router: a threshold on the small model's predicted correctness.

A query is deferred to the large model when ``p < threshold`` (``p`` = predicted correctness of
the small model). The threshold is calibrated on *training* rows' scores, for a target deferral
share (defer that share of the training rows with the lowest ``p``) or a target accuracy (the
smallest deferral share whose hybrid accuracy on the training rows reaches it). numpy only: the
served probe model uses these functions at request time.
"""

from __future__ import annotations

import numpy as np

__all__ = ["threshold_for_share", "threshold_for_accuracy", "deferral_curve"]


def _scores(scores: np.ndarray) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.size == 0 or not np.isfinite(s).all():
        raise ValueError(f"calibration needs finite scores, got {s.size} values")
    return np.sort(s)


def threshold_for_share(scores: np.ndarray, share: float) -> float:
    """Threshold deferring ``round(share * n)`` of the ``n`` calibration ``scores`` (``p < t``).

    Between two calibration scores the midpoint is used, so new rows with scores distributed as
    the calibration rows are deferred in the same share. ``share = 0`` gives ``-inf`` (never
    defer), ``share = 1`` gives ``+inf`` (always defer).
    """
    share = float(share)
    if not 0.0 <= share <= 1.0 or share != share:
        raise ValueError(f"defer_share={share!r}: expected a share in [0, 1]")
    s = _scores(scores)
    k = int(round(share * s.size))
    if k == 0:
        return float("-inf")
    if k == s.size:
        return float("inf")
    return float((s[k - 1] + s[k]) / 2.0)


def threshold_for_accuracy(scores: np.ndarray, small_correct: np.ndarray, large_correct: np.ndarray,
                           target: float) -> float:
    """Threshold of the smallest deferral share whose hybrid accuracy on the calibration rows is at
    least ``target``; raises ``ValueError`` naming the reachable range when no share reaches it."""
    target = float(target)
    s = np.asarray(scores, dtype=np.float64).ravel()
    small = np.asarray(small_correct, dtype=np.float64).ravel()
    large = np.asarray(large_correct, dtype=np.float64).ravel()
    if not (s.shape == small.shape == large.shape) or s.size == 0:
        raise ValueError(f"scores and outcomes must be 1-D of one length, got {s.shape}, {small.shape}, {large.shape}")
    order = np.argsort(s, kind="stable")
    gain = np.concatenate([[0.0], np.cumsum(large[order] - small[order])])
    acc = (small.sum() + gain) / s.size  # acc[k]: the k lowest scores deferred
    reached = np.flatnonzero(acc >= target - 1e-12)
    if not reached.size:
        raise ValueError(f"target_accuracy={target:g} is not reachable on the calibration rows: hybrid "
                         f"accuracy ranges over [{acc.min():.4f}, {acc.max():.4f}]")
    return threshold_for_share(s, reached[0] / s.size)


def deferral_curve(scores: np.ndarray, correct: np.ndarray, cost: np.ndarray) -> dict[str, np.ndarray]:
    """The deferral-threshold curve over the pool ``[small, large]``: every distinct threshold.

    ``scores`` (n,), ``correct`` and ``cost`` (n, 2) actual outcomes and billed costs. Returns
    arrays ``thresholds`` (the threshold just above each distinct score, ascending, starting with
    "defer nothing"), ``share`` (deferred share), ``costs`` and ``accs`` (mean actual cost and
    correctness) of equal length.
    """
    s = np.asarray(scores, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    cost = np.asarray(cost, dtype=np.float64)
    n = s.shape[0]
    if correct.shape != (n, 2) or cost.shape != (n, 2):
        raise ValueError(f"correct and cost must have shape ({n}, 2), got {correct.shape}, {cost.shape}")
    order = np.argsort(s, kind="stable")
    dc = np.concatenate([[0.0], np.cumsum(cost[order, 1] - cost[order, 0])])
    da = np.concatenate([[0.0], np.cumsum(correct[order, 1] - correct[order, 0])])
    # Rows with equal scores are deferred together: keep the counts at the end of each tie group.
    sorted_s = s[order]
    ends = np.concatenate([[0], np.flatnonzero(np.diff(sorted_s) > 0) + 1, [n]]) if n else np.array([0])
    ends = np.unique(ends)
    thresholds = np.array([-np.inf] + [np.nextafter(sorted_s[k - 1], np.inf) for k in ends[1:]])
    return {"thresholds": thresholds, "share": ends / max(n, 1),
            "costs": (cost[:, 0].sum() + dc[ends]) / n, "accs": (correct[:, 0].sum() + da[ends]) / n}
