"""Non-parametric routers: ``random``, ``oracle``, ``knn``, ``kmeans`` and ``kmeans_adaptive``.

These follow the MMR-Bench reference routers (its ``RandomRouter``, ``OracleRouter``,
``KNNRouter``, ``KMeansRouter`` and ``KMeansRouterNew``) with the same defaults: k = 50 cosine
neighbours, 20 clusters with ``KMeans(random_state=seed, n_init="auto")``. Differences, on
purpose: missing outcomes (NaN) are ignored per model when averaging (the reference fills them
with column means first), and an average over no observed value falls back to the model's
training mean instead of NaN. ``random`` scores instances with seeded uniform draws (the reference
draws random assignments inside its own evaluation; here the shared decision rules do that).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mmroute.constraints import Integral, Interval, Options, Real, SequenceOf
from mmroute.features.types import Features
from mmroute.routers.base import Router, RouterConfig

__all__ = ["RandomConfig", "RandomRouter", "OracleConfig", "OracleRouter", "KNNConfig", "KNNRouter",
           "KMeansConfig", "KMeansRouter", "KMeansAdaptiveConfig", "KMeansAdaptiveRouter",
           "masked_column_means", "masked_group_means", "KNN_METRICS"]

log = logging.getLogger(__name__)

KNN_METRICS = ("cosine", "euclidean")
KNN_INDEXES = ("auto", "exact", "hnsw")
_RECALL_QUERIES = 1000
# The exact search scores query blocks of at most this many (query, training row) pairs, so its
# working set (the float64 keys and argpartition's int64 indices, 16 bytes a pair: 256 MiB) does
# not grow with the training rows: 1,024 queries x 800k rows would be 13 GiB.
_EXACT_BLOCK_PAIRS = 1 << 24


def masked_column_means(y: np.ndarray) -> np.ndarray:
    """Mean of each column over its observed (non-NaN) rows, shape (M,); 0 for an empty column."""
    observed = ~np.isnan(y)
    counts = observed.sum(axis=0)
    sums = np.where(observed, y, 0.0).sum(axis=0)
    return np.divide(sums, counts, out=np.zeros(y.shape[1]), where=counts > 0)


def masked_group_means(y: np.ndarray, groups: np.ndarray, n_groups: int, fallback: np.ndarray
                       ) -> np.ndarray:
    """Per-group, per-column mean over observed rows, shape (n_groups, M).

    ``groups`` (n,) holds group ids in ``[0, n_groups)``; a (group, column) with no observed row
    takes ``fallback[column]``.
    """
    observed = ~np.isnan(y)
    sums = np.zeros((n_groups, y.shape[1]))
    counts = np.zeros((n_groups, y.shape[1]))
    np.add.at(sums, groups, np.where(observed, y, 0.0))
    np.add.at(counts, groups, observed.astype(np.float64))
    return np.where(counts > 0, sums / np.maximum(counts, 1.0), fallback[None, :])


def neighbour_means(values: np.ndarray, idx: np.ndarray, fallback: np.ndarray,
                    ks: Sequence[int] | None = None) -> np.ndarray | dict[int, np.ndarray]:
    """Mean of ``values`` (n_train, M) over each row's first k neighbours in ``idx`` (n, K),
    ignoring NaN; where all of them miss a model, that model's ``fallback`` value.

    Returns (n, M) for k = K, or with ``ks`` a dict k -> (n, M) for each k <= K, in one pass:
    sums grow by one sparse (n, n_train) product per band of neighbour ranks, never
    materialising the (n, K, M) gather (1 GB at 10k rows, K = 400, M = 30).
    """
    from scipy import sparse

    n, big_k = idx.shape
    want = [big_k] if ks is None else sorted(set(int(k) for k in ks))
    observed = ~np.isnan(values)
    filled = np.where(observed, values, 0.0)
    both = np.concatenate([filled, observed.astype(np.float64)], axis=1)     # (n_train, 2M)
    m = values.shape[1]
    acc = np.zeros((n, 2 * m))
    out, prev = {}, 0
    for k in want:
        band = idx[:, prev:k]
        rows = np.repeat(np.arange(n), band.shape[1])
        pick = sparse.csr_matrix((np.ones(rows.size), (rows, band.ravel())), shape=(n, len(values)))
        acc += pick @ both
        sums, counts = acc[:, :m], acc[:, m:]
        out[k] = np.where(counts > 0, sums / np.maximum(counts, 1.0), fallback[None, :])
        prev = k
    return out[want[0]] if ks is None else out


# --------------------------------------------------------------------------- baselines
@dataclasses.dataclass
class RandomConfig(RouterConfig):
    """Uniform random performance scores from ``seed``; cost = each model's training mean cost.

    No guard by default: a lower bound should stay one."""

    guard: str = "off"


class RandomRouter(Router):
    """Seeded random scores: a lower bound. Fitted: ``mean_cost_`` (M,)."""

    name = "random"
    config_class = RandomConfig
    not_deployable_reason = ("its scores are fresh random draws, not a function of the input "
                             "(a baseline for evaluation, not a deployable router)")

    def _fit(self, features, correct, cost, **_):
        self.mean_cost_ = masked_column_means(cost)

    def _predict(self, features, **_):
        # A fresh generator per call: the same rows always get the same scores.
        rng = np.random.default_rng(self.config.seed)
        n = len(features)
        return rng.random((n, self.n_models_)), np.tile(self.mean_cost_, (n, 1))


@dataclasses.dataclass
class OracleConfig(RouterConfig):
    """No options: the oracle predicts the actual outcomes."""


class OracleRouter(Router):
    """The upper bound: predicts the actual outcomes passed at prediction time.

    Missing actual outcomes are filled with the column mean of the rows given (as evaluation does).
    """

    name = "oracle"
    config_class = OracleConfig
    needs_outcomes = True
    blendable = False
    not_deployable_reason = ("it reads the actual outcomes at prediction time (an upper bound "
                             "for evaluation, not a deployable router)")

    def _fit(self, features, correct, cost, **_):
        self.fitted_rows_ = int(correct.shape[0])

    def _predict(self, features, *, correct, cost):
        correct = np.asarray(correct, dtype=np.float64)
        cost = np.asarray(cost, dtype=np.float64)
        expected = (len(features), self.n_models_)
        if correct.shape != expected or cost.shape != expected:
            raise ValueError(f"oracle: outcomes must have shape {expected}, got {correct.shape} and {cost.shape}")
        return _fill(correct), _fill(cost)


def _fill(a: np.ndarray) -> np.ndarray:
    means = masked_column_means(a)
    return np.where(np.isnan(a), means[None, :], a)


# --------------------------------------------------------------------------- kNN
@dataclasses.dataclass
class KNNConfig(RouterConfig):
    """Mean outcome and cost of the ``k`` nearest training rows (``metric``: cosine or euclidean).

    ``ks``: a grid; when non-empty, ``k`` is chosen by leave-one-out Brier error of the
    performance prediction on the training rows (each row's neighbours exclude itself).

    ``index``: how neighbours are searched. ``exact``: a brute-force scan (stable tie order);
    ``hnsw``: a faiss HNSW graph (``hnsw_m`` links per node, ``ef_search`` candidates per query),
    approximate, with its recall@k against the exact search measured on training rows at fit
    (``index_recall_``); ``auto``: ``hnsw`` from ``index_threshold`` training rows on, else exact.
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "k": [Interval(Integral, 1, None, closed="left")],
        "metric": [Options(KNN_METRICS)],
        "ks": [SequenceOf(Interval(Integral, 1, None, closed="left"), what="or empty for a fixed k")],
        "index": [Options(KNN_INDEXES)],
        "index_threshold": [Interval(Integral, 1, None, closed="left")],
        "hnsw_m": [Interval(Integral, 4, None, closed="left")],
        "ef_search": [Interval(Integral, 1, None, closed="left")],
    }

    k: int = 50
    metric: str = "cosine"
    ks: tuple[int, ...] = ()
    index: str = "auto"
    index_threshold: int = 50_000
    hnsw_m: int = 32
    ef_search: int = 256


class KNNRouter(Router):
    """MMR-Bench ``KNNRouter``.

    Fitted: ``train_x_`` (n_train, d) float64 training features, ``perf_values_`` and
    ``cost_values_`` (n_train, M) with NaN where missing, ``k_`` (neighbours used),
    ``perf_mean_``/``cost_mean_`` (M,) the fallbacks, ``loo_brier_`` (k -> error) when ``ks`` is set.

    Neighbours at equal distance are taken in training-row order (a stable sort), so predictions
    are reproducible and match the exported ONNX graph (TopK breaks ties the same way); sklearn's
    tree/brute searches leave that order unspecified, which matters with duplicate questions.
    """

    name = "knn"
    config_class = KNNConfig
    deployable = True

    def _fit(self, features, correct, cost, **_):
        c = self.config
        n = len(features)
        self.perf_values_, self.cost_values_ = correct.copy(), cost.copy()
        self.perf_mean_, self.cost_mean_ = masked_column_means(correct), masked_column_means(cost)
        self.train_x_ = np.asarray(features.fused, dtype=np.float64).copy()
        self.index_ = None
        if c.index == "hnsw" or (c.index == "auto" and n >= c.index_threshold):
            self._build_index()
        k = c.k
        if c.ks:
            k = self._select_k(features.fused, correct, sorted(set(c.ks)))
        if k > n:
            log.warning("knn: k=%d clipped to the %d training rows", k, n)
        self.k_ = int(min(k, n))

    def _select_k(self, x: np.ndarray, correct: np.ndarray, grid: list[int]) -> int:
        n = len(x)
        kmax = min(max(grid), n - 1)
        if kmax < 1:
            return grid[0]
        # kmax + 1 neighbours of each training row, itself dropped (duplicates keep one copy).
        idx = self._neighbours(x, kmax + 1)
        own = idx == np.arange(n)[:, None]
        drop = np.where(own.any(axis=1), own.argmax(axis=1), kmax)
        keep = np.ones_like(idx, dtype=bool)
        keep[np.arange(n), drop] = False
        idx = idx[keep].reshape(n, kmax)
        observed = ~np.isnan(correct)
        self.loo_brier_ = {}
        # Grid values beyond the n - 1 other rows all mean "every other row".
        grid = sorted(set(min(k, kmax) for k in grid))
        preds = neighbour_means(correct, idx, self.perf_mean_, ks=grid)
        for k in grid:
            self.loo_brier_[k] = float(np.mean((preds[k] - correct)[observed] ** 2))
        best = min(self.loo_brier_, key=self.loo_brier_.get)
        log.info("knn: k=%d chosen by leave-one-out Brier %s", best,
                 {k: round(v, 5) for k, v in self.loo_brier_.items()})
        return best

    def selected_options(self) -> dict[str, Any]:
        """Options that refit this router with the hyper-parameters it selected (for ensembles'
        out-of-fold refits: the leave-one-out choice of ``k`` is made once, on all rows)."""
        self.check_fitted()
        return {"k": self.k_, "ks": ()}

    # ------------------------------------------------------------------ the index
    def _unit(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self.config.metric == "cosine":
            x = x / np.where((nx := np.linalg.norm(x, axis=1, keepdims=True)) > 0, nx, 1.0)
        return x

    def _build_index(self) -> None:
        """A faiss HNSW graph over the training rows (inner product on unit vectors for cosine,
        L2 otherwise), and its recall@k against the exact search on up to 1,000 training rows."""
        import faiss

        c = self.config
        d = self.train_x_.shape[1]
        metric = faiss.METRIC_INNER_PRODUCT if c.metric == "cosine" else faiss.METRIC_L2
        index = faiss.IndexHNSWFlat(d, int(c.hnsw_m), metric)
        index.hnsw.efConstruction = max(2 * int(c.hnsw_m), 64)
        index.add(np.ascontiguousarray(self._unit(self.train_x_), dtype=np.float32))
        index.hnsw.efSearch = int(c.ef_search)
        self.index_ = index
        rng = np.random.default_rng(c.seed)
        n = len(self.train_x_)
        probe = rng.choice(n, size=min(_RECALL_QUERIES, n), replace=False)
        k = min(c.k, n)
        approx = self._neighbours(self.train_x_[probe], k)
        exact = self._neighbours(self.train_x_[probe], k, exact=True)
        hits = sum(len(np.intersect1d(a, e, assume_unique=True)) for a, e in zip(approx, exact))
        self.index_recall_ = float(hits / exact.size)
        log.info("knn: HNSW index over %d rows (M=%d, efSearch=%d), recall@%d %.4f on %d training rows",
                 n, c.hnsw_m, c.ef_search, k, self.index_recall_, len(probe))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if state.get("index_") is not None:  # faiss indexes pickle as their serialised bytes
            import faiss

            state["index_"] = faiss.serialize_index(state["index_"])
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if isinstance(state.get("index_"), np.ndarray):
            import faiss

            state["index_"] = faiss.deserialize_index(state["index_"])
        self.__dict__.update(state)

    def _neighbours(self, x: np.ndarray, k: int, chunk: int = 1024, *, exact: bool = False) -> np.ndarray:
        """Indices (n, k) of the k nearest training rows, nearest first; the exact search breaks
        ties by training index, the HNSW index (when fitted and not ``exact``) is approximate."""
        if getattr(self, "index_", None) is not None and not exact:
            _, idx = self.index_.search(np.ascontiguousarray(self._unit(x), dtype=np.float32), k)
            if (idx < 0).any():  # fewer than k reachable nodes: complete from the exact search
                bad = np.flatnonzero((idx < 0).any(axis=1))
                idx[bad] = self._neighbours(x[bad], k, exact=True)
            return idx.astype(np.int64)
        train = self.train_x_
        if self.config.metric == "cosine":
            train = train / np.where((nt := np.linalg.norm(train, axis=1, keepdims=True)) > 0, nt, 1.0)
        else:
            sq = (train ** 2).sum(axis=1)
        out = np.empty((len(x), k), dtype=np.int64)
        chunk = max(1, min(chunk, _EXACT_BLOCK_PAIRS // max(len(train), 1)))
        for start in range(0, len(x), chunk):
            xb = np.asarray(x[start:start + chunk], dtype=np.float64)
            if self.config.metric == "cosine":
                xb = xb / np.where((nx := np.linalg.norm(xb, axis=1, keepdims=True)) > 0, nx, 1.0)
                key = -(xb @ train.T)  # larger similarity first
            else:
                key = sq[None, :] - 2.0 * (xb @ train.T)  # ||x||^2 does not change the order
            out[start:start + chunk] = _smallest_stable(key, k)
        return out

    def _predict(self, features, **_):
        idx = self._neighbours(features.fused, self.k_)
        return (neighbour_means(self.perf_values_, idx, self.perf_mean_),
                neighbour_means(self.cost_values_, idx, self.cost_mean_))

    def predict_exact(self, features: Features) -> tuple[np.ndarray, np.ndarray]:
        """Predictions from the exact neighbours (what the exported graph computes), index or not."""
        self.check_fitted()
        idx = self._neighbours(features.fused, self.k_, exact=True)
        return (self.apply_guard(neighbour_means(self.perf_values_, idx, self.perf_mean_)),
                neighbour_means(self.cost_values_, idx, self.cost_mean_))

    def export_reference(self, features: Features) -> tuple[np.ndarray, np.ndarray]:
        return self.predict_exact(features)

    def write_onnx(self, x_sample: np.ndarray, path: Path, *, opset: int, exporter: str) -> str:
        """A hand-built graph (cosine similarity or distance, TopK, Gather, NaN-aware mean):
        skl2onnx's ``KNeighborsRegressor`` converter averages plainly, while this router skips
        missing outcomes. The graph's TopK is exact; with an HNSW index the native router is
        approximate (``index_recall_``), so parity is checked against :meth:`predict_exact`."""
        from mmroute.export.graph import knn_mean_graph, save_model

        save_model(knn_mean_graph(self.train_x_, self.perf_values_, self.cost_values_, self.k_,
                                  metric=self.config.metric, perf_fallback=self.perf_mean_,
                                  cost_fallback=self.cost_mean_, opset=opset), path)
        if getattr(self, "index_", None) is not None:
            return f"onnx (exact TopK neighbour means; native HNSW recall@k {self.index_recall_:.4f})"
        return "onnx (TopK neighbour means)"


def _smallest_stable(key: np.ndarray, k: int) -> np.ndarray:
    """Per row, the indices of the ``k`` smallest keys in ascending order, ties by index: exactly
    ``np.argsort(key, kind="stable")[:, :k]``, in O(n) per row (a partition, then a sort of k)
    instead of a full sort; rows with ties straddling the k-th key take the full stable sort."""
    n_rows, width = key.shape
    if k >= width:
        return np.argsort(key, axis=1, kind="stable")[:, :k]
    part = np.argpartition(key, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(key, part, axis=1)
    kth = vals.max(axis=1, keepdims=True)
    # The k-th key ties with keys outside the partition: which of them comes first is by index.
    straddle = (key == kth).sum(axis=1) != (vals == kth).sum(axis=1)
    order = np.lexsort((part, vals), axis=1)
    out = np.take_along_axis(part, order, axis=1)
    if straddle.any():
        out[straddle] = np.argsort(key[straddle], axis=1, kind="stable")[:, :k]
    return out


# --------------------------------------------------------------------------- k-means
@dataclasses.dataclass
class KMeansConfig(RouterConfig):
    """Per-cluster mean outcomes and costs of ``n_clusters`` k-means clusters (seeded by ``seed``)."""

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "n_clusters": [Interval(Integral, 1, None, closed="left")]}

    n_clusters: int = 20


class KMeansRouter(Router):
    """MMR-Bench ``KMeansRouter``.

    Fitted: ``kmeans_`` (sklearn ``KMeans``), ``perf_centers_`` and ``cost_centers_``
    (n_clusters, M) the per-cluster means over observed outcomes.
    """

    name = "kmeans"
    config_class = KMeansConfig
    deployable = True

    def _inputs(self, features: Features, *, fit: bool) -> np.ndarray:
        return features.fused

    def _fit(self, features, correct, cost, **_):
        from sklearn.cluster import KMeans

        x = self._inputs(features, fit=True)
        k = min(self.config.n_clusters, len(x))
        if k != self.config.n_clusters:
            log.warning("%s: n_clusters=%d clipped to the %d training rows", self.name,
                        self.config.n_clusters, len(x))
        self.kmeans_ = KMeans(n_clusters=k, random_state=self.config.seed, n_init="auto")
        labels = self.kmeans_.fit_predict(x)
        self.perf_centers_ = masked_group_means(correct, labels, k, masked_column_means(correct))
        self.cost_centers_ = masked_group_means(cost, labels, k, masked_column_means(cost))

    def _predict(self, features, **_):
        labels = self.kmeans_.predict(self._inputs(features, fit=False))
        return self.perf_centers_[labels], self.cost_centers_[labels]

    def _cluster_lookup(self, g: Any, fused64: str, width: int) -> tuple[str, str]:
        """The fitted ``KMeans`` converted by skl2onnx (float64; its ``label`` output), then a
        Gather of the per-cluster mean outcomes and costs: (perf, cost) tensors of ``g``."""
        from mmroute.export.graph import sklearn_graph

        km = sklearn_graph(self.kmeans_, width, g.opset)
        label = g.embed(km, {km.graph.input[0].name: fused64}, "kmeans_")["label"]
        values = np.concatenate([self.perf_centers_, self.cost_centers_], axis=1)
        row = g.op("Gather", g.const(values), label, axis=0)
        m = self.n_models_
        perf, cost = g.op("Split", row, g.const([m, m], np.int64), n_out=2, axis=1)
        return perf, cost

    def write_onnx(self, x_sample: np.ndarray, path: Path, *, opset: int, exporter: str) -> str:
        from mmroute.export.graph import GraphBuilder, save_model

        g = GraphBuilder(x_sample.shape[1], opset=opset)
        save_model(g.finish(*self._cluster_lookup(g, g.x64, x_sample.shape[1])), path)
        return "skl2onnx (KMeans) + onnx lookup"


@dataclasses.dataclass
class KMeansAdaptiveConfig(KMeansConfig):
    """``kmeans`` on adaptively fused text and image features (MMR-Bench ``kmeansnew``).

    The fusion's statistics are fitted on the training rows; ``temperature`` and ``norm_weight``
    are :class:`~mmroute.features.fusion.AdaptiveFusion`'s (the reference's eta = 5 is a
    temperature of 0.2). Without an image modality this is exactly ``kmeans``.
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "temperature": [Interval(Real, 0, None, closed="neither")],
        "norm_weight": [Interval(Real, 0, 1, closed="both")],
    }

    temperature: float = 0.2
    norm_weight: float = 0.5


class KMeansAdaptiveRouter(KMeansRouter):
    """k-means on :class:`~mmroute.features.fusion.AdaptiveFusion` of ``features.text`` and
    ``features.image``. Fitted: ``fusion_`` (None when there was no image modality), plus kmeans'."""

    name = "kmeans_adaptive"
    config_class = KMeansAdaptiveConfig

    def _inputs(self, features: Features, *, fit: bool) -> np.ndarray:
        from mmroute.features.fusion import AdaptiveFusion

        if fit:
            self.fusion_ = None
            if _has_images(features):
                self.fusion_ = AdaptiveFusion(temperature=self.config.temperature,
                                              norm_weight=self.config.norm_weight)
                self.fusion_.fit(features.text, features.image, features.image_mask)
            else:
                log.info("kmeans_adaptive: no image modality in training; clustering the fused features")
        if self.fusion_ is None:
            return features.fused
        if features.text is None:
            raise ValueError("kmeans_adaptive was fitted with text and image features; "
                             "these features have no text modality")
        return self.fusion_.transform(features.text, features.image, features.image_mask)

    def same_predictions_as(self, features: Features) -> Router | None:
        """Without an image modality this is ``kmeans`` with the same clusters and seed."""
        if _has_images(features):
            return None
        shared = {f.name: getattr(self.config, f.name) for f in dataclasses.fields(KMeansConfig)}
        return KMeansRouter(KMeansConfig(**shared))

    def onnx_input(self, features: Features) -> np.ndarray:
        """``[text, image, image_mask]`` when fitted with a fusion (the graph recomputes it), else
        the fused vector (plain ``kmeans``)."""
        self.check_fitted()
        if self.fusion_ is None:
            return super().onnx_input(features)
        from mmroute.export.fusion_graph import modality_input

        return modality_input(self.fusion_, features)

    def write_onnx(self, x_sample: np.ndarray, path: Path, *, opset: int, exporter: str) -> str:
        if self.fusion_ is None:
            return super().write_onnx(x_sample, path, opset=opset, exporter=exporter)
        from mmroute.export.fusion_graph import adaptive_fusion
        from mmroute.export.graph import GraphBuilder, save_model

        g = GraphBuilder(x_sample.shape[1], opset=opset)
        fused = adaptive_fusion(g, self.fusion_)
        save_model(g.finish(*self._cluster_lookup(g, fused, self.fusion_.n_features_out_)), path)
        return "onnx (adaptive fusion) + skl2onnx (KMeans) + onnx lookup"


def _has_images(features: Features) -> bool:
    """Text and image modalities, with at least one row that has an image."""
    return (features.text is not None and features.image is not None
            and (features.image_mask is None or bool(features.image_mask.any())))
