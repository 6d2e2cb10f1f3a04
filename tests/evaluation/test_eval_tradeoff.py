"""The lambda sweep of the cost-quality trade-off rule against an all-crossings loop."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings

from evaluation_reference import naive_tradeoff_curve, tables
from mmroute.evaluation import tradeoff_curve, tradeoff_decisions, tradeoff_sweep


@settings(max_examples=300, deadline=None)
@given(tables())
@example((np.array([[0.5]]), np.array([[1.0]]), np.array([[1.0]]), np.array([[2.0]])))
@example((np.full((2, 3), 0.5), np.ones((2, 3)), np.eye(2, 3), np.ones((2, 3))))
def test_tradeoff_sweep_matches_all_crossings_loop(tab):
    perf, cpred, correct, cost = tab
    t_ref, c_ref, a_ref = naive_tradeoff_curve(perf, cpred, correct, cost)
    curve = tradeoff_sweep(perf, cpred, correct, cost)
    np.testing.assert_array_equal(curve.thresholds, t_ref)
    assert np.max(np.abs(curve.costs - c_ref)) <= 1e-9
    assert np.max(np.abs(curve.accs - a_ref)) <= 1e-9


def test_runs_from_best_performance_to_cheapest():
    rng = np.random.default_rng(1)
    perf, cpred = rng.random((200, 6)), rng.random((200, 6))
    correct, cost = (rng.random((200, 6)) < 0.5).astype(float), rng.random((200, 6))
    costs, accs = tradeoff_curve(perf, cpred, correct, cost)
    rows = np.arange(200)
    first, last = perf.argmax(axis=1), cpred.argmin(axis=1)
    assert costs[0] == pytest.approx(cost[rows, first].mean())
    assert accs[-1] == pytest.approx(correct[rows, last].mean())
    assert costs[-1] == pytest.approx(cost[rows, last].mean())


def test_hand_computed_breakpoints():
    # One instance, three models on a line plus a dominated one:
    # model 0 (p=1, c=2), model 1 (p=0.5, c=1), model 2 (p=0, c=0), model 3 (p=0.25, c=1.5).
    # 0 vs 1 and 1 vs 2 both cross at lambda=0.5 -> one breakpoint, the cheapest (2) wins above.
    perf = np.array([[1.0, 0.5, 0.0, 0.25]])
    cpred = np.array([[2.0, 1.0, 0.0, 1.5]])
    curve = tradeoff_sweep(perf, cpred, np.array([[1.0, 1.0, 0.0, 0.0]]), np.array([[4.0, 2.0, 1.0, 3.0]]))
    np.testing.assert_array_equal(curve.thresholds, [0.0, 0.5])
    np.testing.assert_array_equal(curve.costs, [4.0, 1.0])
    # Equal performance: index 0 at lambda=0 exactly, the cheaper model just above 0.
    tie = tradeoff_sweep(np.array([[0.8, 0.8]]), np.array([[2.0, 1.0]]), np.array([[1.0, 0.0]]),
                         np.array([[5.0, 3.0]]))
    np.testing.assert_array_equal(tie.thresholds, [0.0, 0.0])
    np.testing.assert_array_equal(tie.accs, [1.0, 0.0])


def test_decisions_reject_negative_lambda():
    with pytest.raises(ValueError, match="lambda must be a finite number >= 0, got -1"):
        tradeoff_decisions(np.ones((1, 2)), np.ones((1, 2)), -1.0)
    assert tradeoff_decisions(np.array([[0.2, 0.9]]), np.array([[0.1, 1.0]]), 10.0).tolist() == [0]
