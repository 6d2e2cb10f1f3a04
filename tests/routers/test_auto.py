"""``auto``: router and rule chosen by cross-validation on the training rows only."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmroute.routers import create_router
from mmroute.routers.auto import default_candidates
from mmroute.routers.experiment import fit_and_evaluate
from router_data import feats, tiny_table

CHEAP = ("kmeans", "knn", "linear")


def _auto(**kw):
    return create_router("auto", **{"candidates": CHEAP, "n_folds": 3, "seed": 0, **kw})


def test_default_candidates_are_the_deployable_zoo_cheapest_first():
    names = default_candidates()
    assert {"knn", "linear", "linear_mf", "kmeans", "fusion_mf", "cmr"} <= set(names)
    assert not {"auto", "oracle", "random"} & set(names)
    assert names.index("knn") < names.index("fusion_mf")


def test_chooses_an_option_and_rule_and_reports_them():
    table, x = tiny_table(n=150, m=3, seed=1)
    router = _auto().fit(feats(x), table.correct, table.cost)
    assert router.chosen_ in set(CHEAP) | {"stack"} and router.rule_ in ("budget", "tradeoff")
    assert set(router.cv_scores_) == set(CHEAP) | {"stack"}
    chosen = router.cv_scores_[router.chosen_][router.rule_]["nAUC"]
    assert all(chosen >= s[r]["nAUC"] for s in router.cv_scores_.values() for r in s)
    report = json.loads(json.dumps(router.fit_report()))
    assert report["chosen"] == router.chosen_ and set(report["cv_seconds"]) == set(CHEAP)
    assert set(router.validation_) == {"budget", "tradeoff"}   # the guard's out-of-fold scores
    perf, cost = router.predict(feats(x[:7]))
    assert perf.shape == cost.shape == (7, 3)
    if router.chosen_ == "stack":
        assert np.isclose(router.perf_weights_.sum(), 1.0) and len(router.members_) >= 1


def test_the_choice_never_reads_test_rows():
    """Permuting the test rows' outcomes changes the test metrics, never what auto chose."""
    table, x = tiny_table(n=200, m=3, seed=2)
    train, test = table.subset(np.arange(120)), table.subset(np.arange(120, 200))
    f_train, f_test = feats(x[:120]), feats(x[120:])
    rng = np.random.default_rng(0)
    perm = rng.permutation(80)
    runs = []
    for outcomes in ((test.correct, test.cost), (test.correct[perm], test.cost[perm])):
        router = _auto()
        res = fit_and_evaluate(router, f_train, train, f_test, test, outcomes=outcomes, per_dataset=False)
        runs.append((router, res))
    (a, ra), (b, rb) = runs
    assert (a.chosen_, a.rule_, a.member_names_) == (b.chosen_, b.rule_, b.member_names_)
    np.testing.assert_array_equal(a.perf_weights_, b.perf_weights_)
    np.testing.assert_array_equal(ra.perf_pred, rb.perf_pred)
    assert ra.results["budget"].metrics["nAUC"] != rb.results["budget"].metrics["nAUC"]


def test_time_budget_drops_candidates_it_cannot_afford():
    table, x = tiny_table(n=150, m=3, seed=1)
    router = _auto(candidates=("kmeans", "linear", "knn"), time_budget_s=1e-6).fit(feats(x), table.correct, table.cost)
    # The first candidate always runs (there must be a choice); the rest cannot be afforded.
    assert router.chosen_ == "kmeans" and set(router.skipped_) == {"linear", "knn"}
    assert "budget" in router.skipped_["linear"]


def test_exports_with_parity(tmp_path):
    from mmroute.export import export_router

    table, x = tiny_table(n=150, m=3, seed=1)
    for stack in (True, False):
        router = _auto(stack=stack).fit(feats(x), table.correct, table.cost)
        result = export_router(router, feats(x[:40]), tmp_path / f"auto{stack}.onnx")
        assert result.max_abs_diff_perf <= 1e-4 and "auto" in result.backend


@pytest.mark.parametrize("bad, message", [
    ({"candidates": ("oracle",)}, r"candidates \['oracle'\] are not candidate routers"),
    ({"n_folds": 1}, r"n_folds=1 \(expected an integer >= 2\)"),
    ({"time_budget_s": 0}, r"time_budget_s=0 \(expected a number > 0\)"),
    ({"rules": ("cheapest",)}, r"rules=\('cheapest',\)"),
])
def test_bad_config_is_named(bad, message):
    with pytest.raises(ValueError, match=message):
        create_router("auto", **bad)


def test_a_torch_candidate_overrunning_its_first_fold_is_stopped_and_dropped():
    table, x = tiny_table(n=120, m=3, seed=1)
    router = _auto(candidates=("kmeans", "mlp"), time_budget_s=1e-3, max_epochs=50).fit(
        feats(x), table.correct, table.cost)
    # Stopped mid-fold ("overran") or, when the budget is already spent, never started.
    reason = router.skipped_["mlp"]
    assert router.chosen_ == "kmeans" and ("overran" in reason or "budget was spent" in reason)


def test_a_candidate_predicting_what_another_does_is_cross_validated_once():
    """Without an image modality kmeans_adaptive is kmeans: one cross-validation, reported."""
    table, x = tiny_table(n=150, m=3, seed=1)
    router = _auto(candidates=("kmeans", "kmeans_adaptive", "linear")).fit(feats(x), table.correct, table.cost)
    assert "kmeans_adaptive" not in router.cv_scores_ and "kmeans" in router.cv_scores_
    assert "exactly what kmeans predicts" in router.skipped_["kmeans_adaptive"]
    # Alone, it is cross-validated as itself.
    alone = _auto(candidates=("kmeans_adaptive", "linear")).fit(feats(x), table.correct, table.cost)
    assert "kmeans_adaptive" in alone.cv_scores_ and not alone.skipped_


def test_fit_caps_native_threads_and_restores_them(monkeypatch):
    from threadpoolctl import threadpool_info, threadpool_limits

    from mmroute.routers.nonparametric import KMeansRouter

    seen = []
    fit = KMeansRouter._fit

    def recording(self, *args, **kwargs):
        seen.append(max(p["num_threads"] for p in threadpool_info()))
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(KMeansRouter, "_fit", recording)
    table, x = tiny_table(n=90, m=3, seed=1)
    with threadpool_limits(limits=2):
        _auto(candidates=("kmeans",)).fit(feats(x), table.correct, table.cost)
        assert seen and set(seen) == {1}
        assert max(p["num_threads"] for p in threadpool_info()) == 2       # restored
        seen.clear()
        _auto(candidates=("kmeans",), threads=None).fit(feats(x), table.correct, table.cost)
        assert set(seen) == {2}


def test_threads_must_be_positive():
    with pytest.raises(ValueError, match=r"threads=0"):
        create_router("auto", threads=0)


def test_greedy_ensemble_is_an_option_with_bag_weights_and_an_honest_score():
    """greedy_steps adds Caruana's greedy ensemble (bag counts / steps) per input kind, scored on
    cross-fitted out-of-fold predictions; with greedy_steps=0 (default) the options are unchanged."""
    from fractions import Fraction

    from mmroute.routers.auto import _greedy_weights

    table, x = tiny_table(n=150, m=3, seed=1)
    off = _auto().fit(feats(x), table.correct, table.cost)
    on = _auto(greedy_steps=6).fit(feats(x), table.correct, table.cost)
    assert "greedy" not in off.cv_scores_ and "greedy" in on.cv_scores_
    assert set(on.cv_scores_) == set(off.cv_scores_) | {"greedy"}
    # Same candidates and folds: the shared options score the same.
    for opt in off.cv_scores_:
        assert on.cv_scores_[opt]["budget"]["nAUC"] == off.cv_scores_[opt]["budget"]["nAUC"]
    rng = np.random.default_rng(0)
    preds = rng.random((3, 150, 3))
    w = _greedy_weights(preds, table.cost, table.correct, table.cost, steps=6, rules=("budget",), z=1.0)
    assert np.isclose(w.sum(), 1.0) and (w >= 0).all()
    assert all(Fraction(float(v)).limit_denominator(720).denominator in (1, 2, 3, 4, 5, 6) for v in w)
    # A copy of the truth among noise: greedy picks it alone (one step, no other addition helps).
    truth = np.stack([preds[0], table.correct.astype(float), preds[2]])
    w = _greedy_weights(truth, table.cost, table.correct, table.cost, steps=4, rules=("budget",), z=1.0)
    assert w[1] == pytest.approx(1.0)
