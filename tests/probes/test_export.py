"""ONNX export of fitted heads with a parity check, including ReLope's merged layer on M-RoPE states."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from mmroute.probes.export import ParityError, export_probe, onnx_inputs_for
from mmroute.probes.train import ProbeTrainConfig, build_network
from probe_tiny import tiny_qwen2, tiny_qwen2_vl


def _randomised(head, backbone):
    torch.manual_seed(0)
    net = build_network(ProbeTrainConfig(head=head, hidden=16, lora_r=8, lora_alpha=16), 32, backbone, 2)
    with torch.no_grad():  # spread the outputs and make the LoRA matter, as after training
        for n, p in net.named_parameters():
            if "lora_B" in n or "probe.mlp" in n or n.startswith("mlp."):
                p.normal_(0, 0.3)
    return net.eval()


def _torch_probs(head, net, inputs):
    with torch.no_grad():
        out = net(*inputs)
    return torch.sigmoid(out[0] if head == "relope" else out).numpy()


@pytest.mark.parametrize("head,backbone,rows", [
    ("probe", tiny_qwen2, 1), ("attention_probe", tiny_qwen2, 1), ("relope", tiny_qwen2_vl, 3)])
def test_export_parity_on_new_shapes(head, backbone, rows, tmp_path):
    net = _randomised(head, backbone(n_layers=3))
    info = export_probe(head, net, tmp_path / f"{head}.onnx", onnx_inputs_for(head, 32, position_rows=rows))
    assert info["max_abs_diff"] <= 1e-4
    session = ort.InferenceSession(info["path"], providers=["CPUExecutionProvider"])
    other = onnx_inputs_for(head, 32, batch=5, seq=11, position_rows=rows, seed=3)
    got = session.run(None, {n: t.numpy() for n, t in zip(info["inputs"], other)})[0]
    expected = _torch_probs(head, net, other)  # the unmerged LoRA in PyTorch vs the merged graph
    assert got.shape == (5,) and np.abs(got - expected).max() <= 1e-4
    assert expected.std() > 1e-3  # outputs depend on the inputs, so parity is not vacuous


def test_parity_failure_is_reported(tmp_path):
    net = _randomised("probe", None)
    with pytest.raises(ParityError, match="max .onnx - torch."):
        export_probe("probe", net, tmp_path / "p.onnx", onnx_inputs_for("probe", 32), tol=-1.0)
