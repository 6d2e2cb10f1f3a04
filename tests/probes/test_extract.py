"""Extraction: stops after layer l, caches what replay needs, is complete, shards across processes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mmroute.probes.cache import HiddenStateCache, IncompleteCacheError, finalize_cache
from mmroute.probes.extract import extract_hidden_states, run_to_layer
from mmroute.probes.inputs import TokenizerInputs
from probe_tiny import HandVLInputs, tiny_qwen2, tiny_qwen2_vl, tiny_table, word_tokenizer


def _count_calls(layers):
    calls = [0] * len(layers)
    for i, layer in enumerate(layers):
        layer.register_forward_hook(lambda m, a, o, i=i: calls.__setitem__(i, calls[i] + 1))
    return calls


def test_cache_holds_layer_states_and_later_layers_never_run(tmp_path):
    model = tiny_qwen2(n_layers=4)
    table = tiny_table(10)
    calls = _count_calls(model.layers)
    builder = TokenizerInputs(word_tokenizer(), token_cap=6)
    cache = extract_hidden_states(model, builder, table, tmp_path / "c", layer=2, batch_size=4, dtype="float32")
    assert calls[2] == calls[3] == 0 and calls[1] == 3  # three batches, stopped after layers[1]
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    assert meta["layer"] == 2 and meta["n_instances"] == 10 and meta["causal"] and meta["rotary"]
    assert cache.ids == list(table.ids) and cache.position_rows == 1

    ids = list(table.ids[:3])
    enc = builder([{"id": i, "text": t, "image": None} for i, t in zip(ids, table.texts()[:3])])
    ref = model(**enc, output_hidden_states=True).hidden_states
    last = cache.last_states(ids)
    for r, i in enumerate(ids):
        states, mask, pos = cache.tokens(i)
        n = int(enc["attention_mask"][r].sum())
        assert n <= 6 and states.shape == (n, 32) and mask.tolist() == [1] * n
        assert torch.allclose(states, ref[1][r, :n], atol=1e-6)
        assert torch.equal(pos[0], torch.arange(n))
        assert np.allclose(last[r], ref[2][r, n - 1].numpy(), atol=1e-6)


def test_existing_cache_is_reused_and_incomplete_one_is_refused(tmp_path):
    model, table = tiny_qwen2(n_layers=2), tiny_table(6)
    builder = TokenizerInputs(word_tokenizer())
    extract_hidden_states(model, builder, table, tmp_path, layer=1, batch_size=4)
    calls = _count_calls(model.layers)
    again = extract_hidden_states(model, builder, table, tmp_path, layer=1, batch_size=4)
    assert calls == [0, 0] and len(again) == 6
    extract_hidden_states(model, builder, table, tmp_path, layer=2, batch_size=4)  # other identity: re-run
    assert calls[1] == 2 and HiddenStateCache(tmp_path).layer == 2
    with pytest.raises(IncompleteCacheError, match="lacks 1 of 7"):
        finalize_cache(tmp_path, [*table.ids, "unknown"], {"layer": 2})


def test_two_ddp_processes_write_the_same_cache_as_one(tmp_path):
    model, table = tiny_qwen2(n_layers=3), tiny_table(11)
    builder = TokenizerInputs(word_tokenizer())
    one = extract_hidden_states(model, builder, table, tmp_path / "one", layer=2, batch_size=3)
    # ddp_fork: Lightning's DDP strategy (gloo on CPU) with forked workers, which start in a second
    # instead of re-importing torch in each spawned interpreter.
    two = extract_hidden_states(model, builder, table, tmp_path / "two", layer=2, batch_size=3,
                                accelerator="cpu", devices=2, strategy="ddp_fork")
    assert two.meta["world_size"] == 2 and len(two.meta["shards"]) == 2
    assert two.ids == one.ids
    for i in one.ids:
        for a, b in zip(one.tokens(i), two.tokens(i)):
            assert torch.allclose(a.float(), b.float(), atol=1e-3, rtol=1e-3)
    assert np.allclose(one.last_states(one.ids), two.last_states(one.ids), atol=1e-3)


def test_vision_language_model_caches_3d_positions(tmp_path):
    model = tiny_qwen2_vl(n_layers=3)
    table = tiny_table(6, image_dir=tmp_path)
    cache = extract_hidden_states(model, HandVLInputs(), table, tmp_path / "c", layer=2, batch_size=4)
    assert cache.position_rows == 3 and cache.meta["rotary"]
    _, _, pos = cache.tokens("q0")  # has an image: tokens 2..5 form a 2x2 grid
    assert pos.shape[0] == 3 and pos[1, 2:6].tolist() == [2, 2, 3, 3] and pos[2, 2:6].tolist() == [2, 3, 2, 3]
    _, _, text_pos = cache.tokens("q1")  # text only: the three rows agree
    assert torch.equal(text_pos[0], text_pos[1]) and torch.equal(text_pos[0], text_pos[2])


def test_run_to_layer_rejects_bad_layer():
    model = tiny_qwen2(n_layers=2)
    enc = TokenizerInputs(word_tokenizer())([{"id": "a", "text": "the cat", "image": None}])
    with pytest.raises(ValueError, match=r"1\.\.2"):
        run_to_layer(model, 3, enc)
