"""Fusion of a text and an image embedding into one query vector, fitted on training rows only.

All fusions take ``text`` (n, d_text), ``image`` (n, d_image) or None and ``image_mask`` (n,)
(which rows really have an image; None means "rows whose image vector is non-zero"). Rows without
an image fall back to the L2-normalised text vector, so text-only tables give fused = l2(text).

When ``d_text != d_image`` (e.g. TF-IDF text with the offline image featuriser), mean and adaptive
fusion zero-pad the shorter vector to the longer width. Padding keeps both vectors, their norms
and the fit-free, deterministic character of the MMR-Bench baseline; the overlapping leading
coordinates are then summed without being semantically aligned, which only CLIP-style shared
spaces guarantee. Use ``concat`` when the two encoders do not share a space.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

__all__ = ["Fusion", "MeanFusion", "ConcatFusion", "AdaptiveFusion", "create_fusion", "FUSIONS", "l2_normalize"]

logger = logging.getLogger(__name__)


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows of ``x`` scaled to unit L2 norm (all-zero rows stay zero); float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, eps)


def _pad(x: np.ndarray, d: int) -> np.ndarray:
    if x.shape[1] == d:
        return x
    return np.pad(x, ((0, 0), (0, d - x.shape[1])))


def _check_inputs(text, image, image_mask) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    text = np.asarray(text, dtype=np.float32)
    if text.ndim != 2:
        raise ValueError(f"text must be 2-D (n_instances, d_text), got shape {text.shape}")
    n = text.shape[0]
    if image is None:
        if image_mask is not None and np.any(image_mask):
            raise ValueError("image_mask marks rows with images but no image array was given")
        return text, None, np.zeros(n, dtype=bool)
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2 or image.shape[0] != n:
        raise ValueError(f"image must have shape ({n}, d_image) to match text {text.shape}, got {image.shape}")
    if image_mask is None:
        mask = np.linalg.norm(image, axis=1) > 0
    else:
        mask = np.asarray(image_mask, dtype=bool)
        if mask.shape != (n,):
            raise ValueError(f"image_mask must have shape ({n},), got {mask.shape}")
    return text, image, mask


class Fusion:
    """Shared plumbing: parameter access, fitted checks, width checks."""

    _param_names: tuple[str, ...] = ()

    def get_params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self._param_names}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def _check_fitted(self, text: np.ndarray, image: np.ndarray | None) -> None:
        if not hasattr(self, "d_text_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(train_text, train_image) first")
        if text.shape[1] != self.d_text_:
            raise ValueError(f"text has {text.shape[1]} features, but {type(self).__name__} was fitted with "
                             f"{self.d_text_}")
        if image is not None and self.d_image_ is not None and image.shape[1] != self.d_image_:
            raise ValueError(f"image has {image.shape[1]} features, but {type(self).__name__} was fitted with "
                             f"{self.d_image_}")

    def _fit_dims(self, text: np.ndarray, image: np.ndarray | None) -> None:
        self.d_text_ = int(text.shape[1])
        self.d_image_ = None if image is None else int(image.shape[1])

    def fit_transform(self, text, image=None, image_mask=None) -> np.ndarray:
        return self.fit(text, image, image_mask).transform(text, image, image_mask)


class MeanFusion(Fusion):
    """Equal-weight mean of the L2-normalised text and image vectors (the MMR-Bench baseline).

    Output shape (n, max(d_text, d_image)); rows without an image are l2(text).
    """

    def fit(self, text, image=None, image_mask=None) -> MeanFusion:
        text, image, _ = _check_inputs(text, image, image_mask)
        self._fit_dims(text, image)
        self.n_features_out_ = max(self.d_text_, self.d_image_ or 0)
        return self

    def transform(self, text, image=None, image_mask=None) -> np.ndarray:
        text, image, mask = _check_inputs(text, image, image_mask)
        self._check_fitted(text, image)
        d = self.n_features_out_
        t = _pad(l2_normalize(text), d)
        if image is None or not mask.any():
            return t
        if image.shape[1] > d:
            raise ValueError(f"image has {image.shape[1]} features, more than the {d} this fusion was "
                             "fitted to output (it was fitted without images)")
        i = _pad(l2_normalize(image), d)
        return np.where(mask[:, None], (t + i) / 2.0, t).astype(np.float32)


class ConcatFusion(Fusion):
    """``[l2(text), l2(image)]``; the image half is zero for rows without an image.

    Output shape (n, d_text + d_image), or (n, d_text) when fitted without images.
    """

    def fit(self, text, image=None, image_mask=None) -> ConcatFusion:
        text, image, _ = _check_inputs(text, image, image_mask)
        self._fit_dims(text, image)
        self.n_features_out_ = self.d_text_ + (self.d_image_ or 0)
        return self

    def transform(self, text, image=None, image_mask=None) -> np.ndarray:
        text, image, mask = _check_inputs(text, image, image_mask)
        self._check_fitted(text, image)
        t = l2_normalize(text)
        if self.d_image_ is None:
            if image is not None and mask.any():
                logger.info("concat fusion was fitted without images; ignoring the image vectors")
            return t
        i = np.zeros((len(t), self.d_image_), dtype=np.float32)
        if image is not None:
            i = np.where(mask[:, None], l2_normalize(image), 0.0).astype(np.float32)
        return np.concatenate([t, i], axis=1)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # Clipped: z-scores of near-constant norms can be huge, and exp would overflow.
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30.0, 30.0)))


class AdaptiveFusion(Fusion):
    """Confidence-weighted fusion (PAPERS.md, MMR-Bench "adaptive fusion").

    Per modality m, confidence ``c_m = (1 - norm_weight) * cos(x_m, centroid_m)
    + norm_weight * sigmoid((||x_m|| - mean_m) / std_m)``, with the centroid and the norm
    statistics fitted on training rows (image statistics on rows with an image only). Weights
    ``w = softmax(c / temperature)`` over the two modalities. The fused vector is
    ``w_t t + w_i i + t * i + |t - i|`` (``combine="sum"``, width max(d_text, d_image)) or the
    concatenation of those three terms (``combine="concat"``, width 3 max(d_text, d_image)) on
    L2-normalised t and i, then L2-normalised. Rows without an image use l2(text) alone (zeros
    for the product and difference blocks under ``concat``).

    Parameters
    ----------
    temperature : float > 0
        Softmax temperature: small values pick the more confident modality, large ones average.
    norm_weight : float in [0, 1]
        Mix between the centroid cosine (0) and the norm z-score (1) in the confidence.
    combine : {"sum", "concat"}
    """

    _param_names = ("temperature", "norm_weight", "combine")

    def __init__(self, temperature: float = 1.0, norm_weight: float = 0.5, combine: str = "sum") -> None:
        self.temperature = temperature
        self.norm_weight = norm_weight
        self.combine = combine

    def _validate_params(self) -> None:
        problems = []
        if not float(self.temperature) > 0:
            problems.append(f"temperature must be > 0, got {self.temperature}")
        if not 0.0 <= float(self.norm_weight) <= 1.0:
            problems.append(f"norm_weight must be in [0, 1], got {self.norm_weight}")
        if self.combine not in ("sum", "concat"):
            problems.append(f"combine must be 'sum' or 'concat', got {self.combine!r}")
        if problems:
            raise ValueError("; ".join(problems))

    @staticmethod
    def _stats(x: np.ndarray) -> tuple[np.ndarray, float, float]:
        centroid = l2_normalize(l2_normalize(x).mean(axis=0, keepdims=True))[0]
        norms = np.linalg.norm(x, axis=1)
        return centroid, float(norms.mean()), float(norms.std())

    def fit(self, text, image=None, image_mask=None) -> AdaptiveFusion:
        """Fit centroids and norm statistics on training rows: text (n, d_text), image (n, d_image)."""
        self._validate_params()
        text, image, mask = _check_inputs(text, image, image_mask)
        if len(text) == 0:
            raise ValueError("AdaptiveFusion needs at least one training row")
        self._fit_dims(text, image)
        self.text_centroid_, self.text_norm_mean_, self.text_norm_std_ = self._stats(text)
        self.has_image_stats_ = image is not None and bool(mask.any())
        if self.has_image_stats_:
            self.image_centroid_, self.image_norm_mean_, self.image_norm_std_ = self._stats(image[mask])
        else:
            logger.info("adaptive fusion fitted without images: every row will use its text vector")
        width = max(self.d_text_, self.d_image_ or 0)
        self.width_ = width
        self.n_features_out_ = width * (3 if self.combine == "concat" else 1)
        return self

    def _confidence(self, x: np.ndarray, centroid: np.ndarray, mean: float, std: float) -> np.ndarray:
        cos = l2_normalize(x) @ centroid
        # Norms that barely vary in training (e.g. already-normalised embeddings) carry no signal.
        if std > 1e-6 * max(abs(mean), 1e-12):
            z = (np.linalg.norm(x, axis=1) - mean) / std
        else:
            z = np.zeros(len(x), dtype=np.float32)
        w = float(self.norm_weight)
        return ((1.0 - w) * cos + w * _sigmoid(z)).astype(np.float32)

    def weights(self, text, image=None, image_mask=None) -> np.ndarray:
        """Modality weights, shape (n, 2): column 0 text, column 1 image; rows sum to 1."""
        text, image, mask = _check_inputs(text, image, image_mask)
        self._check_fitted(text, image)
        out = np.zeros((len(text), 2), dtype=np.float32)
        out[:, 0] = 1.0
        if image is None or not self.has_image_stats_ or not mask.any():
            return out
        c_t = self._confidence(text, self.text_centroid_, self.text_norm_mean_, self.text_norm_std_)
        c_i = self._confidence(image, self.image_centroid_, self.image_norm_mean_, self.image_norm_std_)
        logits = np.stack([c_t, c_i], axis=1) / float(self.temperature)
        logits -= logits.max(axis=1, keepdims=True)
        soft = np.exp(logits)
        soft /= soft.sum(axis=1, keepdims=True)
        out[mask] = soft[mask]
        return out

    def transform(self, text, image=None, image_mask=None) -> np.ndarray:
        """Fused vectors of shape (n, n_features_out_), float32, unit L2 norm (zero rows stay zero)."""
        text, image, mask = _check_inputs(text, image, image_mask)
        w = self.weights(text, image, mask if image is not None else None)
        d = self.width_
        t = _pad(l2_normalize(text), d)
        use = mask & (w[:, 1] > 0) if image is not None else np.zeros(len(t), dtype=bool)
        i = _pad(l2_normalize(image), d) if image is not None else np.zeros_like(t)
        i = np.where(use[:, None], i, 0.0)
        mixed = w[:, :1] * t + w[:, 1:] * i
        prod = np.where(use[:, None], t * i, 0.0)
        diff = np.where(use[:, None], np.abs(t - i), 0.0)
        fused = mixed + prod + diff if self.combine == "sum" else np.concatenate([mixed, prod, diff], axis=1)
        return l2_normalize(fused)


FUSIONS: dict[str, type[Fusion]] = {"mean": MeanFusion, "concat": ConcatFusion, "adaptive": AdaptiveFusion}


def create_fusion(name: str, **params: Any) -> Fusion:
    """A fusion by name (``mean``, ``concat``, ``adaptive``) with its keyword parameters."""
    cls = FUSIONS.get(name)
    if cls is None:
        raise ValueError(f"unknown fusion {name!r}; valid names: {sorted(FUSIONS)}")
    if params and not cls._param_names:
        raise TypeError(f"fusion {name!r} takes no parameters, got {sorted(params)}")
    unknown = set(params) - set(cls._param_names)
    if unknown:
        raise TypeError(f"unknown parameter(s) {sorted(unknown)} for fusion {name!r}; "
                        f"valid: {list(cls._param_names)}")
    return cls(**params)
