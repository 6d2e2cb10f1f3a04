"""The decision ranking of batch routing agrees with the served model's own choice."""

import numpy as np
import pandas as pd
import pytest

from mmroute.export.onnx_router_model import decide
from mmroute.export.spark import decisions_frame, rank_models


@pytest.mark.parametrize("params", [{}, {"budget": 0.35}, {"budget": 0.01}, {"tradeoff": 0.7}])
def test_ranking_starts_with_the_served_choice(params):
    rng = np.random.default_rng(0)
    perf, cost = rng.random((400, 5)), rng.random((400, 5))
    perf[:20, 2] = perf[:20, 0]  # ties go to the lower index
    order = rank_models(perf, cost, **params)
    choice, _ = decide(perf, cost, params.get("budget"), params.get("tradeoff"))
    assert (order[:, 0] == choice).all()
    assert (np.sort(order, axis=1) == np.arange(5)).all()  # a permutation per row
    if "budget" in params:
        fits = cost <= params["budget"]
        ranked_fits = np.take_along_axis(fits, order, axis=1)
        # Every fitting model comes before every other, by perf; the rest from the cheapest.
        assert (np.diff(ranked_fits.astype(int), axis=1) <= 0).all()
        ranked_cost = np.take_along_axis(cost, order, axis=1)
        ranked_perf = np.take_along_axis(perf, order, axis=1)
        for r in range(50):
            k = ranked_fits[r].sum()
            assert (np.diff(ranked_perf[r, :k]) <= 0).all() and (np.diff(ranked_cost[r, k:]) >= 0).all()
    elif "tradeoff" in params:
        score = np.take_along_axis(perf - params["tradeoff"] * cost, order, axis=1)
        assert (np.diff(score, axis=1) <= 0).all()


def test_decisions_frame_reads_the_pyfunc_output():
    models = ["a", "b"]
    pred = pd.DataFrame({"model": ["b", "a"], "model_index": [1, 0], "within_budget": [True, False],
                         "perf_a": [0.1, 0.9], "perf_b": [0.5, 0.2], "cost_a": [1.0, 2.0], "cost_b": [3.0, 4.0]})
    out = decisions_frame(pred, models, {"tradeoff": 0.0})
    assert out["ranking"].tolist() == [["b", "a"], ["a", "b"]]
    assert out["expected_cost"].tolist() == [3.0, 2.0] and out["expected_perf"].tolist() == [0.5, 0.9]
    assert list(out.columns) == ["model", "model_index", "within_budget", "expected_perf", "expected_cost",
                                 "ranking"]
