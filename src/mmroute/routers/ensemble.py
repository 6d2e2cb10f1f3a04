"""``ensemble``: a convex blend of registered routers, weighted on the training rows only.

Why. On noisy per-query outcomes no single smoother wins: a global linear model (``linear``)
and a local average (``knn``) make different errors, and their average is better calibrated than
either. Everything the blend learns comes from the training rows:

1. each member's own regularisation is chosen inside its fit on the rows it is given
   (``linear``: per-model ridge penalty by leave-one-out over ``alphas``; ``knn``: ``k`` by
   leave-one-out Brier over ``ks``);
2. out-of-fold predictions of every member on the training rows (``n_folds``-fold, seeded;
   a member exposing ``selected_options()`` is refitted in the folds with the hyper-parameters
   it selected on all training rows, e.g. ``knn``'s ``k``) give the blend weights: non-negative,
   summing to one, minimising the squared error over the observed outcomes (performance) and costs
   (cost), separately;
3. prediction is the weighted sum of the members fitted on all training rows.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mmroute.constraints import InstanceOf, Integral, Interval, SequenceOf
from mmroute.features.types import Features
from mmroute.routers.base import NotExportableError, Router, RouterConfig, create_router, list_routers, router_class
from mmroute.routers.regression import RIDGE_CONSTRAINTS

__all__ = ["EnsembleConfig", "EnsembleRouter", "simplex_least_squares", "write_blend_onnx"]

log = logging.getLogger(__name__)


def simplex_least_squares(preds: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Weights w >= 0, sum(w) = 1 minimising ||preds @ w - target||^2.

    preds : (n, p) one column per member; target : (n,). Returns (p,).
    """
    from scipy.optimize import minimize

    p = preds.shape[1]
    if p == 1:
        return np.ones(1)
    # Scale so the optimiser's tolerances mean the same whatever the units (costs are ~1e-3).
    scale = float(np.abs(target).mean()) or 1.0
    a, b = preds / scale, target / scale
    gram, lin = a.T @ a / len(b), a.T @ b / len(b)
    res = minimize(lambda w: w @ gram @ w - 2 * lin @ w, np.full(p, 1.0 / p),
                   jac=lambda w: 2 * (gram @ w - lin), bounds=[(0.0, 1.0)] * p,
                   constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones(p)}],
                   method="SLSQP")
    w = np.clip(res.x, 0.0, None)
    return w / w.sum() if w.sum() > 0 else np.full(p, 1.0 / p)


@dataclasses.dataclass
class EnsembleConfig(RouterConfig):
    """Blend of ``members`` (registered router names) with weights from ``n_folds`` out-of-fold
    predictions on the training rows. ``alphas`` / ``ks`` are handed to members whose config has
    that field (their own leave-one-out selection); ``seed`` to all members and the folds."""

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "members": [SequenceOf(InstanceOf(str, "router name"), min_len=1)],
        "alphas": RIDGE_CONSTRAINTS["alphas"],
        "ks": [SequenceOf(Interval(Integral, 1, None, closed="left"))],
        "n_folds": [Interval(Integral, 2, None, closed="left")],
    }

    members: tuple[str, ...] = ("linear", "knn")
    alphas: tuple[float, ...] = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)
    ks: tuple[int, ...] = (25, 50, 100, 200, 400)
    n_folds: int = 5

    def problems(self) -> list[str]:
        out = super().problems()
        # Which routers may be blended is what their classes declare (``blendable``).
        valid = [m for m in list_routers() if router_class(m).blendable]
        bad = [m for m in self.members if m not in valid]
        if bad:
            out.append(f"members {bad} are not blendable routers; valid: {valid}")
        return out


class EnsembleRouter(Router):
    """Convex blend of member routers.

    Fitted: ``members_`` (fitted routers, in ``config.members`` order), ``perf_weights_`` and
    ``cost_weights_`` (n_members,), ``oof_perf_mse_`` (member name -> out-of-fold error, and
    ``"blend"``).
    """

    name = "ensemble"
    config_class = EnsembleConfig
    deployable = True   # when every member is (see write_onnx)
    blendable = False

    def _member(self, name: str, selected: dict[str, Any] | None = None) -> Router:
        fields = {f.name for f in dataclasses.fields(router_class(name).config_class)}
        # Members predict raw scores: the blend's own guard (Router base) acts once, on the blend.
        options: dict[str, Any] = {"seed": self.config.seed, "guard": "off"}
        for key in ("alphas", "ks"):
            if key in fields:
                options[key] = getattr(self.config, key)
        options.update(selected or {})
        return create_router(name, **options)

    def _fit(self, features, correct, cost, **_):
        from sklearn.model_selection import KFold

        c = self.config
        n, m = correct.shape
        n_folds = min(c.n_folds, n)
        if n_folds < 2:
            raise ValueError(f"ensemble needs at least 2 training rows for its folds, got {n}")
        self.members_ = [self._member(name).fit(features, correct, cost) for name in c.members]
        selected = [member.selected_options() for member in self.members_]
        oof_perf = np.zeros((len(c.members), n, m))
        oof_cost = np.zeros((len(c.members), n, m))
        folds = KFold(n_splits=n_folds, shuffle=True, random_state=c.seed).split(np.arange(n))
        for fold, (tr, va) in enumerate(folds):
            for i, name in enumerate(c.members):
                member = self._member(name, selected[i]).fit(features.subset(tr), correct[tr], cost[tr])
                oof_perf[i, va], oof_cost[i, va] = member.predict(features.subset(va))
            log.debug("ensemble: fold %d/%d done", fold + 1, n_folds)
        self.perf_weights_ = _blend_weights(oof_perf, correct)
        self.cost_weights_ = _blend_weights(oof_cost, cost)
        observed = ~np.isnan(correct)
        blend = np.tensordot(self.perf_weights_, oof_perf, axes=1)
        self._oof = (blend, np.tensordot(self.cost_weights_, oof_cost, axes=1))
        self.oof_perf_mse_ = {name: float(np.mean((oof_perf[i] - correct)[observed] ** 2))
                              for i, name in enumerate(c.members)}
        self.oof_perf_mse_["blend"] = float(np.mean((blend - correct)[observed] ** 2))
        log.info("ensemble: perf weights %s, cost weights %s, out-of-fold perf MSE %s",
                 {k: round(float(w), 3) for k, w in zip(c.members, self.perf_weights_)},
                 {k: round(float(w), 3) for k, w in zip(c.members, self.cost_weights_)},
                 {k: round(v, 5) for k, v in self.oof_perf_mse_.items()})

    def _oof_predictions(self, features, correct, cost):
        # The blend of the members' out-of-fold predictions (the weights saw all of them: a slightly
        # optimistic validation, but no extra fits).
        oof, self._oof = self._oof, None
        return oof

    def cross_val_predict(self, features, correct, cost, folds):
        # One fit gives out-of-fold predictions on its own n_folds folds, and the fitted router.
        fitted = type(self)(self.config).fit(features, correct, cost)
        oof = fitted._oof if fitted._oof is not None else fitted._oof_predictions(features, correct, cost)
        fitted._oof = None
        return oof[0], oof[1], fitted

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_oof", None)  # training-row predictions: not part of the fitted router
        return state

    def _predict(self, features: Features, **_):
        return self._blend([member.predict(features) for member in self.members_])

    def _blend(self, preds):
        perf = sum(w * p for w, (p, _) in zip(self.perf_weights_, preds))
        cost = sum(w * q for w, (_, q) in zip(self.cost_weights_, preds))
        return perf, cost

    def export_reference(self, features: Features):
        """The blend of the members' export references (a knn member's exact neighbours)."""
        self.check_fitted()
        perf, cost = self._blend([member.export_reference(features) for member in self.members_])
        return self.apply_guard(np.asarray(perf, dtype=np.float64)), cost

    def onnx_input(self, features: Features) -> np.ndarray:
        """The fused vector, which every member must read as its own graph input: only blends of
        fused-input routers export as one graph."""
        x = super().onnx_input(features)
        for member in self.members_:
            own = member.onnx_input(features)
            if own.shape != x.shape or not np.array_equal(own, x):
                raise NotExportableError(
                    f"ensemble member {member.name!r} reads more than the fused features; only blends of "
                    "fused-input routers (linear, linear_mf, knn, kmeans) export as one graph")
        return x

    def write_onnx(self, x_sample: np.ndarray, path: Path, *, opset: int, exporter: str) -> str:
        """The members' graphs spliced into one, blended with the fitted weights."""
        return write_blend_onnx(self.members_, self.perf_weights_, self.cost_weights_, x_sample, path,
                                opset=opset, exporter=exporter, what="ensemble")


def write_blend_onnx(members: list[Router], perf_weights: np.ndarray, cost_weights: np.ndarray,
                     x_sample: np.ndarray, path: Path, *, opset: int, exporter: str, what: str) -> str:
    """Fitted ``members`` reading the same graph input, spliced into one graph and blended:
    ``perf = sum_i perf_weights[i] * perf_i`` (cost likewise). Returns the backend description."""
    import onnx

    from mmroute.export.graph import GraphBuilder, save_model

    g = GraphBuilder(x_sample.shape[1], opset=opset)
    perf_terms, cost_terms, backends = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i, member in enumerate(members):
            member_path = Path(tmp) / f"member{i}.onnx"
            backends.append(member.write_onnx(x_sample, member_path, opset=opset, exporter=exporter))
            model = onnx.load(str(member_path))
            out = g.embed(model, {model.graph.input[0].name: "x"}, f"m{i}_")
            perf_terms.append(g.op("Mul", g.op("Cast", out["perf"], to=onnx.TensorProto.DOUBLE),
                                   g.const(perf_weights[i])))
            cost_terms.append(g.op("Mul", g.op("Cast", out["cost"], to=onnx.TensorProto.DOUBLE),
                                   g.const(cost_weights[i])))
    perf = perf_terms[0] if len(perf_terms) == 1 else g.op("Sum", *perf_terms)
    cost = cost_terms[0] if len(cost_terms) == 1 else g.op("Sum", *cost_terms)
    save_model(g.finish(perf, cost), path)
    return f"{what} of " + ", ".join(backends)


def _blend_weights(oof: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Simplex weights of the members' out-of-fold predictions (p, n, M) against ``target`` (n, M)."""
    observed = ~np.isnan(target)
    return simplex_least_squares(oof[:, observed].T, target[observed])
