"""Composed encoders: ``text=SPEC,image=SPEC`` pairs any text encoder with any image encoder."""

from __future__ import annotations

import numpy as np
import pytest

from feature_helpers import make_table
from mmroute.features import build_feature_pipeline, create_encoder
from mmroute.features.compose import ComposedEncoder, parse_composed_spec
from mmroute.features.offline import ImageStatsEncoder


def test_spec_parts_split_only_before_text_and_image():
    assert parse_composed_spec("text=tfidf:dim=8,max_features=50,image=imagestats:thumb=4,bins=4") == {
        "text": "tfidf:dim=8,max_features=50", "image": "imagestats:thumb=4,bins=4"}
    assert parse_composed_spec("image=imagestats, text=precomputed:/x/emb.npy") == {
        "image": "imagestats", "text": "precomputed:/x/emb.npy"}


@pytest.mark.parametrize("spec, message", [
    ("image=imagestats", r"has no text encoder"),
    ("text=tfidf,text=tfidf", r"names the text encoder twice"),
    ("text=imagestats", r"text='imagestats' does not embed text"),
    ("text=tfidf,image=tfidf", r"image='tfidf' does not embed images"),
    ("text=", r"bad part 'text='"),
])
def test_bad_specs_are_named(spec, message):
    with pytest.raises(ValueError, match=message):
        create_encoder(spec)


def test_precomputed_text_with_image_features(tmp_path):
    table = make_table(tmp_path, n=16)
    emb = np.random.default_rng(0).normal(size=(16, 5)).astype(np.float32)
    np.save(tmp_path / "emb.npy", emb)
    spec = f"text=precomputed:{tmp_path / 'emb.npy'},image=imagestats:thumb=4,bins=4,progress=false"
    pipe = build_feature_pipeline(spec, fusion="concat", cache_dir=tmp_path / "cache")
    assert isinstance(pipe.encoder, ComposedEncoder)
    train, test = table.subset(np.arange(10)), table.subset(np.arange(10, 16))
    feats = pipe.fit(train).transform(test)
    np.testing.assert_array_equal(feats.text, emb[10:])      # the precomputed rows, picked by table row
    expected = ImageStatsEncoder(thumb=4, bins=4, progress=False).encode_images(
        [p if h else None for p, h in zip(test.image_paths, test.has_images)])
    np.testing.assert_allclose(feats.image, expected)
    np.testing.assert_array_equal(feats.image_mask, test.has_images)
    assert feats.fused.shape == (6, 5 + expected.shape[1])
    params = pipe.get_params()
    assert params["features.encoder.text"] == "precomputed" and params["features.encoder.image"] == "imagestats"
    # The image part is cached under its own identity: a second pipeline reads it back, equal.
    again = build_feature_pipeline(spec, fusion="concat", cache_dir=tmp_path / "cache").fit(train).transform(test)
    np.testing.assert_array_equal(again.image, feats.image)


def test_fitted_text_encoder_is_fitted_on_training_rows(tmp_path):
    table = make_table(tmp_path, n=12)
    pipe = build_feature_pipeline("text=tfidf:dim=4,image=imagestats:progress=false", cache_dir=tmp_path / "c")
    feats = pipe.fit(table.subset(np.arange(8))).transform(table)
    assert pipe.encoder.requires_fit and pipe.encoder.text_encoder.is_fitted
    assert feats.text.shape[0] == 12 and feats.image is not None


def test_text_only_composition(tmp_path):
    table = make_table(tmp_path, n=12)
    pipe = build_feature_pipeline("text=tfidf:dim=4", cache_dir=tmp_path / "c").fit(table)
    feats = pipe.transform(table)
    assert feats.image is None and pipe.encoder.modalities == ("text",)


def test_pixels_encoder_gives_flat_channel_first_pixels(tmp_path):
    from PIL import Image

    from mmroute.features.offline import PixelsEncoder

    table = make_table(tmp_path, n=4)
    enc = create_encoder("pixels:size=8", progress=False)
    assert isinstance(enc, PixelsEncoder) and enc.dim == 3 * 8 * 8
    paths = [p if h else None for p, h in zip(table.image_paths, table.has_images)]
    out = enc.encode_images(paths)
    first = np.asarray(Image.open(paths[0]).convert("RGB").resize((8, 8), Image.BILINEAR), np.float32) / 255
    np.testing.assert_allclose(out[0], first.transpose(2, 0, 1).ravel())
    assert out.min() >= 0 and out.max() <= 1 and not out[3].any()   # row 3 has no image: zeros
    assert create_encoder("pixels:size=8,gray=true").dim == 64
    with pytest.raises(ValueError, match=r"pixels size=4 \(expected an integer >= 8\)"):
        create_encoder("pixels:size=4")
