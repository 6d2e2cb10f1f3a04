"""Adding a router is one new module: it is listed, swept, exported with parity, registered and served.

The router below lives in a module written by the test (as a user would write ``my_router.py``);
nothing else in mmroute is touched. See ``docs/adding-a-router.md``.
"""

from __future__ import annotations

import importlib
import json
import sys
import textwrap

import numpy as np
import pytest

from mlflow_store import _fresh_mlflow_state, _template_store  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow

MODULE = "my_router"
SOURCE = textwrap.dedent('''
    """A least-squares router: per model, performance and cost are affine in the fused features."""

    import dataclasses

    import numpy as np

    from mmroute.routers import Router, RouterConfig, register_router


    @dataclasses.dataclass
    class LeastSquaresConfig(RouterConfig):
        ridge: float = 1e-3


    @register_router
    class LeastSquaresRouter(Router):
        name = "least_squares"
        config_class = LeastSquaresConfig
        deployable = True

        def _fit(self, features, correct, cost, **_):
            x = np.c_[features.fused, np.ones(len(features))].astype(np.float64)
            y = np.c_[correct, cost]
            y = np.where(np.isnan(y), np.nanmean(y, axis=0), y)  # missing outcomes: column means
            gram = x.T @ x + self.config.ridge * np.eye(x.shape[1])
            coef = np.linalg.solve(gram, x.T @ y)
            self.weight_, self.bias_ = coef[:-1], coef[-1]

        def _predict(self, features, **_):
            out = features.fused.astype(np.float64) @ self.weight_ + self.bias_
            return out[:, :self.n_models_], out[:, self.n_models_:]

        def write_onnx(self, x_sample, path, *, opset, exporter):
            from mmroute.export.graph import affine_graph, save_model

            save_model(affine_graph(self.weight_, self.bias_, opset=opset), path)
            return "onnx (affine map)"
''')


@pytest.fixture
def user_router(tmp_path, monkeypatch):
    """Import the user's module (it registers its router); undo the registration afterwards."""
    import mmroute.routers.base as base

    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    (tmp_path / f"{MODULE}.py").write_text(SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(MODULE)
    yield module.LeastSquaresRouter
    sys.modules.pop(MODULE, None)


def test_a_router_in_one_module_is_listed_swept_exported_registered_and_served(user_router, tmp_path):
    import mlflow

    from mmroute.export import export_router, router_input
    from mmroute.export.pyfunc import input_frame
    from mmroute.pipeline import PipelineConfig, register_run, run_sweep
    from mmroute.pipeline.routers import load_logged_router
    from mmroute.registry import load_eval_table
    from mmroute.routers import create_router, list_routers

    # listed, and buildable by name with typed options
    assert "least_squares" in list_routers()
    assert create_router("least_squares", ridge=0.5).config.ridge == 0.5

    # swept beside a baseline: the best child is the deployable one
    cfg = PipelineConfig(data="synthetic:n=90,seed=3", routers=("least_squares", "random"),
                         router_options=("least_squares.ridge=0.01",), experiment="adding")
    summary = run_sweep(cfg)
    assert summary["failed"] == {} and summary["best_router"] == "least_squares"
    child = mlflow.MlflowClient().get_run(summary["children"]["least_squares"])
    assert child.data.params["router.ridge"] == "0.01" and "budget/nAUC" in child.data.metrics

    # registered: the pipeline exports it on the fly (verified ONNX graph + evaluation table)
    registered = register_run(summary["run_id"], "adding-router", stage="staging")
    assert registered["stage"] == "staging" and registered["router"] == "least_squares"
    version = mlflow.MlflowClient().get_model_version_by_alias("adding-router", "staging")
    assert version.tags["router"] == "least_squares" and version.run_id == child.info.run_id

    # served: the registered pyfunc model routes the logged evaluation rows as the router predicts
    table = load_eval_table(f"runs:/{child.info.run_id}/eval/eval_table.npz")
    model = mlflow.pyfunc.load_model("models:/adding-router@staging")
    out = model.predict(input_frame(table.features.fused[:7]), params={"tradeoff": 0.0})
    assert len(out) == 7 and set(out["model"]) <= set(table.models)
    router, _, _ = load_logged_router(child.info.run_id)
    assert isinstance(router, user_router)
    perf, _ = router.predict(table.features.subset(np.arange(7)))
    np.testing.assert_allclose(out[[f"perf_{m}" for m in table.models]].to_numpy(), perf, atol=1e-4)

    # exported with parity, directly
    result = export_router(router, table.features, tmp_path / "least_squares.onnx")
    assert result.max_abs_diff_perf <= 1e-4 and result.max_abs_diff_cost <= 1e-4
    # The never-worse guard, when fitted, is appended to every graph by export (" + guard (...)").
    assert result.backend.startswith("onnx (affine map)") and result.input_layout[0][0] == "fused"
    assert router_input(router, table.features).shape == (len(table.features), result.input_width)
    json.dumps(result.to_dict())
