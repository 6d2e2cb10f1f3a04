"""Adaptive fusion (:class:`mmroute.features.fusion.AdaptiveFusion`) written as ONNX ops.

Routers that fuse inside themselves (``kmeans_adaptive``) read ``x = [text, image, image_mask]``
(the layout of the torch modality routers): the graph recomputes the fitted fusion from those
columns, so a served model needs the raw modality embeddings, not a pre-fused vector.
"""

from __future__ import annotations

import numpy as np

from mmroute.export.graph import GraphBuilder
from mmroute.features.types import Features

__all__ = ["modality_input", "adaptive_fusion"]


def modality_input(fusion, features: Features) -> np.ndarray:
    """``[text, image, image_mask]`` float32 (n, d_text + d_image + 1) for a fitted fusion; rows
    without an image carry zeros and mask 0 (also when the features have no image at all)."""
    n = len(features)
    text = features.text if features.text is not None else features.fused
    if text.shape[1] != fusion.d_text_:
        raise ValueError(f"text features have {text.shape[1]} columns, the fusion was fitted on "
                         f"{fusion.d_text_}")
    d_image = fusion.d_image_ or 0
    if features.image is None:
        image, mask = np.zeros((n, d_image), np.float32), np.zeros(n, bool)
    else:
        image = features.image
        mask = (features.image_mask if features.image_mask is not None
                else np.linalg.norm(image, axis=1) > 0)
        image = np.where(mask[:, None], image, 0.0)
    return np.concatenate([text, image, mask[:, None]], axis=1).astype(np.float32)


def _confidence(g: GraphBuilder, x: str, centroid: np.ndarray, mean: float, std: float,
                norm_weight: float) -> str:
    """(1 - w) cos(x, centroid) + w sigmoid((||x|| - mean) / std), shape (batch, 1)."""
    cos = g.op("MatMul", g.l2_normalize(x), g.const(np.asarray(centroid, np.float64)[:, None]))
    if std > 1e-6 * max(abs(mean), 1e-12):
        norm = g.op("ReduceL2", x, g.const([1], np.int64), keepdims=1)
        z = g.op("Div", g.op("Sub", norm, g.const(mean)), g.const(std))
        sig = g.op("Sigmoid", z)
    else:  # norms that did not vary in training carry no signal: z = 0
        sig = g.op("Mul", cos, g.const(0.0))
        sig = g.op("Add", sig, g.const(0.5))
    return g.op("Add", g.op("Mul", cos, g.const(1.0 - norm_weight)), g.op("Mul", sig, g.const(norm_weight)))


def _pad(g: GraphBuilder, x: str, width: int, target: int) -> str:
    if width == target:
        return x
    return g.op("Pad", x, g.const([0, 0, 0, target - width], np.int64))


def adaptive_fusion(g: GraphBuilder, fusion) -> str:
    """The fused vectors (batch, fusion.n_features_out_) float64, from ``g.x64`` = [text, image, mask]."""
    d_t, d_i, d = fusion.d_text_, fusion.d_image_, fusion.width_
    if not d_i or not fusion.has_image_stats_:
        raise ValueError("adaptive fusion fitted without images has no image branch to export")
    text = g.cols(g.x64, 0, d_t)
    image = g.cols(g.x64, d_t, d_t + d_i)
    mask = g.op("Greater", g.cols(g.x64, d_t + d_i, d_t + d_i + 1), g.const(0.5))      # (batch, 1) bool
    nw = float(fusion.norm_weight)
    c_t = _confidence(g, text, fusion.text_centroid_, fusion.text_norm_mean_, fusion.text_norm_std_, nw)
    c_i = _confidence(g, image, fusion.image_centroid_, fusion.image_norm_mean_, fusion.image_norm_std_, nw)
    soft = g.op("Softmax", g.op("Div", g.op("Concat", c_t, c_i, axis=1), g.const(float(fusion.temperature))),
                axis=1)
    w_t = g.op("Where", mask, g.cols(soft, 0, 1), g.const([[1.0]]))
    w_i = g.op("Where", mask, g.cols(soft, 1, 2), g.const([[0.0]]))
    use = g.op("Cast", g.op("And", mask, g.op("Greater", w_i, g.const(0.0))), to=11)   # 11 = DOUBLE
    t = _pad(g, g.l2_normalize(text), d_t, d)
    i = g.op("Mul", _pad(g, g.l2_normalize(image), d_i, d), use)
    mixed = g.op("Add", g.op("Mul", w_t, t), g.op("Mul", w_i, i))
    prod = g.op("Mul", g.op("Mul", t, i), use)
    diff = g.op("Mul", g.op("Abs", g.op("Sub", t, i)), use)
    if fusion.combine == "sum":
        fused = g.op("Add", g.op("Add", mixed, prod), diff)
    else:
        fused = g.op("Concat", mixed, prod, diff, axis=1)
    return g.l2_normalize(fused)
