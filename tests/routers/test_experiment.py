"""fit_and_evaluate on tiny tables, and the reference anchors on the shared MMLU-Pro table."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmroute.evaluation import evaluate_predictions
from mmroute.features.types import Features
from mmroute.routers import create_router
from mmroute.routers.experiment import RouterResult, fit_and_evaluate
from router_data import tiny_table


def _split(missing: float = 0.0):
    table, x = tiny_table(n=80, missing=missing)
    tr, te = np.arange(50), np.arange(50, 80)
    return table.subset(tr), Features.from_array(x[tr]), table.subset(te), Features.from_array(x[te])


def test_fit_and_evaluate_returns_predictions_timings_and_one_result_per_rule():
    train, train_f, test, test_f = _split(missing=0.2)
    res = fit_and_evaluate(create_router("knn", k=5), train_f, train, test_f, test)
    assert isinstance(res, RouterResult) and res.name == "knn" and res.params["k"] == 5
    assert res.perf_pred.shape == res.cost_pred.shape == (30, 3)
    assert set(res.results) == {"budget", "tradeoff"}
    assert res.fit_seconds >= 0 and res.predict_seconds >= 0
    # Scored exactly as evaluation scores those predictions (missing outcomes filled over test rows).
    direct = evaluate_predictions(res.perf_pred, res.cost_pred, test.correct, test.cost, rule="budget")
    assert res.results["budget"].metrics["nAUC"] == pytest.approx(direct.metrics["nAUC"], nan_ok=True)
    assert res.results["tradeoff"].rule == "tradeoff"
    assert set(res.results["budget"].per_dataset) == {"a", "b"}
    summary = json.loads(json.dumps(res.summary()))
    assert set(summary["budget"]) == {"nAUC", "fixed_AUC", "Ps", "QNC", "n_pareto"}


def test_oracle_is_scored_on_the_outcomes_given():
    train, train_f, test, test_f = _split()
    correct = test.correct.copy()
    correct[:, 1] = 1.0  # a different truth: the oracle must read these, not the table's
    res = fit_and_evaluate(create_router("oracle"), train_f, train, test_f, test, rules=("budget",),
                           outcomes=(correct, test.cost))
    np.testing.assert_array_equal(res.perf_pred, correct)
    assert res.results["budget"].metrics["Ps"] == pytest.approx(1.0)


@pytest.mark.parametrize("kwargs, match", [
    ({"rules": ("cheapest",)}, r"rules \['cheapest'\]: expected a non-empty subset of \['budget', 'tradeoff'\]"),
    ({"outcomes": (np.zeros((2, 3)), np.zeros((2, 3)))}, r"outcomes must have shape \(30, 3\)"),
])
def test_bad_arguments_are_named(kwargs, match):
    train, train_f, test, test_f = _split()
    with pytest.raises(ValueError, match=match):
        fit_and_evaluate(create_router("kmeans"), train_f, train, test_f, test, **kwargs)
    with pytest.raises(ValueError, match="test features have 29 rows but the test table has 30"):
        fit_and_evaluate(create_router("kmeans"), train_f, train, test_f.subset(np.arange(29)), test)


@pytest.mark.shared_data
def test_knn_kmeans_linear_mf_reproduce_the_reference_anchors(shared_data):
    from mmroute.data import load_table, split_in

    anchors = json.loads((shared_data / "anchors.json").read_text())["mmlupro_0.8"]
    table = load_table(shared_data / "mmlu_pro_routing.parquet", images="ignore")
    table = table.select_models(sorted(table.models))  # the reference orders models by name
    x = np.load(shared_data / "mmlu_pro_minilm.npy")
    tr, te = split_in(table, 0.8, 42)
    correct, cost = table.filled()  # the reference fills over the whole table before splitting
    for name, ref in (("knn", "knn"), ("kmeans", "kmeans"), ("linear_mf", "linearmf")):
        res = fit_and_evaluate(create_router(name, seed=42), Features.from_array(x[tr]), table.subset(tr),
                               Features.from_array(x[te]), table.subset(te), rules=("budget",),
                               outcomes=(correct[te], cost[te]), per_dataset=False)
        assert res.results["budget"].metrics["nAUC"] == pytest.approx(anchors[ref]["nAUC"], abs=0.01), name
