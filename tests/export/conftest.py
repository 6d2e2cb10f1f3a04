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
