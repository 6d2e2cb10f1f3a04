"""FeaturePipeline: Features shapes, train-only fitting, and the on-disk cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from feature_helpers import draw_image, make_table
from mmroute.features import build_feature_pipeline, default_cache_dir
from mmroute.features.fusion import l2_normalize
from mmroute.features.offline import ImageStatsEncoder, TfidfTextEncoder


@pytest.fixture
def counters(monkeypatch):
    """Count real encoder work by wrapping the offline encoders' encode methods."""
    calls = {"text": 0, "image": 0}
    text_orig, image_orig = TfidfTextEncoder.encode_text, ImageStatsEncoder.encode_images

    def text(self, texts):
        calls["text"] += 1
        return text_orig(self, texts)

    def image(self, paths):
        calls["image"] += 1
        return image_orig(self, paths)

    monkeypatch.setattr(TfidfTextEncoder, "encode_text", text)
    monkeypatch.setattr(ImageStatsEncoder, "encode_images", image)
    return calls


@pytest.mark.parametrize("fusion", ["mean", "concat", "adaptive"])
def test_transform_gives_row_aligned_features(tmp_path, fusion):
    table = make_table(tmp_path, n=16)
    pipe = build_feature_pipeline("offline:dim=8", fusion=fusion, cache_dir=tmp_path / "cache", progress=False)
    feats = pipe.fit(table.subset(np.arange(10))).transform(table.subset(np.arange(10, 16)))
    assert len(feats) == 6 and feats.fused.shape[1] == pipe.n_features_out_
    assert feats.text.shape == (6, 8) and feats.image.shape == (6, ImageStatsEncoder().dim)
    np.testing.assert_array_equal(feats.image_mask, table.has_images[10:])
    np.testing.assert_array_equal(feats.image[~feats.image_mask], 0.0)
    assert pipe.get_params()["features.fusion"] == fusion


def test_text_only_table_gives_no_image_and_text_fused(tmp_path):
    table = make_table(tmp_path, n=12, with_images=False)
    pipe = build_feature_pipeline("offline:dim=6", cache_dir=tmp_path / "c", progress=False)
    feats = pipe.fit(table).transform(table)
    assert feats.image is None and feats.image_mask is None
    np.testing.assert_allclose(feats.fused, l2_normalize(feats.text), atol=1e-6)


def test_fit_uses_training_rows_only(tmp_path):
    table = make_table(tmp_path, n=18)
    train, test = table.subset(np.arange(12)), table.subset(np.arange(12, 18))
    pipe = build_feature_pipeline("offline:dim=5", fusion="adaptive", cache_dir=tmp_path / "c", progress=False)
    pipe.fit(train)
    assert "@fit=" in pipe.identity
    fitted_on_train = pipe.encoder.text_encoder.fit_hash_
    both = pipe.transform(table)
    # Transforming other tables never refits: the same vocabulary, and train rows keep their vectors.
    assert pipe.encoder.text_encoder.fit_hash_ == fitted_on_train
    np.testing.assert_allclose(pipe.transform(train).fused, both.fused[:12], atol=1e-6)
    np.testing.assert_allclose(pipe.transform(test).fused, both.fused[12:], atol=1e-6)


def test_second_run_reads_the_cache_instead_of_encoding(tmp_path, counters):
    table = make_table(tmp_path, n=12)
    cache = tmp_path / "cache"
    first = build_feature_pipeline("offline:dim=4", cache_dir=cache, progress=False).fit(table).transform(table)
    assert counters == {"text": 1, "image": 1}  # fit encodes; transform of the same table hits the cache
    pipe = build_feature_pipeline("offline:dim=4", cache_dir=cache, progress=False)
    second = pipe.fit(table).transform(table)
    assert counters == {"text": 1, "image": 1}
    assert not hasattr(pipe.encoder.text_encoder, "svd_")  # all cached: the SVD was never even fitted
    np.testing.assert_array_equal(first.fused, second.fused)
    assert len(list((cache / "embeddings").glob("*.json"))) == 2


def test_cache_misses_when_fit_data_options_or_images_change(tmp_path, counters):
    table = make_table(tmp_path, n=12)
    cache = tmp_path / "cache"
    build_feature_pipeline("offline:dim=4", cache_dir=cache, progress=False).fit(table)
    # Other training rows -> another TF-IDF fit -> text re-encoded; images unchanged -> cached.
    build_feature_pipeline("offline:dim=4", cache_dir=cache, progress=False).fit(table.subset(np.arange(8)))
    assert counters == {"text": 2, "image": 2}  # the 8-row subset is a new image input set
    # An edited image file changes the input hash.
    path = table.image_paths[0]
    draw_image(path, seed=99)
    os.utime(path, ns=(1, 1))
    build_feature_pipeline("offline:dim=4", cache_dir=cache, progress=False).fit(table)
    assert counters == {"text": 2, "image": 3}
    # A different encoder option re-encodes that modality only.
    build_feature_pipeline("offline:dim=4,thumb=4", cache_dir=cache, progress=False).fit(table)
    assert counters == {"text": 2, "image": 4}


def test_use_cache_false_always_encodes(tmp_path, counters):
    table = make_table(tmp_path, n=8)
    pipe = build_feature_pipeline("offline:dim=3", cache_dir=tmp_path / "c", use_cache=False, progress=False)
    pipe.fit(table).transform(table)
    assert counters == {"text": 2, "image": 2}
    assert not (tmp_path / "c").exists()


def test_default_cache_dir_is_resolved_at_call_time(tmp_path, monkeypatch):
    monkeypatch.setenv("MMROUTE_CACHE_DIR", str(tmp_path / "env-cache"))
    assert default_cache_dir() == tmp_path / "env-cache"
    table = make_table(tmp_path, n=8)
    build_feature_pipeline("offline:dim=3", progress=False).fit(table)
    assert list((tmp_path / "env-cache" / "embeddings").glob("*.npy"))
    monkeypatch.delenv("MMROUTE_CACHE_DIR")
    assert default_cache_dir() == Path.cwd() / ".mmroute"


def test_unreadable_images_are_masked_out_under_zero(tmp_path):
    table = make_table(tmp_path, n=8)
    with open(table.image_paths[1], "wb") as f:
        f.write(b"broken")
    with pytest.raises(ValueError, match="1.png"):
        build_feature_pipeline("offline:dim=3", cache_dir=tmp_path / "c", progress=False).fit(table)
    pipe = build_feature_pipeline("offline:dim=3", cache_dir=tmp_path / "c", progress=False, on_bad_image="zero")
    feats = pipe.fit(table).transform(table)
    assert not feats.image_mask[1] and feats.image_mask[0]


def test_pipeline_errors(tmp_path):
    table = make_table(tmp_path, n=6)
    with pytest.raises(RuntimeError, match="not fitted"):
        build_feature_pipeline("offline", progress=False).transform(table)
    with pytest.raises(ValueError, match="unknown fusion"):
        build_feature_pipeline("offline", fusion="max")
    with pytest.raises(ValueError, match="needs a text encoder"):
        build_feature_pipeline("imagestats")
