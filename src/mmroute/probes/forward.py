"""Run a backbone up to layer ``l`` and no further, capturing what layer ``l`` sees (torch only).

A forward hook on layer ``l`` raises :class:`_StopForward` once it has its output. An exception is
used rather than truncating the layer list on a shallow copy because it works unchanged for every
architecture (decoder LMs, the text tower of a VLM, encoders) without knowing how each ``forward``
iterates its layers, indexes ``layer_types`` or applies a final norm, and later layers (and any
head) never run. Pre-hooks on layer ``l`` and on the rotary embedding capture the layer's input
(the layer l-1 states) and the position ids it was given (3-D M-RoPE ids for Qwen2-VL).

Extraction (:mod:`mmroute.probes.extract`) and the served probe model both use it; it imports
torch only (no Lightning), so a served model needs no training stack.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mmroute.probes.arch import LayerStack, find_layer_stack

__all__ = ["Captured", "run_to_layer", "pack_batch"]


class _StopForward(Exception):
    """Raised by the hook on layer l once its output is captured, so later layers never run."""


@dataclass
class Captured:
    """What one forward up to layer l yields, padded as the batch was.

    states_in : (batch, seq, d) layer l-1 states (input of layer l)
    states_out : (batch, seq, d) layer l states
    position_ids : (P, batch, seq) position ids given to the rotary embedding, or None
    """

    states_in: torch.Tensor
    states_out: torch.Tensor
    position_ids: torch.Tensor | None


@contextmanager
def _hooks(stack: LayerStack, layer: int, got: dict[str, Any]) -> Iterator[None]:
    target = stack.layer(layer)

    def before(module: nn.Module, args: tuple, kwargs: dict) -> None:
        got["in"] = args[0] if args else kwargs["hidden_states"]

    def after(module: nn.Module, args: tuple, output: Any) -> None:
        got["out"] = output[0] if isinstance(output, tuple) else output
        raise _StopForward

    def rotary(module: nn.Module, args: tuple, kwargs: dict) -> None:
        got["pos"] = args[1] if len(args) > 1 else kwargs.get("position_ids")

    handles = [target.register_forward_pre_hook(before, with_kwargs=True),
               target.register_forward_hook(after)]
    if stack.rotary is not None:
        handles.append(stack.rotary.register_forward_pre_hook(rotary, with_kwargs=True))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def run_to_layer(model: nn.Module, layer: int, inputs: dict[str, Any],
                 stack: LayerStack | None = None) -> Captured:
    """Run ``model(**inputs)`` under ``torch.no_grad`` until layer ``layer`` (1-based) has run."""
    stack = stack or find_layer_stack(model)
    got: dict[str, Any] = {}
    with torch.no_grad(), _hooks(stack, layer, got):
        try:
            model(**inputs)
        except _StopForward:
            pass
    if "out" not in got:
        raise RuntimeError(f"{type(model).__name__}: layer {layer} did not run during forward")
    states_in = got["in"]
    batch, seq = states_in.shape[:2]
    pos = got.get("pos")
    if pos is not None:
        pos = pos if pos.ndim == 3 else pos[None]
        pos = pos.expand(pos.shape[0], batch, seq)
    return Captured(states_in, got["out"], pos)


def pack_batch(cap: Captured, mask: torch.Tensor, ids: Sequence[str], dtype: torch.dtype) -> dict[str, Any]:
    """Drop padding and flatten one batch for storage (all tensors moved to CPU).

    Returns ``ids`` (list), ``lengths`` (batch,), ``states`` (sum T, d), ``attention_mask`` (sum T,),
    ``position_ids`` (P, sum T) and ``last`` (batch, d): the layer l state of each last token.
    """
    keep = mask.bool()
    lengths = keep.sum(dim=1)
    if bool((lengths == 0).any()):
        raise ValueError(f"instances with no tokens in batch: {[i for i, n in zip(ids, lengths) if n == 0]}")
    positions = torch.arange(mask.shape[1], device=mask.device)
    last_idx = torch.where(keep, positions, -1).max(dim=1).values
    rows = torch.arange(mask.shape[0], device=mask.device)
    pos = cap.position_ids
    if pos is None:  # absolute-position encoders: positions are informative only
        pos = positions.expand(1, *mask.shape)
    return {
        "ids": list(ids),
        "lengths": lengths.cpu(),
        "states": cap.states_in[keep].to(dtype).cpu(),
        "attention_mask": mask[keep].to(torch.uint8).cpu(),
        "position_ids": pos[:, keep].to(torch.int64).cpu(),
        "last": cap.states_out[rows, last_idx].to(dtype).cpu(),
    }
