"""`mmroute sweep` / `mmroute run`: a parent run with a child per router, compared and ranked."""

from __future__ import annotations

import mlflow
import pandas as pd

from helpers_pipeline import EPOCHS, TINY, artifact_paths, input_contexts, last_json
from mmroute.cli import main

ROUTERS = ["oracle", "knn", "mlp_mf"]


def test_sweep_parent_children_comparison(capsys):
    code = main(["sweep", "--routers", ",".join(ROUTERS), "--data", TINY, "--max-epochs", str(EPOCHS),
                 "--set", "knn.k=5", "--select-metric", "budget/nAUC", "--experiment", "unit"])
    assert code == 0
    summary = last_json(capsys.readouterr().out)
    client = mlflow.MlflowClient()
    parent = client.get_run(summary["run_id"])
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    by_name = {c.data.tags["mmroute.router"]: c for c in children}
    assert sorted(by_name) == sorted(ROUTERS) and summary["failed"] == {}
    assert all(c.info.status == "FINISHED" for c in children)
    # parent: shared context, comparison, best child
    pt = parent.data.tags
    assert pt["mmroute.step"] == "sweep" and parent.data.params["sweep.routers"] == ",".join(ROUTERS)
    assert pt["best_child_run_id"] in {c.info.run_id for c in children}
    # The oracle reads the true outcomes: shown in the comparison, never picked as the best.
    assert pt["best_router"] in ("knn", "mlp_mf")
    # Chosen on the validation score (out-of-fold on training rows), never on the test metrics.
    best = max(("knn", "mlp_mf"), key=lambda n: by_name[n].data.metrics["val/budget/nAUC"])
    assert pt["best_router"] == best and pt["best_child_run_id"] == by_name[best].info.run_id
    assert pt["best_metric"] == "val/budget/nAUC" and summary["selected_by"] == "val/budget/nAUC"
    assert parent.data.metrics["best/val/budget/nAUC"] == by_name[best].data.metrics["val/budget/nAUC"]
    assert "val/budget/nAUC" not in by_name["oracle"].data.metrics
    parts = artifact_paths(client, parent.info.run_id)
    assert {"comparison/routers.csv", "comparison/routers.png", "comparison/pareto_budget.png",
            "config.yaml", "split/test_ids.txt", "model/features.pkl", "data/summary.json"} <= parts
    table = pd.read_csv(mlflow.artifacts.download_artifacts(
        run_id=parent.info.run_id, artifact_path="comparison/routers.csv"))
    assert sorted(table["router"]) == sorted(ROUTERS)
    row = table.set_index("router").loc["knn"]
    assert row["budget/nAUC"] == by_name["knn"].data.metrics["budget/nAUC"]
    assert sorted(input_contexts(parent).values()) == ["evaluation", "training"]
    # children: own params, metrics, plots, inputs; features pipeline shared by URI
    knn = by_name["knn"]
    assert knn.data.params["router.k"] == "5" and knn.data.params["data.hash"] == parent.data.params["data.hash"]
    assert knn.data.tags["mmroute.step"] == "sweep-child"
    for child in children:
        arts = artifact_paths(client, child.info.run_id)
        assert {"plots/pareto_budget.png", "config.yaml", "model/meta.json"} <= arts
        assert "model/features.pkl" not in arts
        assert {"nAUC", "Ps"} <= {k.split("/")[-1] for k in child.data.metrics}
        assert sorted(input_contexts(child).values()) == ["evaluation", "training"]
    meta = mlflow.artifacts.load_dict(f"runs:/{knn.info.run_id}/model/meta.json")
    assert meta["features_uri"] == f"runs:/{parent.info.run_id}/model/features.pkl"
    assert len(client.get_metric_history(by_name["mlp_mf"].info.run_id, "train_loss")) == EPOCHS


def test_failed_router_is_recorded_and_sweep_goes_on(capsys):
    code = main(["sweep", "--routers", "knn,mlp_mf", "--data", TINY, "--set", "mlp_mf.lr=-1", "--experiment", "unit"])
    out, err = capsys.readouterr()
    summary = last_json(out)
    assert code == 1 and set(summary["failed"]) == {"mlp_mf"} and summary["best_router"] == "knn"
    client = mlflow.MlflowClient()
    parent = client.get_run(summary["run_id"])
    assert parent.data.tags["mmroute.failed_routers"] == "mlp_mf"
    [failed] = client.search_runs([parent.info.experiment_id], "tags.`mmroute.router` = 'mlp_mf'")
    assert failed.info.status == "FAILED" and "lr" in failed.data.tags["mmroute.error"]


def test_best_child_does_not_depend_on_test_outcomes(tmp_path, capsys):
    """Permuting the test rows' outcomes changes the test metrics, never the chosen child."""
    import dataclasses

    import numpy as np

    from mmroute.data import load_table, split_in
    from mmroute.pipeline.data import write_table

    table = load_table(TINY)
    _, test_idx = split_in(table, 0.5, 42)
    correct, cost = table.correct.copy(), table.cost.copy()
    perm = np.random.default_rng(0).permutation(test_idx)
    correct[test_idx], cost[test_idx] = correct[perm], cost[perm]
    shuffled = dataclasses.replace(table, correct=correct, cost=cost)
    chosen = []
    for i, t in enumerate((table, shuffled)):
        path = write_table(t, tmp_path / f"t{i}.parquet")
        assert main(["sweep", "--routers", "knn,linear,kmeans", "--data", str(path), "--train-frac", "0.5",
                     "--set", "knn.k=5", "--set", "kmeans.n_clusters=3", "--experiment", "unit",
                     "--allow-outside-images"]) == 0  # the written table points at the cache's images
        summary = last_json(capsys.readouterr().out)
        runs = mlflow.MlflowClient().get_run(summary["best_child_run_id"])
        chosen.append((summary["best_router"], summary["val/budget/nAUC"], runs.data.metrics["budget/nAUC"]))
    assert chosen[0][:2] == chosen[1][:2] and chosen[0][2] != chosen[1][2]
