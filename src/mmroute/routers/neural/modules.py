"""Plain ``nn.Module`` networks of the torch routers, exportable to ONNX unchanged.

Every network takes ONE float32 tensor ``x`` of shape (batch, d_in) and returns ``(perf, cost)``,
each of shape (batch, n_models): ``perf`` in [0, 1] (sigmoid of logits) and ``cost`` in the original
cost units (exp of the predicted log-cost after undoing the per-model standardisation). Input and
cost scaling live in buffers, so an exported graph needs nothing but ``x``. Forwards contain no
data-dependent Python control flow: ``torch.onnx.export`` with a dynamic batch axis traces them.

Modality networks (:class:`CMRNet`, :class:`FusionMFNet`) read ``x = [text, image, image_mask]``
with the mask as the last column (1.0 = the row has an image); text-only rows carry zeros for the
image part and a 0 mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["RouterNetwork", "MLPNet", "MLPMFNet", "CMRNet", "FusionMFNet", "EnsembleNet", "ImageTower",
           "IMAGE_TOWERS", "pixel_shape", "image_projection"]

IMAGE_TOWERS = ("linear", "cnn")

# Additive attention / gate bias that removes a missing modality. Finite (not -inf) so that
# softmax stays defined under fp16/bf16 autocast; exp(-1e4) is 0 in every float format.
_MASK_BIAS = 1e4


def _mlp(d_in: int, hidden: Sequence[int], dropout: float) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(d_in, width), nn.GELU(), nn.Dropout(dropout)]
        d_in = width
    return nn.Sequential(*layers), d_in


class RouterNetwork(nn.Module):
    """Base: input standardisation, cost de-standardisation, ``raw`` logits for training.

    Subclasses implement :meth:`core` mapping the standardised input (batch, d_in) to
    ``(perf_logit, log_cost_z)`` each (batch, n_models), and :meth:`perf_bias` (the per-model
    output bias initialised from the training accuracy).
    """

    def __init__(self, d_in: int, n_models: int) -> None:
        super().__init__()
        self.d_in = int(d_in)
        self.n_models = int(n_models)
        self.register_buffer("in_mean", torch.zeros(self.d_in))
        self.register_buffer("in_std", torch.ones(self.d_in))
        self.register_buffer("cost_mean", torch.zeros(self.n_models))
        self.register_buffer("cost_std", torch.ones(self.n_models))

    @torch.no_grad()
    def set_scaling(self, in_mean, in_std, cost_mean, cost_std) -> None:
        """Copy input and log-cost standardisation statistics (array-likes) into the buffers."""
        for name, value in (("in_mean", in_mean), ("in_std", in_std), ("cost_mean", cost_mean),
                            ("cost_std", cost_std)):
            buf = getattr(self, name)
            buf.copy_(torch.as_tensor(value, dtype=buf.dtype).reshape(buf.shape))

    def core(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def perf_bias(self) -> torch.Tensor:
        raise NotImplementedError

    def raw(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(perf logits, standardised log-cost), each (batch, n_models): what the losses use."""
        return self.core((x - self.in_mean) / self.in_std)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logit, z = self.raw(x)
        return torch.sigmoid(logit), torch.exp(z * self.cost_std + self.cost_mean)


class MLPNet(RouterNetwork):
    """MMR-Bench MLP: fused query -> hidden layers (256-128) -> per-model perf and log-cost."""

    def __init__(self, d_in: int, n_models: int, hidden: Sequence[int] = (256, 128),
                 dropout: float = 0.1) -> None:
        super().__init__(d_in, n_models)
        self.trunk, width = _mlp(d_in, hidden, dropout)
        self.head = nn.Linear(width, 2 * n_models)

    def core(self, x):
        out = self.head(self.trunk(x))
        return out[:, : self.n_models], out[:, self.n_models:]

    def perf_bias(self):
        return self.head.bias[: self.n_models]


class _FactorHeads(nn.Module):
    """Dot products of a query latent with learned per-model vectors, plus per-model biases."""

    def __init__(self, latent: int, n_models: int) -> None:
        super().__init__()
        self.models = nn.Parameter(torch.randn(n_models, latent) / latent ** 0.5)
        self.bias = nn.Parameter(torch.zeros(n_models))

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return q @ self.models.t() + self.bias


class MLPMFNet(RouterNetwork):
    """MMR-Bench MLP-MF: MLP query tower -> latent (64), dot product with model vectors + bias."""

    def __init__(self, d_in: int, n_models: int, hidden: Sequence[int] = (256,), latent: int = 64,
                 dropout: float = 0.1) -> None:
        super().__init__(d_in, n_models)
        tower, width = _mlp(d_in, hidden, dropout)
        self.tower = nn.Sequential(tower, nn.Linear(width, latent))
        self.perf_heads = _FactorHeads(latent, n_models)
        self.cost_heads = _FactorHeads(latent, n_models)

    def core(self, x):
        q = self.tower(x)
        return self.perf_heads(q), self.cost_heads(q)

    def perf_bias(self):
        return self.perf_heads.bias


def pixel_shape(d_image: int) -> tuple[int, int]:
    """(channels, side) of flattened square pixel features of width ``d_image`` (RGB first, then
    grey); raises ValueError naming the width when it is neither ``3 * s * s`` nor ``s * s``."""
    for channels in (3, 1):
        side = int(round((d_image / channels) ** 0.5))
        if d_image % channels == 0 and side * side * channels == d_image and side >= 8:
            return channels, side
    raise ValueError(f"image_tower='cnn' reads square pixel images (3*s*s or s*s values, s >= 8, e.g. the "
                     f"'pixels:size=32' image encoder), got image features of width {d_image}")


class ImageTower(nn.Module):
    """A small convolutional tower on downsampled pixels, trained with the routing loss.

    Input (b, C*s*s) flattened channel-first pixels (standardised per position by the network's
    input scaling); two stride-2 3x3 convolutions (``width``, ``2 * width`` channels) with GELU,
    global average pooling, then Linear-LayerNorm-GELU to ``d_out``. No pretrained weights.
    """

    def __init__(self, d_image: int, d_out: int, width: int = 16) -> None:
        super().__init__()
        self.channels, self.side = pixel_shape(d_image)
        self.convs = nn.Sequential(
            nn.Conv2d(self.channels, width, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.GELU())
        self.head = nn.Sequential(nn.Linear(2 * width, d_out), nn.LayerNorm(d_out), nn.GELU())

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.reshape(-1, self.channels, self.side, self.side)
        return self.head(self.convs(x).mean(dim=(2, 3)))


def image_projection(kind: str, d_image: int, d_out: int, *, layer_norm: bool = True) -> nn.Module:
    """The image branch: ``"linear"`` (Linear[-LayerNorm-GELU]) or ``"cnn"`` (:class:`ImageTower`)."""
    if kind == "cnn":
        return ImageTower(d_image, d_out)
    if kind != "linear":
        raise ValueError(f"image_tower={kind!r} (expected one of {list(IMAGE_TOWERS)})")
    if not layer_norm:
        return nn.Linear(d_image, d_out)
    return nn.Sequential(nn.Linear(d_image, d_out), nn.LayerNorm(d_out), nn.GELU())


class _ModalityNetwork(RouterNetwork):
    """Splits ``x = [text, image, mask]``; image features are zeroed where the mask is 0."""

    def __init__(self, d_text: int, d_image: int, n_models: int) -> None:
        super().__init__(d_text + d_image + 1, n_models)
        self.d_text, self.d_image = int(d_text), int(d_image)

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(text (b, d_text), image (b, d_image), mask (b, 1)) from the standardised input."""
        text = x[:, : self.d_text]
        mask = x[:, self.d_text + self.d_image:]
        return text, x[:, self.d_text: self.d_text + self.d_image] * mask, mask


class _EncoderLayer(nn.Module):
    """Pre-norm self-attention block written with SDPA: no fast-path branches, plain ONNX ops."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        self.n_heads, self.dropout = n_heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Dropout(dropout),
                                nn.Linear(d_ff, d_model))
        self.drop = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, attn_bias: torch.Tensor) -> torch.Tensor:
        b, t, d = h.shape
        q, k, v = self.qkv(self.norm1(h)).reshape(b, t, 3, self.n_heads, d // self.n_heads).permute(
            2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias.to(q.dtype),
                                             dropout_p=self.dropout if self.training else 0.0)
        h = h + self.drop(self.out(att.transpose(1, 2).reshape(b, t, d)))
        return h + self.drop(self.ff(self.norm2(h)))


class CMRNet(_ModalityNetwork):
    """MMR-Bench cross-modal router: text and image tokens projected to ``d_model`` (512), a
    2-layer 8-head self-attention encoder over the two tokens (the image token masked out when
    absent), mean-pooled over present tokens, then performance and cost heads."""

    def __init__(self, d_text: int, d_image: int, n_models: int, d_model: int = 512,
                 n_heads: int = 8, n_layers: int = 2, d_ff: int = 1024, dropout: float = 0.1,
                 image_tower: str = "linear") -> None:
        super().__init__(d_text, d_image, n_models)
        self.proj_text = nn.Linear(d_text, d_model)
        self.proj_image = image_projection(image_tower, d_image, d_model, layer_norm=False)
        self.token_type = nn.Parameter(torch.zeros(2, d_model))
        self.layers = nn.ModuleList(_EncoderLayer(d_model, n_heads, d_ff, dropout) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.perf_head = nn.Sequential(nn.Linear(d_model, d_model // 2), nn.GELU(), nn.Dropout(dropout),
                                       nn.Linear(d_model // 2, n_models))
        self.cost_head = nn.Sequential(nn.Linear(d_model, d_model // 2), nn.GELU(),
                                       nn.Linear(d_model // 2, n_models))

    def core(self, x):
        text, image, mask = self.split(x)
        tokens = torch.stack([self.proj_text(text) + self.token_type[0],
                              self.proj_image(image) + self.token_type[1]], dim=1)  # (b, 2, d)
        # Key bias (b, 1, 1, 2): 0 for the text token, -1e4 for an absent image token.
        attn_bias = torch.cat([torch.zeros_like(mask), (mask - 1.0) * _MASK_BIAS], dim=1)[:, None, None, :]
        for layer in self.layers:
            tokens = layer(tokens, attn_bias)
        tokens = self.norm(tokens)
        pooled = (tokens[:, 0] + tokens[:, 1] * mask) / (1.0 + mask)
        return self.perf_head(pooled), self.cost_head(pooled)

    def perf_bias(self):
        return self.perf_head[-1].bias


class FusionMFNet(_ModalityNetwork):
    """mmroute's fusion matrix-factorisation router.

    Per-modality projections (Linear-LayerNorm-GELU to ``d_proj``); a learned gate reads both
    projected modalities and gives softmax weights over {text, image} (the image weight forced
    to 0 when the row has no image); fused = weighted sum + a learned interaction of
    ``text * image`` and ``|text - image|`` (image rows only), as in adaptive fusion; an MLP maps
    the fused vector to a low-rank query latent (``latent``) whose dot products with learned
    model embeddings (+ bias) give correctness logits; a second, smaller latent gives the
    standardised log-cost through its own model embeddings.
    """

    def __init__(self, d_text: int, d_image: int, n_models: int, d_proj: int = 256,
                 hidden: Sequence[int] = (256,), latent: int = 64, cost_latent: int = 16,
                 dropout: float = 0.2, image_tower: str = "linear") -> None:
        super().__init__(d_text, d_image, n_models)
        self.proj_text = nn.Sequential(nn.Linear(d_text, d_proj), nn.LayerNorm(d_proj), nn.GELU())
        self.proj_image = image_projection(image_tower, d_image, d_proj)
        self.gate = nn.Linear(2 * d_proj, 2)
        self.interact = nn.Linear(2 * d_proj, d_proj)
        self.drop = nn.Dropout(dropout)
        tower, width = _mlp(d_proj, hidden, dropout)
        self.tower = nn.Sequential(tower, nn.Linear(width, latent))
        self.cost_tower = nn.Linear(d_proj, cost_latent)
        self.perf_heads = _FactorHeads(latent, n_models)
        self.cost_heads = _FactorHeads(cost_latent, n_models)

    def fuse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(fused (b, d_proj), modality weights (b, 2)) from the standardised input."""
        text, image, mask = self.split(x)
        t = self.proj_text(text)
        i = self.proj_image(image) * mask
        gate_bias = torch.cat([torch.zeros_like(mask), (mask - 1.0) * _MASK_BIAS], dim=1)
        weights = torch.softmax(self.gate(torch.cat([t, i], dim=1)) + gate_bias, dim=1)
        fused = weights[:, :1] * t + weights[:, 1:] * i
        fused = fused + mask * self.interact(torch.cat([t * i, (t - i).abs()], dim=1))
        return fused, weights

    def core(self, x):
        fused = self.drop(self.fuse(x)[0])
        return self.perf_heads(self.tower(fused)), self.cost_heads(self.cost_tower(fused))

    def perf_bias(self):
        return self.perf_heads.bias


class EnsembleNet(nn.Module):
    """Averages member networks: perf as a mean probability, cost as a geometric mean."""

    def __init__(self, members: Sequence[RouterNetwork]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member network")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outs = [m(x) for m in self.members]
        perf = torch.stack([p for p, _ in outs]).mean(0)
        cost = torch.exp(torch.stack([torch.log(c) for _, c in outs]).mean(0))
        return perf, cost
