"""Embedding a Parquet table on local Spark gives the in-process vectors under the same cache keys."""

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow


def test_spark_embeddings_equal_in_process_and_share_cache_keys(spark, tmp_path):
    from mmroute.data import load_table
    from mmroute.features.cache import EmbeddingCache, hash_image_inputs, hash_texts
    from mmroute.features.pipeline import build_feature_pipeline
    from mmroute.features.spark import embed_table

    synth = load_table("synthetic:n=240,seed=3,image_size=32")
    frame = pd.DataFrame({"id": synth.ids, "question": synth.questions,
                          "image_path": [p if h else None for p, h in zip(synth.image_paths, synth.has_images)]})
    if synth.contexts is not None:
        frame["context"] = synth.contexts
    for j, m in enumerate(synth.models):
        frame[f"{m}_correct"], frame[f"{m}_cost"] = synth.correct[:, j], synth.cost[:, j]
    source = tmp_path / "table.parquet"
    frame.to_parquet(source, row_group_size=60)   # several Spark partitions
    table = load_table(str(source), images="warn", allow_outside_images=True)  # images stay in the cache
    assert table.has_images.any() and not table.has_images.all()

    cache_dir = tmp_path / "cache"
    pipe = build_feature_pipeline("offline", cache_dir=cache_dir, use_cache=False).fit(table)
    feats = pipe.transform(table)

    out = tmp_path / "emb.npy"
    result = embed_table(spark, pipe.encoder, source, out, cache_dir=cache_dir)
    assert result["rows"] == table.n_instances
    text, image = np.load(out), np.load(result["image"])
    assert text.shape == feats.text.shape and image.shape == feats.image.shape
    assert np.abs(text - feats.text).max() <= 1e-5
    assert np.abs(image - feats.image).max() <= 1e-5

    # The cache keys are the in-process pipeline's: a cached run finds them instead of encoding.
    cache = EmbeddingCache(cache_dir)
    paths = [str(p) if h else None for p, h in zip(table.image_paths, table.has_images)]
    assert result["cache_keys"] == {
        "text": cache.key(pipe.encoder.modality_identity("text"), "text", hash_texts(table.texts())),
        "image": cache.key(pipe.encoder.modality_identity("image"), "image", hash_image_inputs(paths))}
    cached = build_feature_pipeline("offline", cache_dir=cache_dir)
    cached.encoder = pipe.encoder
    cached.fusion_, cached.uses_image_ = pipe.fusion_, pipe.uses_image_

    def no_encoding(*_):
        raise AssertionError("encoded although the Spark embeddings are cached")

    pipe.encoder.encode_text = no_encoding
    pipe.encoder.encode_images = no_encoding
    again = cached.transform(table)
    np.testing.assert_array_equal(again.text, text)

    # train reads them as precomputed embeddings, row-aligned with the file.
    pre = build_feature_pipeline(f"precomputed:{out}").fit(table).transform(table)
    np.testing.assert_array_equal(pre.text, text)
