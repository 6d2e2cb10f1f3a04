"""evaluate_predictions end to end: metrics, breakdowns, JSON, frames and the plot."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from mmroute.evaluation import (
    EvalResult,
    evaluate_predictions,
    plot_cost_accuracy,
    save_figure,
    tradeoff_curve,
)


@pytest.fixture()
def table():
    rng = np.random.default_rng(5)
    n, m = 120, 4
    skill = rng.random(n)
    correct = (rng.random((n, m)) < np.linspace(0.3, 0.9, m) * 0.5 + skill[:, None] * 0.5).astype(float)
    cost = np.linspace(0.1, 1.0, m) * (1 + 0.1 * rng.random((n, m)))
    correct[3, 1] = np.nan
    cost[7, 2] = np.nan
    perf_pred = correct + 0.3 * rng.standard_normal((n, m))
    perf_pred[np.isnan(perf_pred)] = 0.5
    cost_pred = np.nan_to_num(cost, nan=0.5) * (1 + 0.05 * rng.standard_normal((n, m)))
    datasets = np.where(np.arange(n) % 3 == 0, "ocr", "math")
    return perf_pred, cost_pred, correct, cost, datasets


@pytest.mark.parametrize("rule", ["budget", "tradeoff"])
def test_evaluate_predictions(table, rule):
    perf_pred, cost_pred, correct, cost, datasets = table
    res = evaluate_predictions(perf_pred, cost_pred, correct, cost, rule=rule, datasets=datasets,
                               models=["a", "b", "c", "d"])
    assert isinstance(res, EvalResult) and res.rule == rule
    m = res.metrics
    for key in ("nAUC", "Ps", "QNC", "fixed_AUC", "n_pareto", "best_single_acc", "oracle_nAUC",
                "oracle_acc", "acc_at_best_single_cost"):
        assert key in m
    assert m["Ps"] == res.frontier_acc.max() <= m["oracle_acc"]
    assert np.all(np.diff(res.frontier_cost) > 0) and np.all(np.diff(res.frontier_acc) > 0)
    assert m["n_instances"] == 120 and m["n_points"] == res.curve_cost.size
    assert set(res.per_dataset) == {"ocr", "math"}
    assert res.per_dataset["ocr"]["n_instances"] == 40
    assert [d["model"] for d in res.at_single_costs] == ["a", "b", "c", "d"]
    if rule == "tradeoff":
        filled = np.where(np.isnan(correct), np.nanmean(correct, axis=0), correct)
        cfill = np.where(np.isnan(cost), np.nanmean(cost, axis=0), cost)
        np.testing.assert_allclose(res.curve_cost, tradeoff_curve(perf_pred, cost_pred, filled, cfill)[0])
    frame = res.curve_frame()
    assert list(frame.columns) == ["threshold", "cost", "acc", "on_frontier"]
    assert int(frame["on_frontier"].sum()) == m["n_pareto"]


def test_to_dict_is_json_safe(table):
    perf_pred, cost_pred, correct, cost, _ = table
    res = evaluate_predictions(np.zeros_like(perf_pred), cost_pred, correct, cost)
    res.metrics["QNC"] = math.inf  # whatever the data, infinities must serialise
    d = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert d["metrics"]["QNC"] == "inf"
    assert len(d["curve"]["cost"]) == res.curve_cost.size


def test_rejects_unknown_rule_and_bad_datasets(table):
    perf_pred, cost_pred, correct, cost, _ = table
    with pytest.raises(ValueError, match="rule='greedy' is not one of"):
        evaluate_predictions(perf_pred, cost_pred, correct, cost, rule="greedy")
    with pytest.raises(ValueError, match=r"datasets must have shape \(120,\)"):
        evaluate_predictions(perf_pred, cost_pred, correct, cost, datasets=["x"])


def test_plotting_never_imports_pyplot(tmp_path):
    # In a fresh interpreter: other tests in this worker may have imported pyplot already.
    code = (
        "import sys, numpy as np\n"
        "from mmroute.evaluation import evaluate_predictions, plot_cost_accuracy, save_figure\n"
        "rng = np.random.default_rng(0)\n"
        "p, c = rng.random((20, 3)), rng.random((20, 3))\n"
        "y, k = (rng.random((20, 3)) > 0.5).astype(float), rng.random((20, 3))\n"
        "fig = plot_cost_accuracy({'budget': evaluate_predictions(p, c, y, k)})\n"
        f"save_figure(fig, {str(tmp_path / 'x.png')!r})\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert (tmp_path / "x.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_writes_png_without_pyplot(table, tmp_path):
    perf_pred, cost_pred, correct, cost, _ = table
    res = {r: evaluate_predictions(perf_pred, cost_pred, correct, cost, rule=r)
           for r in ("budget", "tradeoff")}
    fig = plot_cost_accuracy(res, oracle=(res["budget"].metrics["oracle_cost"],
                                          res["budget"].metrics["oracle_acc"]), title="toy")
    out = save_figure(fig, tmp_path / "plots" / "curve.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert labels == ["model_0", "model_1", "model_2", "model_3"]
