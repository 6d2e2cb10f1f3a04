"""Speed target: one ReLope epoch on cached layer l-1 states vs running the model from the input.

Usage: ``python bench/probe.py [--n 512] [--batch-size 16] [--repeats 3] [--threads 1] [--out probe.json]``.

A tiny random decoder (Qwen2 architecture, 8 layers, hidden 64, l = 6) with a word-level tokenizer
over synthetic questions. Both paths train the same ReLope (LoRA r=128, alpha=256 on layer 6 +
mu / log sigma^2 heads + 5-layer probe, AdamW lr 1e-4, beta 1) from the same initial weights on the
same batches with the same sampling noise, in the same plain loop (zero_grad, loss, backward, step):

- ``cached``: :class:`~mmroute.probes.heads.ReLopeNet` over the fp16 hidden-state cache (extracted
  once, timed separately as ``extract_seconds``);
- ``from_input`` (the paper's way): tokenise the batch, run the whole ``Qwen2ForCausalLM`` with the
  peft LoRA inside layer 6 and ``output_hidden_states=True``, take ``hidden_states[6]``;
- ``from_input_truncated`` (for reference): tokenise, run the frozen model only up to layer 6
  (:func:`~mmroute.probes.extract.run_to_layer`), then the same replayed layer 6 with LoRA.

Prints JSON with epoch seconds (median of ``--repeats``), the ratios, and the first-batch losses of
each path (cache in fp16 as stored by default, and in fp32, where the losses agree to float
rounding). ``passed``: ratio vs from_input >= 5 and first-batch losses equal (fp32 cache, <= 1e-5).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

N_LAYERS, LAYER, HIDDEN, VOCAB_WORDS = 8, 6, 64, 2000


def tokenizer() -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", *(f"w{i}" for i in range(VOCAB_WORDS))])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")


def data(n: int, seed: int) -> Any:
    from mmroute.data.table import OutcomeTable

    rng = np.random.default_rng(seed)
    lengths = rng.integers(48, 129, size=n)
    words = [rng.integers(0, VOCAB_WORDS, size=k) for k in lengths]
    texts = [" ".join(f"w{w}" for w in ws) for ws in words]
    small = np.array([float((ws < 200).mean() > 0.1) for ws in words])  # a learnable signal
    correct = np.stack([small, np.ones(n)], axis=1)
    return OutcomeTable(ids=[f"q{i}" for i in range(n)], datasets=["synthetic"] * n, questions=texts,
                        models=("small", "large"), correct=correct, cost=np.ones((n, 2)))


class FromInputReLope(nn.Module):
    """The paper's way: the full causal LM with LoRA in layer l, heads on hidden_states[l]."""

    def __init__(self, lm: nn.Module, relope: nn.Module, truncated: bool) -> None:
        super().__init__()
        self.lm, self.truncated = lm, truncated
        self.mu, self.logvar, self.probe = (copy.deepcopy(m) for m in (relope.mu, relope.logvar, relope.probe))
        self.replay = copy.deepcopy(relope.replay) if truncated else None
        if not truncated:
            from peft import LoraConfig, inject_adapter_in_model

            from mmroute.probes.replay import linear_module_names

            prefix = f"model.layers.{LAYER - 1}"
            names = [f"{prefix}.{n}" for n in linear_module_names(lm.model.layers[LAYER - 1])]
            cfg = LoraConfig(r=128, lora_alpha=256, target_modules=names)
            inject_adapter_in_model(cfg, lm)
            # Same adapter weights as the cached path's replayed layer.
            src = dict(relope.replay.layer.named_parameters())
            for name, p in lm.named_parameters():
                p.requires_grad_("lora_" in name)
                if "lora_" in name:
                    p.data.copy_(src[name[len(prefix) + 1:]].data)

    def forward(self, enc: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from mmroute.probes.extract import run_to_layer
        from mmroute.probes.replay import last_token

        mask = enc["attention_mask"]
        if self.truncated:
            cap = run_to_layer(self.lm.model, LAYER, enc)
            z = self.replay.forward_last(cap.states_in, mask, cap.position_ids)
        else:
            z = last_token(self.lm(**enc, output_hidden_states=True).hidden_states[LAYER], mask)
        mu, logvar = self.mu(z), self.logvar(z)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.probe(z), mu, logvar


def epoch(step_fn, params, batches, seed: int) -> tuple[float, float]:
    """Run one epoch of AdamW steps; returns (seconds, first-batch loss)."""
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)
    torch.manual_seed(seed)
    first = None
    start = time.perf_counter()
    for b in batches:
        loss = step_fn(b)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = float(loss) if first is None else first
    return time.perf_counter() - start, first


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: steadier timings "
                    "on a shared machine)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from transformers import Qwen2Config, Qwen2ForCausalLM

    from mmroute.probes.data import TokenData, pad_tokens
    from mmroute.probes.extract import extract_hidden_states
    from mmroute.probes.heads import gaussian_kl
    from mmroute.probes.inputs import TokenizerInputs
    from mmroute.probes.lit import ReLopeLit
    from mmroute.probes.train import ProbeTrainConfig, build_network

    torch.manual_seed(args.seed)
    tok = tokenizer()
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=HIDDEN, intermediate_size=4 * HIDDEN,
                      num_hidden_layers=N_LAYERS, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=512, pad_token_id=0, bos_token_id=None, eos_token_id=None)
    lm = Qwen2ForCausalLM(cfg).eval().requires_grad_(False)
    table = data(args.n, args.seed)
    builder = TokenizerInputs(tok)
    order = np.random.default_rng(args.seed).permutation(args.n)
    chunks = [order[i:i + args.batch_size] for i in range(0, args.n, args.batch_size)]
    labels = torch.tensor(table.correct[:, 0], dtype=torch.float32)
    texts = table.texts()

    result: dict[str, Any] = {"model": {"arch": "Qwen2ForCausalLM", "layers": N_LAYERS, "layer": LAYER,
                                        "hidden": HIDDEN, "vocab": len(tok)},
                              "n": args.n, "batch_size": args.batch_size, "threads": args.threads}
    with tempfile.TemporaryDirectory() as tmp:
        caches = {}
        for dtype in ("float16", "float32"):
            t0 = time.perf_counter()
            caches[dtype] = extract_hidden_states(lm.model, builder, table, Path(tmp) / dtype, layer=LAYER,
                                                  batch_size=32, dtype=dtype, accelerator="cpu")
            result.setdefault("extract_seconds", {})[dtype] = round(time.perf_counter() - t0, 3)
        torch.manual_seed(args.seed)
        relope0 = build_network(ProbeTrainConfig(head="relope"), HIDDEN, lm.model, LAYER)
        # Inputs of each path, prepared outside the timed loop only where the path would have them
        # ready: the cache path reads stored states (collated per step), the others tokenise per step.
        token_data = {d: TokenData(c, list(table.ids)) for d, c in caches.items()}
        cached_batches = {d: [([td[int(i)] for i in ch], labels[ch]) for ch in chunks]
                          for d, td in token_data.items()}
        text_batches = [([{"id": "", "text": texts[i], "image": None} for i in ch], labels[ch]) for ch in chunks]

        def run_cached(dtype: str) -> tuple[float, float]:
            net = copy.deepcopy(relope0).train()
            lit = ReLopeLit(net)

            def step(batch: tuple[list[dict[str, Any]], torch.Tensor]) -> torch.Tensor:
                items, y = batch
                return lit.loss({**pad_tokens(items), "y": y})[0]

            return epoch(step, [p for p in net.parameters() if p.requires_grad], cached_batches[dtype], args.seed)

        def run_from_input(truncated: bool) -> tuple[float, float]:
            net = FromInputReLope(copy.deepcopy(lm), relope0, truncated).train()

            def step(batch: tuple[list[dict[str, Any]], torch.Tensor]) -> torch.Tensor:
                items, y = batch
                logits, mu, logvar = net(builder(items))
                return F.binary_cross_entropy_with_logits(logits, y) + 1.0 * gaussian_kl(mu, logvar)

            return epoch(step, [p for p in net.parameters() if p.requires_grad], text_batches, args.seed)

        timings: dict[str, list[float]] = {}
        first: dict[str, float] = {}
        for _ in range(args.repeats):
            for name, fn in (("cached", lambda: run_cached("float16")),
                             ("from_input", lambda: run_from_input(False)),
                             ("from_input_truncated", lambda: run_from_input(True))):
                secs, loss = fn()
                timings.setdefault(name, []).append(secs)
                first[name] = loss
        first["cached_fp32_cache"] = run_cached("float32")[1]
        # The loss at initialisation barely depends on z; compare the layer-6 states themselves too.
        from mmroute.probes.replay import last_token

        items, _ = text_batches[0]
        enc = builder(items)
        with torch.no_grad():
            ref = last_token(lm(**enc, output_hidden_states=True).hidden_states[LAYER], enc["attention_mask"])
            state_diff = {}
            for dtype in ("float16", "float32"):
                b = pad_tokens(cached_batches[dtype][0][0])
                z = relope0.replay.forward_last(b["states"], b["mask"], b["position_ids"])
                state_diff[f"{dtype[:2]}{dtype[-2:]}_cache"] = float((z - ref).abs().max())
        result["first_batch_layer_state_max_abs_diff"] = {"fp16_cache": state_diff["fl16_cache"],
                                                          "fp32_cache": state_diff["fl32_cache"],
                                                          "state_scale": float(ref.abs().max())}
    med = {k: statistics.median(v) for k, v in timings.items()}
    result["epoch_seconds"] = {k: round(v, 4) for k, v in med.items()}
    result["epoch_seconds_all"] = {k: [round(x, 4) for x in v] for k, v in timings.items()}
    result["ratio"] = round(med["from_input"] / med["cached"], 2)
    result["ratio_vs_truncated"] = round(med["from_input_truncated"] / med["cached"], 2)
    result["first_batch_loss"] = {k: round(v, 8) for k, v in first.items()}
    diff16 = abs(first["cached"] - first["from_input"])
    diff32 = abs(first["cached_fp32_cache"] - first["from_input"])
    result["first_batch_loss_abs_diff"] = {
        "fp16_cache": diff16, "fp32_cache": diff32,
        "truncated_vs_full": abs(first["from_input_truncated"] - first["from_input"])}
    result["passed"] = bool(result["ratio"] >= 5.0 and diff32 <= 1e-5)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
