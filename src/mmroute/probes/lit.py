"""LightningModules around the probe heads: losses, AdamW, validation AUROC, best-state keeping.

Each module is thin: the network is a plain ``nn.Module`` from :mod:`mmroute.probes.heads` kept in
``self.net``. Logged per epoch: ``train_loss`` (and for ReLope ``train_bce``, ``train_kl``,
``beta``), ``val_loss``, ``val_auroc`` (sklearn ``roc_auc_score``), which early stopping watches.
"""

from __future__ import annotations

import logging

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import nn

from mmroute.probes.evaluation import auroc

__all__ = ["ProbeLit", "VectorProbeLit", "AttentionProbeLit", "ReLopeLit", "KeepBestState"]

log = logging.getLogger(__name__)


class ProbeLit(L.LightningModule):
    """Base: binary cross-entropy on correctness logits, AdamW on the trainable parameters."""

    def __init__(self, net: nn.Module, *, lr: float = 1e-4, weight_decay: float = 0.01) -> None:
        super().__init__()
        self.net = net
        self.lr = lr
        self.weight_decay = weight_decay
        self._val_scores: list[torch.Tensor] = []
        self._val_labels: list[torch.Tensor] = []

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        bce = F.binary_cross_entropy_with_logits(self.logits(batch), batch["y"])
        return bce, {}

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, parts = self.loss(batch)
        n = batch["y"].shape[0]
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=n)
        for k, v in parts.items():
            self.log(f"train_{k}" if k != "beta" else k, v, on_step=False, on_epoch=True, batch_size=n)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits = self.logits(batch)
        self.log("val_loss", F.binary_cross_entropy_with_logits(logits, batch["y"]), on_epoch=True,
                 batch_size=batch["y"].shape[0])
        self._val_scores.append(torch.sigmoid(logits).detach().float().cpu())
        self._val_labels.append(batch["y"].detach().cpu())

    def on_validation_epoch_end(self) -> None:
        if not self._val_scores:
            return
        scores = torch.cat(self._val_scores).numpy()
        labels = torch.cat(self._val_labels).numpy()
        self._val_scores.clear()
        self._val_labels.clear()
        value = auroc(labels, scores)
        # A single-class validation set has no AUROC; 0.5 (chance) keeps early stopping finite.
        self.log("val_auroc", 0.5 if np.isnan(value) else value, prog_bar=True)

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return torch.sigmoid(self.logits(batch)).float()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [p for p in self.net.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)


class VectorProbeLit(ProbeLit):
    """``probe`` and ``posthoc_embed``: batches ``{"x": (batch, d), "y": (batch,)}``."""

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net(batch["x"])


class AttentionProbeLit(ProbeLit):
    """``attention_probe``: token batches (see :mod:`mmroute.probes.data`)."""

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net(batch["states"], batch["mask"])


class ReLopeLit(ProbeLit):
    """``relope``: loss = BCE + beta(t) * KL(N(mu, sigma^2) || N(0, I)).

    ``beta(t) = beta * min(1, t / warmup_steps)`` over optimizer steps (constant ``beta`` when
    ``warmup_steps`` is 0). Validation and prediction use mu (the network's eval mode).
    """

    def __init__(self, net: nn.Module, *, lr: float = 1e-4, weight_decay: float = 0.01,
                 beta: float = 1.0, warmup_steps: int = 0) -> None:
        super().__init__(net, lr=lr, weight_decay=weight_decay)
        if beta < 0 or warmup_steps < 0:
            raise ValueError(f"beta and warmup_steps must be >= 0, got beta={beta}, warmup_steps={warmup_steps}")
        self.beta = beta
        self.warmup_steps = warmup_steps

    def current_beta(self) -> float:
        if self.warmup_steps == 0:
            return self.beta
        return self.beta * min(1.0, self.global_step / self.warmup_steps)

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net(batch["states"], batch["mask"], batch["position_ids"])[0]

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        from mmroute.probes.heads import gaussian_kl

        logits, mu, logvar = self.net(batch["states"], batch["mask"], batch["position_ids"])
        bce = F.binary_cross_entropy_with_logits(logits, batch["y"])
        kl = gaussian_kl(mu, logvar)
        beta = self.current_beta()
        return bce + beta * kl, {"bce": bce.detach(), "kl": kl.detach(),
                                 "beta": torch.tensor(beta, device=bce.device)}


class KeepBestState(Callback):
    """Remember the trainable parameters at the best validation epoch and restore them at the end.

    Best = highest ``val_auroc``, ties broken by lower ``val_loss`` (a small validation set
    saturates AUROC early while the probe still improves). Early stopping stops *after*
    ``patience`` worse epochs; this hands back the best epoch's head without writing checkpoints.
    Only parameters that train are copied (for ReLope the LoRA adapter and heads, not the layer).
    """

    def __init__(self, monitor: str = "val_auroc", tie_break: str = "val_loss") -> None:
        self.monitor, self.tie_break = monitor, tie_break
        self.best: float | None = None
        self.best_epoch: int | None = None
        self._key: tuple[float, float] | None = None
        self._state: dict[str, torch.Tensor] | None = None

    # on_validation_end runs after the module's on_validation_epoch_end has logged this epoch's value.
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = trainer.callback_metrics
        if trainer.sanity_checking or self.monitor not in metrics:
            return
        value = float(metrics[self.monitor])
        key = (value, -float(metrics.get(self.tie_break, float("inf"))))
        if self._key is None or key > self._key:
            self._key, self.best, self.best_epoch = key, value, trainer.current_epoch
            self._state = {n: p.detach().cpu().clone() for n, p in pl_module.named_parameters()
                           if p.requires_grad}

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._state is None:
            return
        params = dict(pl_module.named_parameters())
        with torch.no_grad():
            for n, v in self._state.items():
                params[n].copy_(v.to(params[n].device))
        log.info("restored the best epoch %s (%s = %.4f)", self.best_epoch, self.monitor, self.best)
