"""The ensemble router and its simplex-constrained blend."""

from __future__ import annotations

import numpy as np
import pytest

from mmroute.routers import create_router
from mmroute.routers.ensemble import simplex_least_squares
from router_data import feats, tiny_problem


def test_simplex_weights_recover_a_convex_blend():
    rng = np.random.default_rng(0)
    preds = rng.normal(size=(500, 3))
    target = preds @ np.array([0.2, 0.0, 0.8])
    w = simplex_least_squares(preds, target)
    np.testing.assert_allclose(w, [0.2, 0.0, 0.8], atol=1e-4)
    # An unconstrained fit would use a negative weight here; the blend stays on the simplex.
    w = simplex_least_squares(preds, preds @ np.array([1.5, -0.5, 0.0]))
    assert (w >= 0).all() and w.sum() == pytest.approx(1.0)


def test_ensemble_blends_members_fitted_on_all_rows():
    x, correct, cost = tiny_problem(n=80, missing=0.1)
    router = create_router("ensemble", members=("linear", "knn", "kmeans"), ks=(5, 20), n_folds=3, seed=0, guard="off")
    router.fit(feats(x), correct, cost)
    assert [m.name for m in router.members_] == ["linear", "knn", "kmeans"]
    for w in (router.perf_weights_, router.cost_weights_):
        assert w.shape == (3,) and (w >= 0).all() and w.sum() == pytest.approx(1.0)
    assert router.members_[1].k_ in (5, 20)
    perf, pc = router.predict(feats(x[:7]))
    member_preds = [m.predict(feats(x[:7])) for m in router.members_]
    np.testing.assert_allclose(perf, sum(w * p for w, (p, _) in zip(router.perf_weights_, member_preds)))
    np.testing.assert_allclose(pc, sum(w * q for w, (_, q) in zip(router.cost_weights_, member_preds)))
    # The blend is chosen to fit out-of-fold outcomes at least as well as its best member.
    assert router.oof_perf_mse_["blend"] <= min(v for k, v in router.oof_perf_mse_.items() if k != "blend") + 1e-9
    again = create_router("ensemble", members=("linear", "knn", "kmeans"), ks=(5, 20), n_folds=3, seed=0, guard="off")
    np.testing.assert_array_equal(perf, again.fit(feats(x), correct, cost).predict(feats(x[:7]))[0])


def test_ensemble_config_errors_list_valid_members():
    with pytest.raises(ValueError, match=r"members \['oracle', 'nope'\] are not blendable routers; valid: .*'knn'"):
        create_router("ensemble", members=("oracle", "nope"))
    with pytest.raises(ValueError, match=r"n_folds=1 \(expected an integer >= 2\)"):
        create_router("ensemble", n_folds=1)
