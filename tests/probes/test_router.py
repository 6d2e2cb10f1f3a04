"""Probe routers in the router contract: (perf, cost) over [small, large], and the shared decision
rules tracing the deferral-threshold curve."""

from __future__ import annotations

import numpy as np
import pytest

from mmroute.evaluation import budget_sweep, evaluate_predictions, tradeoff_sweep
from mmroute.probes.deferral import deferral_curve, threshold_for_share
from mmroute.routers import create_router, list_routers, router_class
from mmroute.routers.probe import ProbeFeatures
from probe_tiny import synthetic_cache

FAST = dict(hidden=16, n_layers=2, max_epochs=6, lr=3e-3, batch_size=64, accelerator="cpu")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    cache, ids, labels = synthetic_cache(tmp_path_factory.mktemp("cache"), n=4000, d=16)
    rng = np.random.default_rng(0)
    correct = np.column_stack([labels, (rng.random(labels.size) < 0.8).astype(float)])
    cost = np.column_stack([np.full(labels.size, 0.1), 1.0 + 0.1 * rng.random(labels.size)])
    feats = ProbeFeatures.from_cache(cache, ids)
    return feats, correct, cost


@pytest.fixture(scope="module")
def fitted(data):
    feats, correct, cost = data
    train = np.arange(2800)
    return create_router("probe", **FAST).fit(feats.subset(train), correct[train], cost[train])


def test_registry_keeps_probe_routers_apart():
    assert set(list_routers("hidden_states")) == {"probe", "attention_probe", "relope"}
    assert not set(list_routers()) & {"probe", "attention_probe", "relope"}  # "all" = feature routers
    assert router_class("relope").reads == "hidden_states" and not router_class("probe").blendable


def test_predict_is_perf_and_cost_over_small_and_large(fitted, data):
    feats, correct, cost = data
    test = np.arange(2800, 4000)
    perf, pc = fitted.predict(feats.subset(test))
    assert perf.shape == pc.shape == (1200, 2)
    assert np.allclose(perf[:, 1], correct[:2800, 1].mean()) and np.ptp(perf[:, 0]) > 0
    assert np.allclose(pc, cost[:2800].mean(axis=0))
    np.testing.assert_allclose(perf[:, 0], fitted.predict_correctness(feats.subset(test)))


def test_tradeoff_sweep_is_the_deferral_threshold_curve(fitted, data):
    feats, correct, cost = data
    test = np.arange(2800, 4000)
    perf, pc = fitted.predict(feats.subset(test))
    trade = tradeoff_sweep(perf, pc, correct[test], cost[test])
    curve = deferral_curve(perf[:, 0], correct[test], cost[test])
    # Every threshold at or below a_L, i.e. every deferral set the rule can reach, exactly once.
    p = np.sort(perf[:, 0])
    k_max = int((p < fitted.large_accuracy_).sum())
    keep = curve["share"] * 1200 <= k_max
    got = sorted(zip(np.round(trade.costs, 12), np.round(trade.accs, 12)))
    want = sorted(zip(np.round(curve["costs"][keep], 12), np.round(curve["accs"][keep], 12)))
    assert got == want and len(got) > 5


def test_budget_rule_has_two_decisions(fitted, data):
    feats, correct, cost = data
    test = np.arange(2800, 4000)
    perf, pc = fitted.predict(feats.subset(test))
    budget = budget_sweep(perf, pc, correct[test], cost[test])
    points = set(zip(np.round(budget.costs, 12), np.round(budget.accs, 12)))
    defer = perf[:, 0] < fitted.large_accuracy_
    pick = (np.arange(1200), defer.astype(int))
    both = (correct[test][pick].mean(), cost[test][pick].mean())
    assert points == {(round(cost[test, 0].mean(), 12), round(correct[test, 0].mean(), 12)),
                      (round(both[1], 12), round(both[0], 12))}
    metrics = evaluate_predictions(perf, pc, correct[test], cost[test], rule="tradeoff").metrics
    assert {"nAUC", "fixed_AUC", "Ps", "QNC"} <= set(metrics)


def test_threshold_calibrated_on_training_rows_hits_the_share_on_held_out_rows(fitted, data):
    feats, _, _ = data
    p = fitted.predict_correctness(feats.subset(np.arange(2800, 4000)))
    for share in (0.2, 0.5):
        t = fitted.threshold(defer_share=share)
        assert t == threshold_for_share(fitted.calibration_["scores"], share)
        assert abs((p < t).mean() - share) <= 0.05
    assert fitted.threshold() == fitted.large_accuracy_
    with pytest.raises(ValueError, match="not reachable"):
        fitted.threshold(target_accuracy=1.5)


def test_bad_inputs_are_named(data):
    feats, correct, cost = data
    from mmroute.features.types import Features

    with pytest.raises(TypeError, match="reads hidden states"):
        create_router("probe", **FAST).fit(Features.from_array(feats.fused), correct, cost)
    with pytest.raises(ValueError, match="expected outcomes of 2 models"):
        create_router("probe", **FAST).fit(feats, np.c_[correct, correct[:, :1]], np.c_[cost, cost[:, :1]])
    with pytest.raises(ValueError, match="lr must be > 0"):
        create_router("probe", lr=-1.0)
