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
from torch import nn

from mmroute.probes.arch import find_layer_stack, sliding_window_of

__all__ = ["LoraSpec", "LayerReplay", "additive_attention_mask", "linear_module_names"]

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

    @classmethod
    def from_model(cls, model: nn.Module, layer: int, *, lora: LoraSpec | None = None,
                   attn_implementation: str | None = None) -> "LayerReplay":
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
