"""A real sqlite-backed tracking store and registry with a small logged sweep, shared per module.

The routers here are least-squares affine maps exported with a hand-built ONNX graph, so the
registry tests exercise registration, gating and aliases without training a network.
"""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import pytest

from mmroute.data.table import OutcomeTable
from mmroute.export.graph import affine_graph, save_model
from mmroute.features.types import Features
from mmroute.routers.base import Router, RouterConfig

MODELS = ("cheap", "mid", "strong")


@dataclasses.dataclass
class AffineConfig(RouterConfig):
    signal: float = 1.0  # scales the learned per-query performance signal; 0 = per-model means only


class AffineRouter(Router):
    name = "_test_affine"
    config_class = AffineConfig
    deployable = True

    def _fit(self, features, correct, cost, **_):
        x = np.c_[features.fused, np.ones(len(features))].astype(np.float64)
        coef, *_ = np.linalg.lstsq(x, np.c_[np.nan_to_num(correct), np.nan_to_num(cost)], rcond=None)
        m = correct.shape[1]
        coef[:-1, :m] *= self.config.signal
        self.w_, self.b_ = coef[:-1], coef[-1]

    def _predict(self, features, **_):
        out = features.fused.astype(np.float64) @ self.w_ + self.b_
        m = self.n_models_
        return out[:, :m], out[:, m:]

    def write_onnx(self, x_sample, path, *, opset, exporter):
        save_model(affine_graph(self.w_, self.b_, opset=opset), path)
        return "onnx.helper"


def make_split(n=400, d=6, seed=0):
    """(train Features, train table, test Features, test table) with a strong, learnable signal."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    skill = x @ rng.normal(size=(d, len(MODELS)))
    correct = (skill + np.array([-1.0, 0.0, 1.0]) + rng.normal(scale=0.3, size=skill.shape) > 0).astype(float)
    cost = np.array([1.0, 3.0, 9.0]) * np.exp(rng.normal(scale=0.1, size=skill.shape))
    table = OutcomeTable(ids=[f"q{i}" for i in range(n)], datasets=["synthetic"] * n,
                         questions=[f"question {i}" for i in range(n)], models=MODELS,
                         correct=correct, cost=cost)
    train, test = np.arange(n // 2), np.arange(n // 2, n)
    features = Features.from_array(x)
    return features.subset(train), table.subset(train), features.subset(test), table.subset(test)


@contextlib.contextmanager
def using(uri):
    """Point MLflow's fluent API at ``uri`` for the duration of the block only."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    """The tracking URI of a fresh sqlite store (artifacts beside it), shared by these tests."""
    import mlflow

    root = tmp_path_factory.mktemp("registry-store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with using(uri):
        mlflow.create_experiment("registry-tests", artifact_location=(root / "mlartifacts").as_uri())
    return uri


@pytest.fixture(autouse=True)
def _use_store(request, monkeypatch):
    if "store" not in request.fixturenames:
        yield
        return
    uri = request.getfixturevalue("store")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with using(uri):
        yield


@pytest.fixture(scope="session")
def sweep(store, tmp_path_factory):
    """A parent run with children: a good and a bad affine router (each logging its ONNX model
    and evaluation table) and an oracle child with the best metric but nothing deployable."""
    import mlflow

    from mmroute.evaluation import evaluate_predictions
    from mmroute.export.pyfunc import log_router_model
    from mmroute.registry import save_eval_table

    train_f, train_t, test_f, test_t = make_split()
    eval_path = save_eval_table(tmp_path_factory.mktemp("eval") / "eval_table.npz", test_f, test_t)
    children = {}
    with using(store):
        experiment = mlflow.get_experiment_by_name("registry-tests").experiment_id
        parent = mlflow.start_run(run_name="sweep", experiment_id=experiment)
        for label, signal in (("good", 1.0), ("bad", 0.0)):
            with mlflow.start_run(run_name=label, nested=True, experiment_id=experiment) as child:
                router = AffineRouter(signal=signal).fit(train_f, train_t.correct, train_t.cost)
                perf, cost = router.predict(test_f)
                metrics = evaluate_predictions(perf, cost, test_t.correct, test_t.cost).metrics
                train_perf, train_cost = router.predict(train_f)  # stands in for the sweep's validation rows
                val = evaluate_predictions(train_perf, train_cost, train_t.correct, train_t.cost).metrics
                mlflow.log_params({"router.name": router.name, "data.hash": test_t.content_hash()})
                mlflow.log_metrics({"budget/nAUC": metrics["nAUC"], "budget/Ps": metrics["Ps"],
                                    "val/budget/nAUC": val["nAUC"], "val/budget/Ps": val["Ps"]})
                log_router_model(router, test_f.subset(np.arange(50)), MODELS, check_features=test_f)
                mlflow.log_artifact(str(eval_path), artifact_path="eval")
                children[label] = child.info.run_id
        with mlflow.start_run(run_name="oracle", nested=True, experiment_id=experiment) as oracle:
            mlflow.log_params({"router.name": "oracle"})
            mlflow.log_metrics({"budget/nAUC": 0.999, "val/budget/nAUC": 0.999})
            children["oracle"] = oracle.info.run_id
        mlflow.end_run()
    return {"parent": parent.info.run_id, **children, "eval_table": eval_path}


@pytest.fixture(scope="session")
def registry_helpers():
    """``(AffineRouter, make_split, using)`` for test modules (``conftest`` is not importable by name
    when several test folders are collected together)."""
    return AffineRouter, make_split, using
