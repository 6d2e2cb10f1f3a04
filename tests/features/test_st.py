"""sentence-transformers encoder on a tiny random BERT saved to tmp_path (no hub access)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sentence_transformers")

from feature_helpers import make_table  # noqa: E402
from mmroute.features import build_feature_pipeline, create_encoder  # noqa: E402

WORDS = ["the", "a", "of", "cat", "dog", "sum", "two", "numbers", "chart", "sign", "street", "receipt",
         "total", "solve", "integral", "what", "colour", "is", "car", "read", "text", "how", "many"]


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory):
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *(f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz")]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_local_folder_encodes_texts(tiny_bert_dir):
    enc = create_encoder(f"st:{tiny_bert_dir}", device="cpu", batch_size=2, progress=False)
    out = enc.encode_text(["the cat", "solve the integral", "a street sign"])
    assert out.shape == (3, 16) and out.dtype == np.float32 and np.isfinite(out).all()
    assert np.abs(out[0] - out[1]).max() > 1e-4
    normed = create_encoder(f"st:{tiny_bert_dir}", device="cpu", normalize=True, progress=False)
    np.testing.assert_allclose(np.linalg.norm(normed.encode_text(["the cat"]), axis=1), 1.0, atol=1e-5)
    assert str(tiny_bert_dir.resolve()) in enc.identity and "normalize=False" in enc.identity


def test_pipeline_with_st_is_text_only_and_cached(tmp_path, tiny_bert_dir, monkeypatch):
    from mmroute.features.st import SentenceTransformerEncoder

    table = make_table(tmp_path, n=6)
    spec = f"st:{tiny_bert_dir}"
    pipe = build_feature_pipeline(spec, cache_dir=tmp_path / "c", device="cpu", progress=False)
    feats = pipe.fit(table).transform(table)
    assert feats.text.shape == (6, 16) and feats.image is None  # a text model ignores the images
    monkeypatch.setattr(SentenceTransformerEncoder, "_load", lambda self: pytest.fail("re-encoded despite cache"))
    again_pipe = build_feature_pipeline(spec, cache_dir=tmp_path / "c", device="cpu", progress=False)
    again = again_pipe.fit(table).transform(table)
    np.testing.assert_array_equal(again.text, feats.text)


def test_st_needs_a_model():
    with pytest.raises(ValueError, match="needs a model name or path"):
        create_encoder("st")
