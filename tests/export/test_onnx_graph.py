import numpy as np
import pytest

from mmroute.export.graph import (
    affine_graph,
    cluster_lookup_graph,
    knn_mean_graph,
    parallel_outputs,
    run_onnx,
)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_knn_graph_matches_brute_force_cosine_and_euclidean(rng):
    train = rng.normal(size=(60, 5))
    perf, cost = rng.random((60, 3)), rng.random((60, 3))
    x = rng.normal(size=(9, 5)).astype(np.float32)
    xd = x.astype(np.float64)
    for metric, order in (
        ("cosine", lambda: -(xd / np.linalg.norm(xd, axis=1, keepdims=True))
         @ (train / np.linalg.norm(train, axis=1, keepdims=True)).T),
        ("euclidean", lambda: ((xd[:, None, :] - train[None]) ** 2).sum(-1)),
    ):
        idx = np.argsort(order(), axis=1, kind="stable")[:, :7]
        p, c = run_onnx(knn_mean_graph(train, perf, cost, 7, metric=metric).SerializeToString(), x)
        np.testing.assert_allclose(p, perf[idx].mean(1), atol=1e-6)
        np.testing.assert_allclose(c, cost[idx].mean(1), atol=1e-6)


def test_knn_graph_ignores_missing_outcomes_and_falls_back(rng):
    train = rng.normal(size=(30, 4))
    perf = rng.random((30, 2))
    perf[::2, 0] = np.nan          # model 0 observed on odd rows only
    perf[:, 1] = np.nan            # model 1 never observed
    cost = rng.random((30, 2))
    x = rng.normal(size=(6, 4)).astype(np.float32)
    graph = knn_mean_graph(train, perf, cost, 5, perf_fallback=np.array([0.3, 0.7]),
                           cost_fallback=np.zeros(2))
    p, c = run_onnx(graph.SerializeToString(), x)
    xd = x.astype(np.float64)

    def unit(a):
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    sim = unit(xd) @ unit(train).T
    idx = np.argsort(-sim, axis=1, kind="stable")[:, :5]
    picked = perf[idx, 0]
    seen = ~np.isnan(picked)
    expected0 = np.where(seen.any(1), np.where(seen, picked, 0).sum(1) / np.maximum(seen.sum(1), 1), 0.3)
    np.testing.assert_allclose(p[:, 0], expected0, atol=1e-6)
    np.testing.assert_allclose(p[:, 1], 0.7, atol=1e-6)
    np.testing.assert_allclose(c, cost[idx].mean(1), atol=1e-6)


def test_knn_graph_rejects_bad_metric_and_shapes(rng):
    with pytest.raises(ValueError, match="unsupported metric 'manhattan'"):
        knn_mean_graph(rng.normal(size=(4, 2)), np.zeros((4, 1)), np.zeros((4, 1)), 2, metric="manhattan")
    with pytest.raises(ValueError, match=r"perf_table must have shape \(4, M\)"):
        knn_mean_graph(rng.normal(size=(4, 2)), np.zeros((3, 1)), np.zeros((4, 1)), 2)


def test_cluster_lookup_graph_picks_nearest_centre(rng):
    centres = rng.normal(size=(4, 3)) * 3
    perf, cost = rng.random((4, 2)), rng.random((4, 2))
    x = rng.normal(size=(20, 3)).astype(np.float32) * 3
    label = ((x[:, None, :].astype(np.float64) - centres[None]) ** 2).sum(-1).argmin(1)
    p, c = run_onnx(cluster_lookup_graph(centres, perf, cost).SerializeToString(), x)
    np.testing.assert_allclose(p, perf[label], atol=1e-6)
    np.testing.assert_allclose(c, cost[label], atol=1e-6)


def test_affine_and_parallel_outputs_from_skl2onnx(rng):
    from skl2onnx import to_onnx
    from sklearn.decomposition import PCA
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline

    x = rng.normal(size=(50, 6)).astype(np.float32)
    y_perf, y_cost = rng.random((50, 3)), rng.random((50, 3))
    perf_model = make_pipeline(PCA(3), Ridge()).fit(x, y_perf)
    cost_model = Ridge(alpha=2.0).fit(x, y_cost)
    graph = parallel_outputs(to_onnx(perf_model, x[:1]), to_onnx(cost_model, x[:1]))
    p, c = run_onnx(graph.SerializeToString(), x)
    np.testing.assert_allclose(p, perf_model.predict(x), atol=1e-5)
    np.testing.assert_allclose(c, cost_model.predict(x), atol=1e-5)

    w, b = rng.normal(size=(6, 4)), rng.normal(size=4)
    p, c = run_onnx(affine_graph(w, b).SerializeToString(), x)
    np.testing.assert_allclose(np.concatenate([p, c], 1), x.astype(np.float64) @ w + b, atol=1e-5)
