"""Sweep parent: comparison table, best child by a chosen metric (direction aware)."""

from __future__ import annotations

import math

import pytest

from mmroute.tracking import compare as C


def _frame():
    return C.comparison_frame([
        {"router": "knn", "run_id": "r1", "budget/nAUC": 0.6, "budget/QNC": 0.5},
        {"router": "mlp", "run_id": "r2", "budget/nAUC": 0.7, "budget/QNC": math.nan},
        {"router": "linear", "run_id": "r3", "budget/nAUC": 0.65, "budget/QNC": 0.4},
    ])


def test_pick_best_respects_direction():
    frame = _frame()
    assert list(frame.columns[:2]) == ["router", "run_id"]
    assert C.pick_best(frame, "budget/nAUC")["router"] == "mlp"
    assert C.pick_best(frame, "budget/QNC")["router"] == "linear"  # lower wins, missing = never reached
    with pytest.raises(KeyError, match="budget/Ps.*available"):
        C.pick_best(frame, "budget/Ps")


def test_log_comparison_tags_parent(tmp_path):
    import mlflow

    with mlflow.start_run() as run:
        best = C.log_comparison(_frame(), metric="budget/nAUC")
    client = mlflow.MlflowClient()
    got = client.get_run(run.info.run_id)
    assert best["router"] == "mlp"
    assert got.data.tags["best_child_run_id"] == "r2" and got.data.tags["best_router"] == "mlp"
    assert got.data.metrics["best/budget/nAUC"] == 0.7
    paths = {a.path for a in client.list_artifacts(run.info.run_id, "comparison")}
    assert paths == {"comparison/routers.csv", "comparison/routers.png"}


def test_excluded_routers_are_never_best():
    import mlflow

    with mlflow.start_run():
        assert C.log_comparison(_frame(), metric="budget/nAUC", exclude=["mlp"])["router"] == "linear"
        with pytest.raises(ValueError, match="no router eligible"):
            C.log_comparison(_frame(), exclude=["knn", "mlp", "linear"])
