"""Never worse than the best single model: a post-prediction guard on predicted performance.

Why. On hard, noisy tables (MATH-V: best single model 0.18, most per-query signal is noise) a
router's argmax over predicted performance, the choice both decision rules make at the top of
their cost range, is often *less* accurate than always sending every query to the model that was
best on the training rows. Nobody keeps a router that loses to "always use model b".

What. One per-model affine transform of the predicted performance, ``perf' = perf * scale +
shift`` (shape (M,) each), fitted on out-of-fold predictions of the router on its *training*
rows and applied by :class:`~mmroute.routers.Router` after every prediction (and appended to
every ONNX export, see :func:`mmroute.export.graph.append_perf_affine`). Two families are tried:

* ``bonus``: ``shift[b] = delta`` for the best training model ``b`` (keep ``b`` unless another
  model is predicted better by more than ``delta``);
* ``shrink``: ``perf' = w * perf + (1 - w) * mean`` (each model's prediction shrunk towards its
  training accuracy; ``w = 0`` is "always the best training model" at the top).

A candidate is *admissible* when, on the out-of-fold rows, its top-of-range choice (argmax of
``perf'``) is at least as accurate as model ``b`` with confidence: ``mean(d) >= z * se(d)`` for the
paired per-row differences ``d`` (the candidate that always picks ``b`` has ``d = 0`` and is always
admissible). Among admissible candidates the one with the best mean out-of-fold nAUC over the
decision rules wins; ties go to the smaller change. Test rows are never seen.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mmroute.routers.base import GUARDS

__all__ = ["PerfGuard", "OutOfFold", "fit_guard", "oof_scores", "GUARDS", "OOF_SAMPLE_ROWS"]

log = logging.getLogger(__name__)

_SHRINK = (0.75, 0.5, 0.25, 0.1)
#: Most training rows whose out-of-fold predictions a fitted router keeps (a seeded subset beyond).
OOF_SAMPLE_ROWS = 20_000


@dataclass(frozen=True)
class OutOfFold:
    """Out-of-fold predictions of (a seeded subset of) a router's training rows, before the guard,
    with those rows' outcomes: what the guard was fitted on, kept so that export can calibrate
    operating points without refitting the router (:func:`mmroute.export.calibration.calibrate`).

    ``perf``, ``cost_pred``: (n, M) predicted; ``correct``, ``cost``: (n, M) actual (NaN = missing).
    float32: a calibration table, not a model.
    """

    perf: np.ndarray
    cost_pred: np.ndarray
    correct: np.ndarray
    cost: np.ndarray

    @classmethod
    def sample(cls, perf: np.ndarray, cost_pred: np.ndarray, correct: np.ndarray, cost: np.ndarray, *,
               seed: int, max_rows: int = OOF_SAMPLE_ROWS) -> OutOfFold:
        rows = np.arange(perf.shape[0])
        if rows.size > max_rows:
            rows = np.sort(np.random.default_rng(seed).choice(rows.size, max_rows, replace=False))
        f32 = lambda a: np.ascontiguousarray(np.asarray(a)[rows], dtype=np.float32)  # noqa: E731
        return cls(f32(perf), f32(cost_pred), f32(correct), f32(cost))
_BONUS_QUANTILES = (0.25, 0.5, 0.75, 0.9, 0.97)


@dataclass
class PerfGuard:
    """``perf' = perf * scale + shift``, per model.

    Attributes
    ----------
    scale, shift : ndarray of shape (M,)
    kind : "identity", "bonus" or "shrink"
    value : the family's parameter (delta or w)
    best_index : the best model on the training rows
    report : dict, out-of-fold figures of the chosen and the identity candidate
    """

    scale: np.ndarray
    shift: np.ndarray
    kind: str = "identity"
    value: float = 0.0
    best_index: int = 0
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def is_identity(self) -> bool:
        return bool(np.all(self.scale == 1.0) and np.all(self.shift == 0.0))

    def apply(self, perf: np.ndarray) -> np.ndarray:
        """Transformed performance, same shape as ``perf`` (n, M)."""
        if self.is_identity:
            return perf
        return perf * self.scale[None, :] + self.shift[None, :]

    def describe(self) -> dict[str, Any]:
        """Flat, loggable summary."""
        return {"kind": self.kind, "value": float(self.value), "best_index": int(self.best_index),
                **{k: v for k, v in self.report.items() if isinstance(v, (int, float, str))}}


def _filled(correct: np.ndarray, cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from mmroute.evaluation import fill_missing

    return fill_missing(correct, cost)


def oof_scores(perf: np.ndarray, cost_pred: np.ndarray, correct: np.ndarray, cost: np.ndarray,
               rules: Sequence[str] = ("budget", "tradeoff")) -> dict[str, dict[str, float]]:
    """rule -> curve metrics (nAUC, fixed_AUC, Ps, QNC, top_acc) of predictions on rows with known
    outcomes (filled with column means where missing, as evaluation does)."""
    from mmroute.evaluation import curve_metrics, single_model_points, sweep_rule

    corr, cst = _filled(correct, cost)
    singles = single_model_points(corr, cst)
    top = np.argmax(perf, axis=1)
    top_acc = float(corr[np.arange(len(corr)), top].mean())
    out = {}
    for rule in rules:
        curve = sweep_rule(rule, perf, cost_pred, corr, cst)
        m = curve_metrics(curve.costs, curve.accs, best_single_acc=singles.best_acc,
                          best_single_cost=singles.best_cost, cost_range=singles.cost_range)
        m["top_acc"] = top_acc
        m["best_single_acc"] = float(singles.best_acc)
        out[rule] = {k: float(v) for k, v in m.items()}
    return out


def _mean_nauc(scores: dict[str, dict[str, float]]) -> float:
    vals = [s["nAUC"] for s in scores.values()]
    vals = [v for v in vals if math.isfinite(v)]
    return float(np.mean(vals)) if vals else -math.inf


def fit_guard(perf: np.ndarray, cost_pred: np.ndarray, correct: np.ndarray, cost: np.ndarray, *,
              rules: Sequence[str] = ("budget", "tradeoff"), z: float = 1.0) -> PerfGuard:
    """Choose the guard on out-of-fold predictions of the training rows.

    Parameters
    ----------
    perf, cost_pred : arrays of shape (n, M), out-of-fold predictions on the training rows
    correct, cost : arrays of shape (n, M), their actual outcomes (NaN = missing)
    rules : decision rules whose mean nAUC ranks admissible candidates
    z : confidence (in standard errors) a deviation from the best training model must earn

    Returns
    -------
    PerfGuard
    """
    from mmroute.routers.nonparametric import masked_column_means

    perf = np.asarray(perf, dtype=np.float64)
    cost_pred = np.asarray(cost_pred, dtype=np.float64)
    n, m = perf.shape
    ident = PerfGuard(np.ones(m), np.zeros(m))
    if n < 2 or m < 2:
        return ident
    means = masked_column_means(np.asarray(correct, dtype=np.float64))
    b = int(np.argmax(means))
    corr, _ = _filled(correct, cost)
    rows = np.arange(n)

    def admissible(p: np.ndarray) -> tuple[bool, float]:
        d = corr[rows, np.argmax(p, axis=1)] - corr[:, b]
        mean = float(d.mean())
        se = float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
        return mean >= z * se - 1e-12, mean

    candidates: list[tuple[str, float, np.ndarray, np.ndarray]] = [("identity", 0.0, np.ones(m), np.zeros(m))]
    gap = perf.max(axis=1) - perf[:, b]
    pos = gap[gap > 0]
    deltas = sorted(set(float(q) for q in np.quantile(pos, _BONUS_QUANTILES))) if pos.size else []
    if pos.size:
        deltas.append(float(pos.max()) * 1.01 + 1e-9)        # b always wins at the top
    for delta in deltas:
        shift = np.zeros(m)
        shift[b] = delta
        candidates.append(("bonus", delta, np.ones(m), shift))
    for w in _SHRINK:
        candidates.append(("shrink", w, np.full(m, w), (1.0 - w) * means))

    best, best_key, ident_report = None, None, {}
    for order, (kind, value, scale, shift) in enumerate(candidates):
        p = perf * scale + shift
        ok, gain = admissible(p)
        if not ok:
            continue
        score = _mean_nauc(oof_scores(p, cost_pred, correct, cost, rules))
        key = (score, -order)
        if kind == "identity":
            ident_report = {"identity_oof_nAUC": score, "identity_top_gain": gain}
        if best_key is None or key > best_key:
            best, best_key = (kind, value, scale, shift, gain), key
    if best is None:  # unreachable: the last bonus always picks b at the top (gain 0)
        return ident
    kind, value, scale, shift, gain = best
    report = {"oof_nAUC": best_key[0], "top_gain": gain, "best_train_acc": float(means[b]),
              "identity_admissible": bool(ident_report), **ident_report}
    guard = PerfGuard(scale=np.asarray(scale, float), shift=np.asarray(shift, float), kind=kind,
                      value=float(value), best_index=b, report=report)
    log.info("guard: %s %.4g (best training model %d, acc %.4f; out-of-fold mean nAUC %.4f, top-of-range "
             "gain over it %+.4f)", kind, value, b, means[b], best_key[0], gain)
    return guard
