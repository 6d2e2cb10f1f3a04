"""What a run records: flattened params, tags, metric naming (QNC, budgets, datasets), artifacts, inputs."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from mmroute.tracking import records as R


@dataclass
class FakeEval:
    metrics: dict
    curve_cost: np.ndarray
    curve_acc: np.ndarray
    frontier_cost: np.ndarray
    frontier_acc: np.ndarray
    per_dataset: dict = field(default_factory=dict)


def _result(qnc=1.5):
    cost = np.array([0.1, 0.2, 0.4, 0.8])
    acc = np.array([0.5, 0.45, 0.7, 0.9])
    return FakeEval({"nAUC": 0.6, "Ps": 0.9, "QNC": qnc, "fixed_AUC": 0.5, "n_pareto": 3},
                    cost, acc, cost[[0, 2, 3]], acc[[0, 2, 3]],
                    per_dataset={"ocrbench+math vista": {"nAUC": 0.4, "QNC": math.inf}})


def test_flatten_params_nests_joins_and_truncates():
    flat = R.flatten_params({"router": {"name": "knn", "k": 5}, "models": ["a", "b"], "x": None,
                             "long": "y" * 7000})
    assert flat["router.name"] == "knn" and flat["router.k"] == "5"
    assert flat["models"] == "a,b" and flat["x"] == ""
    assert len(flat["long"]) == 6000 and flat["long"].endswith("...")


def test_qnc_inf_is_skipped_and_flagged():
    got = R.finite_metrics({"QNC": math.inf, "Ps": 0.5, "name": "text", "bad": float("nan")}, "budget")
    assert got == {"budget/qnc_reached": 0.0, "budget/Ps": 0.5}
    assert R.finite_metrics({"QNC": 0.3}, "tradeoff") == {"tradeoff/qnc_reached": 1.0, "tradeoff/QNC": 0.3}


def test_curve_readout_picks_best_accuracy_within_budget():
    cost, acc = np.array([0.1, 0.2, 0.4]), np.array([0.5, 0.45, 0.7])
    assert R.curve_readout(cost, acc, 0.3) == (0.5, 0.1)
    assert R.curve_readout(cost, acc, 1.0) == (0.7, 0.4)
    assert all(math.isnan(v) for v in R.curve_readout(cost, acc, 0.05))


def test_eval_metrics_names_rule_budget_and_dataset_keys():
    got = R.eval_metrics(_result(), "budget", best_single_cost=0.8, fractions=(0.25, 1.0))
    assert got["budget/nAUC"] == 0.6 and got["budget/QNC"] == 1.5 and got["budget/qnc_reached"] == 1.0
    assert got["budget/at_0.25x_best_cost/accuracy"] == 0.5
    assert got["budget/at_0.25x_best_cost/cost"] == 0.1
    assert got["budget/at_1x_best_cost/accuracy"] == 0.9
    # '+' is not allowed in MLflow metric names; QNC=inf becomes a flag only
    assert got["ocrbench_math vista/budget/nAUC"] == 0.4
    assert got["ocrbench_math vista/budget/qnc_reached"] == 0.0
    assert "ocrbench_math vista/budget/QNC" not in got


def test_tags_have_version_and_git_commit():
    tags = R.run_tags(step="train", dataset="synthetic", mode=22, extra={"k": 1, "none": None})
    assert tags["mmroute.step"] == "train" and tags["mmroute.mode"] == "22" and tags["k"] == "1"
    assert "none" not in tags
    from mmroute import __version__
    assert tags["mmroute.version"] == __version__
    commit = R.git_commit()
    if commit is not None:  # running from a checkout
        assert tags["mmroute.git_commit"] == commit and len(commit) == 40


def test_logging_into_a_run(tmp_path):
    import mlflow

    from mmroute.data.table import OutcomeTable

    table = OutcomeTable(ids=["a", "b", "c"], datasets=["d1", "d1", "d2"], questions=["q"] * 3,
                         models=("m1", "m2"), correct=[[1, 0], [0, np.nan], [1, 1]],
                         cost=[[1, 2], [1, 2], [1, 2]], source=str(tmp_path))
    client = mlflow.MlflowClient()
    with mlflow.start_run() as run:
        R.log_params({"router": {"name": "knn", "k": 3}, "seed": 0})
        R.log_metrics(R.eval_metrics(_result(math.inf), "budget", best_single_cost=0.8))
        R.log_curves({"budget": _result()})
        R.log_split_ids(["a", "b"], ["c"])
        R.log_table_input(table, context="training", name="toy-train")
        R.log_table_input(table.subset([2]), context="evaluation", name="toy-test", source="synthetic:n=3")
    got = client.get_run(run.info.run_id)
    assert got.data.params == {"router.name": "knn", "router.k": "3", "seed": "0"}
    assert got.data.metrics["budget/qnc_reached"] == 0.0 and "budget/QNC" not in got.data.metrics
    files = {a.path for a in client.list_artifacts(run.info.run_id, "curves")}
    assert files == {"curves/budget_curve.csv"}
    csv = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/curves/budget_curve.csv").splitlines()
    assert csv[0] == "cost,accuracy,on_frontier" and csv[2] == "0.2,0.45,False" and csv[3] == "0.4,0.7,True"
    ids = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/split/test_ids.txt")
    assert ids == "c\n"
    inputs = {d.dataset.name: d for d in got.inputs.dataset_inputs}
    assert set(inputs) == {"toy-train", "toy-test"}
    assert inputs["toy-train"].tags[0].value == "training"
    assert inputs["toy-test"].tags[0].value == "evaluation"
    assert "m2_correct" in inputs["toy-train"].dataset.schema
    assert "synthetic:n=3" in inputs["toy-test"].dataset.source
