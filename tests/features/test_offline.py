"""Offline encoders: TF-IDF fitted on train only, and the deterministic image featuriser."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from feature_helpers import draw_image, make_table
from mmroute.features import create_encoder, list_encoders
from mmroute.features.offline import ImageStatsEncoder, TfidfTextEncoder, image_statistics


def test_list_encoders_names_every_spec_family():
    assert {"offline", "tfidf", "imagestats", "openclip", "st", "precomputed", "column"} <= set(list_encoders())


def test_unknown_encoder_lists_valid_names():
    with pytest.raises(ValueError, match="unknown encoder 'nope'.*offline"):
        create_encoder("nope:x")


def test_offline_spec_options_reach_both_sides():
    enc = create_encoder("offline:dim=16,thumb=4,progress=false", on_bad_image="zero")
    assert enc.text_encoder.dim == 16 and enc.image_encoder.thumb == 4
    assert enc.image_encoder.progress is False and enc.image_encoder.on_bad_image == "zero"
    with pytest.raises(ValueError, match="key=value"):
        create_encoder("offline:dim")


def test_tfidf_test_split_lives_in_the_training_space(tmp_path):
    table = make_table(tmp_path, n=24, with_images=False)
    train, test = table.subset(np.arange(16)), table.subset(np.arange(16, 24))
    enc = TfidfTextEncoder(dim=8).fit_text(train.texts())
    train_vecs = enc.encode_text(train.texts())
    vocab = dict(enc.vectorizer_.vocabulary_)
    assert "case 20" not in vocab and "case 10" in vocab  # row 20 is a test row, row 10 a training row

    # A training row encoded inside a "test" call gets exactly its training vector.
    mixed = [test.texts()[0], train.texts()[3], test.texts()[1]]
    np.testing.assert_array_equal(enc.encode_text(mixed)[1], train_vecs[3])
    # Encoding the test split neither refits nor grows the vocabulary, and widths match.
    test_vecs = enc.encode_text(test.texts() + ["unseenword zebra quokka"])
    assert enc.vectorizer_.vocabulary_ == vocab
    assert test_vecs.shape == (9, train_vecs.shape[1]) and test_vecs.dtype == np.float32
    # Words never seen in training contribute nothing.
    np.testing.assert_array_equal(test_vecs[-1], 0.0)
    # Identical texts in train and test map to identical vectors (one space).
    same = enc.encode_text([train.texts()[0]])
    np.testing.assert_allclose(same[0], train_vecs[0])


def test_tfidf_identity_changes_with_fit_data(tmp_path):
    table = make_table(tmp_path, n=12, with_images=False)
    a = TfidfTextEncoder(dim=4).fit_text(table.texts()[:8])
    b = TfidfTextEncoder(dim=4).fit_text(table.texts()[4:])
    assert a.identity != b.identity and "@fit=" in a.identity


def test_tfidf_refuses_to_encode_before_fit():
    with pytest.raises(RuntimeError, match="not fitted"):
        TfidfTextEncoder().encode_text(["hello"])
    with pytest.raises(ValueError, match="at least 2 training texts"):
        TfidfTextEncoder().fit_text(["only one"])


def test_tfidf_on_blank_texts_gives_a_zero_column_and_says_so(caplog):
    # The image-only modality modes blank every question; that must not crash the text side.
    with caplog.at_level(logging.WARNING, logger="mmroute.features"):
        out = TfidfTextEncoder().fit_text(["", " ", ""]).encode_text(["", "anything"])
    np.testing.assert_array_equal(out, np.zeros((2, 1), dtype=np.float32))
    assert "text features are zero" in caplog.text


def test_image_featuriser_is_deterministic_and_discriminative(tmp_path):
    p1 = draw_image(tmp_path / "a.png", seed=1)
    p2 = draw_image(tmp_path / "b.png", seed=2)
    copy = tmp_path / "a_copy.png"
    copy.write_bytes(p1.read_bytes())
    enc = ImageStatsEncoder(progress=False)
    first = enc.encode_images([str(p1), str(p2), None, str(copy)])
    again = ImageStatsEncoder(progress=False).encode_images([str(p1)])
    assert first.shape == (4, enc.dim) and first.dtype == np.float32
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[0], first[3])
    assert np.abs(first[0] - first[1]).max() > 1e-3
    np.testing.assert_array_equal(first[2], 0.0)  # no image -> zero row
    assert np.isfinite(first).all()


def test_image_statistics_width_matches_options():
    img = Image.new("RGB", (30, 20), (10, 200, 30))
    assert image_statistics(img, thumb=4, bins=4).shape == (ImageStatsEncoder(thumb=4, bins=4).dim,)


@pytest.mark.parametrize("kind", ["missing", "corrupt"])
def test_bad_image_error_names_the_path(tmp_path, kind):
    bad = tmp_path / "bad.png"
    if kind == "corrupt":
        bad.write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match="bad.png"):
        ImageStatsEncoder(progress=False, on_bad_image="error").encode_images([str(bad)])


def test_bad_image_zero_is_logged_not_silent(tmp_path, caplog):
    good = draw_image(tmp_path / "good.png", seed=3)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG broken")
    enc = ImageStatsEncoder(progress=False, on_bad_image="zero")
    with caplog.at_level(logging.WARNING, logger="mmroute.features"):
        out = enc.encode_images([str(good), str(corrupt), str(tmp_path / "missing.png")])
    np.testing.assert_array_equal(out[1:], 0.0)
    assert np.abs(out[0]).sum() > 0
    assert "2 of 3 images could not be read" in caplog.text


def test_bad_image_policy_is_validated():
    with pytest.raises(ValueError, match="on_bad_image='skip'.*error"):
        ImageStatsEncoder(on_bad_image="skip")
