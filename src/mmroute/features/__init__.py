"""mmroute.features: encoders with an on-disk cache, modality fusion, and the feature pipeline.

Routers receive :class:`Features` (arrays), never file paths. Build them with
``build_feature_pipeline(spec, fusion=...).fit(train_table).transform(table)``.
Encoder specs: ``offline`` (default; TF-IDF + SVD text and a deterministic image featuriser),
``openclip:MODEL[:PRETRAINED]``, ``st:NAME_OR_PATH``, ``precomputed:PATH.npy``, ``column:NAME``,
and the single-modality parts ``tfidf`` and ``imagestats``.
"""

from mmroute.features.cache import EmbeddingCache, default_cache_dir
from mmroute.features.encoders import Encoder, RowEncoder, create_encoder, list_encoders, register_encoder
from mmroute.features.fusion import FUSIONS, AdaptiveFusion, ConcatFusion, MeanFusion, create_fusion, l2_normalize
from mmroute.features.pipeline import FeaturePipeline, build_feature_pipeline
from mmroute.features.types import Features

__all__ = [
    "Features", "FeaturePipeline", "build_feature_pipeline",
    "Encoder", "RowEncoder", "create_encoder", "list_encoders", "register_encoder",
    "MeanFusion", "ConcatFusion", "AdaptiveFusion", "create_fusion", "FUSIONS", "l2_normalize",
    "EmbeddingCache", "default_cache_dir",
]
