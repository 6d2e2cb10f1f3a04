"""The serving-time image featuriser gives the training-time features: histogram counts identical,
moments the same floats, on images of many sizes and kinds (noise, flat, binary, gradients)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mmroute.export.mmroute_runtime.features import image_statistics as served
from mmroute.features.offline import image_statistics as trained


def _images(seed: int = 0, n: int = 60):
    rng = np.random.default_rng(seed)
    for k in range(n):
        w, h = int(rng.integers(1, 300)), int(rng.integers(1, 300))
        kind = k % 4
        if kind == 0:
            arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        elif kind == 1:
            arr = np.full((h, w, 3), rng.integers(0, 256, 3), dtype=np.uint8)
        elif kind == 2:
            arr = (rng.random((h, w, 3)) > 0.5).astype(np.uint8) * 255
        else:
            arr = np.tile(np.linspace(0, 255, w).astype(np.uint8)[None, :, None], (h, 1, 3))
        yield Image.fromarray(arr, "RGB")


@pytest.mark.parametrize("bins", [8, 5])
def test_served_image_statistics_equal_training(bins):
    for image in _images():
        a = trained(image, bins=bins)
        b = served(image, bins=bins)
        assert a.shape == b.shape
        hist = slice(6, 6 + 5 * bins)
        np.testing.assert_array_equal(a[hist], b[hist])   # counts: the same bins, pixel for pixel
        np.testing.assert_array_equal(a[:6], b[:6])       # channel moments: the same summation order
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
