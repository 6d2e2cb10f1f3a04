"""OpenCLIP encoder on a tiny randomly initialised model described in a local folder (no weights, no hub)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

pytest.importorskip("open_clip")

from feature_helpers import draw_image, make_table  # noqa: E402
from mmroute.features import build_feature_pipeline, create_encoder  # noqa: E402

TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-clip")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP, "preprocess_cfg": {}}))
    return folder


def test_spec_parsing():
    enc = create_encoder("openclip:ViT-B-32:/weights/clip.pt", device="cpu")
    assert (enc.model, enc.pretrained, enc.device) == ("ViT-B-32", "/weights/clip.pt", "cpu")
    default = create_encoder("openclip")
    assert (default.model, default.pretrained) == ("ViT-B-32", "openai")
    local = create_encoder("openclip:local-dir:/x/y")
    assert (local.model, local.pretrained) == ("local-dir:/x/y", None)
    with pytest.raises(ValueError, match="precision='fp8'"):
        create_encoder("openclip", precision="fp8")


def test_tiny_model_encodes_text_and_images_in_batches(tmp_path, tiny_clip_dir):
    enc = create_encoder(f"openclip:local-dir:{tiny_clip_dir}", device="cpu", batch_size=2, progress=False)
    texts = ["a cat", "a chart of sales", "the sum of two numbers", "a street sign", "a receipt"]
    t = enc.encode_text(texts)
    assert t.shape == (5, 16) and t.dtype == np.float32 and np.isfinite(t).all()
    # Batching does not change results.
    one_batch = create_encoder(f"openclip:local-dir:{tiny_clip_dir}", device="cpu", batch_size=8, progress=False)
    np.testing.assert_allclose(one_batch.encode_text(texts), t, atol=1e-5)
    paths = [str(draw_image(tmp_path / f"{i}.png", seed=i)) for i in range(3)]
    im = enc.encode_images([paths[0], None, paths[1], paths[2]])
    assert im.shape == (4, 16) and np.abs(im[[0, 2, 3]]).sum(axis=1).min() > 0
    np.testing.assert_array_equal(im[1], 0.0)
    assert enc.preprocess is not None  # the encoder carries its image preprocessing
    assert "random(" not in enc.identity and str(tiny_clip_dir.resolve()) in enc.identity


def test_bad_images_error_or_zero_with_count(tmp_path, tiny_clip_dir, caplog):
    good = str(draw_image(tmp_path / "good.png", seed=1))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 truncated")
    spec = f"openclip:local-dir:{tiny_clip_dir}"
    with pytest.raises(ValueError, match="broken.jpg"):
        create_encoder(spec, device="cpu", progress=False).encode_images([good, str(broken)])
    enc = create_encoder(spec, device="cpu", progress=False, on_bad_image="zero")
    with caplog.at_level(logging.WARNING, logger="mmroute.features"):
        out = enc.encode_images([good, str(broken), str(tmp_path / "gone.png")])
    np.testing.assert_array_equal(out[1:], 0.0)
    assert np.abs(out[0]).sum() > 0
    assert "2 of 3 images could not be read" in caplog.text


def test_random_init_is_seeded(tiny_clip_dir, monkeypatch):
    import open_clip

    # A built-in name without weights: random but reproducible, so its cache key stays valid.
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, "mmroute-tiny-test", json.loads(json.dumps(TINY_CLIP)))
    a = create_encoder("openclip:mmroute-tiny-test", device="cpu", progress=False).encode_text(["x y"])
    b = create_encoder("openclip:mmroute-tiny-test", device="cpu", progress=False).encode_text(["x y"])
    np.testing.assert_array_equal(a, b)
    assert "random(seed=0)" in create_encoder("openclip:mmroute-tiny-test").identity


def test_pipeline_with_openclip_caches_both_towers(tmp_path, tiny_clip_dir, monkeypatch):
    from mmroute.features.openclip import OpenClipEncoder

    table = make_table(tmp_path, n=6)
    spec = f"openclip:local-dir:{tiny_clip_dir}"
    feats = build_feature_pipeline(spec, fusion="mean", cache_dir=tmp_path / "c", device="cpu",
                                   progress=False).fit(table).transform(table)
    assert feats.fused.shape == (6, 16) and feats.image.shape == (6, 16)
    # Second run: cache hits for both towers, the model is never even loaded.
    monkeypatch.setattr(OpenClipEncoder, "_load", lambda self: pytest.fail("model loaded despite cache"))
    again = build_feature_pipeline(spec, fusion="mean", cache_dir=tmp_path / "c", device="cpu",
                                   progress=False).fit(table).transform(table)
    np.testing.assert_array_equal(again.fused, feats.fused)


def test_text_only_training_then_images_at_test_time(tmp_path, tiny_clip_dir):
    # Modality mode 12: train on text only, test on text + image. Mean fusion of CLIP towers
    # (one shared width) keeps working and does use the test images.
    table = make_table(tmp_path, n=8)
    pipe = build_feature_pipeline(f"openclip:local-dir:{tiny_clip_dir}", cache_dir=tmp_path / "c", device="cpu",
                                  progress=False).fit(table.without_images())
    feats = pipe.transform(table)
    assert feats.fused.shape == (8, 16) == (8, pipe.n_features_out_)
    text_only = pipe.transform(table.without_images()).fused
    with_image = feats.image_mask
    np.testing.assert_allclose(feats.fused[~with_image], text_only[~with_image], atol=1e-6)
    assert np.abs(feats.fused[with_image] - text_only[with_image]).max() > 1e-3
