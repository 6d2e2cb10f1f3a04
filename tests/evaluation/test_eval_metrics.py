"""Pareto frontier and curve metrics on hand-computed curves."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmroute.evaluation import curve_metrics, fixed_range_auc, pareto_frontier, pareto_mask


def test_frontier_sorted_strictly_increasing_with_ties():
    costs = np.array([3.0, 1.0, 1.0, 2.0, 2.0, 4.0, 5.0, np.nan])
    accs = np.array([0.7, 0.5, 0.6, 0.6, 0.65, 0.7, 0.9, 1.0])
    fc, fa = pareto_frontier(costs, accs)
    # cost 1: the better of the tie (0.6); cost 2: 0.65; cost 3: 0.7; cost 4 ties 0.7 -> dropped.
    np.testing.assert_array_equal(fc, [1.0, 2.0, 3.0, 5.0])
    np.testing.assert_array_equal(fa, [0.6, 0.65, 0.7, 0.9])
    np.testing.assert_array_equal(pareto_mask(costs, accs),
                                  [True, False, True, False, True, False, True, False])


def test_duplicate_points_count_once():
    fc, fa = pareto_frontier(np.array([1.0, 1.0]), np.array([0.5, 0.5]))
    assert fc.tolist() == [1.0] and fa.tolist() == [0.5]


def test_metrics_hand_computed():
    costs, accs = np.array([1.0, 2.0, 3.0]), np.array([0.4, 0.6, 0.8])
    m = curve_metrics(costs, accs, best_single_acc=0.6, best_single_cost=4.0, cost_range=(0.0, 4.0))
    # area = (0.4+0.6)/2 + (0.6+0.8)/2 = 1.2 over span 2
    assert m["nAUC"] == pytest.approx(0.6)
    assert m["Ps"] == pytest.approx(0.8)
    assert m["QNC"] == pytest.approx(2.0 / 4.0)
    # flat 0.4 on [0,1], trapezoids 1.2 on [1,3], flat 0.8 on [3,4] -> 2.4 / 4
    assert m["fixed_AUC"] == pytest.approx(0.6)
    assert m["n_pareto"] == 3


def test_single_point_and_unreached_quality():
    m = curve_metrics(np.array([2.0, 3.0]), np.array([0.5, 0.5]), best_single_acc=0.7,
                      best_single_cost=1.0, cost_range=(1.0, 3.0))
    assert math.isnan(m["nAUC"])  # one frontier point: undefined, as in the reference
    assert m["Ps"] == 0.5 and m["QNC"] == math.inf and m["n_pareto"] == 1
    assert m["fixed_AUC"] == pytest.approx(0.5)
    assert math.isnan(curve_metrics(np.array([1.0]), np.array([0.5]), best_single_acc=0.5,
                                    best_single_cost=1.0)["fixed_AUC"])


def test_qnc_tolerates_summation_rounding_only():
    acc = 0.7
    m = curve_metrics(np.array([1.0, 2.0]), np.array([0.3, acc - 1e-15]), best_single_acc=acc,
                      best_single_cost=4.0)
    assert m["QNC"] == pytest.approx(0.5)
    m = curve_metrics(np.array([1.0, 2.0]), np.array([0.3, acc - 1e-6]), best_single_acc=acc,
                      best_single_cost=4.0)
    assert m["QNC"] == math.inf


def test_fixed_range_auc_edges():
    fc, fa = np.array([2.0, 4.0]), np.array([0.2, 0.6])
    assert fixed_range_auc(fc, fa, 3.0, 3.0) == pytest.approx(0.4)
    assert fixed_range_auc(fc, fa, 5.0, 7.0) == pytest.approx(0.6)
    with pytest.raises(ValueError, match=r"lo <= hi, got \(2.0, 1.0\)"):
        fixed_range_auc(fc, fa, 2.0, 1.0)
