"""Export adapters per router family, reading each router's fitted attributes.

Torch routers need no entry here: any router with a torch ``network_`` and ``export_input`` is
exported by :data:`mmroute.export.core.TORCH_ADAPTER`. The others:

- ``linear``: its ridge heads as one affine map (``router.affine_map()``), a float64 MatMul;
  there is no fitted sklearn estimator to convert (the heads are solved in closed form);
- ``linear_mf``: the fitted ``TruncatedSVD`` converted by skl2onnx (in float64), then the ridge
  heads as a MatMul;
- ``kmeans``: the fitted ``KMeans`` converted by skl2onnx (float64; its ``label`` output), then a
  Gather of the per-cluster mean outcomes and costs;
- ``kmeans_adaptive``: the adaptive fusion written as ONNX ops (:mod:`mmroute.export.fusion_graph`)
  in front of the same k-means lookup;
- ``knn``: a hand-built graph (cosine similarity, TopK, Gather, NaN-aware mean): skl2onnx's
  ``KNeighborsRegressor`` converter averages plainly, while the router skips missing outcomes;
- ``ensemble``: the members' graphs spliced into one, blended with the fitted weights.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from mmroute.export.core import Adapter, NotExportableError, find_adapter, register_adapter
from mmroute.export.graph import GraphBuilder, affine_graph, knn_mean_graph
from mmroute.features.types import Features

log = logging.getLogger(__name__)

register_adapter("oracle", unsupported="it reads the actual outcomes at prediction time (an upper bound "
                 "for evaluation, not a deployable router)")
register_adapter("random", unsupported="its scores are fresh random draws, not a function of the input "
                 "(a baseline for evaluation, not a deployable router)")


def _fused(router: Any, features: Features) -> np.ndarray:
    return features.fused


def _save(model, path: Path) -> None:
    Path(path).write_bytes(model.SerializeToString())


def _skl2onnx(estimator: Any, width: int, opset: int):
    """``estimator`` converted by skl2onnx with a float64 input (batch, width)."""
    from skl2onnx import to_onnx

    return to_onnx(estimator, np.zeros((1, width), dtype=np.float64), target_opset=opset)


# ----------------------------------------------------------------------------- linear
def _write_linear(router: Any, x: np.ndarray, path: Path, opset: int, exporter: str) -> str:
    weight, bias = router.affine_map()
    _save(affine_graph(weight, bias, opset=opset), path)
    return "onnx (affine ridge heads)"


def _write_linear_mf(router: Any, x: np.ndarray, path: Path, opset: int, exporter: str) -> str:
    g = GraphBuilder(x.shape[1], opset=opset)
    svd = _skl2onnx(router.svd_, x.shape[1], opset)
    z = g.embed(svd, {svd.graph.input[0].name: g.x64}, "svd_")[svd.graph.output[0].name]
    coef = np.concatenate([router.perf_coef_, router.cost_coef_], axis=0).T        # (rank, 2M)
    bias = np.concatenate([router.perf_intercept_, router.cost_intercept_])
    y = g.op("Add", g.op("MatMul", z, g.const(coef)), g.const(bias))
    m = router.n_models_
    _save(g.finish(*g.op("Split", y, g.const([m, m], np.int64), n_out=2, axis=1)), path)
    return "skl2onnx (TruncatedSVD) + onnx ridge heads"


# ----------------------------------------------------------------------------- kNN
def _write_knn(router: Any, x: np.ndarray, path: Path, opset: int, exporter: str) -> str:
    graph = knn_mean_graph(router.train_x_, router.perf_values_, router.cost_values_, router.k_,
                           metric=router.config.metric, perf_fallback=router.perf_mean_,
                           cost_fallback=router.cost_mean_, opset=opset)
    _save(graph, path)
    return "onnx (TopK neighbour means)"


# ----------------------------------------------------------------------------- k-means
def _cluster_lookup(g: GraphBuilder, router: Any, fused64: str, width: int) -> tuple[str, str]:
    km = _skl2onnx(router.kmeans_, width, g.opset)
    label = g.embed(km, {km.graph.input[0].name: fused64}, "kmeans_")["label"]
    values = np.concatenate([router.perf_centers_, router.cost_centers_], axis=1)
    row = g.op("Gather", g.const(values), label, axis=0)
    m = router.n_models_
    return tuple(g.op("Split", row, g.const([m, m], np.int64), n_out=2, axis=1))


def _write_kmeans(router: Any, x: np.ndarray, path: Path, opset: int, exporter: str) -> str:
    g = GraphBuilder(x.shape[1], opset=opset)
    _save(g.finish(*_cluster_lookup(g, router, g.x64, x.shape[1])), path)
    return "skl2onnx (KMeans) + onnx lookup"


def _kmeans_adaptive_input(router: Any, features: Features) -> np.ndarray:
    if getattr(router, "fusion_", None) is None:
        return features.fused
    from mmroute.export.fusion_graph import modality_input

    return modality_input(router.fusion_, features)


def _write_kmeans_adaptive(router: Any, x: np.ndarray, path: Path, opset: int, exporter: str) -> str:
    if getattr(router, "fusion_", None) is None:
        return _write_kmeans(router, x, path, opset, exporter)
    from mmroute.export.fusion_graph import adaptive_fusion

    g = GraphBuilder(x.shape[1], opset=opset)
    fused = adaptive_fusion(g, router.fusion_)
    _save(g.finish(*_cluster_lookup(g, router, fused, router.fusion_.n_features_out_)), path)
    return "onnx (adaptive fusion) + skl2onnx (KMeans) + onnx lookup"


# ----------------------------------------------------------------------------- ensemble
def _write_ensemble(router: Any, x: np.ndarray, path: Path, opset: int, exporter: str) -> str:
    import onnx

    g = GraphBuilder(x.shape[1], opset=opset)
    perf_terms, cost_terms, backends = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i, member in enumerate(router.members_):
            adapter = find_adapter(member)
            if adapter.input_fn is not _fused:
                raise NotExportableError(
                    f"ensemble member {member.name!r} reads more than the fused features; only blends of "
                    "fused-input routers (linear, linear_mf, knn, kmeans) export as one graph")
            member_path = Path(tmp) / f"member{i}.onnx"
            backends.append(adapter.write_fn(member, x, member_path, opset, exporter))
            model = onnx.load(str(member_path))
            out = g.embed(model, {model.graph.input[0].name: "x"}, f"m{i}_")
            perf_terms.append(g.op("Mul", g.op("Cast", out["perf"], to=onnx.TensorProto.DOUBLE),
                                   g.const(router.perf_weights_[i])))
            cost_terms.append(g.op("Mul", g.op("Cast", out["cost"], to=onnx.TensorProto.DOUBLE),
                                   g.const(router.cost_weights_[i])))
    perf = perf_terms[0] if len(perf_terms) == 1 else g.op("Sum", *perf_terms)
    cost = cost_terms[0] if len(cost_terms) == 1 else g.op("Sum", *cost_terms)
    _save(g.finish(perf, cost), path)
    return "ensemble of " + ", ".join(backends)


register_adapter("linear", Adapter(_fused, _write_linear))
register_adapter("linear_mf", Adapter(_fused, _write_linear_mf))
register_adapter("knn", Adapter(_fused, _write_knn))
register_adapter("kmeans", Adapter(_fused, _write_kmeans))
register_adapter("kmeans_adaptive", Adapter(_kmeans_adaptive_input, _write_kmeans_adaptive))
register_adapter("ensemble", Adapter(_fused, _write_ensemble))
