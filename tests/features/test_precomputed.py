"""Precomputed embeddings: row alignment via extra["row"], table order, columns, and shape errors."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from feature_helpers import make_table
from mmroute.features import build_feature_pipeline, create_encoder
from mmroute.features.fusion import l2_normalize


@pytest.fixture
def emb_file(tmp_path):
    arr = np.arange(40, dtype=np.float32).reshape(10, 4) + 1
    path = tmp_path / "emb.npy"
    np.save(path, arr)
    return path, arr


def test_rows_are_picked_by_extra_row(tmp_path, emb_file):
    path, arr = emb_file
    table = make_table(tmp_path, n=10, with_images=False)
    subset = table.subset(np.array([7, 2, 5]))
    enc = create_encoder(f"precomputed:{path}")
    np.testing.assert_array_equal(enc.encode_rows(subset), arr[[7, 2, 5]])


def test_table_order_is_used_without_a_row_column(tmp_path, emb_file):
    path, arr = emb_file
    table = replace(make_table(tmp_path, n=10, with_images=False), extra={})
    np.testing.assert_array_equal(create_encoder(f"precomputed:{path}").encode_rows(table), arr)


def test_shape_mismatch_names_both_shapes(tmp_path, emb_file):
    path, _ = emb_file
    table = replace(make_table(tmp_path, n=7, with_images=False), extra={})
    with pytest.raises(ValueError, match=r"shape \(10, 4\).*shape \(7, \.\.\.\)"):
        create_encoder(f"precomputed:{path}").encode_rows(table)
    too_far = make_table(tmp_path, n=12, with_images=False)  # extra["row"] goes up to 11
    with pytest.raises(ValueError, match=r"shape \(10, 4\).*rows 0\.\.11"):
        create_encoder(f"precomputed:{path}").encode_rows(too_far)
    np.save(tmp_path / "flat.npy", np.zeros(5))
    with pytest.raises(ValueError, match="must be 2-D.*\\(5,\\)"):
        create_encoder(f"precomputed:{tmp_path / 'flat.npy'}").encode_rows(table)
    with pytest.raises(FileNotFoundError, match="nope.npy"):
        create_encoder(f"precomputed:{tmp_path / 'nope.npy'}").encode_rows(table)


def test_pipeline_with_precomputed_features(tmp_path, emb_file):
    path, arr = emb_file
    table = make_table(tmp_path, n=10)
    pipe = build_feature_pipeline(f"precomputed:{path}", cache_dir=tmp_path / "c").fit(table.subset(np.arange(6)))
    feats = pipe.transform(table.subset(np.arange(6, 10)))
    np.testing.assert_array_equal(feats.text, arr[6:])
    np.testing.assert_allclose(feats.fused, l2_normalize(arr[6:]), atol=1e-6)
    assert feats.image is None  # the array is the query embedding; images are not re-encoded
    assert not (tmp_path / "c").exists()  # arrays on disk already: nothing cached


def test_column_of_vectors(tmp_path):
    table = make_table(tmp_path, n=4, with_images=False)
    vectors = [[float(i), 1.0, -1.0] for i in range(4)]
    as_lists = replace(table, extra={"emb": np.array(vectors + [[0.0]], dtype=object)[:4]})
    as_json = replace(table, extra={"emb": np.array([json.dumps(v) for v in vectors], dtype=object)})
    as_matrix = replace(table, extra={"emb": np.array(vectors)})
    enc = create_encoder("column:emb")
    for t in (as_lists, as_json, as_matrix):
        np.testing.assert_array_equal(enc.encode_rows(t), np.array(vectors, dtype=np.float32))
    ragged = replace(table, extra={"emb": np.array([[1.0, 2.0], [1.0], [1.0, 2.0], [3.0, 4.0]], dtype=object)})
    with pytest.raises(ValueError, match="row 1 has 1 values, expected 2"):
        enc.encode_rows(ragged)
    with pytest.raises(KeyError, match="no column 'other'.*available: \\['emb'\\]"):
        create_encoder("column:other").encode_rows(as_matrix)
