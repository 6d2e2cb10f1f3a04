"""ONNX export of fitted probe heads, with an onnxruntime parity check.

The exported graphs output P(small model correct), shape (batch,):

- ``probe`` / ``posthoc_embed``: input ``last_state`` (batch, d);
- ``attention_probe``: inputs ``states`` (batch, seq, d) float32 and ``mask`` (batch, seq) int64;
- ``relope``: the LoRA-merged layer ``l`` plus heads, taking cached layer l-1 ``states``,
  ``mask`` and ``position_ids`` (P, batch, seq) int64; mu is used (no sampling).

Batch and sequence axes are dynamic. :func:`export_probe` raises :class:`ParityError` when the
ONNX outputs differ from PyTorch by more than ``tol``.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["ParityError", "export_probe", "onnx_inputs_for"]

log = logging.getLogger(__name__)


class ParityError(RuntimeError):
    """The exported graph's outputs differ from the PyTorch module's."""


class _VectorExport(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, last_state: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(last_state))


class _AttentionExport(_VectorExport):
    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return torch.sigmoid(self.net(states, mask))


class _ReLopeExport(_VectorExport):
    def forward(self, states: torch.Tensor, mask: torch.Tensor,  # type: ignore[override]
                position_ids: torch.Tensor) -> torch.Tensor:
        mu, _ = self.net.encode(states, mask, position_ids)
        return torch.sigmoid(self.net.probe(mu))


def _wrap(head: str, net: nn.Module) -> tuple[nn.Module, list[str]]:
    net = copy.deepcopy(net).eval().float()
    if head in ("probe", "posthoc_embed"):
        return _VectorExport(net), ["last_state"]
    if head == "attention_probe":
        return _AttentionExport(net), ["states", "mask"]
    if head == "relope":
        net.replay.merge_lora()
        # The eager kernel exports to plain MatMul/Softmax nodes on every ONNX runtime.
        net.replay.set_attn_implementation("eager")
        return _ReLopeExport(net), ["states", "mask", "position_ids"]
    raise ValueError(f"cannot export head {head!r}")


def onnx_inputs_for(head: str, d: int, *, batch: int = 3, seq: int = 7, position_rows: int = 1,
                    seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Example inputs of the exported graph (right-padded ragged lengths for token heads)."""
    g = torch.Generator().manual_seed(seed)
    if head in ("probe", "posthoc_embed"):
        return (torch.randn(batch, d, generator=g),)
    states = torch.randn(batch, seq, d, generator=g)
    lengths = torch.tensor([seq - (i % max(1, seq - 1)) for i in range(batch)])
    mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()
    if head == "attention_probe":
        return states, mask
    pos = (torch.arange(seq)[None, None, :] * mask[None]).expand(position_rows, batch, seq).contiguous()
    return states, mask, pos


def export_probe(head: str, net: nn.Module, path: str | Path, example: tuple[torch.Tensor, ...], *,
                 tol: float = 1e-4, opset: int | None = None) -> dict[str, Any]:
    """Export ``net`` (a fitted head of kind ``head``) to ``path`` and check parity on ``example``.

    Returns ``{"path", "inputs", "max_abs_diff"}``; raises :class:`ParityError` above ``tol``.
    """
    import onnxruntime as ort

    module, names = _wrap(head, net)
    if len(example) != len(names):
        raise ValueError(f"head {head!r} takes {len(names)} inputs {names}, got {len(example)} example tensors")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    batch, seq = torch.export.Dim("batch", min=1), torch.export.Dim("seq", min=2)
    shapes: dict[str, dict[int, Any]] = {
        "last_state": {0: batch}, "states": {0: batch, 1: seq}, "mask": {0: batch, 1: seq},
        "position_ids": {1: batch, 2: seq}}
    with torch.no_grad():
        expected = module(*example).numpy()
        program = torch.onnx.export(module, tuple(example), dynamo=True, input_names=names,
                                    output_names=["p_correct"], opset_version=opset,
                                    dynamic_shapes={n: shapes[n] for n in names}, external_data=False,
                                    verbose=False)
    program.save(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {n: t.numpy() for n, t in zip(names, example)})[0]
    diff = float(np.max(np.abs(got - expected))) if expected.size else 0.0
    if not diff <= tol:
        raise ParityError(f"{head} ONNX export {path}: max |onnx - torch| = {diff:.3g} > tol {tol:g}")
    log.info("exported %s to %s (parity %.2g)", head, path, diff)
    return {"path": str(path), "inputs": names, "max_abs_diff": diff}
