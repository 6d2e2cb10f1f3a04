"""The router interface and the name -> class registry.

A router is fitted on training features and outcomes and predicts, for every instance and every
model, a performance score and a cost. Decisions (budget rule, trade-off rule), sweeps and metrics
live once in :mod:`mmroute.evaluation`; a router never makes a routing decision itself.
"""

from __future__ import annotations

import dataclasses
import logging
from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar, TypeVar

import numpy as np

from mmroute.features.types import Features

__all__ = [
    "Router",
    "RouterConfig",
    "NotFittedError",
    "register_router",
    "list_routers",
    "create_router",
    "router_class",
]

log = logging.getLogger(__name__)


class NotFittedError(RuntimeError):
    """Raised when ``predict`` is called before ``fit``."""


@dataclasses.dataclass
class RouterConfig:
    """Base config: every router config is a dataclass deriving from this one."""

    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Router(ABC):
    """Base class of all routers.

    Subclasses set ``name`` and ``config_class``, keep ``__init__`` to storing the config, learn
    state in attributes ending with ``_``, and implement :meth:`_fit` and :meth:`_predict`.

    ``needs_outcomes = True`` marks routers that read the actual outcomes at prediction time
    (the oracle); evaluation passes them as ``predict(features, correct=..., cost=...)``.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type[RouterConfig]] = RouterConfig
    needs_outcomes: ClassVar[bool] = False

    def __init__(self, config: RouterConfig | None = None, **overrides: Any) -> None:
        if config is None:
            config = self.config_class()
        elif not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} expects a {self.config_class.__name__}, "
                            f"got {type(config).__name__}")
        if overrides:
            config = _replace_config(config, overrides, self.name)
        self.config = config

    # ------------------------------------------------------------------ API
    def fit(self, features: Features, correct: np.ndarray, cost: np.ndarray, *,
            val_features: Features | None = None, val_correct: np.ndarray | None = None,
            val_cost: np.ndarray | None = None) -> "Router":
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
        correct = np.asarray(correct, dtype=np.float64)
        cost = np.asarray(cost, dtype=np.float64)
        n = len(features)
        if correct.ndim != 2 or correct.shape[0] != n:
            raise ValueError(f"correct must have shape ({n}, n_models), got {correct.shape}")
        if cost.shape != correct.shape:
            raise ValueError(f"cost must have shape {correct.shape}, got {cost.shape}")
        if n == 0:
            raise ValueError("cannot fit a router on 0 training rows")
        self.n_models_ = correct.shape[1]
        self.n_features_ = features.n_features
        self._fit(features, correct, cost, val_features=val_features,
                  val_correct=None if val_correct is None else np.asarray(val_correct, dtype=np.float64),
                  val_cost=None if val_cost is None else np.asarray(val_cost, dtype=np.float64))
        return self

    def predict(self, features: Features, *, correct: np.ndarray | None = None,
                cost: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Predict ``(perf, cost)``, each of shape (n_instances, n_models), float64."""
        self.check_fitted()
        if not isinstance(features, Features):
            raise TypeError(f"features must be mmroute.features.Features, got {type(features).__name__}")
        if features.n_features != self.n_features_:
            raise ValueError(f"{self.name}: fitted on {self.n_features_} features, got {features.n_features}")
        if self.needs_outcomes and (correct is None or cost is None):
            raise ValueError(f"router {self.name!r} reads the actual outcomes: pass correct= and cost=")
        perf, pc = self._predict(features, correct=correct, cost=cost)
        perf = np.asarray(perf, dtype=np.float64)
        pc = np.asarray(pc, dtype=np.float64)
        expected = (len(features), self.n_models_)
        if perf.shape != expected or pc.shape != expected:
            raise RuntimeError(f"{self.name}: predicted shapes {perf.shape}, {pc.shape}; expected {expected}")
        return perf, pc

    def check_fitted(self) -> None:
        if not hasattr(self, "n_models_"):
            raise NotFittedError(f"router {self.name!r} is not fitted yet: call fit() first")

    # ---------------------------------------------------------- to override
    @abstractmethod
    def _fit(self, features: Features, correct: np.ndarray, cost: np.ndarray, *,
             val_features: Features | None, val_correct: np.ndarray | None,
             val_cost: np.ndarray | None) -> None: ...

    @abstractmethod
    def _predict(self, features: Features, *, correct: np.ndarray | None,
                 cost: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]: ...

    def get_params(self) -> dict[str, Any]:
        """Flat config, for logging."""
        return self.config.to_dict()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"


# ------------------------------------------------------------------ registry
_REGISTRY: dict[str, type[Router]] = {}
R = TypeVar("R", bound=type[Router])


def register_router(cls: R) -> R:
    """Class decorator adding a router to the registry under ``cls.name``; refuses duplicates."""
    name = getattr(cls, "name", "")
    if not name:
        raise ValueError(f"{cls.__name__} has no name")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"router name {name!r} is already registered by {_REGISTRY[name].__name__}")
    _REGISTRY[name] = cls
    return cls


def _ensure_builtin() -> None:
    # Importing the families registers them; done lazily so `import mmroute` stays cheap.
    import mmroute.routers.zoo  # noqa: F401


def list_routers() -> list[str]:
    """Names of all registered routers, sorted."""
    _ensure_builtin()
    return sorted(_REGISTRY)


def router_class(name: str) -> type[Router]:
    _ensure_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown router {name!r}; valid names: {', '.join(sorted(_REGISTRY))}") from None


def create_router(name: str, **overrides: Any) -> Router:
    """Instantiate a registered router with its default config updated by ``overrides``."""
    cls = router_class(name)
    return cls(cls.config_class(), **overrides)


def _replace_config(config: RouterConfig, overrides: dict[str, Any], name: str) -> RouterConfig:
    fields = {f.name: f for f in dataclasses.fields(config)}
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for router {name!r}; valid: {sorted(fields)}")
    return dataclasses.replace(config, **overrides)


Factory = Callable[..., Router]
