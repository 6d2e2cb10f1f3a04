"""The router interface (the router contract) and the name -> class registry.

A router is fitted on training features and outcomes and predicts, for every instance and every
model, a performance score and a cost. Decisions (budget rule, trade-off rule), sweeps and metrics
live once in :mod:`mmroute.evaluation`; a router never makes a routing decision itself.

Everything the rest of mmroute needs to know about a router family is declared on its class, in
one place (see :class:`Router`): its name and config, three flags (``deployable``, ``blendable``,
``needs_outcomes``) and its ONNX export (:meth:`Router.onnx_input`, :meth:`Router.write_onnx`).
Training, sweeps, ensembles, export, registration and serving read those, never a router's
private fitted attributes and never a list of names kept somewhere else.

The built-in routers are listed explicitly in :mod:`mmroute.routers.zoo`; :func:`register_router`
adds a router defined anywhere else (a user module) to the same registry.
"""

from __future__ import annotations

import dataclasses
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, TypeVar

import numpy as np

from mmroute.arrays import ArrayLike, Float32Array, FloatArray, IndexArray
from mmroute.constraints import ConstraintSpec, Integral, Interval, Options, Real, Validated
from mmroute.features.types import Features

if TYPE_CHECKING:  # pragma: no cover
    from mmroute.routers.guard import OutOfFold, PerfGuard

__all__ = [
    "Router",
    "RouterConfig",
    "NotFittedError",
    "NotExportableError",
    "register_router",
    "list_routers",
    "create_router",
    "router_class",
]

log = logging.getLogger(__name__)

GUARDS = ("oof", "off")


class NotFittedError(RuntimeError):
    """Raised when ``predict`` is called before ``fit``."""


class NotExportableError(ValueError):
    """The router (or its configuration) has no ONNX export."""


@dataclasses.dataclass
class RouterConfig(Validated):
    """Base config: every router config is a dataclass deriving from this one.

    Fields are checked when the config is built: each class declares what its fields accept in
    ``_parameter_constraints`` (:mod:`mmroute.constraints`), and may add cross-field checks by
    extending ``problems()``; every problem is reported in one ``ValueError``.

    ``guard``: ``"oof"`` fits the never-worse-than-the-best-model guard
    (:mod:`mmroute.routers.guard`) on ``guard_folds``-fold out-of-fold predictions of the
    training rows, which also give the router's validation scores (``validation_``); ``"off"``
    predicts the raw scores. ``guard_z``: the standard errors a deviation from the best training
    model must earn.
    """

    _parameter_constraints: ClassVar[dict[str, list[ConstraintSpec]]] = {
        "seed": [Interval(Integral, 0, None, closed="left")],
        "guard": [Options(GUARDS)],
        "guard_folds": [Interval(Integral, 2, None, closed="left")],
        "guard_z": [Interval(Real, 0, None, closed="left")],
    }

    seed: int = 0
    guard: str = "oof"
    guard_folds: int = 5
    guard_z: float = 1.0

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


class Router(ABC):
    """Base class of all routers: the router contract.

    Subclasses set ``name`` and ``config_class``, keep ``__init__`` to storing the config, learn
    state in attributes ending with ``_``, and implement :meth:`_fit` and :meth:`_predict`.

    Class flags, declared once per family and read everywhere a decision depends on them:

    ``deployable``
        The fitted router exports to one ONNX graph (:meth:`write_onnx`), so a sweep may pick it
        as its best child and the registry may register it. Default False: a router without an
        export is an evaluation baseline (``random``, ``oracle``). Declaring True requires
        overriding :meth:`write_onnx` (checked when the class is defined).
    ``blendable``
        It may be a member of the ``ensemble`` router (default True).
    ``needs_outcomes``
        It reads the actual outcomes at prediction time (the oracle): evaluation passes them as
        ``predict(features, correct=..., cost=...)``; implies not deployable and not blendable.

    ONNX export (used by :func:`mmroute.export.export_router`, which writes to a temporary
    file, checks parity against :meth:`predict` and only then moves the graph into place):

    :meth:`onnx_input`
        ``features -> x``, the graph input, float32 of shape (n_instances, d_in) (default:
        ``features.fused``).
    :meth:`write_onnx`
        ``(x_sample, path, opset=, exporter=) -> backend``: write the graph ``x -> (perf, cost)``
        to ``path`` and name the tool used.

    ``reads`` names the input a router needs: ``"features"`` (query embeddings, every router but
    the probe family) or ``"hidden_states"`` (:class:`~mmroute.routers.probe.ProbeFeatures`: a
    small model's hidden states; those routers run only when a backbone and layer are given).
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type[RouterConfig]] = RouterConfig
    deployable: ClassVar[bool] = False
    blendable: ClassVar[bool] = True
    needs_outcomes: ClassVar[bool] = False
    reads: ClassVar[str] = "features"
    #: Why a router that is not deployable has no export (used in error messages).
    not_deployable_reason: ClassVar[str] = "it declares no ONNX export (deployable = False)"

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if cls.needs_outcomes and (cls.deployable or cls.blendable):
            raise TypeError(f"{cls.__name__}: a router that reads the actual outcomes (needs_outcomes) "
                            "cannot be deployable or blendable; set deployable = blendable = False")
        if cls.deployable and cls.write_onnx is Router.write_onnx:
            raise TypeError(f"{cls.__name__} declares deployable = True but does not implement write_onnx")

    def __init__(self, config: RouterConfig | None = None, **overrides: object) -> None:
        if config is None:
            config = self.config_class()
        elif not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} expects a {self.config_class.__name__}, "
                            f"got {type(config).__name__}")
        if overrides:
            config = _replace_config(config, overrides, self.name)
        self.config = config

    # ------------------------------------------------------------------ API
    def fit(self, features: Features, correct: ArrayLike, cost: ArrayLike, *,
            val_features: Features | None = None, val_correct: ArrayLike | None = None,
            val_cost: ArrayLike | None = None) -> Router:
        """Fit on training rows.

        Parameters
        ----------
        features : Features with n_train rows
        correct : array of shape (n_train, n_models); NaN = missing (masked in the loss)
        cost : array of shape (n_train, n_models); NaN = missing (masked in the loss)
        val_* : optional validation rows (early stopping); routers that need a validation split and
            get none carve one from the training rows themselves, never from test rows.
        """
        if not isinstance(features, Features):
            raise TypeError(f"features must be mmroute.features.Features, got {type(features).__name__}")
        corr = np.asarray(correct, dtype=np.float64)
        cst = np.asarray(cost, dtype=np.float64)
        n = len(features)
        if corr.ndim != 2 or corr.shape[0] != n:
            raise ValueError(f"correct must have shape ({n}, n_models), got {corr.shape}")
        if cst.shape != corr.shape:
            raise ValueError(f"cost must have shape {corr.shape}, got {cst.shape}")
        if n == 0:
            raise ValueError("cannot fit a router on 0 training rows")
        self.n_models_: int = corr.shape[1]
        self.n_features_: int = features.n_features
        self.guard_: PerfGuard | None = None
        self.oof_: OutOfFold | None = None
        self.validation_: dict[str, dict[str, float]] = {}
        self._fit(features, corr, cst, val_features=val_features,
                  val_correct=None if val_correct is None else np.asarray(val_correct, dtype=np.float64),
                  val_cost=None if val_cost is None else np.asarray(val_cost, dtype=np.float64))
        if self.config.guard == "oof" and not self.needs_outcomes:
            self._fit_guard(features, corr, cst)
        return self

    def _fit_guard(self, features: Features, correct: FloatArray, cost: FloatArray) -> None:
        """Out-of-fold predictions of the training rows -> the guard and the validation scores."""
        from mmroute.routers.guard import OutOfFold, fit_guard, oof_scores

        oof = self._oof_predictions(features, correct, cost)
        if oof is None:
            return
        perf, pc = oof
        self.validation_raw_ = oof_scores(perf, pc, correct, cost)
        guard = fit_guard(perf, pc, correct, cost, z=self.config.guard_z)
        self.guard_ = guard
        self.validation_ = oof_scores(guard.apply(perf), pc, correct, cost)
        self.oof_ = OutOfFold.sample(perf, pc, correct, cost, seed=self.config.seed)

    def _oof_predictions(self, features: Features, correct: FloatArray, cost: FloatArray
                         ) -> tuple[FloatArray, FloatArray] | None:
        """``(perf, cost)`` (n_train, M) predicted for each training row by a copy of this router
        fitted without it (``guard_folds``-fold, seeded), or None when there are too few rows.

        Routers that compute out-of-fold predictions anyway (``ensemble``, ``auto``) override this.
        The copies are refitted with the hyper-parameters this router selected on all rows
        (:meth:`selected_options`, e.g. ``knn``'s ``k``).
        """
        from sklearn.model_selection import KFold

        n = len(features)
        folds = int(self.config.guard_folds)
        if n < 2 * folds:
            log.info("%s: %d training rows are too few for a %d-fold guard; no guard", self.name, n, folds)
            return None
        # selected_options() holds values of this config's own fields, checked again by replace().
        copy = type(self)(dataclasses.replace(self.config, guard="off",
                                              **self.selected_options()))  # type: ignore[arg-type]
        split = list(KFold(n_splits=folds, shuffle=True, random_state=self.config.seed).split(np.arange(n)))
        perf, pc, _ = copy.cross_val_predict(features, correct, cost, split)
        return perf, pc

    def cross_val_predict(self, features: Features, correct: FloatArray, cost: FloatArray,
                          folds: Sequence[tuple[IndexArray, IndexArray]]
                          ) -> tuple[FloatArray, FloatArray, Router | None]:
        """Out-of-fold predictions of the rows given: for each ``(train, held_out)`` index pair in
        ``folds``, a copy of this router's configuration fitted on ``train`` predicts ``held_out``.

        Returns ``(perf, cost, fitted)``, arrays (n, M), and ``fitted`` a copy fitted on all rows
        when the computation produced one as a by-product (routers that compute out-of-fold
        predictions inside their own fit, e.g. ``ensemble``, use their own folds), else None.
        """
        perf = np.zeros(np.shape(correct))
        pc = np.zeros(np.shape(correct))
        for tr, va in folds:
            member = type(self)(self.config).fit(features.subset(tr), correct[tr], cost[tr])
            perf[va], pc[va] = member.predict(features.subset(va))
        return perf, pc, None

    def predict(self, features: Features, *, correct: FloatArray | None = None,
                cost: FloatArray | None = None) -> tuple[FloatArray, FloatArray]:
        """Predict ``(perf, cost)``, each of shape (n_instances, n_models), float64."""
        self.check_fitted()
        if not isinstance(features, Features):
            raise TypeError(f"features must be mmroute.features.Features, got {type(features).__name__}")
        if features.n_features != self.n_features_:
            raise ValueError(f"{self.name}: fitted on {self.n_features_} features, got {features.n_features}")
        if self.needs_outcomes and (correct is None or cost is None):
            raise ValueError(f"router {self.name!r} reads the actual outcomes: pass correct= and cost=")
        perf, pc = self._predict(features, correct=correct, cost=cost)
        perf = self.apply_guard(np.asarray(perf, dtype=np.float64))
        pc = np.asarray(pc, dtype=np.float64)
        expected = (len(features), self.n_models_)
        if perf.shape != expected or pc.shape != expected:
            raise RuntimeError(f"{self.name}: predicted shapes {perf.shape}, {pc.shape}; expected {expected}")
        return perf, pc

    def apply_guard(self, perf: FloatArray) -> FloatArray:
        """``perf`` (n, M) through the fitted never-worse guard (identity when there is none).

        :meth:`predict` applies it; an :meth:`export_reference` override must apply it too, since
        every exported graph ends with the guard."""
        guard = getattr(self, "guard_", None)
        return perf if guard is None else guard.apply(perf)

    def check_fitted(self) -> None:
        if not hasattr(self, "n_models_"):
            raise NotFittedError(f"router {self.name!r} is not fitted yet: call fit() first")

    # ---------------------------------------------------------- to override
    @abstractmethod
    def _fit(self, features: Features, correct: FloatArray, cost: FloatArray, *,
             val_features: Features | None, val_correct: FloatArray | None,
             val_cost: FloatArray | None) -> None: ...

    @abstractmethod
    def _predict(self, features: Features, *, correct: FloatArray | None,
                 cost: FloatArray | None) -> tuple[ArrayLike, ArrayLike]: ...

    def get_params(self) -> dict[str, object]:
        """Flat config, for logging."""
        return self.config.to_dict()

    def same_predictions_as(self, features: Features) -> Router | None:
        """An unfitted router of another family that, fitted on the same rows of ``features``,
        predicts exactly what this one would (``kmeans_adaptive`` without an image modality is
        ``kmeans``), or None. ``auto`` cross-validates such a pair once. Default: None."""
        return None

    def selected_options(self) -> dict[str, object]:
        """Config options that refit this router with the hyper-parameters it selected on its
        training rows (e.g. ``knn``'s leave-one-out ``k``); ensembles use them for their
        out-of-fold refits. Default: none."""
        self.check_fitted()
        return {}

    # ---------------------------------------------------------------- ONNX export
    def onnx_input(self, features: Features) -> Float32Array:
        """The exported graph's input for ``features``: float32 of shape (n_instances, d_in).

        Default: the fused vector. Routers that read the separate modalities override it.
        """
        self.check_fitted()
        return np.ascontiguousarray(features.fused, dtype=np.float32)

    def export_reference(self, features: Features) -> tuple[FloatArray, FloatArray]:
        """What the exported graph must reproduce on ``features`` (the export's parity check).

        Default: :meth:`predict`. A router whose native search is approximate where its graph is
        exact (``knn`` with an HNSW index) returns the exact computation here.
        """
        return self.predict(features)

    def write_onnx(self, x_sample: Float32Array, path: Path, *, opset: int, exporter: str) -> str:
        """Write this fitted router as one ONNX graph ``x -> (perf, cost)`` to ``path``.

        Parameters
        ----------
        x_sample : float32 array of shape (n, d_in), :meth:`onnx_input` of held-out rows (to trace
            torch networks and to know the input width).
        path : the file to write.
        opset : ONNX opset.
        exporter : torch routers only: "auto", "dynamo" or "torchscript".

        Returns
        -------
        str naming the backend used (e.g. "skl2onnx (KMeans) + onnx lookup"), recorded with the run.
        """
        raise NotExportableError(f"router {self.name!r} is not exportable to ONNX: {self.not_deployable_reason}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"


# ------------------------------------------------------------------ registry
_REGISTRY: dict[str, type[Router]] = {}
R = TypeVar("R", bound=type[Router])


def register_router(cls: R) -> R:
    """Class decorator adding a router defined outside mmroute (a user module) to the registry
    under ``cls.name``; refuses a name that is already taken (built-in routers included)."""
    name = getattr(cls, "name", "")
    if not isinstance(cls, type) or not issubclass(cls, Router):
        raise TypeError(f"register_router expects a Router subclass, got {cls!r}")
    if not name:
        raise ValueError(f"{cls.__name__} has no name")
    taken = _builtin().get(name) or _REGISTRY.get(name)
    if taken is not None and taken is not cls:
        raise ValueError(f"router name {name!r} is already registered by {taken.__name__}")
    _REGISTRY[name] = cls
    return cls


def _builtin() -> dict[str, type[Router]]:
    # The zoo is imported on first use so that `import mmroute` stays cheap.
    from mmroute.routers.zoo import BUILTIN_ROUTERS

    return {cls.name: cls for cls in BUILTIN_ROUTERS}


def _all() -> dict[str, type[Router]]:
    return {**_builtin(), **_REGISTRY}


def list_routers(reads: str | None = "features") -> list[str]:
    """Names of the routers (the built-in zoo and the registered ones) that read ``reads``
    (None: all of them), sorted.

    The default lists the routers that run on query features; ``"hidden_states"`` the probe
    routers (:mod:`mmroute.routers.probe`), which need a backbone's hidden states.
    """
    return sorted(n for n, cls in _all().items() if reads is None or cls.reads == reads)


def router_class(name: str) -> type[Router]:
    known = _all()
    try:
        return known[name]
    except KeyError:
        raise KeyError(f"unknown router {name!r}; valid names: {', '.join(sorted(known))}") from None


def create_router(name: str, **overrides: object) -> Router:
    """Instantiate a registered router with its default config updated by ``overrides``."""
    cls = router_class(name)
    return cls(cls.config_class(), **overrides)


def _replace_config(config: RouterConfig, overrides: dict[str, object], name: str) -> RouterConfig:
    fields = {f.name: f for f in dataclasses.fields(config)}
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for router {name!r}; valid: {sorted(fields)}")
    # The values are checked by the config's declared constraints when replace() rebuilds it.
    return dataclasses.replace(config, **overrides)  # type: ignore[arg-type]
