"""Probe heads as plain ``nn.Module``s (exportable to ONNX unchanged; Lightning wraps them in lit.py).

All heads return correctness *logits* of shape (batch,); ``sigmoid`` gives P(small model correct).

- :class:`MLPProbe`: last-token state (batch, d) -> logit; five linear layers by default.
- :class:`AttentionProbe`: one learned query over the layer l-1 token states, masked softmax of
  ``q . z_i / sqrt(d)``, pooled state -> :class:`MLPProbe`.
- :class:`ReLopeNet`: layer ``l`` replayed with LoRA over the layer l-1 states, last-token state ->
  two linear heads (mu, log sigma^2) -> reparameterised sample (mu at inference) -> MLPProbe.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mmroute.probes.replay import LayerReplay, last_token

__all__ = ["MLPProbe", "AttentionPooling", "AttentionProbe", "ReLopeNet", "last_token", "gaussian_kl"]


class MLPProbe(nn.Module):
    """MLP probe ``g``: (batch, d_in) -> logits (batch,).

    ``n_layers`` linear layers (ReLU and dropout between them); the first ``n_layers - 1`` map to
    ``hidden`` units. Inputs are standardised per feature with ``shift`` / ``scale`` buffers
    (identity until :meth:`fit_standardization` sets them from training inputs): hidden states
    of LLMs have a few very large dimensions whose scale differs by layer and model, which would
    otherwise dominate the first projection at lr 1e-4. Per-feature statistics (unlike a
    LayerNorm) keep the direction and norm of the state, which can carry the signal.
    """

    def __init__(self, d_in: int, hidden: int = 256, n_layers: int = 5, dropout: float = 0.1) -> None:
        super().__init__()
        if d_in < 1 or hidden < 1 or n_layers < 1 or not 0.0 <= dropout < 1.0:
            raise ValueError(f"MLPProbe needs d_in, hidden, n_layers >= 1 and 0 <= dropout < 1, got "
                             f"d_in={d_in}, hidden={hidden}, n_layers={n_layers}, dropout={dropout}")
        self.register_buffer("shift", torch.zeros(d_in))
        self.register_buffer("scale", torch.ones(d_in))
        dims = [d_in] + [hidden] * (n_layers - 1) + [1]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(a, b))
            if i < n_layers - 1:
                layers += [nn.ReLU(), nn.Dropout(dropout)]
        self.mlp = nn.Sequential(*layers)

    @torch.no_grad()
    def fit_standardization(self, x: torch.Tensor) -> None:
        """Set ``shift``/``scale`` to the per-feature mean and std of ``x`` (n, d_in)."""
        x = x.reshape(-1, x.shape[-1]).float()
        self.shift.copy_(x.mean(dim=0))
        self.scale.copy_(x.std(dim=0, unbiased=False).clamp_min(1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp((x - self.shift) / self.scale).squeeze(-1)


class AttentionPooling(nn.Module):
    """One learned query ``q``; weights ``softmax_i(q . z_i / sqrt(d))`` over unmasked tokens.

    forward(states (batch, seq, d), mask (batch, seq)) -> (pooled (batch, d), weights (batch, seq))
    """

    def __init__(self, d: int) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.randn(d) / math.sqrt(d))
        self.scale = 1.0 / math.sqrt(d)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = (states @ self.query) * self.scale
        scores = scores.masked_fill(mask == 0, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1)
        return torch.einsum("bs,bsd->bd", weights, states), weights


class AttentionProbe(nn.Module):
    """forward(states (batch, seq, d), mask (batch, seq)) -> logits (batch,)."""

    def __init__(self, d: int, probe: MLPProbe) -> None:
        super().__init__()
        self.pool = AttentionPooling(d)
        self.probe = probe

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pooled, _ = self.pool(states, mask)
        return self.probe(pooled)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) per element, averaged over batch and latent dimensions.

    The average (not the sum over dimensions) keeps beta = 1 on the scale of the BCE term whatever
    the latent size, which is how the paper's beta in 0.5..1.0 can be the useful range.
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).mean()


class ReLopeNet(nn.Module):
    """ReLope: LoRA-adapted layer ``l`` + Gaussian bottleneck + probe.

    forward(states (batch, seq, d), mask (batch, seq), position_ids (P, batch, seq)) ->
    ``(logits (batch,), mu (batch, k), logvar (batch, k))``; in training mode the probe reads a
    reparameterised sample ``mu + sigma * eps``, in eval mode ``mu``.
    """

    def __init__(self, replay: LayerReplay, d: int, probe: MLPProbe, latent_dim: int | None = None) -> None:
        super().__init__()
        k = latent_dim or d
        self.replay = replay
        self.mu = nn.Linear(d, k)
        self.logvar = nn.Linear(d, k)
        self.probe = probe

    def encode(self, states: torch.Tensor, mask: torch.Tensor,
               position_ids: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.replay.forward_last(states, mask, position_ids)
        return self.mu(z), self.logvar(z)

    def forward(self, states: torch.Tensor, mask: torch.Tensor,
                position_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(states, mask, position_ids)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return self.probe(z), mu, logvar
