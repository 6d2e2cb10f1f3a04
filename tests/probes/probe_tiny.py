"""Tiny random backbones, a word-level tokenizer and small outcome tables for the probe tests."""

from __future__ import annotations

import json

import numpy as np
import torch

from mmroute.data.table import OutcomeTable

WORDS = ["the", "a", "cat", "dog", "sat", "on", "mat", "what", "is", "two", "plus", "three", "red",
         "blue", "green", "image", "shows", "how", "many", "why", "sky", "number", "answer", "question"]


def word_tokenizer(model_max_length: int = 64):
    """A fast word-level tokenizer over WORDS (offline; no tokenizer files needed)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[BOS]", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                   bos_token="[BOS]", model_max_length=model_max_length)


def tiny_qwen2(n_layers: int = 4, hidden: int = 32, seed: int = 0, vocab: int = 64):
    from transformers import Qwen2Config, Qwen2Model

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=n_layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=256, pad_token_id=0, bos_token_id=2, eos_token_id=2,
                      attn_implementation="sdpa")
    return Qwen2Model(cfg).eval()


def tiny_bert(n_layers: int = 3, hidden: int = 32, seed: int = 0, vocab: int = 64):
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
                     num_hidden_layers=n_layers, num_attention_heads=4, max_position_embeddings=128,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertModel(cfg).eval()


IMAGE_TOKEN, VSTART, VEND = 60, 58, 59


def tiny_qwen2_vl(n_layers: int = 3, hidden: int = 32, seed: int = 0, family: str = "qwen2_vl"):
    """A Qwen2-VL (or Qwen2.5-VL) built from its config: 2x2 patches, merge 2, 3-D M-RoPE."""
    import transformers

    torch.manual_seed(seed)
    text = dict(vocab_size=64, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=n_layers,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                pad_token_id=0, bos_token_id=2, eos_token_id=2,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2]})
    if family == "qwen2_vl":
        vision = dict(depth=1, embed_dim=16, hidden_size=hidden, num_heads=2, patch_size=2,
                      spatial_merge_size=2, temporal_patch_size=2, in_channels=3)
        cfg_cls, model_cls = transformers.Qwen2VLConfig, transformers.Qwen2VLModel
    else:
        vision = dict(depth=1, hidden_size=16, out_hidden_size=hidden, intermediate_size=32, num_heads=2,
                      patch_size=2, spatial_merge_size=2, temporal_patch_size=2, in_channels=3,
                      window_size=8, fullatt_block_indexes=[0])
        cfg_cls, model_cls = transformers.Qwen2_5_VLConfig, transformers.Qwen2_5_VLModel
    cfg = cfg_cls(text_config=text, vision_config=vision, image_token_id=IMAGE_TOKEN, video_token_id=61,
                  vision_start_token_id=VSTART, vision_end_token_id=VEND)
    model = model_cls(cfg).eval()
    model.config._attn_implementation = "sdpa"
    return model


class HandVLInputs:
    """Qwen2-VL inputs built by hand (no processor files offline): words -> ids, and for items with
    an image, a vision block of 4 image tokens before the text: the image resized to 8x8 pixels is
    cut into a 4x4 grid of 2x2 patches (two identical frames), merged 2x2 by the model."""

    def __init__(self, token_cap: int | None = None) -> None:
        self.vocab = {w: i + 3 for i, w in enumerate(WORDS)}
        self.token_cap = token_cap

    @staticmethod
    def patches(path) -> torch.Tensor:
        from mmroute.probes.inputs import load_image

        px = torch.tensor(np.asarray(load_image(path).resize((8, 8)), dtype=np.float32) / 255.0)
        px = px.permute(2, 0, 1)  # (3, 8, 8)
        grid = px.reshape(3, 4, 2, 4, 2).permute(1, 3, 0, 2, 4)  # (gh, gw, c, ph, pw)
        # Row-major patches in 2x2 merge windows, as the Qwen2-VL processor orders them.
        grid = grid.reshape(2, 2, 2, 2, 3, 2, 2).permute(0, 2, 1, 3, 4, 5, 6).reshape(16, 3, 1, 2, 2)
        return grid.expand(16, 3, 2, 2, 2).reshape(16, 24)

    def __call__(self, items):
        seqs, pixels, grids = [], [], []
        for it in items:
            words = [self.vocab.get(w, 1) for w in it["text"].split()][: self.token_cap]
            ids = [2]
            if it["image"] is not None:
                ids += [VSTART] + [IMAGE_TOKEN] * 4 + [VEND]
                pixels.append(self.patches(it["image"]))
                grids.append([1, 4, 4])
            seqs.append(ids + words)
        width = max(map(len, seqs))
        input_ids = torch.zeros(len(seqs), width, dtype=torch.long)
        mask = torch.zeros(len(seqs), width, dtype=torch.long)
        for r, s in enumerate(seqs):
            input_ids[r, : len(s)] = torch.tensor(s)
            mask[r, : len(s)] = 1
        out = {"input_ids": input_ids, "attention_mask": mask,
               "mm_token_type_ids": (input_ids == IMAGE_TOKEN).int()}
        if pixels:
            out["pixel_values"] = torch.cat(pixels)
            out["image_grid_thw"] = torch.tensor(grids)
        return out


def tiny_table(n: int = 24, seed: int = 0, image_dir=None, n_datasets: int = 2) -> OutcomeTable:
    """Questions of 3..12 words; 'small' is correct on questions mentioning 'cat' or 'red' (plus noise).

    With ``image_dir``, every even instance gets a random 8x8 PNG written there.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    qs = [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 13)))) for _ in range(n)]
    signal = np.array([("cat" in q.split()) or ("red" in q.split()) for q in qs], dtype=float)
    small = np.where(rng.random(n) < 0.85, signal, 1 - signal)
    large = np.where(rng.random(n) < 0.9, 1.0, 0.0)
    correct = np.stack([small, large], axis=1)
    cost = np.stack([np.full(n, 0.1), np.full(n, 1.0)], axis=1)
    paths = None
    if image_dir is not None:
        paths = np.array([""] * n, dtype=object)
        for i in range(0, n, 2):
            paths[i] = str(image_dir / f"img-{i}.png")
            Image.fromarray((rng.random((8, 8, 3)) * 255).astype(np.uint8)).save(paths[i])
    return OutcomeTable(ids=[f"q{i}" for i in range(n)], datasets=[f"d{i % n_datasets}" for i in range(n)],
                        questions=qs, models=("small", "large"), correct=correct, cost=cost,
                        image_paths=paths)


def synthetic_cache(path, n: int = 160, d: int = 32, seed: int = 0, layer: int = 2, position_rows: int = 1):
    """A cache whose token states carry the label: ``y`` shifts dimension 0 of every token by 3.

    Returns ``(cache, ids, labels)``; lengths vary from 3 to 9 tokens.
    """
    from safetensors.torch import save_file

    from mmroute.probes.cache import HiddenStateCache, finalize_cache

    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(n, generator=g) < 0.5).float()
    lengths = torch.randint(3, 10, (n,), generator=g)
    states = [torch.randn(int(t), d, generator=g) for t in lengths]
    for s, y in zip(states, labels):
        s[:, 0] += 3.0 * float(y)
    ids = [f"s{i}" for i in range(n)]
    flat = torch.cat(states)
    pos = torch.cat([torch.arange(int(t)) for t in lengths]).expand(position_rows, -1).contiguous()
    save_file({"lengths": lengths.long(), "states": flat.half(),
               "attention_mask": torch.ones(len(flat), dtype=torch.uint8),
               "position_ids": pos, "last": torch.stack([s[-1] for s in states]).half()},
              str(path / "shard-r000-00000.safetensors"), metadata={"ids": json.dumps(ids)})
    finalize_cache(path, ids, {"layer": layer})
    return HiddenStateCache(path), ids, labels.numpy()


VL_SPECIALS = {"<|endoftext|>": 0, "<|im_start|>": 55, "<|im_end|>": 56, "<|vision_start|>": VSTART,
               "<|vision_end|>": VEND, "<|image_pad|>": IMAGE_TOKEN, "<|video_pad|>": 61}
VL_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def tiny_vl_processor(family: str = "qwen2_vl", pixels: int = 8):
    """A real Qwen2-VL / Qwen2.5-VL processor assembled offline: a ``tokenizers`` word-level
    tokenizer holding the model's special tokens (ids as in :func:`tiny_qwen2_vl`) wrapped as a
    fast tokenizer, and the image processor class built from its defaults with 2x2 patches, merge
    2 and images resized to ``pixels`` x ``pixels`` (4 image tokens each)."""
    import transformers
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 1, **{w: i + 3 for i, w in enumerate(WORDS)}, "user": 3 + len(WORDS),
             "assistant": 4 + len(WORDS), **VL_SPECIALS}
    used = set(vocab.values())
    vocab.update({f"<unused{i}>": i for i in range(64) if i not in used})
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in VL_SPECIALS])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="<|endoftext|>",
                                   eos_token="<|im_end|>", model_max_length=256)
    size = {"shortest_edge": pixels * pixels, "longest_edge": pixels * pixels}
    if family == "qwen2_vl":
        ip_cls, proc_cls = transformers.Qwen2VLImageProcessor, transformers.Qwen2VLProcessor
    else:
        ip_cls, proc_cls = transformers.Qwen2VLImageProcessor, transformers.Qwen2_5_VLProcessor
    images = ip_cls(patch_size=2, merge_size=2, temporal_patch_size=2, size=size)
    video = transformers.Qwen2VLVideoProcessor(patch_size=2, merge_size=2, temporal_patch_size=2, size=size)
    return proc_cls(image_processor=images, tokenizer=fast, video_processor=video, chat_template=VL_CHAT_TEMPLATE)


def saved_tiny_vl(path, family: str = "qwen2_vl", n_layers: int = 3):
    """A tiny VL model and its assembled processor saved as one model directory (what users load)."""
    tiny_qwen2_vl(n_layers=n_layers, family=family).save_pretrained(path)
    tiny_vl_processor(family).save_pretrained(path)
    return path


def fit_probe_router(model_dir, table, cache_dir, *, head: str = "probe", layer: int = 2, train=None, **options):
    """Extract ``table``'s hidden states with the saved backbone (through its own tokenizer or
    processor, as users do), fit probe router ``head`` on the ``train`` rows; returns
    ``(router, ProbeFeatures of every row, builder)``."""
    from mmroute.probes.extract import extract_hidden_states
    from mmroute.probes.inputs import load_backbone
    from mmroute.routers import create_router
    from mmroute.routers.probe import ProbeFeatures

    model, builder = load_backbone(str(model_dir))
    cache = extract_hidden_states(model, builder, table, cache_dir, layer=layer, batch_size=16, accelerator="cpu")
    feats = ProbeFeatures.from_cache(cache, table.ids, backbone=model)
    train = np.arange(table.n_instances) if train is None else np.asarray(train)
    config = dict(hidden=16, n_layers=2, max_epochs=3, lr=3e-3, accelerator="cpu", backbone=str(model_dir),
                  lora_r=4, lora_alpha=8)
    config.update(options)
    router = create_router(head, **config).fit(feats.subset(train), table.correct[train], table.cost[train])
    return router, feats, builder
