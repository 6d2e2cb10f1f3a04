"""Regression routers: ``linear`` (ridge per model) and ``linear_mf`` (low-rank projection + ridge).

Both predict performance and cost per model with ridge heads fitted on the observed outcomes
only: a model's missing rows (NaN) are left out of *its* regression, never filled. Models that
share one missing pattern are fitted together (one solve), so a table without missing outcomes
costs a single multi-output ridge.

Regularisation. ``alpha`` is the ridge penalty (MMR-Bench's default 1.0). Given a grid
``alphas``, each model's penalty is chosen on the *training rows* by exact leave-one-out error
(closed form from one SVD per missing pattern), separately for the performance and the cost head.

Reference match (MMR-Bench ``LinearMFRouter``): ``TruncatedSVD(n_components=rank,
random_state=seed)`` fitted on the training features (no centring), then
``Ridge(alpha)`` heads on the projection. The reference fills missing outcomes with column means
before fitting; here they are masked (identical when nothing is missing). MMR-Bench's ``Linear``
is an unpenalised least squares; ``linear`` here is ridge (``alpha=0`` gives least squares).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mmroute.constraints import Integral, Interval, Real, SequenceOf
from mmroute.routers.base import Router, RouterConfig

__all__ = ["LinearConfig", "LinearRouter", "LinearMFConfig", "LinearMFRouter", "fit_masked_ridge",
           "RIDGE_CONSTRAINTS"]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- masked ridge
def _pattern_groups(y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Columns grouped by identical observed-row pattern: [(columns, observed rows), ...]."""
    observed = ~np.isnan(y)
    groups: dict[bytes, list[int]] = {}
    for j in range(y.shape[1]):
        groups.setdefault(np.packbits(observed[:, j]).tobytes(), []).append(j)
    return [(np.asarray(cols), np.flatnonzero(observed[:, cols[0]])) for cols in groups.values()]


def _ridge_solve(x: np.ndarray, y: np.ndarray, alphas: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ridge with intercept; with several ``alphas``, each column's penalty is chosen by exact
    leave-one-out squared error.

    x : (n, d), y : (n, k) without NaN. Returns coef (k, d), intercept (k,), alpha (k,).
    One eigendecomposition of the centred Gram matrix serves every penalty (a thin SVD of x is
    ten times slower at 10k x 384); ``alpha = 0`` gives the minimum-norm least squares.
    """
    n = x.shape[0]
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - x_mean, y - y_mean
    eig, v = np.linalg.eigh(xc.T @ xc)              # xc^T xc = V diag(eig) V^T
    eig = np.clip(eig, 0.0, None)
    tol = eig.max(initial=0.0) * max(x.shape) * np.finfo(np.float64).eps
    bty = v.T @ (xc.T @ yc)                         # (d, k)

    def inverse(alpha: float) -> np.ndarray:
        denom = eig + alpha
        return np.divide(1.0, denom, out=np.zeros_like(denom), where=denom > tol)

    if len(alphas) == 1:
        chosen = np.full(y.shape[1], float(alphas[0]))
    else:
        b = xc @ v                                  # (n, d): rotated inputs, only for leverages
        b2 = b ** 2
        loo = np.empty((len(alphas), y.shape[1]))
        for a, alpha in enumerate(alphas):
            inv = inverse(alpha)
            fitted = b @ (inv[:, None] * bty)
            # Leverage of the centred fit, plus 1/n for the intercept.
            hat = b2 @ inv + 1.0 / n
            resid = (yc - fitted) / np.maximum(1.0 - hat, 1e-12)[:, None]
            loo[a] = (resid ** 2).mean(axis=0)
        chosen = alphas[np.argmin(loo, axis=0)]
    coef = np.empty((y.shape[1], x.shape[1]))
    for alpha in np.unique(chosen):
        cols = chosen == alpha
        coef[cols] = (v @ (inverse(alpha)[:, None] * bty[:, cols])).T
    return coef, y_mean - coef @ x_mean, chosen


def fit_masked_ridge(x: np.ndarray, y: np.ndarray, *, alpha: float = 1.0,
                     alphas: Sequence[float] = ()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ridge regression (with intercept) of every column of ``y`` on its observed rows.

    Parameters
    ----------
    x : array of shape (n, d)
    y : array of shape (n, k); NaN = missing (that row is left out of that column's fit)
    alpha : penalty used when ``alphas`` is empty (0 = least squares)
    alphas : grid; when given, each column's penalty is chosen by leave-one-out error

    Returns
    -------
    coef : (k, d), intercept : (k,), alpha : (k,) the penalty used per column.
    A column with no observed row predicts 0 (coef 0, intercept 0).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    k, d = y.shape[1], x.shape[1]
    coef, intercept = np.zeros((k, d)), np.zeros(k)
    used = np.full(k, float(alpha))
    grid = np.asarray(sorted(float(a) for a in alphas) or [float(alpha)], dtype=np.float64)
    for cols, rows in _pattern_groups(y):
        if rows.size == 0:
            log.warning("no observed outcome for column(s) %s: predicting 0", cols.tolist())
            continue
        # Leave-one-out needs at least 3 rows to mean anything; fewer keep the first penalty.
        use = grid if rows.size > 2 else grid[:1]
        coef[cols], intercept[cols], used[cols] = _ridge_solve(x[rows], y[np.ix_(rows, cols)], use)
    return coef, intercept, used


#: What the ridge options accept (shared by every config with a ridge penalty or grid).
RIDGE_CONSTRAINTS: dict[str, list[Any]] = {
    "alpha": [Interval(Real, 0, None, closed="left")],
    "alphas": [SequenceOf(Interval(Real, 0, None, closed="neither"), what="or empty for a fixed alpha")],
}


# --------------------------------------------------------------------------- routers
class _RidgeHeads(Router):
    """Shared fit/predict of two ridge heads (performance, cost) on a representation of the input.

    Fitted attributes: ``perf_coef_`` (M, d_rep), ``perf_intercept_`` (M,), ``cost_coef_``,
    ``cost_intercept_``, ``perf_alpha_`` and ``cost_alpha_`` (M,) the penalties used.
    """

    def _represent(self, x: np.ndarray, *, fit: bool) -> np.ndarray:
        return x

    def _fit(self, features, correct, cost, **_):
        z = self._represent(features.fused, fit=True)
        c = self.config
        # One solve for both heads: a performance and a cost column missing on the same rows share
        # one eigendecomposition (penalties are still chosen per column).
        m = correct.shape[1]
        coef, intercept, alpha = fit_masked_ridge(z, np.concatenate([correct, cost], axis=1),
                                                  alpha=c.alpha, alphas=c.alphas)
        self.perf_coef_, self.perf_intercept_, self.perf_alpha_ = coef[:m], intercept[:m], alpha[:m]
        self.cost_coef_, self.cost_intercept_, self.cost_alpha_ = coef[m:], intercept[m:], alpha[m:]
        if c.alphas:
            log.info("%s: ridge penalties chosen by leave-one-out: perf median %.3g, cost median %.3g",
                     self.name, float(np.median(self.perf_alpha_)), float(np.median(self.cost_alpha_)))

    def _predict(self, features, **_):
        z = self._represent(features.fused, fit=False).astype(np.float64)
        return (z @ self.perf_coef_.T + self.perf_intercept_,
                z @ self.cost_coef_.T + self.cost_intercept_)

    def affine_map(self) -> tuple[np.ndarray, np.ndarray]:
        """The whole router as one affine map of the fused input: ``[perf | cost] = x @ W + b``.

        Returns W of shape (n_features, 2 * M) and b of shape (2 * M,) (for export).
        """
        self.check_fitted()
        proj, offset = self._projection()
        coef = np.concatenate([self.perf_coef_, self.cost_coef_], axis=0)      # (2M, d_rep)
        bias = np.concatenate([self.perf_intercept_, self.cost_intercept_])
        return proj @ coef.T, offset @ coef.T + bias

    def _projection(self) -> tuple[np.ndarray, np.ndarray]:
        """Representation as ``x @ P + o``: identity here."""
        return np.eye(self.n_features_), np.zeros(self.n_features_)

    def write_onnx(self, x_sample: np.ndarray, path: Path, *, opset: int, exporter: str) -> str:
        """The ridge heads as one affine map (:meth:`affine_map`), a float64 MatMul: there is no
        fitted sklearn estimator to convert (the heads are solved in closed form)."""
        from mmroute.export.graph import affine_graph, save_model

        weight, bias = self.affine_map()
        save_model(affine_graph(weight, bias, opset=opset), path)
        return "onnx (affine ridge heads)"


@dataclasses.dataclass
class LinearConfig(RouterConfig):
    """Ridge per model for performance and for cost on the fused features.

    ``alpha``: penalty (0 = least squares); ``alphas``: grid for per-model leave-one-out selection
    on the training rows (overrides ``alpha`` when non-empty).
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = RIDGE_CONSTRAINTS

    alpha: float = 1.0
    alphas: tuple[float, ...] = ()


class LinearRouter(_RidgeHeads):
    """MMR-Bench ``Linear``: one ridge regression per model for performance and for cost."""

    name = "linear"
    config_class = LinearConfig
    deployable = True


@dataclasses.dataclass
class LinearMFConfig(RouterConfig):
    """MMR-Bench ``LinearMF``: TruncatedSVD of the query embedding to ``rank``, then ridge heads.

    ``rank`` is clipped to the training rows and feature count; ``seed`` seeds the SVD.
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **RIDGE_CONSTRAINTS, "rank": [Interval(Integral, 1, None, closed="left")]}

    rank: int = 128
    alpha: float = 1.0
    alphas: tuple[float, ...] = ()


class LinearMFRouter(_RidgeHeads):
    """Low-rank projection of the query (``svd_``, a fitted ``TruncatedSVD``) and ridge heads."""

    name = "linear_mf"
    config_class = LinearMFConfig
    deployable = True

    def _represent(self, x: np.ndarray, *, fit: bool) -> np.ndarray:
        from sklearn.decomposition import TruncatedSVD

        if fit:
            n, d = x.shape
            # As the reference: at most min(rank, n, d).
            rank = max(1, min(self.config.rank, n, d))
            if rank != self.config.rank:
                log.warning("linear_mf: rank %d clipped to %d (%d training rows, %d features)",
                            self.config.rank, rank, n, d)
            self.svd_ = TruncatedSVD(n_components=rank, random_state=self.config.seed)
            return self.svd_.fit_transform(x)
        return self.svd_.transform(x)

    def _projection(self) -> tuple[np.ndarray, np.ndarray]:
        # TruncatedSVD.transform is x @ components_.T (no centring).
        comp = self.svd_.components_.astype(np.float64)
        return comp.T, np.zeros(comp.shape[0])

    def write_onnx(self, x_sample: np.ndarray, path: Path, *, opset: int, exporter: str) -> str:
        """The fitted ``TruncatedSVD`` converted by skl2onnx (float64), then the ridge heads as a MatMul."""
        from mmroute.export.graph import GraphBuilder, save_model, sklearn_graph

        g = GraphBuilder(x_sample.shape[1], opset=opset)
        svd = sklearn_graph(self.svd_, x_sample.shape[1], opset)
        z = g.embed(svd, {svd.graph.input[0].name: g.x64}, "svd_")[svd.graph.output[0].name]
        coef = np.concatenate([self.perf_coef_, self.cost_coef_], axis=0).T        # (rank, 2M)
        bias = np.concatenate([self.perf_intercept_, self.cost_intercept_])
        y = g.op("Add", g.op("MatMul", z, g.const(coef)), g.const(bias))
        m = self.n_models_
        save_model(g.finish(*g.op("Split", y, g.const([m, m], np.int64), n_out=2, axis=1)), path)
        return "skl2onnx (TruncatedSVD) + onnx ridge heads"
