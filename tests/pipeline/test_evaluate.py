"""`mmroute evaluate`: re-scoring a logged router reproduces its run's metrics, and scores new rows."""

from __future__ import annotations

import mlflow
import pytest

from helpers_pipeline import TINY, artifact_paths, input_contexts, last_json
from mmroute.cli import main


def test_evaluate_reproduces_and_rescores(capsys):
    assert main(["train", "--router", "kmeans", "--data", TINY, "--experiment", "unit"]) == 0
    source_id = last_json(capsys.readouterr().out)["run_id"]
    client = mlflow.MlflowClient()
    source = client.get_run(source_id).data.metrics

    assert main(["evaluate", "--run-id", source_id, "--experiment", "unit"]) == 0
    summary = last_json(capsys.readouterr().out)
    run = client.get_run(summary["run_id"])
    assert run.data.tags["mmroute.source_run_id"] == source_id and run.data.tags["mmroute.step"] == "evaluate"
    assert run.data.params["evaluate.rows"] == "test" and run.data.params["router.name"] == "kmeans"
    for key in ("budget/nAUC", "budget/Ps", "tradeoff/nAUC", "budget/qnc_reached"):
        assert run.data.metrics[key] == pytest.approx(source[key], abs=1e-12), key
    assert list(input_contexts(run).values()) == ["evaluation"]
    assert {"curves/budget_curve.csv", "plots/pareto_budget.png"} <= artifact_paths(client, run.info.run_id)

    # All rows of the same table: more instances, still a valid evaluation.
    assert main(["evaluate", "--run-id", source_id, "--rows", "all", "--experiment", "unit"]) == 0
    summary = last_json(capsys.readouterr().out)
    assert summary["n_instances"] == 90
    assert client.get_run(summary["run_id"]).data.params["data.n_instances"] == "90"


def test_evaluate_needs_a_logged_router(capsys):
    assert main(["train", "--router", "linear", "--data", TINY, "--no-log-model", "--experiment", "unit"]) == 0
    run_id = last_json(capsys.readouterr().out)["run_id"]
    assert main(["evaluate", "--run-id", run_id]) == 1
    assert "logged no router" in capsys.readouterr().err
