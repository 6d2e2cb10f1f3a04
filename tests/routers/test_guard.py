"""The never-worse-than-the-best-model guard, fitted in the Router base on out-of-fold predictions."""

from __future__ import annotations

import numpy as np
import pytest

from mmroute.evaluation import evaluate_predictions
from mmroute.routers import create_router
from mmroute.routers.guard import PerfGuard, fit_guard
from router_data import feats, raw_router


def noisy_problem(n: int = 400, seed: int = 0):
    """Outcomes independent of the features; model 1 is the best (0.7), others 0.5 / 0.45."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    correct = (rng.random((n, 3)) < np.array([0.5, 0.7, 0.45])).astype(float)
    cost = np.tile([1.0, 3.0, 2.0], (n, 1)) * (1 + 0.05 * rng.random((n, 3)))
    return x, correct, cost


def test_noise_predictions_get_a_guard_that_keeps_the_best_model_at_the_top():
    rng = np.random.default_rng(1)
    _, correct, cost = noisy_problem()
    perf = rng.random(correct.shape)  # predictions with no signal at all
    guard = fit_guard(perf, cost, correct, cost)
    assert guard.best_index == 1 and not guard.is_identity
    top = np.argmax(guard.apply(perf), axis=1)
    assert correct[np.arange(len(top)), top].mean() >= correct[:, 1].mean() - 1e-12


def test_informative_predictions_keep_beating_the_best_model():
    _, correct, cost = noisy_problem()
    perf = correct * 0.8 + 0.2 * np.random.default_rng(2).random(correct.shape)  # nearly the outcomes
    guard = fit_guard(perf, cost, correct, cost)
    assert guard.report["identity_admissible"] and guard.report["oof_nAUC"] >= guard.report["identity_oof_nAUC"]
    top = np.argmax(guard.apply(perf), axis=1)
    assert correct[np.arange(len(top)), top].mean() == correct.max(axis=1).mean()  # the oracle's choices


def test_router_fits_the_guard_and_reports_validation_scores():
    x, correct, cost = noisy_problem()
    router = create_router("knn", k=5, seed=0).fit(feats(x[:300]), correct[:300], cost[:300])
    assert set(router.validation_) == {"budget", "tradeoff"}
    assert router.guard_ is not None and not router.guard_.is_identity
    raw = raw_router("knn", k=5, seed=0).fit(feats(x[:300]), correct[:300], cost[:300])
    assert raw.guard_ is None and raw.validation_ == {}
    # Top of the cost range on the held-out rows: the guarded router is not worse than model 1.
    for rule in ("budget", "tradeoff"):
        guarded = evaluate_predictions(*router.predict(feats(x[300:])), correct[300:], cost[300:], rule=rule)
        unguarded = evaluate_predictions(*raw.predict(feats(x[300:])), correct[300:], cost[300:], rule=rule)
        best = guarded.metrics["best_single_acc"]
        assert guarded.metrics["Ps"] >= best - 1e-12 > unguarded.metrics["Ps"]


def test_guard_predictions_are_the_transform_of_the_raw_ones():
    x, correct, cost = noisy_problem()
    router = create_router("linear", seed=0).fit(feats(x), correct, cost)
    raw = raw_router("linear", seed=0).fit(feats(x), correct, cost)
    np.testing.assert_allclose(router.predict(feats(x))[0], router.guard_.apply(raw.predict(feats(x))[0]))
    np.testing.assert_array_equal(router.predict(feats(x))[1], raw.predict(feats(x))[1])


def test_too_few_rows_fit_no_guard():
    x, correct, cost = noisy_problem(n=8)
    router = create_router("linear", guard_folds=5).fit(feats(x), correct, cost)
    assert router.guard_ is None


@pytest.mark.parametrize("bad, message", [
    ({"guard": "always"}, r"guard='always' \(expected one of \['oof', 'off'\]\)"),
    ({"guard_folds": 1}, r"guard_folds=1 \(expected an integer >= 2\)"),
    ({"guard_z": -1.0}, r"guard_z=-1.0 \(expected a number >= 0\)"),
])
def test_bad_guard_options_are_named(bad, message):
    with pytest.raises(ValueError, match=message):
        create_router("knn", **bad)


def test_export_appends_the_guard_with_parity(tmp_path):
    from mmroute.export import export_router

    x, correct, cost = noisy_problem()
    router = raw_router("linear_mf", rank=3).fit(feats(x), correct, cost)
    router.guard_ = PerfGuard(scale=np.array([0.5, 0.25, 1.0]), shift=np.array([0.1, 0.4, 0.0]), kind="shrink")
    result = export_router(router, feats(x[:50]), tmp_path / "g.onnx")
    assert "guard" in result.backend and result.max_abs_diff_perf <= 1e-5
