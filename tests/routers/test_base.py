import dataclasses

import numpy as np
import pytest

from mmroute.features.types import Features
from mmroute.routers import base
from mmroute.routers.base import NotFittedError, Router, RouterConfig, register_router


@dataclasses.dataclass
class _MeanConfig(RouterConfig):
    shrink: float = 0.0


class _MeanRouter(Router):
    name = "_test_mean"
    config_class = _MeanConfig

    def _fit(self, features, correct, cost, **_):
        self.perf_ = np.nanmean(correct, axis=0) * (1 - self.config.shrink)
        self.cost_ = np.nanmean(cost, axis=0)

    def _predict(self, features, **_):
        n = len(features)
        return np.tile(self.perf_, (n, 1)), np.tile(self.cost_, (n, 1))


def test_fit_predict_contract():
    r = _MeanRouter(shrink=0.5)
    assert r.config.shrink == 0.5
    x = Features(fused=np.zeros((3, 2)))
    with pytest.raises(NotFittedError):
        r.predict(x)
    correct = np.array([[1, 0], [np.nan, 1], [1, 1]], float)
    assert r.fit(x, correct, np.ones((3, 2))) is r
    perf, cost = r.predict(x)
    assert perf.shape == (3, 2) and perf[0, 0] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="fitted on 2 features, got 4"):
        r.predict(Features(fused=np.zeros((1, 4))))
    with pytest.raises(ValueError, match=r"correct must have shape \(3, n_models\)"):
        r.fit(x, np.ones((2, 2)), np.ones((2, 2)))


def test_unknown_option_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['depth'\].*"
                                         r"valid: \['guard', 'guard_folds', 'guard_z', 'seed', 'shrink'\]"):
        _MeanRouter(depth=3)


def test_registry_refuses_duplicates(monkeypatch):
    # Work on a copy of the registry so the test router never shows up in list_routers() elsewhere.
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    register_router(_MeanRouter)
    register_router(_MeanRouter)  # same class again is fine

    class Other(_MeanRouter):
        pass

    with pytest.raises(ValueError, match="already registered"):
        register_router(Other)
