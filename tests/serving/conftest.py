"""A registered router in a fresh sqlite registry, with ``production`` pointing at it."""

from __future__ import annotations

import numpy as np
import pytest

from mmroute.export.graph import affine_graph, save_model
from mmroute.features.types import Features
from mmroute.routers.base import Router, RouterConfig

MODELS = ("cheap", "mid", "strong")
WIDTH = 6


class ServedRouter(Router):
    """A least-squares affine router: exported as a hand-built graph, so no training is needed."""

    name = "_test_served"
    config_class = RouterConfig
    deployable = True

    def _fit(self, features, correct, cost, **_):
        x = np.c_[features.fused, np.ones(len(features))]
        coef, *_ = np.linalg.lstsq(x, np.c_[correct, cost], rcond=None)
        self.w_, self.b_ = coef[:-1], coef[-1]

    def _predict(self, features, **_):
        out = features.fused.astype(np.float64) @ self.w_ + self.b_
        return out[:, :self.n_models_], out[:, self.n_models_:]

    def write_onnx(self, x_sample, path, *, opset, exporter):
        save_model(affine_graph(self.w_, self.b_, opset=opset), path)
        return "onnx.helper"


@pytest.fixture(scope="module")
def production_model(tmp_path_factory):
    """(tracking URI, registered model name, fitted router, held-out Features); the router routes
    between MODELS and reads WIDTH features."""
    import mlflow
    from mlflow import MlflowClient

    from mmroute.export.pyfunc import log_router_model

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, WIDTH)).astype(np.float32)
    correct = (x[:, :3] + np.array([-1.0, 0.0, 1.0]) > 0).astype(float)
    cost = np.tile([1.0, 3.0, 9.0], (200, 1)) * np.exp(0.3 * x[:, 3:6])
    router = ServedRouter().fit(Features.from_array(x[:150]), correct[:150], cost[:150])
    held_out = Features.from_array(x[150:])

    root = tmp_path_factory.mktemp("serving-store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    name = "served-router"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        experiment = mlflow.create_experiment("serving", artifact_location=(root / "mlartifacts").as_uri())
        with mlflow.start_run(experiment_id=experiment):
            info, _ = log_router_model(router, held_out, MODELS, registered_model_name=name)
        MlflowClient().set_registered_model_alias(name, "production", str(info.registered_model_version))
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    return uri, name, router, held_out
