"""The fast budget sweep against the reference loop, the tie and fallback rules, input errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings

from evaluation_reference import naive_budget_curve, tables
from mmroute.evaluation import budget_decisions, budget_sweep, cost_accuracy_curve

ONE_BY_ONE = (np.array([[0.5]]), np.array([[1.0]]), np.array([[1.0]]), np.array([[2.0]]))


@settings(max_examples=300, deadline=None)
@given(tables())
@example(ONE_BY_ONE)
@example((np.zeros((3, 4)), np.ones((3, 4)), np.eye(3, 4), np.ones((3, 4))))  # all tied
def test_budget_sweep_matches_reference_loop(tab):
    perf, cpred, correct, cost = tab
    for fallback in ("first", "cheapest"):
        t_ref, c_ref, a_ref = naive_budget_curve(perf, cpred, correct, cost, fallback=fallback)
        curve = budget_sweep(perf, cpred, correct, cost, fallback=fallback)
        np.testing.assert_array_equal(curve.thresholds, t_ref)
        assert np.max(np.abs(curve.costs - c_ref)) <= 1e-9
        assert np.max(np.abs(curve.accs - a_ref)) <= 1e-9


def test_matches_reference_on_continuous_inputs():
    rng = np.random.default_rng(3)
    perf, cpred = rng.random((400, 7)), rng.random((400, 7))
    correct, cost = (rng.random((400, 7)) < 0.6).astype(float), rng.random((400, 7)) * 1e-3
    _, c_ref, a_ref = naive_budget_curve(perf, cpred, correct, cost)
    costs, accs = cost_accuracy_curve(perf, cpred, correct, cost)
    assert costs.dtype == np.float64 and costs.shape == (400 * 7,)
    assert np.max(np.abs(costs - c_ref)) <= 1e-9 and np.max(np.abs(accs - a_ref)) <= 1e-9


def test_hand_computed_curve_with_ties_and_fallback():
    # Instance 0: models 0 and 1 tie on cost 1 and perf 0.9 -> lowest index (0) wins.
    # Instance 1: nothing under C=1, so it takes model 0 ("first") although model 0 costs 3.
    perf = np.array([[0.9, 0.9, 0.1], [0.2, 0.8, 0.5]])
    cpred = np.array([[1.0, 1.0, 0.5], [3.0, 2.0, 2.0]])
    correct = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    cost = np.array([[10.0, 20.0, 5.0], [30.0, 20.0, 20.0]])
    curve = budget_sweep(perf, cpred, correct, cost)
    np.testing.assert_array_equal(curve.thresholds, [0.5, 1.0, 2.0, 3.0])
    # C=0.5: (m2, m0); C=1: (m0, m0); C=2: (m0, m1); C=3: (m0, m1)
    np.testing.assert_allclose(curve.costs, [17.5, 20.0, 15.0, 15.0])
    np.testing.assert_allclose(curve.accs, [0.0, 0.5, 1.0, 1.0])
    cheap = budget_sweep(perf, cpred, correct, cost, fallback="cheapest")
    # "cheapest": instance 1 takes its best model at its own cheapest cost 2 -> model 1.
    np.testing.assert_allclose(cheap.costs, [12.5, 15.0, 15.0, 15.0])
    np.testing.assert_allclose(cheap.accs, [0.5, 1.0, 1.0, 1.0])


def test_budget_decisions_agree_with_the_sweep():
    rng = np.random.default_rng(0)
    perf, cpred = rng.integers(0, 4, (50, 5)) / 4, rng.integers(1, 6, (50, 5)) / 2
    correct, cost = (rng.random((50, 5)) < 0.5).astype(float), rng.random((50, 5))
    curve = budget_sweep(perf, cpred, correct, cost, fallback="cheapest")
    rows = np.arange(50)
    for t, c, a in zip(curve.thresholds, curve.costs, curve.accs):
        pick = budget_decisions(perf, cpred, t, fallback="cheapest")
        assert cost[rows, pick].mean() == pytest.approx(c, abs=1e-12)
        assert correct[rows, pick].mean() == pytest.approx(a, abs=1e-12)


@pytest.mark.parametrize("bad, match", [
    (dict(perf_pred=np.array([[np.nan, 1.0]])), "perf_pred has 1 non-finite"),
    (dict(cost_pred=np.array([[1.0, np.inf]])), "cost_pred has 1 non-finite"),
    (dict(correct=np.array([[np.nan, 1.0]])), "fill_missing"),
    (dict(cost=np.ones((2, 2))), r"cost must have shape \(1, 2\)"),
    (dict(perf_pred=np.ones(2)), "must be 2-D"),
    (dict(fallback="nearest"), "fallback='nearest' is not one of"),
])
def test_bad_inputs_name_the_problem(bad, match):
    args = dict(perf_pred=np.ones((1, 2)), cost_pred=np.ones((1, 2)), correct=np.ones((1, 2)),
                cost=np.ones((1, 2)), fallback="first")
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        budget_sweep(**args)
