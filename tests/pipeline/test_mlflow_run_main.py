"""`mlflow run . --env-manager local` (entry point main): one parent run with a child per router."""

from __future__ import annotations

import mlflow
import pytest

from helpers_mlflow_run import mlflow_run, project_runs
from helpers_pipeline import artifact_paths, input_contexts

pytestmark = pytest.mark.slow


def test_main_entry_point_parent_with_a_child_per_router(tmp_path):
    from mmroute.routers import create_router, list_routers

    # auto cross-validates a few candidates here (its default, the whole zoo, is the slow part).
    mlflow_run(tmp_path, "-P", "data=synthetic:n=90,seed=3", "-P", "max_epochs=2",
               "-P", "options=auto.candidates=kmeans,knn,linear,mlp_mf")
    client = mlflow.MlflowClient()
    [parent] = project_runs("main")
    assert parent.info.status == "FINISHED" and parent.data.tags["mmroute.step"] == "main"
    assert parent.data.params["data"] == "synthetic:n=90,seed=3"  # logged by mlflow run itself
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    by_name = {c.data.tags["mmroute.router"]: c for c in children}
    assert sorted(by_name) == list_routers()
    assert parent.data.tags["best_child_run_id"] in {c.info.run_id for c in children}
    assert parent.data.tags["best_metric"] == "val/budget/nAUC"   # chosen on training rows
    assert by_name["auto"].data.params["auto.chosen"] and "auto/cv_seconds/knn" in by_name["auto"].data.metrics
    for name, child in by_name.items():
        m = child.data.metrics
        assert child.info.status == "FINISHED", name
        assert {"budget/nAUC", "budget/Ps", "budget/qnc_reached", "tradeoff/nAUC"} <= set(m), name
        assert ("budget/QNC" in m) == (m["budget/qnc_reached"] == 1.0)
        arts = artifact_paths(client, child.info.run_id)
        assert {"plots/pareto_budget.png", "config.yaml"} <= arts, name
        assert sorted(input_contexts(child).values()) == ["evaluation", "training"], name
        if hasattr(create_router(name), "lightning_logger"):
            history = client.get_metric_history(child.info.run_id, "train_loss")
            assert len(history) == 2, name  # one point per epoch
    assert {"comparison/routers.csv", "comparison/routers.png"} <= artifact_paths(client, parent.info.run_id)
    # main ends by registering the best deployable router and staging it.
    [version] = client.search_model_versions("name='mmroute-router'")
    assert client.get_model_version_by_alias("mmroute-router", "staging").version == version.version
    assert version.tags["source_run_id"] != parent.info.run_id
    assert version.tags["router"] not in ("oracle", "random")
    assert parent.data.tags["mmroute.registered_model"] == f"mmroute-router/{version.version}"
