"""``FeaturePipeline``: encoder + on-disk cache + fusion, fitted on the training table only.

>>> pipe = build_feature_pipeline("offline", fusion="adaptive").fit(train_table)  # doctest: +SKIP
>>> train_features, test_features = pipe.transform(train_table), pipe.transform(test_table)  # doctest: +SKIP

``fit`` fits what learns from data (the TF-IDF vocabulary and SVD basis, the fusion statistics)
on the training rows; ``transform`` then reuses them for any table, so train and test share one
space. A pipeline fitted on a text-only table has the text width: mean fusion still uses test
images of that same width (CLIP towers share one space, as in the modality modes 12/13),
concat and adaptive fusion then ignore test images. Every encoded array is cached by encoder
identity and input hash (see :mod:`mmroute.features.cache`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmroute.features.cache import EmbeddingCache, hash_image_inputs, hash_texts
from mmroute.features.encoders import Encoder, RowEncoder, create_encoder
from mmroute.features.fusion import Fusion, create_fusion
from mmroute.features.types import Features

if TYPE_CHECKING:
    from mmroute.data.table import OutcomeTable

__all__ = ["FeaturePipeline", "build_feature_pipeline"]

logger = logging.getLogger(__name__)


class FeaturePipeline:
    """Turn outcome tables into :class:`~mmroute.features.types.Features`.

    Parameters
    ----------
    encoder : Encoder
        From :func:`~mmroute.features.encoders.create_encoder`.
    fusion : {"mean", "concat", "adaptive"} or a fusion object
        How text and image vectors become ``Features.fused``.
    fusion_params : dict, optional
        Keyword parameters of the fusion (e.g. ``{"temperature": 0.5}`` for adaptive).
    cache_dir : path-like, optional
        Cache root; None means ``$MMROUTE_CACHE_DIR`` or ``./.mmroute/cache`` at call time.
    use_cache : bool
        Set False to always encode (nothing is read from or written to disk).
    spec : str, optional
        The encoder spec the pipeline was built from (for logging only).
    """

    def __init__(self, encoder: Encoder, fusion: str | Fusion = "mean", *,
                 fusion_params: dict[str, Any] | None = None, cache_dir: str | os.PathLike[str] | None = None,
                 use_cache: bool = True, spec: str | None = None) -> None:
        if not isinstance(encoder, Encoder):
            raise TypeError(f"encoder must be an Encoder (see create_encoder), got {type(encoder).__name__}")
        if "text" not in encoder.modalities:
            raise ValueError(f"encoder {encoder.name!r} embeds only {list(encoder.modalities)}; a feature "
                             "pipeline needs a text encoder (every instance has text)")
        self.encoder = encoder
        self.fusion = fusion
        self.fusion_params = dict(fusion_params or {})
        self.cache_dir = cache_dir
        self.use_cache = use_cache
        self.spec = spec or encoder.name
        # Fail on a bad fusion name now rather than after encoding a whole table.
        self._new_fusion()

    def _new_fusion(self) -> Fusion:
        if isinstance(self.fusion, Fusion):
            if self.fusion_params:
                raise ValueError("pass fusion_params only with a fusion name, not with a fusion object")
            return self.fusion
        return create_fusion(self.fusion, **self.fusion_params)

    # ----------------------------------------------------------------- identity
    @property
    def fusion_name(self) -> str:
        return self.fusion if isinstance(self.fusion, str) else type(self.fusion).__name__

    @property
    def identity(self) -> str:
        """Encoder identity (including its fit-data hash once fitted) plus the fusion and its parameters."""
        fusion = self.fusion_ if hasattr(self, "fusion_") else self._new_fusion()
        return f"{self.encoder.identity}+{fusion!r}"

    def get_params(self) -> dict[str, Any]:
        """Flat, loggable description (e.g. for MLflow params)."""
        fusion = self.fusion_ if hasattr(self, "fusion_") else self._new_fusion()
        params = {"features.spec": self.spec, "features.fusion": self.fusion_name,
                  "features.identity": self.identity}
        params.update({f"features.fusion.{k}": v for k, v in fusion.get_params().items()})
        params.update({f"features.encoder.{k}": v for k, v in self.encoder.get_params().items()
                       if k not in ("name", "identity")})
        return params

    # ----------------------------------------------------------------- encoding
    def _cached(self, modality: str, input_hash: str, n_rows: int, encode: Callable[[], np.ndarray]) -> np.ndarray:
        if not (self.use_cache and self.encoder.cacheable):
            return np.asarray(encode(), dtype=np.float32)
        cache = EmbeddingCache(self.cache_dir)
        identity = self.encoder.modality_identity(modality)
        key = cache.key(identity, modality, input_hash)
        hit = cache.load(key, n_rows)
        if hit is not None:
            logger.info("features: %s %s embeddings for %d rows loaded from cache %s",
                        self.encoder.name, modality, n_rows, cache.directory)
            return hit
        arr = np.asarray(encode(), dtype=np.float32)
        if arr.ndim != 2 or arr.shape[0] != n_rows:
            raise RuntimeError(f"encoder {self.encoder.name!r} returned shape {arr.shape} "
                               f"for {n_rows} {modality} inputs")
        cache.save(key, arr, {"identity": identity, "modality": modality, "input_hash": input_hash})
        return arr

    def _encode(self, table: OutcomeTable) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Text (n, d_text), image (n, d_image) or None, image_mask (n,) or None for one table."""
        rows = self.encoder if isinstance(self.encoder, RowEncoder) else getattr(self.encoder, "text_rows", None)
        if rows is not None:  # vectors that already exist per row (precomputed), alone or composed
            text = np.array(rows.encode_rows(table), dtype=np.float32)
            # A row whose text was blanked (the image-only modality modes) has no text input: its
            # stored vector is the text it no longer has, so it reads as zeros, as encoders give.
            blank = np.array([not t.strip() for t in table.texts()], dtype=bool)
            if blank.any() and blank.size == text.shape[0]:
                text[blank] = 0.0
            if text.shape[0] != table.n_instances:
                raise ValueError(f"{self.encoder!r} gave {text.shape[0]} rows for a table of {table.n_instances}")
        else:
            texts = table.texts()
            text = self._cached("text", hash_texts(texts), len(texts), lambda: self.encoder.encode_text(texts))
        has = table.has_images
        if "image" not in self.encoder.modalities or not has.any():
            if has.any():
                logger.info("features: encoder %r does not embed images; %d images ignored",
                            self.encoder.name, int(has.sum()))
            return text, None, None
        paths = [str(p) if h else None for p, h in zip(table.image_paths, has)]
        image = self._cached("image", hash_image_inputs(paths), len(paths), lambda: self.encoder.encode_images(paths))
        # Unreadable images (zeroed under on_bad_image="zero") count as "no image" for fusion.
        mask = has & (np.linalg.norm(image, axis=1) > 0)
        return text, image, mask

    # ------------------------------------------------------------------- public
    def fit(self, train_table: OutcomeTable) -> FeaturePipeline:
        """Fit the encoder's text model (if any) and the fusion on the training table only."""
        texts = train_table.texts()
        no_text = not isinstance(self.encoder, RowEncoder) and not any(t.strip() for t in texts)
        if no_text and not (train_table.has_images.any() and "image" in self.encoder.modalities):
            raise ValueError(f"{train_table.source}: no input to route on in the {train_table.n_instances} "
                             f"training rows: every question is empty and no row has an image the encoder "
                             f"{self.encoder.name!r} embeds; expected question text or images")
        if self.encoder.requires_fit:
            self.encoder.fit_text(texts)
        text, image, mask = self._encode(train_table)
        self.fusion_ = self._new_fusion().fit(text, image, mask)
        self.uses_image_ = image is not None
        self.n_features_out_ = int(self.fusion_.n_features_out_)
        self.train_hash_ = train_table.content_hash()
        logger.info("features: fitted %s on %d training rows (%s images)", self.identity,
                    train_table.n_instances, "with" if self.uses_image_ else "without")
        return self

    def transform(self, table: OutcomeTable) -> Features:
        """Features of ``table``: fused (n, n_features_out_), text, image (or None), image_mask."""
        if not hasattr(self, "fusion_"):
            raise RuntimeError("FeaturePipeline is not fitted: call fit(train_table) first")
        text, image, mask = self._encode(table)
        fused = self.fusion_.transform(text, image, mask)
        return Features(fused=fused, text=text, image=image, image_mask=mask)

    def fit_transform(self, train_table: OutcomeTable) -> Features:
        return self.fit(train_table).transform(train_table)

    def __repr__(self) -> str:
        return f"FeaturePipeline(spec={self.spec!r}, fusion={self.fusion_name!r})"


def build_feature_pipeline(spec: str = "offline", *, fusion: str | Fusion = "mean",
                           cache_dir: str | os.PathLike[str] | None = None, device: str | None = None,
                           fusion_params: dict[str, Any] | None = None, use_cache: bool = True,
                           **encoder_options: Any) -> FeaturePipeline:
    """A :class:`FeaturePipeline` for an encoder spec (see :func:`create_encoder` for the specs)."""
    encoder = create_encoder(spec, device=device, **encoder_options)
    return FeaturePipeline(encoder, fusion, fusion_params=fusion_params,
                           cache_dir=None if cache_dir is None else Path(cache_dir),
                           use_cache=use_cache, spec=spec)
