"""Tiny multimodal data with a learnable signal, shared by the export tests."""

from __future__ import annotations

import numpy as np
import pytest

from mmroute.features.types import Features


def make_data(n: int = 240, d_text: int = 12, d_image: int = 8, n_models: int = 3, seed: int = 0):
    """Features (text, image for ~60% of rows, fused) and outcomes that depend on them."""
    rng = np.random.default_rng(seed)
    text = rng.normal(size=(n, d_text)).astype(np.float32)
    image = rng.normal(size=(n, d_image)).astype(np.float32)
    mask = rng.random(n) < 0.6
    image[~mask] = 0.0
    fused = np.concatenate([text, image], axis=1)
    w = rng.normal(size=(d_text + d_image, n_models))
    correct = (fused @ w + rng.normal(scale=0.5, size=(n, n_models)) > 0).astype(float)
    cost = np.exp(rng.normal(size=(n, n_models)) * 0.2 + np.arange(n_models))
    return Features(fused=fused, text=text, image=image, image_mask=mask), correct, cost


@pytest.fixture(scope="session")
def tiny_data():
    return make_data()


# Small configs: every router fits in about a second on the tiny data.
SMALL = {
    "mlp": dict(hidden=(16,)), "mlp_mf": dict(hidden=(16,), latent=8),
    "cmr": dict(d_model=16, n_heads=2, n_layers=1, d_ff=32),
    "fusion_mf": dict(d_proj=16, hidden=(16,), latent=8, cost_latent=4),
    "knn": dict(k=7), "kmeans": dict(n_clusters=4), "kmeans_adaptive": dict(n_clusters=4),
    "linear_mf": dict(rank=4), "ensemble": dict(ks=(5, 10), n_folds=3),
}
NEURAL = {"mlp", "mlp_mf", "cmr", "fusion_mf"}
N_TRAIN = 160


@pytest.fixture(scope="session")
def fitted(tiny_data):
    """``fitted(name)``: the router ``name`` fitted once per session on the first 160 rows."""
    from mmroute.routers import create_router

    features, correct, cost = tiny_data
    cache: dict = {}

    def get(name):
        if name not in cache:
            cfg = dict(SMALL.get(name, {}))
            if name in NEURAL:
                cfg.update(max_epochs=2, batch_size=64, enable_progress_bar=False, val_fraction=0.0)
            train = np.arange(N_TRAIN)
            cache[name] = create_router(name, **cfg).fit(features.subset(train), correct[train], cost[train])
        return cache[name]
    return get
