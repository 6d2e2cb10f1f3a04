"""Fusion: shapes, normalisation, text fallback, and adaptive weights following confidence."""

from __future__ import annotations

import numpy as np
import pytest

from mmroute.features.fusion import AdaptiveFusion, ConcatFusion, MeanFusion, create_fusion, l2_normalize


def _data(n=40, dt=8, di=8, seed=0):
    rng = np.random.default_rng(seed)
    text = rng.normal(size=(n, dt)).astype(np.float32) * 3
    image = rng.normal(size=(n, di)).astype(np.float32)
    mask = np.ones(n, dtype=bool)
    mask[::5] = False
    image[~mask] = 0.0
    return text, image, mask


def test_mean_is_the_average_of_unit_vectors_and_falls_back_to_text():
    text, image, mask = _data()
    fused = MeanFusion().fit(text, image, mask).transform(text, image, mask)
    expected = (l2_normalize(text) + l2_normalize(image)) / 2
    np.testing.assert_allclose(fused[mask], expected[mask], atol=1e-6)
    np.testing.assert_allclose(fused[~mask], l2_normalize(text)[~mask], atol=1e-6)
    assert fused.dtype == np.float32


def test_mean_zero_pads_when_widths_differ():
    text, image, mask = _data(dt=4, di=6)
    fused = MeanFusion().fit(text, image, mask).transform(text, image, mask)
    assert fused.shape == (40, 6)
    t = np.pad(l2_normalize(text), ((0, 0), (0, 2)))
    np.testing.assert_allclose(fused[mask], ((t + l2_normalize(image)) / 2)[mask], atol=1e-6)


def test_concat_shapes_halves_and_missing_images():
    text, image, mask = _data(dt=5, di=7)
    fusion = ConcatFusion().fit(text, image, mask)
    fused = fusion.transform(text, image, mask)
    assert fused.shape == (40, 12) and fusion.n_features_out_ == 12
    np.testing.assert_allclose(np.linalg.norm(fused[mask, :5], axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(fused[mask, 5:], axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(fused[~mask, 5:], 0.0)
    # A text-only table keeps the fitted width.
    assert fusion.transform(text, None).shape == (40, 12)


def test_default_mask_is_nonzero_image_rows():
    text, image, mask = _data()
    fusion = MeanFusion().fit(text, image)
    np.testing.assert_allclose(fusion.transform(text, image), fusion.transform(text, image, mask))


@pytest.mark.parametrize("combine,width", [("sum", 8), ("concat", 24)])
def test_adaptive_is_unit_norm_with_text_fallback(combine, width):
    text, image, mask = _data()
    fusion = AdaptiveFusion(temperature=0.5, combine=combine).fit(text, image, mask)
    fused = fusion.transform(text, image, mask)
    assert fused.shape == (40, width) and fusion.n_features_out_ == width
    np.testing.assert_allclose(np.linalg.norm(fused, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(fused[~mask, :8], l2_normalize(text)[~mask], atol=1e-6)
    w = fusion.weights(text, image, mask)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(w[~mask], [[1.0, 0.0]] * int((~mask).sum()))


def test_adaptive_sum_combines_weighted_sum_product_and_difference():
    text, image, mask = _data()
    fusion = AdaptiveFusion().fit(text, image, mask)
    w = fusion.weights(text, image, mask)
    t, i = l2_normalize(text), l2_normalize(image)
    raw = w[:, :1] * t + w[:, 1:] * i + t * i + np.abs(t - i)
    np.testing.assert_allclose(fusion.transform(text, image, mask)[mask], l2_normalize(raw)[mask], atol=1e-5)


def test_adaptive_weights_favour_the_confident_modality():
    rng = np.random.default_rng(1)
    n, d = 200, 16
    direction_t, direction_i = np.eye(d)[0], np.eye(d)[1]
    text = (direction_t + 0.1 * rng.normal(size=(n, d))).astype(np.float32)
    image = (direction_i + 0.1 * rng.normal(size=(n, d))).astype(np.float32)
    fusion = AdaptiveFusion(temperature=0.1).fit(text, image)
    # New queries: on-distribution image, off-distribution text (far from centroid, small norm).
    q_text = (0.3 * rng.normal(size=(10, d))).astype(np.float32)
    q_text[:, 0] = -0.5
    q_image = (direction_i + 0.1 * rng.normal(size=(10, d))).astype(np.float32)
    w = fusion.weights(q_text, q_image)
    assert (w[:, 1] > 0.9).all()
    # And the other way round: training-like text, an image pointing away with a small norm.
    w2 = fusion.weights(text[:10], -0.2 * q_image)
    assert (w2[:, 0] > 0.9).all()
    # A higher temperature flattens the weights towards 1/2.
    flat = AdaptiveFusion(temperature=100.0).fit(text, image).weights(q_text, q_image)
    assert np.abs(flat - 0.5).max() < 0.01


def test_adaptive_fitted_without_images_uses_text():
    text, image, mask = _data()
    fusion = AdaptiveFusion().fit(text)
    np.testing.assert_allclose(fusion.transform(text, image, mask), l2_normalize(text), atol=1e-6)


def test_fusion_errors_name_the_problem():
    text, image, mask = _data()
    with pytest.raises(RuntimeError, match="not fitted"):
        MeanFusion().transform(text, image)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        AdaptiveFusion(temperature=0).fit(text, image)
    with pytest.raises(ValueError, match="image must have shape \\(40, d_image\\)"):
        MeanFusion().fit(text, image[:3])
    with pytest.raises(ValueError, match="text has 3 features.*fitted with 8"):
        ConcatFusion().fit(text, image).transform(text[:, :3], image)
    with pytest.raises(ValueError, match="unknown fusion 'max'.*adaptive"):
        create_fusion("max")
    with pytest.raises(TypeError, match="unknown parameter"):
        create_fusion("adaptive", temp=1.0)
    assert isinstance(create_fusion("adaptive", temperature=0.3), AdaptiveFusion)
