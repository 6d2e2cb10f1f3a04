"""random, oracle, knn, kmeans, kmeans_adaptive on tiny data built here."""

from __future__ import annotations

import numpy as np
import pytest

from mmroute.routers import NotFittedError, create_router, list_routers
from mmroute.routers.nonparametric import masked_group_means, neighbour_means
from router_data import feats, raw_router, tiny_problem

NAMES = ["random", "oracle", "knn", "kmeans", "kmeans_adaptive"]


def _fit_predict(name, x, correct, cost, test_x=None, **cfg):
    router = raw_router(name, **cfg).fit(feats(x), correct, cost)
    test_x = x if test_x is None else test_x
    kw = {"correct": correct[: len(test_x)], "cost": cost[: len(test_x)]} if router.needs_outcomes else {}
    return router, router.predict(feats(test_x), **kw)


@pytest.mark.parametrize("name", NAMES)
def test_shapes_determinism_and_fitted_check(name):
    x, correct, cost = tiny_problem(missing=0.2)
    with pytest.raises(NotFittedError, match="not fitted"):
        raw_router(name).predict(feats(x))
    _, (perf, pc) = _fit_predict(name, x, correct, cost, test_x=x[:7], seed=3)
    assert perf.shape == pc.shape == (7, 3)
    assert np.isfinite(perf).all() and np.isfinite(pc).all()
    _, (perf2, pc2) = _fit_predict(name, x, correct, cost, test_x=x[:7], seed=3)
    np.testing.assert_array_equal(perf, perf2)
    np.testing.assert_array_equal(pc, pc2)


def test_registry_lists_routers_and_unknown_name_lists_valid_ones():
    assert set(NAMES) <= set(list_routers())
    with pytest.raises(KeyError, match=r"unknown router 'knnn'; valid names: .*kmeans.*knn"):
        create_router("knnn")


@pytest.mark.parametrize("name, bad, match", [
    ("knn", {"metric": "manhattan"}, r"metric='manhattan' \(expected one of \['cosine', 'euclidean'\]\)"),
    ("knn", {"k": 0}, r"k=0 \(expected an integer >= 1\)"),
    ("knn", {"ks": (5, 0)}, r"ks=\(5, 0\)"),
    ("kmeans", {"n_clusters": 0}, r"n_clusters=0"),
    ("kmeans_adaptive", {"temperature": 0.0, "norm_weight": 2.0}, r"temperature=0.0.*norm_weight=2.0"),
    ("knn", {"neighbours": 3}, r"unknown option\(s\) \['neighbours'\].*valid: \['ef_search', 'guard', 'guard_folds', "
                               r"'guard_z', 'hnsw_m', 'index', 'index_threshold', 'k', 'ks', 'metric', 'seed'\]"),
])
def test_bad_config_is_reported_with_valid_values(name, bad, match):
    with pytest.raises(ValueError, match=match):
        raw_router(name, **bad)


def test_knn_is_the_mean_of_the_k_cosine_neighbours():
    x, correct, cost = tiny_problem()
    router, (perf, pc) = _fit_predict("knn", x, correct, cost, test_x=x[:5], k=4)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    for i in range(5):
        nearest = np.argsort(-(xn @ xn[i]), kind="stable")[:4]
        np.testing.assert_allclose(perf[i], correct[nearest].mean(axis=0))
        np.testing.assert_allclose(pc[i], cost[nearest].mean(axis=0))


def test_knn_and_kmeans_ignore_missing_outcomes():
    x, correct, cost = tiny_problem(missing=0.3)
    # k = every training row: the prediction is the mean over the observed rows only.
    _, (perf, pc) = _fit_predict("knn", x, correct, cost, test_x=x[:2], k=len(x))
    np.testing.assert_allclose(perf[0], np.nanmean(correct, axis=0))
    np.testing.assert_allclose(pc[0], np.nanmean(cost, axis=0))
    assert not np.isclose(perf[0, 0], np.nan_to_num(correct[:, 0]).mean())
    _, (perf, pc) = _fit_predict("kmeans", x, correct, cost, n_clusters=1)
    np.testing.assert_allclose(perf[0], np.nanmean(correct, axis=0))


def test_averages_over_no_observed_value_fall_back_to_the_training_mean():
    values = np.array([[np.nan, 1.0], [np.nan, 0.0], [1.0, 1.0]])
    fallback = np.array([0.25, 0.5])
    out = neighbour_means(values, np.array([[0, 1], [1, 2]]), fallback)
    np.testing.assert_allclose(out, [[0.25, 0.5], [1.0, 0.5]])
    many = neighbour_means(values, np.array([[2, 0, 1]]), fallback, ks=[1, 3])
    np.testing.assert_allclose(many[1], [[1.0, 1.0]])
    np.testing.assert_allclose(many[3], [[1.0, 2 / 3]])
    means = masked_group_means(values, np.array([0, 0, 1]), 3, fallback)
    np.testing.assert_allclose(means, [[0.25, 0.5], [1.0, 1.0], [0.25, 0.5]])


def test_knn_chooses_k_by_leave_one_out_on_training_rows():
    x, correct, cost = tiny_problem(n=80)
    router = raw_router("knn", ks=(1, 5, 20, 500)).fit(feats(x), correct, cost)
    # 500 > n - 1 other rows: it stands for "all other rows" (79).
    assert set(router.loo_brier_) == {1, 5, 20, 79}
    assert router.k_ == min(router.loo_brier_, key=router.loo_brier_.get)
    # Noisy 0/1 outcomes: a single neighbour is the worst smoother.
    assert router.loo_brier_[1] > min(router.loo_brier_.values())
    assert router.selected_options() == {"k": router.k_, "ks": ()}


def test_kmeans_predicts_cluster_means_and_clips_clusters():
    x, correct, cost = tiny_problem(missing=0.2)
    router, (perf, pc) = _fit_predict("kmeans", x, correct, cost, n_clusters=4)
    labels = router.kmeans_.labels_
    for c in range(4):
        rows = labels == c
        np.testing.assert_allclose(perf[rows][0], np.nanmean(correct[rows], axis=0))
        np.testing.assert_allclose(pc[rows][0], np.nanmean(cost[rows], axis=0))
    small = raw_router("kmeans", n_clusters=50).fit(feats(x[:10]), correct[:10], cost[:10])
    assert small.kmeans_.n_clusters == 10


def test_kmeans_adaptive_equals_kmeans_without_images_and_fuses_with_them():
    x, correct, cost = tiny_problem()
    _, (p1, c1) = _fit_predict("kmeans", x, correct, cost, n_clusters=5, seed=1)
    router, (p2, c2) = _fit_predict("kmeans_adaptive", x, correct, cost, n_clusters=5, seed=1)
    assert router.fusion_ is None
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_array_equal(c1, c2)

    rng = np.random.default_rng(1)
    image = rng.normal(size=(len(x), 4)).astype(np.float32)
    mask = rng.random(len(x)) < 0.7
    image[~mask] = 0
    f = feats(x, image, mask)
    adaptive = raw_router("kmeans_adaptive", n_clusters=5, seed=1).fit(f, correct, cost)
    assert adaptive.fusion_ is not None
    fused = adaptive.fusion_.transform(x, image, mask)
    np.testing.assert_array_equal(adaptive.kmeans_.predict(fused), adaptive.kmeans_.labels_)
    perf, _ = adaptive.predict(f)
    np.testing.assert_allclose(perf, adaptive.perf_centers_[adaptive.kmeans_.labels_])


def test_random_is_seeded_and_costs_are_training_means():
    x, correct, cost = tiny_problem(missing=0.2)
    _, (p1, c1) = _fit_predict("random", x, correct, cost, seed=1)
    _, (p2, _) = _fit_predict("random", x, correct, cost, seed=2)
    assert not np.allclose(p1, p2)
    assert ((p1 >= 0) & (p1 < 1)).all()
    np.testing.assert_allclose(c1[0], np.nanmean(cost, axis=0))


def test_oracle_needs_and_returns_the_actual_outcomes():
    x, correct, cost = tiny_problem(missing=0.2)
    router = create_router("oracle").fit(feats(x), correct, cost)
    with pytest.raises(ValueError, match="reads the actual outcomes"):
        router.predict(feats(x))
    perf, pc = router.predict(feats(x), correct=correct, cost=cost)
    observed = ~np.isnan(correct)
    np.testing.assert_array_equal(perf[observed], correct[observed])
    np.testing.assert_allclose(perf[~observed[:, 0], 0], np.nanmean(correct[:, 0]))
    with pytest.raises(ValueError, match=r"outcomes must have shape \(60, 3\)"):
        router.predict(feats(x), correct=correct[:5], cost=cost[:5])


def test_knn_hnsw_index_has_measured_recall_and_exports_the_exact_graph(tmp_path):
    """Above the threshold, knn searches a faiss HNSW index; the ONNX graph stays exact TopK and its
    parity is checked against the exact neighbours; the fitted router pickles with its index."""
    import pickle

    from mmroute.export.core import export_router
    from mmroute.features.types import Features
    from mmroute.routers import create_router

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, 16))
    x = (centres[rng.integers(0, 20, 3000)] + 0.3 * rng.normal(size=(3000, 16))).astype(np.float32)
    correct = (x[:, :3] > 0).astype(float)
    cost = np.exp(0.1 * x[:, 3:6])
    train, test = Features.from_array(x[:2500]), Features.from_array(x[2500:])
    exact = create_router("knn", k=20, index="exact", guard="off").fit(train, correct[:2500], cost[:2500])
    auto = create_router("knn", k=20, index_threshold=2000, guard="off").fit(train, correct[:2500], cost[:2500])
    assert exact.index_ is None and auto.index_ is not None
    assert 0.95 <= auto.index_recall_ <= 1.0
    p_exact, c_exact = exact.predict(test)
    p_auto, c_auto = auto.predict(test)
    np.testing.assert_allclose(auto.predict_exact(test)[0], p_exact, atol=1e-12)
    # Approximate neighbours give close, not identical, predictions.
    assert np.abs(p_auto - p_exact).mean() < 0.02
    result = export_router(auto, test, tmp_path / "knn.onnx")
    assert result.max_abs_diff_perf <= 1e-4 and "exact TopK" in result.backend
    again = pickle.loads(pickle.dumps(auto))
    np.testing.assert_array_equal(again.predict(test)[0], p_auto)
    below = create_router("knn", k=20).fit(train, correct[:2500], cost[:2500])  # default threshold 50k
    assert below.index_ is None


def test_neighbour_selection_is_the_stable_sort_prefix_ties_included():
    from mmroute.routers.nonparametric import _smallest_stable

    rng = np.random.default_rng(0)
    for trial in range(100):
        # Few distinct values: ties inside, across and at the k-th position.
        key = rng.integers(0, 4, size=(6, 25)).astype(float) if trial % 2 else rng.normal(size=(6, 25))
        k = int(rng.integers(1, 26))
        np.testing.assert_array_equal(_smallest_stable(key, k), np.argsort(key, axis=1, kind="stable")[:, :k])


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_exact_search_in_small_query_blocks_gives_the_same_neighbours(monkeypatch, metric):
    """The exact search caps each block at _EXACT_BLOCK_PAIRS (query, training row) pairs so its
    memory does not grow with the training rows; the neighbours (ties by index) do not change."""
    from mmroute.routers import nonparametric

    rng = np.random.default_rng(1)
    x = np.round(rng.normal(size=(300, 6)), 1)  # rounded: duplicate rows give ties at every rank
    x[100:130] = x[:30]
    correct = (rng.random((300, 3)) < 0.5).astype(float)
    cost = rng.random((300, 3))
    router = create_router("knn", k=25, metric=metric, index="exact", guard="off").fit(feats(x), correct, cost)
    full = router._neighbours(x, 25)
    monkeypatch.setattr(nonparametric, "_EXACT_BLOCK_PAIRS", 7 * 300)  # 7 queries a block
    np.testing.assert_array_equal(router._neighbours(x, 25), full)
    monkeypatch.setattr(nonparametric, "_EXACT_BLOCK_PAIRS", 1)  # one query a block
    np.testing.assert_array_equal(router._neighbours(x, 25), full)
