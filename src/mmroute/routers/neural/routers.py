"""The registered torch routers: ``mlp``, ``mlp_mf``, ``cmr`` (MMR-Bench) and ``fusion_mf`` (mmroute's)."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from mmroute.constraints import Options
from mmroute.routers.neural.base import POSITIVE, WIDTHS, NeuralRouter, NeuralRouterConfig

# The image branch of the modality routers: a linear projection of the image features, or a small
# CNN on raw downsampled pixels (the 'pixels' image encoder) trained end to end with the routing
# loss, for users without pretrained vision weights. Off by default: on MATH-V it has not earned
# its place (README, real data).
_TOWER = {"image_tower": [Options(("linear", "cnn"))]}

__all__ = ["MLPConfig", "MLPRouter", "MLPMFConfig", "MLPMFRouter", "CMRConfig", "CMRRouter",
           "FusionMFConfig", "FusionMFRouter"]


@dataclasses.dataclass
class MLPConfig(NeuralRouterConfig):
    """MLP regression of outcomes and log-costs; ``hidden`` widths as in MMR-Bench (256, 128)."""

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {"hidden": WIDTHS}

    hidden: tuple[int, ...] = (256, 128)


class MLPRouter(NeuralRouter):
    """MMR-Bench MLP router on the fused features."""

    name = "mlp"
    config_class = MLPConfig

    def _build_network(self):
        from mmroute.routers.neural.modules import MLPNet

        c = self.config
        return MLPNet(self.d_in_, self.n_models_, hidden=c.hidden, dropout=c.dropout)


@dataclasses.dataclass
class MLPMFConfig(NeuralRouterConfig):
    """MLP query tower (``hidden``) to a ``latent``-d vector, dot product with model vectors + bias."""

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {"hidden": WIDTHS, "latent": POSITIVE}

    hidden: tuple[int, ...] = (256,)
    latent: int = 64


class MLPMFRouter(NeuralRouter):
    """MMR-Bench MLP matrix-factorisation router on the fused features."""

    name = "mlp_mf"
    config_class = MLPMFConfig

    def _build_network(self):
        from mmroute.routers.neural.modules import MLPMFNet

        c = self.config
        return MLPMFNet(self.d_in_, self.n_models_, hidden=c.hidden, latent=c.latent, dropout=c.dropout)


def _tower(router) -> str:
    # Without training images there are no pixels to learn from: the image branch stays linear.
    return router.config.image_tower if getattr(router, "image_seen_", True) else "linear"


@dataclasses.dataclass
class CMRConfig(NeuralRouterConfig):
    """Cross-modal attention: ``d_model``-d tokens, ``n_layers`` x ``n_heads`` self-attention;
    ``image_tower``: "linear" projection of the image features or "cnn" on raw pixels (see
    :class:`~mmroute.routers.neural.modules.ImageTower`)."""

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **{name: POSITIVE for name in ("d_model", "n_heads", "n_layers", "d_ff")}, **_TOWER}

    image_tower: str = "linear"
    d_model: int = 512
    n_heads: int = 8
    n_layers: int = 2
    d_ff: int = 1024
    lr: float = 3e-4

    def problems(self) -> list[str]:
        out = super().problems()
        if not out and self.d_model % self.n_heads:
            out.append(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        return out


class CMRRouter(NeuralRouter):
    """MMR-Bench cross-modal router (CMR) over the text and image tokens."""

    name = "cmr"
    config_class = CMRConfig
    uses_modalities = True

    def _build_network(self):
        from mmroute.routers.neural.modules import CMRNet

        c = self.config
        return CMRNet(self.d_text_, self.d_image_, self.n_models_, d_model=c.d_model, n_heads=c.n_heads,
                      n_layers=c.n_layers, d_ff=c.d_ff, dropout=c.dropout, image_tower=_tower(self))


@dataclasses.dataclass
class FusionMFConfig(NeuralRouterConfig):
    """mmroute's router: per-modality projections (``d_proj``), learned gated fusion, an MLP
    (``hidden``) to a low-rank query latent (``latent``), learned model embeddings, a BCE
    correctness head and a log-cost head (``cost_latent``); ``image_tower``: "linear" projection of
    the image features or "cnn" on raw pixels (see :class:`~mmroute.routers.neural.modules.ImageTower`)."""

    # Defaults chosen on a validation split of the training rows of the MMLU-Pro table (train
    # fractions 0.2 and 0.8, never the test rows): a 5-member ensemble was the one consistent gain
    # (+0.004-0.014 nAUC over one network); latent 32 was at least as good as 16/64; strong
    # regularisation (dropout 0.5, weight decay 0.05) helped with few rows (+0.005 at 0.2) and
    # cost little with many (-0.003 at 0.8); lr and widths moved results less than the split
    # noise (~0.005 nAUC).
    d_proj: int = 256
    hidden: tuple[int, ...] = (256,)
    latent: int = 32
    cost_latent: int = 16
    dropout: float = 0.5
    weight_decay: float = 0.05
    n_ensemble: int = 5

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "hidden": WIDTHS, **{name: POSITIVE for name in ("d_proj", "latent", "cost_latent")}, **_TOWER}
    image_tower: str = "linear"


class FusionMFRouter(NeuralRouter):
    """Fusion matrix-factorisation router (see :class:`~mmroute.routers.neural.modules.FusionMFNet`)."""

    name = "fusion_mf"
    config_class = FusionMFConfig
    uses_modalities = True

    def _build_network(self):
        from mmroute.routers.neural.modules import FusionMFNet

        c = self.config
        return FusionMFNet(self.d_text_, self.d_image_, self.n_models_, d_proj=c.d_proj, hidden=c.hidden,
                           latent=c.latent, cost_latent=c.cost_latent, dropout=c.dropout,
                           image_tower=_tower(self))
