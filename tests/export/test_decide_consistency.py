"""The served model and mmroute.evaluation make the same decisions (one rule, two places).

The served model's decision code cannot import mmroute; this drives the model's own request
handling (``OnnxRouterModel._request`` / ``_decide``) and ``mmroute.evaluation`` with the same
random predictions, full of ties, with budgets below every model, at exact predicted costs and
above all of them, trade-off weights at exact crossings, both fallbacks and model subsets.
"""

import itertools

import numpy as np
import pytest

from mmroute.evaluation import FALLBACKS, budget_decisions, tradeoff_decisions
from mmroute.export.mmroute_runtime import decide as runtime
from mmroute.export.onnx_router_model import OnnxRouterModel

M = 5
NAMES = [f"m{j}" for j in range(M)]


def _served(fallback):
    model = OnnxRouterModel()  # the decision half only: no graph is needed to decide
    model.models, model.fallback, model.calibration = list(NAMES), fallback, None
    return model


def _predictions(seed, n=300):
    rng = np.random.default_rng(seed)
    # Few distinct values: ties in performance, in cost, and in perf - lambda * cost.
    perf = rng.integers(0, 4, size=(n, M)) / 4.0
    cost = rng.integers(1, 5, size=(n, M)).astype(np.float64)
    return perf, cost


def _budgets(cost):
    return [float(cost.min()) - 1.0, 0.0, *np.unique(cost).tolist(), 2.5, float(cost.max()) + 1.0]


def _tradeoffs(perf, cost):
    crossings = {abs(a / b) for a in np.unique(np.diff(np.unique(perf))) for b in (1.0, 2.0, 3.0)}
    return [0.0, 0.01, 0.125, 0.25, 1 / 3, 0.5, 1.0, 10.0, *sorted(crossings)]


def _evaluation(perf, cost, rule, param, fallback):
    if rule == "budget":
        return budget_decisions(perf, cost, param, fallback=fallback)
    return tradeoff_decisions(perf, cost, param)


SUBSETS = [None, [0], [3, 1], [0, 2, 4], [1, 2, 3, 4]]


def test_vocabulary_is_shared():
    assert runtime.FALLBACKS == FALLBACKS
    assert runtime.SERVING_FALLBACK in FALLBACKS


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("fallback", FALLBACKS)
def test_served_and_evaluation_choose_identically(seed, fallback):
    perf, cost = _predictions(seed)
    served = _served(fallback)
    cases = [("budget", b) for b in _budgets(cost)] + [("tradeoff", t) for t in _tradeoffs(perf, cost)]
    for (rule, param), subset in itertools.product(cases, SUBSETS):
        params = {rule: param, **({} if subset is None else {"models": ",".join(NAMES[j] for j in subset)})}
        out = served._decide(None, perf, cost, params)
        cols = list(range(M)) if subset is None else sorted(subset)
        expected = np.asarray(cols)[_evaluation(perf[:, cols], cost[:, cols], rule, param, fallback)]
        np.testing.assert_array_equal(out["model_index"].to_numpy(), expected,
                                      err_msg=f"{rule}={param} models={subset} fallback={fallback}")
        if rule == "budget":
            np.testing.assert_array_equal(out["within_budget"].to_numpy(), (cost[:, cols] <= param).any(1))


def test_no_params_is_the_best_predicted_performance():
    perf, cost = _predictions(3)
    out = _served("cheapest")._decide(None, perf, cost, {})
    np.testing.assert_array_equal(out["model_index"], tradeoff_decisions(perf, cost, 0.0))
    np.testing.assert_array_equal(out["model_index"], budget_decisions(perf, cost, np.inf))


def test_budget_below_every_model_takes_the_fallback():
    perf = np.array([[0.9, 0.1, 0.4, 0.5]])
    cost = np.array([[5.0, 3.0, 1.0, 1.0]])
    for fallback, expected in (("first", 0), ("cheapest", 3)):  # cheapest: best perf among cost ties
        served = _served(fallback)
        served.models = NAMES[:4]
        out = served._decide(None, perf, cost, {"budget": 0.5})
        assert out["model_index"].tolist() == [expected] == budget_decisions(perf, cost, 0.5,
                                                                             fallback=fallback).tolist()
        assert out["within_budget"].tolist() == [False]


@pytest.mark.parametrize("fallback", FALLBACKS)
def test_ranking_is_the_choice_after_removing_the_models_before_it(fallback):
    perf, cost = _predictions(4, n=120)
    served = _served(fallback)
    for rule, param in [("budget", 0.0), ("budget", 2.0), ("budget", 9.0), ("tradeoff", 0.0),
                        ("tradeoff", 0.25), ("tradeoff", 5.0)]:
        for subset in SUBSETS:
            params = {rule: param, **({} if subset is None else {"models": ",".join(NAMES[j] for j in subset)})}
            out = served._decide(None, perf, cost, params)
            allowed = list(range(M)) if subset is None else sorted(subset)
            for i, ranked in enumerate(out["ranking"]):
                assert sorted(ranked) == [NAMES[j] for j in allowed] and ranked[0] == out["model"][i]
                left = list(allowed)
                for name in ranked:
                    cols = np.asarray(left)
                    pick = cols[_evaluation(perf[i:i + 1, cols], cost[i:i + 1, cols], rule, param, fallback)[0]]
                    assert NAMES[pick] == name, (rule, param, subset, i, ranked)
                    left.remove(pick)


def test_runtime_decide_matches_evaluation_directly():
    perf, cost = _predictions(5, n=500)
    for fallback in FALLBACKS:
        for b in _budgets(cost):
            np.testing.assert_array_equal(runtime.budget_choice(perf, cost, b, fallback)[0],
                                          budget_decisions(perf, cost, b, fallback=fallback))
    for t in _tradeoffs(perf, cost):
        np.testing.assert_array_equal(runtime.tradeoff_choice(perf, cost, t), tradeoff_decisions(perf, cost, t))
