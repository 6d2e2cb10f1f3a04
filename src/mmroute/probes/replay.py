"""Run one transformer layer on its own over cached layer l-1 states, optionally with a LoRA adapter.

Only layer ``l`` changes when ReLope trains (the backbone is frozen and LoRA sits in layer ``l``),
so the layer l-1 states are computed once (:mod:`mmroute.probes.extract`) and training runs this
module: a copy of layer ``l``, the rotary embedding recomputed from the cached position ids (3-D
M-RoPE ids for Qwen2-VL), and an additive attention mask rebuilt from the cached padding mask.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mmroute.probes.arch import find_layer_stack, sliding_window_of

__all__ = ["LoraSpec", "LayerReplay", "additive_attention_mask", "linear_module_names", "last_token",
           "last_index"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoraSpec:
    """LoRA adapter on every linear projection (attention and MLP) of the replayed layer."""

    r: int = 128
    alpha: int = 256
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha <= 0 or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA needs r >= 1, alpha > 0 and 0 <= dropout < 1, got {self}")


def linear_module_names(layer: nn.Module) -> list[str]:
    """Dotted names of the ``nn.Linear`` projections of a layer (attention and MLP)."""
    return [name for name, m in layer.named_modules() if isinstance(m, nn.Linear)]


def additive_attention_mask(mask: torch.Tensor, *, causal: bool, dtype: torch.dtype,
                            sliding_window: int | None = None) -> torch.Tensor:
    """Additive mask of shape (batch, 1, seq, seq): 0 where attention is allowed, dtype min elsewhere.

    ``mask`` is the (batch, seq) padding mask (1 = token, 0 = padding). A float mask works for both
    the eager and the SDPA attention of ``transformers``; the minimum (not -inf) keeps rows that
    see no token (left padding) finite.
    """
    seq = mask.shape[-1]
    allowed = mask[:, None, None, :].bool()
    if causal or sliding_window is not None:
        i = torch.arange(seq, device=mask.device)[:, None]
        j = torch.arange(seq, device=mask.device)[None, :]
        keep = j <= i if causal else torch.ones(seq, seq, dtype=torch.bool, device=mask.device)
        if sliding_window is not None:
            keep = keep & (i - j < sliding_window)
        allowed = allowed & keep[None, None]
    zero = torch.zeros((), dtype=dtype, device=mask.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)


def last_index(mask: torch.Tensor) -> torch.Tensor:
    """(batch,) position of each row's last unmasked token in a (batch, seq) mask."""
    positions = torch.arange(mask.shape[-1], device=mask.device)
    return torch.where(mask.bool(), positions, torch.zeros_like(positions)).max(dim=-1).values


def last_token(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(batch, seq, d) states at each row's last unmasked position -> (batch, d)."""
    return states[torch.arange(states.shape[0], device=states.device), last_index(mask)]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _layer_kind(layer: nn.Module) -> str | None:
    """Which last-token fast path fits ``layer`` (None: run the whole layer)."""
    attn = getattr(layer, "self_attn", None)
    if (attn is not None and all(hasattr(layer, a) for a in ("input_layernorm", "post_attention_layernorm", "mlp"))
            and all(hasattr(attn, a) for a in ("q_proj", "k_proj", "v_proj", "o_proj", "head_dim", "scaling"))
            and not any(hasattr(attn, a) for a in ("q_norm", "k_norm", "sinks"))):
        return "pre_norm_decoder"  # Llama / Qwen2 / Qwen2-VL / Qwen2.5-VL text layers
    sa = getattr(getattr(layer, "attention", None), "self", None)
    if (sa is not None and all(hasattr(sa, a) for a in ("query", "key", "value", "scaling", "attention_head_size"))
            and hasattr(layer, "intermediate") and hasattr(layer, "output")
            and not getattr(layer, "add_cross_attention", False)):
        return "post_norm_encoder"  # BERT / MiniLM layers
    return None


def _attend_last(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor, scaling: float,
                 dropout: float, training: bool) -> torch.Tensor:
    """One query per row: q (B, H, 1, hd), k/v (B, H, T, hd), allowed (B, T) -> (B, H*hd)."""
    scores = (q @ k.transpose(-1, -2)).float() * scaling
    scores = scores.masked_fill(~allowed[:, None, None, :], torch.finfo(torch.float32).min)
    weights = torch.softmax(scores, dim=-1).to(q.dtype)
    weights = F.dropout(weights, p=dropout, training=training)
    return (weights @ v).reshape(q.shape[0], -1)


class LayerReplay(nn.Module):
    """Layer ``l`` of a backbone, runnable on cached inputs.

    ``forward(states, mask, position_ids) -> out``:

    - states : float tensor (batch, seq, d), the layer l-1 states (right-padded)
    - mask : tensor (batch, seq), 1 for tokens, 0 for padding
    - position_ids : long tensor (P, batch, seq) with P = 1 (1-D rotary) or 3 (M-RoPE); ignored by
      layers without rotary positions
    - out : tensor (batch, seq, d), the layer l states
    """

    def __init__(self, layer: nn.Module, rotary: nn.Module | None, *, causal: bool,
                 takes_position_embeddings: bool, sliding_window: int | None = None) -> None:
        super().__init__()
        self.layer = layer
        self.rotary = rotary
        self.causal = causal
        self.takes_position_embeddings = takes_position_embeddings
        self.sliding_window = sliding_window
        self.fast_path = _layer_kind(layer)

    @classmethod
    def from_model(cls, model: nn.Module, layer: int, *, lora: LoraSpec | None = None,
                   attn_implementation: str | None = None) -> LayerReplay:
        """Copy layer ``layer`` (1-based) of ``model`` (frozen), optionally adding a LoRA adapter.

        ``attn_implementation`` overrides the copy's attention kernel ("eager" for ONNX export);
        flash-attention kernels do not take a 4-D mask, so they are replaced by "sdpa".
        """
        stack = find_layer_stack(model)
        module = copy.deepcopy(stack.layer(layer))
        rotary = copy.deepcopy(stack.rotary) if stack.rotary is not None else None
        replay = cls(module, rotary, causal=stack.causal,
                     takes_position_embeddings=stack.takes_position_embeddings(layer),
                     sliding_window=sliding_window_of(module))
        replay.set_attn_implementation(attn_implementation)
        replay.requires_grad_(False)
        if lora is not None:
            replay.add_lora(lora)
        return replay

    def set_attn_implementation(self, name: str | None) -> None:
        for m in self.layer.modules():
            cfg = getattr(m, "config", None)
            if cfg is None or not hasattr(cfg, "_attn_implementation"):
                continue
            current = cfg._attn_implementation
            wanted = name or ("sdpa" if current and "flash" in str(current) else current)
            if wanted != current:
                cfg._attn_implementation = wanted

    def add_lora(self, spec: LoraSpec) -> None:
        """Insert a peft LoRA adapter into every linear projection; only the adapter trains."""
        from peft import LoraConfig, inject_adapter_in_model

        targets = linear_module_names(self.layer)
        if not targets:
            raise ValueError(f"{type(self.layer).__name__} has no nn.Linear projections to adapt")
        config = LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                            target_modules=targets, bias="none")
        inject_adapter_in_model(config, self.layer)
        for name, p in self.layer.named_parameters():
            p.requires_grad_("lora_" in name)

    def merge_lora(self) -> None:
        """Fold the adapter into the base weights and drop it (for export)."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        for name, m in list(self.layer.named_modules()):
            if isinstance(m, BaseTunerLayer):
                m.merge()
                parent_name, _, child = name.rpartition(".")
                parent = self.layer.get_submodule(parent_name) if parent_name else self.layer
                setattr(parent, child, m.get_base_layer())

    @property
    def has_lora(self) -> bool:
        return any("lora_" in n for n, _ in self.layer.named_parameters())

    def forward(self, states: torch.Tensor, mask: torch.Tensor,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        attn = additive_attention_mask(mask, causal=self.causal, dtype=states.dtype,
                                       sliding_window=self.sliding_window)
        kwargs = {}
        if self.rotary is not None and self.takes_position_embeddings:
            if position_ids is None:
                raise ValueError("this layer uses rotary positions: position_ids (P, batch, seq) are required")
            pos = position_ids[0] if position_ids.shape[0] == 1 else position_ids
            kwargs["position_embeddings"] = self.rotary(states, pos)
        out = self.layer(states, attention_mask=attn, **kwargs)
        return out[0] if isinstance(out, tuple) else out

    def forward_last(self, states: torch.Tensor, mask: torch.Tensor,
                     position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Layer-l state of each row's last token, (batch, d), equal to ``last_token(forward(...))``.

        Only keys and values need every token; the query, attention output, norms and MLP are
        computed for the last token alone (every op outside attention is per token), which makes
        a training step over cached states several times cheaper than the full layer. Layers of
        an unrecognised structure run whole.
        """
        if self.fast_path is None:
            return last_token(self.forward(states, mask, position_ids), mask)
        batch, seq, _ = states.shape
        rows = torch.arange(batch, device=states.device)
        last = last_index(mask)
        j = torch.arange(seq, device=states.device)[None, :]
        allowed = mask.bool()
        if self.causal:
            allowed = allowed & (j <= last[:, None])
        if self.sliding_window is not None:
            allowed = allowed & (j > last[:, None] - self.sliding_window)
        x_last = states[rows, last]
        layer = self.layer
        if self.fast_path == "post_norm_encoder":
            sa = layer.attention.self
            hd = sa.attention_head_size
            q = sa.query(x_last).view(batch, -1, 1, hd)
            k = sa.key(states).view(batch, seq, -1, hd).transpose(1, 2)
            v = sa.value(states).view(batch, seq, -1, hd).transpose(1, 2)
            ctx = _attend_last(q, k, v, allowed, sa.scaling, sa.dropout.p, self.training)
            attn_out = layer.attention.output(ctx[:, None], x_last[:, None])
            return layer.output(layer.intermediate(attn_out), attn_out)[:, 0]
        attn = layer.self_attn
        hd = attn.head_dim
        h = layer.input_layernorm(states)
        q = attn.q_proj(h[rows, last]).view(batch, -1, 1, hd)
        k = attn.k_proj(h).view(batch, seq, -1, hd).transpose(1, 2)
        v = attn.v_proj(h).view(batch, seq, -1, hd).transpose(1, 2)
        if self.rotary is not None:
            if position_ids is None:
                raise ValueError("this layer uses rotary positions: position_ids (P, batch, seq) are required")
            cos, sin = self.rotary(states, position_ids[0] if position_ids.shape[0] == 1 else position_ids)
            q = q * cos[rows, last][:, None, None] + _rotate_half(q) * sin[rows, last][:, None, None]
            k = k * cos[:, None] + _rotate_half(k) * sin[:, None]
        groups = q.shape[1] // k.shape[1]
        if groups > 1:
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        ctx = _attend_last(q, k, v, allowed, attn.scaling, getattr(attn, "attention_dropout", 0.0), self.training)
        hidden = x_last + attn.o_proj(ctx)
        return hidden + layer.mlp(layer.post_attention_layernorm(hidden))
