"""Probe heads, their Lightning modules and the ProbeRouter estimator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mmroute.probes.evaluation import auroc
from mmroute.probes.heads import AttentionPooling, MLPProbe, ReLopeNet, gaussian_kl, last_token
from mmroute.probes.lit import ReLopeLit
from mmroute.probes.replay import LayerReplay, LoraSpec
from mmroute.probes.train import ProbeInputs, ProbeRouter, ProbeTrainConfig
from mmroute.routers.base import NotFittedError
from probe_tiny import synthetic_cache, tiny_qwen2


def test_mlp_probe_has_five_linear_layers_and_returns_logits():
    probe = MLPProbe(16, hidden=8)
    assert sum(isinstance(m, nn.Linear) for m in probe.modules()) == 5
    assert probe(torch.randn(4, 16)).shape == (4,)
    with pytest.raises(ValueError, match="n_layers"):
        MLPProbe(16, n_layers=0)


def test_attention_pooling_is_a_masked_scaled_softmax():
    torch.manual_seed(0)
    pool = AttentionPooling(8)
    states, mask = torch.randn(2, 5, 8), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    pooled, w = pool(states, mask)
    assert torch.all(w[0, 3:] == 0) and torch.allclose(w.sum(-1), torch.ones(2))
    expected = torch.softmax(states[0, :3] @ pool.query / 8 ** 0.5, dim=0)
    assert torch.allclose(w[0, :3], expected, atol=1e-6)
    assert torch.allclose(pooled[0], expected @ states[0, :3], atol=1e-6)
    noisy = states.clone()
    noisy[0, 3:] = 100.0  # padding content must not matter
    assert torch.allclose(pool(noisy, mask)[0][0], pooled[0], atol=1e-6)


def test_relope_samples_in_training_and_uses_mu_in_eval():
    torch.manual_seed(0)
    replay = LayerReplay.from_model(tiny_qwen2(n_layers=2), 1, lora=LoraSpec(r=4, alpha=8))
    net = ReLopeNet(replay, 32, MLPProbe(32, hidden=8))
    states, mask = torch.randn(3, 6, 32), torch.ones(3, 6, dtype=torch.long)
    pos = torch.arange(6).expand(1, 3, 6)
    net.eval()
    logits, mu, logvar = net(states, mask, pos)
    assert torch.allclose(logits, net.probe(mu)) and torch.equal(net(states, mask, pos)[0], logits)
    assert torch.allclose(mu, net.mu(last_token(replay(states, mask, pos), mask)), atol=1e-5)
    net.train()
    assert not torch.allclose(net(states, mask, pos)[0], net(states, mask, pos)[0])


def test_relope_loss_is_bce_plus_beta_kl_with_warmup():
    assert gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 3)).item() == 0.0
    assert gaussian_kl(torch.ones(1, 1), torch.zeros(1, 1)).item() == pytest.approx(0.5)
    replay = LayerReplay.from_model(tiny_qwen2(n_layers=2), 1, lora=LoraSpec(r=4, alpha=8))
    net = ReLopeNet(replay, 32, MLPProbe(32, hidden=8)).eval()  # eval: no sampling
    lit = ReLopeLit(net, beta=0.5, warmup_steps=10)
    batch = {"states": torch.randn(4, 5, 32), "mask": torch.ones(4, 5, dtype=torch.long),
             "position_ids": torch.arange(5).expand(1, 4, 5), "y": torch.tensor([0.0, 1.0, 1.0, 0.0])}
    assert lit.current_beta() == 0.0  # step 0 of the warm-up
    loss, parts = lit.loss(batch)
    assert loss.item() == pytest.approx(parts["bce"].item())
    lit.warmup_steps = 0
    loss, parts = lit.loss(batch)
    assert loss.item() == pytest.approx(parts["bce"].item() + 0.5 * parts["kl"].item(), rel=1e-5)
    assert parts["kl"].item() > 0


@pytest.mark.parametrize("head", ["probe", "attention_probe", "relope", "posthoc_embed"])
def test_each_head_learns_a_correctness_signal(head, tmp_path):
    cache, ids, y = synthetic_cache(tmp_path, n=160)
    emb = None
    if head == "posthoc_embed":
        emb = np.random.default_rng(1).normal(size=(160, 6)) + 1.5 * y[:, None]
    inputs = ProbeInputs(ids, cache, emb)
    train, test = np.arange(120), np.arange(120, 160)
    router = ProbeRouter(head=head, hidden=32, lr=1e-2, max_epochs=15, patience=6, val_frac=0.25, lora_r=8,
                         lora_alpha=16, batch_size=16)
    router.fit(inputs.subset(train), y[train], backbone=tiny_qwen2(n_layers=3))
    p = router.predict_proba(inputs.subset(test))
    assert p.shape == (40,) and np.all((p >= 0) & (p <= 1))
    assert auroc(y[test], p) > 0.85
    assert router.best_epoch_ is not None and 0.5 < router.val_auroc_ <= 1.0


def test_probe_router_validates_inputs(tmp_path):
    cache, ids, y = synthetic_cache(tmp_path, n=20)
    with pytest.raises(NotFittedError):
        ProbeRouter().predict_proba(ProbeInputs(ids, cache))
    with pytest.raises(ValueError, match="single class"):
        ProbeRouter().fit(ProbeInputs(ids, cache), np.ones(20))
    with pytest.raises(ValueError, match="needs the backbone"):
        ProbeRouter(head="relope", max_epochs=1).fit(ProbeInputs(ids, cache), y)
    with pytest.raises(ValueError, match="head 'nope' is not one of .*lr must be > 0"):
        ProbeTrainConfig(head="nope", lr=0)
