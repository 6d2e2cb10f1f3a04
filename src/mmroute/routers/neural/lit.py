"""The Lightning wrapper around a router network, and the training recipe.

:class:`RouterLitModule` stays thin: masked losses, per-epoch metrics, the optimiser. The network
it wraps is a plain :class:`~mmroute.routers.neural.modules.RouterNetwork`. :func:`train_network`
runs ``lightning.Trainer`` (``accelerator`` and ``precision`` are parameters), early-stops on the
validation loss and keeps the best weights in memory (no checkpoint files, no logs in the CWD).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import tempfile
import warnings
from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, EarlyStopping
from sklearn.metrics import roc_auc_score
from torch.utils.data import DataLoader, TensorDataset

from mmroute.routers.neural.base import MONITORS
from mmroute.routers.neural.modules import RouterNetwork

__all__ = ["RouterLitModule", "BestWeights", "EpochHistory", "TrainArrays", "TrainResult", "train_network",
           "resolve_precision"]

log = logging.getLogger(__name__)



@dataclasses.dataclass
class TrainArrays:
    """Training tensors: NaN-free targets with 0/1 masks marking observed entries.

    x : (n, d_in) float32; y : (n, M) correctness in [0, 1]; y_mask : (n, M);
    z : (n, M) standardised log-cost; z_mask : (n, M).
    """

    x: np.ndarray
    y: np.ndarray
    y_mask: np.ndarray
    z: np.ndarray
    z_mask: np.ndarray

    def subset(self, rows: np.ndarray) -> TrainArrays:
        return TrainArrays(*(a[rows] for a in (self.x, self.y, self.y_mask, self.z, self.z_mask)))

    def dataset(self) -> RowBatches:
        return RowBatches(*(torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32)
                            for a in (self.x, self.y, self.y_mask, self.z, self.z_mask)))


class RowBatches(TensorDataset):
    """In-memory tensors that a DataLoader fetches a batch at a time: one index per tensor
    instead of one ``__getitem__`` per row and a ``torch.stack`` (that per-row fetch was a third
    of an MLP fold's training time on MMLU-Pro). Same rows, same values, same shuffle order.
    Load it with ``collate_fn=batch_as_is``."""

    def __getitems__(self, indices: list[int]) -> list[torch.Tensor]:
        rows = torch.as_tensor(indices, dtype=torch.long)
        return [t[rows] for t in self.tensors]


def batch_as_is(batch: list[torch.Tensor]) -> list[torch.Tensor]:
    """DataLoader collate for :class:`RowBatches` (already batched)."""
    return batch


@dataclasses.dataclass
class TrainResult:
    """What a fit leaves behind besides the weights."""

    history: list[dict[str, float]]
    best_epoch: int | None
    best_score: float | None
    epochs_run: int
    stopped_early: bool
    precision: str


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # Entries with mask 0 contribute nothing; an all-masked batch gives 0, not NaN.
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


class RouterLitModule(L.LightningModule):
    """Masked BCE on correctness logits + ``cost_weight`` x masked MSE on standardised log-cost.

    Logs per epoch ``train_loss``, ``val_loss``, ``val_perf_loss``, ``val_cost_loss`` and
    ``val_auroc`` (micro AUROC over the observed validation entries, binarised at 0.5).
    """

    def __init__(self, network: RouterNetwork, *, lr: float = 1e-3, weight_decay: float = 0.0,
                 cost_weight: float = 1.0) -> None:
        super().__init__()
        self.network = network
        self.save_hyperparameters(ignore=["network"])
        self._val_batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.network(x)

    def _losses(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        x, y, y_mask, z, z_mask = batch
        logit, z_hat = self.network.raw(x)
        logit, z_hat = logit.float(), z_hat.float()  # losses in fp32 under mixed precision
        perf = _masked_mean(F.binary_cross_entropy_with_logits(logit, y, reduction="none"), y_mask)
        cost = _masked_mean((z_hat - z) ** 2, z_mask)
        return perf + self.hparams.cost_weight * cost, perf, cost, logit

    @property
    def _distributed(self) -> bool:
        trainer = self._trainer
        return trainer is not None and trainer.world_size > 1

    def training_step(self, batch, batch_idx):
        loss, _, _, _ = self._losses(batch)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=batch[0].shape[0],
                 sync_dist=self._distributed)
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_batches = []

    def validation_step(self, batch, batch_idx):
        loss, perf, cost, logit = self._losses(batch)
        n, sync = batch[0].shape[0], self._distributed  # DDP: every rank sees the mean over all ranks
        self.log("val_loss", loss, on_epoch=True, batch_size=n, sync_dist=sync)
        self.log("val_perf_loss", perf, on_epoch=True, batch_size=n, sync_dist=sync)
        self.log("val_cost_loss", cost, on_epoch=True, batch_size=n, sync_dist=sync)
        self._val_batches.append((logit.detach().cpu(), batch[1].cpu(), batch[2].cpu()))

    def on_validation_epoch_end(self) -> None:
        if not self._val_batches:
            return
        parts = [torch.cat(p) for p in zip(*self._val_batches)]
        self._val_batches = []
        if self._distributed:  # AUROC over every rank's validation rows (same value on each rank)
            parts = [self.all_gather(p.to(self.device)).cpu() for p in parts]
        logit, y, mask = (p.float().numpy().ravel() for p in parts)
        keep = mask > 0
        labels = y[keep] >= 0.5
        # AUROC is undefined with one class; logging a made-up value would mislead early stopping.
        if labels.any() and not labels.all():
            self.log("val_auroc", float(roc_auc_score(labels, logit[keep])), on_epoch=True)

    def configure_optimizers(self):
        # Weight decay on matrices and embeddings only; decaying biases and LayerNorm gains just
        # pulls the per-model base rates and scales toward 0.
        decay = [p for p in self.network.parameters() if p.ndim >= 2]
        no_decay = [p for p in self.network.parameters() if p.ndim < 2]
        return torch.optim.AdamW([{"params": decay, "weight_decay": self.hparams.weight_decay},
                                  {"params": no_decay, "weight_decay": 0.0}], lr=self.hparams.lr)


class BestWeights(Callback):
    """Keeps a CPU copy of the network's weights at the best value of ``monitor``."""

    def __init__(self, monitor: str = "val_loss", mode: str = "min") -> None:
        self.monitor, self.mode = monitor, mode
        self.best_score: float | None = None
        self.best_epoch: int | None = None
        self.state: dict[str, torch.Tensor] | None = None

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        score = trainer.callback_metrics.get(self.monitor)
        if score is None or not np.isfinite(float(score)):
            return
        score = float(score)
        better = self.best_score is None or (score < self.best_score if self.mode == "min"
                                             else score > self.best_score)
        if better:
            self.best_score, self.best_epoch = score, trainer.current_epoch
            self.state = {k: v.detach().to("cpu", copy=True) for k, v in pl_module.network.state_dict().items()}


class EpochHistory(Callback):
    """Records the epoch-level metrics (train and validation) at the end of every epoch."""

    def __init__(self) -> None:
        self.history: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # At this point callback_metrics hold this epoch's train_loss and its validation metrics.
        self.history.append({"epoch": trainer.current_epoch,
                             **{k: float(v) for k, v in trainer.callback_metrics.items()}})


def resolve_precision(precision: str, accelerator: str) -> str:
    """The precision to train with: reduced precisions need CUDA; elsewhere fall back to fp32.

    Falling back (with a warning) rather than failing keeps one config usable on a GPU box and a
    CPU laptop; the effective precision is recorded on the router (``precision_``).
    """
    if precision in ("32-true", "32", "64-true"):
        return precision
    cuda = torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")
    if not cuda:
        log.warning("precision %r needs a CUDA GPU (accelerator=%r, CUDA available: %s); "
                    "training in '32-true' instead", precision, accelerator, torch.cuda.is_available())
        return "32-true"
    if precision.startswith("bf16") and not torch.cuda.is_bf16_supported():
        log.warning("this GPU does not support bf16; training in '32-true' instead of %r", precision)
        return "32-true"
    return precision


@contextlib.contextmanager
def _quiet_lightning():
    """Lightning announces devices and tips at INFO on every fit; an ensemble or a benchmark fits
    many times, so keep those lines for debug runs only (we log the effective precision ourselves)."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch.utilities.rank_zero",
                                              "lightning.fabric.utilities.rank_zero")]
    levels = [lg.level for lg in loggers]
    if not log.isEnabledFor(logging.DEBUG):
        for lg in loggers:
            lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def train_network(network: RouterNetwork, train: TrainArrays, val: TrainArrays | None, *,
                  seed: int, max_epochs: int, batch_size: int, lr: float, weight_decay: float,
                  cost_weight: float, patience: int, monitor: str = "val_loss",
                  precision: str = "32-true", accelerator: str = "auto", devices: int = 1,
                  strategy: str = "auto", enable_progress_bar: bool = False, logger: Any = None,
                  callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Fit ``network`` in place with ``lightning.Trainer``; leave it on CPU, float32, eval mode,
    holding the best validation weights (the last weights when ``val`` is None).

    ``devices > 1`` trains with DDP (``strategy="auto"``: ``ddp_spawn``): each process takes
    ``batch_size // devices`` rows of every global batch and a shard of the validation rows (losses
    and AUROC are reduced over all processes); only rank 0 logs. What the callbacks saw in the
    worker processes comes back through a file written by rank 0.
    """
    L.seed_everything(seed, workers=True, verbose=False)
    precision = resolve_precision(precision, accelerator)
    module = RouterLitModule(network, lr=lr, weight_decay=weight_decay, cost_weight=cost_weight)
    gen = torch.Generator().manual_seed(seed)
    distributed = devices > 1
    if distributed and strategy == "auto":
        strategy = "ddp_spawn"
    per_rank = max(1, batch_size // devices) if distributed else batch_size
    train_loader = DataLoader(train.dataset(), batch_size=per_rank, shuffle=True, generator=gen,
                              collate_fn=batch_as_is)
    history = EpochHistory()
    own: list[Callback] = [history]
    best = early = None
    val_loader = None
    if val is not None:
        mode = "max" if MONITORS[monitor] else "min"
        best = BestWeights(monitor, mode)
        early = EarlyStopping(monitor=monitor, mode=mode, patience=patience, check_finite=True)
        own += [early, best]
        val_loader = DataLoader(val.dataset(), batch_size=max(per_rank, 1024), shuffle=False,
                                collate_fn=batch_as_is)
    # Lightning's deterministic=True flips torch's process-wide deterministic-algorithms flag;
    # restore it so one fit does not change the behaviour of unrelated code afterwards.
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    sharing = torch.multiprocessing.get_sharing_strategy()
    if distributed and strategy == "ddp_spawn":
        # Tensors travel to the spawned workers through shared memory; passing file descriptors
        # fails in some containers ("unable to resize file"), named shared-memory files do not.
        torch.multiprocessing.set_sharing_strategy("file_system")
    try:
        with tempfile.TemporaryDirectory(prefix="mmroute-lightning-") as root, warnings.catch_warnings(), \
                _quiet_lightning():
            # Tiny in-memory tensors: worker processes would cost more than they save.
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
            warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")  # Lightning-internal
            warnings.filterwarnings("ignore", message=".*no `val_dataloader`.*")  # val_fraction=0 is intended
            handoff = None
            if distributed:
                handoff = _RankZeroHandoff(f"{root}/rank0.pt", history, best, early)
                own.append(handoff)
                warnings.filterwarnings("ignore", message=".*ddp_spawn.*")
            trainer = L.Trainer(
                accelerator=accelerator, devices=devices, strategy=strategy, precision=precision,
                max_epochs=max_epochs,
                logger=logger if logger is not None else False, callbacks=[*own, *callbacks],
                enable_checkpointing=False, enable_progress_bar=enable_progress_bar,
                enable_model_summary=False, deterministic=True, default_root_dir=root,
                num_sanity_val_steps=0, log_every_n_steps=max(1, min(50, len(train_loader))))
            trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader)
            epochs_run = trainer.current_epoch
            if handoff is not None:  # the workers trained; take rank 0's view of it
                epochs_run = handoff.restore(network)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        torch.multiprocessing.set_sharing_strategy(sharing)
    network.cpu().float()
    if best is not None and best.state is not None:
        network.load_state_dict(best.state)
    network.eval()
    return TrainResult(history=history.history,
                       best_epoch=None if best is None else best.best_epoch,
                       best_score=None if best is None else best.best_score,
                       epochs_run=epochs_run,
                       stopped_early=early is not None and early.stopped_epoch > 0, precision=precision)


class _RankZeroHandoff(Callback):
    """DDP: rank 0 saves the final weights and the callbacks' state at the end of the fit; the
    calling process (which, under ``ddp_spawn``, did not train itself) loads them back."""

    def __init__(self, path: str, history: EpochHistory, best: BestWeights | None,
                 early: EarlyStopping | None) -> None:
        self.path, self.history, self.best, self.early = path, history, best, early

    def on_fit_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        payload = {"weights": {k: v.detach().cpu() for k, v in pl_module.network.state_dict().items()},
                   "history": self.history.history, "epochs_run": trainer.current_epoch}
        if self.best is not None:
            payload["best"] = (self.best.best_score, self.best.best_epoch, self.best.state)
        if self.early is not None:
            payload["stopped_epoch"] = self.early.stopped_epoch
        torch.save(payload, self.path)

    def restore(self, network: RouterNetwork) -> int:
        payload = torch.load(self.path, weights_only=False)
        network.load_state_dict(payload["weights"])
        self.history.history = payload["history"]
        if self.best is not None and "best" in payload:
            self.best.best_score, self.best.best_epoch, self.best.state = payload["best"]
        if self.early is not None and "stopped_epoch" in payload:
            self.early.stopped_epoch = payload["stopped_epoch"]
        return int(payload["epochs_run"])
