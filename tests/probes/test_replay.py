"""Layer replay over cached l-1 states equals the full model's layer l (rotary, M-RoPE, encoders)."""

from __future__ import annotations

import pytest
import torch

from mmroute.probes.data import TokenData, pad_tokens
from mmroute.probes.extract import extract_hidden_states
from mmroute.probes.inputs import TokenizerInputs
from mmroute.probes.replay import LayerReplay, LoraSpec, additive_attention_mask, last_token
from probe_tiny import HandVLInputs, tiny_bert, tiny_qwen2, tiny_qwen2_vl, tiny_table, word_tokenizer

KINDS = {
    "qwen2": (lambda: tiny_qwen2(n_layers=3), lambda: TokenizerInputs(word_tokenizer()), False),
    "qwen2_vl": (lambda: tiny_qwen2_vl(n_layers=3), HandVLInputs, True),
    "qwen2_5_vl": (lambda: tiny_qwen2_vl(n_layers=3, family="qwen2_5_vl"), HandVLInputs, True),
    "bert": (lambda: tiny_bert(n_layers=3), lambda: TokenizerInputs(word_tokenizer()), False),
}


def _replay_setup(kind, tmp_path, layer=2):
    make_model, make_builder, images = KINDS[kind]
    model, builder = make_model(), make_builder()
    table = tiny_table(8, image_dir=tmp_path if images else None)
    cache = extract_hidden_states(model, builder, table, tmp_path / "c", layer=layer, batch_size=8,
                                  dtype="float32")
    batch = pad_tokens([TokenData(cache, cache.ids)[i] for i in range(len(cache.ids))])
    items = [{"id": i, "text": t, "image": p or None} for i, t, p in
             zip(table.ids, table.texts(), table.image_paths if images else [None] * 8)]
    enc = builder(items)
    enc.pop("token_type_ids", None)
    with torch.no_grad():
        ref = model(**enc, output_hidden_states=True).hidden_states[layer]
    return model, batch, ref


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_replay_equals_full_model_layer(kind, tmp_path):
    model, batch, ref = _replay_setup(kind, tmp_path)
    replay = LayerReplay.from_model(model, 2)
    with torch.no_grad():
        out = replay(batch["states"], batch["mask"], batch["position_ids"])
    keep = batch["mask"].bool()
    assert ref.shape[:2] == keep.shape
    assert (out - ref)[keep].abs().max().item() <= 1e-4
    assert not replay.has_lora and not any(p.requires_grad for p in replay.parameters())


def test_lora_starts_as_identity_trains_only_adapters_and_merges(tmp_path):
    model, batch, ref = _replay_setup("qwen2_vl", tmp_path)
    replay = LayerReplay.from_model(model, 2, lora=LoraSpec(r=8, alpha=16))
    args = (batch["states"], batch["mask"], batch["position_ids"])
    keep = batch["mask"].bool()
    with torch.no_grad():
        assert (replay(*args) - ref)[keep].abs().max().item() <= 1e-4  # LoRA B starts at zero
    trainable = [n for n, p in replay.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert {n.split(".")[-4] for n in trainable} >= {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                     "up_proj", "down_proj"}
    with torch.no_grad():
        for n, p in replay.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
        adapted = replay(*args)
        assert (adapted - ref)[keep].abs().max().item() > 1e-3
        replay.merge_lora()
        assert not replay.has_lora
        assert (replay(*args) - adapted)[keep].abs().max().item() <= 1e-4


def test_additive_mask_causal_padding_and_window():
    mask = torch.tensor([[1, 1, 1, 0]])
    m = additive_attention_mask(mask, causal=True, dtype=torch.float32)
    allowed = m[0, 0] == 0
    assert allowed.tolist() == [[True, False, False, False], [True, True, False, False],
                                [True, True, True, False], [True, True, True, False]]
    w = additive_attention_mask(mask, causal=True, dtype=torch.float32, sliding_window=2)[0, 0] == 0
    assert w[2].tolist() == [False, True, True, False]
    b = additive_attention_mask(mask, causal=False, dtype=torch.float32)[0, 0] == 0
    assert b.all(dim=0).tolist() == [True, True, True, False]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_last_token_fast_path_equals_full_layer_with_lora(kind, tmp_path):
    model, batch, ref = _replay_setup(kind, tmp_path)
    replay = LayerReplay.from_model(model, 2, lora=LoraSpec(r=8, alpha=16))
    assert replay.fast_path == ("post_norm_encoder" if kind == "bert" else "pre_norm_decoder")
    with torch.no_grad():
        for n, p in replay.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
        args = (batch["states"], batch["mask"], batch["position_ids"])
        full = last_token(replay(*args), batch["mask"])
        assert (replay.forward_last(*args) - full).abs().max().item() <= 1e-5
        replay.sliding_window = 3
        windowed = replay.forward_last(*args)
        assert (windowed - last_token(replay(*args), batch["mask"])).abs().max().item() <= 1e-5
        assert kind == "bert" or (windowed - full).abs().max().item() > 1e-4
    replay.train()  # gradients reach the adapter through the fast path
    replay.forward_last(*args).sum().backward()
    assert all(p.grad is not None for n, p in replay.named_parameters() if "lora_A" in n)
