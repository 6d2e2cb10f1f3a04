"""Fit and apply one probe head: the sklearn-style :class:`ProbeRouter` over cached states.

``ProbeRouter(head="relope").fit(inputs, labels, backbone=model)`` builds the network, splits a
stratified validation set off the training rows, trains with ``lightning.Trainer`` (AdamW,
early stopping on validation AUROC, the best epoch restored), and ``predict_proba(inputs)`` returns
P(small model correct) of shape (n,).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from mmroute.probes.cache import HiddenStateCache

__all__ = ["HEADS", "ProbeTrainConfig", "ProbeInputs", "ProbeRouter", "build_network"]

log = logging.getLogger(__name__)

HEADS = {
    "probe": "MLP probe on the layer-l last-token state",
    "attention_probe": "learned-query attention over the layer l-1 token states, then the probe",
    "relope": "LoRA on layer l replayed over cached l-1 states + Gaussian bottleneck + probe",
    "posthoc_embed": "MLP probe on a per-instance output embedding (after generation)",
}
_TOKEN_HEADS = ("attention_probe", "relope")


@dataclass
class ProbeTrainConfig:
    """Hyper-parameters of one probe head (paper defaults: AdamW, lr 1e-4, LoRA r=128 alpha=256, beta=1)."""

    head: str = "probe"
    hidden: int = 256
    n_layers: int = 5
    dropout: float = 0.1
    input_norm: bool = True  # standardise probe inputs with training statistics
    lr: float = 1e-4
    weight_decay: float = 0.01
    batch_size: int = 32
    max_epochs: int = 20
    patience: int = 3
    val_frac: float = 0.1
    lora_r: int = 128
    lora_alpha: int = 256
    lora_dropout: float = 0.0
    beta: float = 1.0
    beta_warmup_steps: int = 0
    latent_dim: int | None = None
    preload: bool = True
    seed: int = 0
    accelerator: str = "auto"
    devices: int | str = 1
    precision: str | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.head not in HEADS:
            problems.append(f"head {self.head!r} is not one of {sorted(HEADS)}")
        if self.lr <= 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        if self.batch_size < 1 or self.max_epochs < 1 or self.patience < 1:
            problems.append(f"batch_size, max_epochs and patience must be >= 1, got {self.batch_size}, "
                            f"{self.max_epochs}, {self.patience}")
        if not 0.0 < self.val_frac < 0.5:
            problems.append(f"val_frac must be in (0, 0.5), got {self.val_frac}")
        if self.beta < 0 or self.beta_warmup_steps < 0:
            problems.append(f"beta and beta_warmup_steps must be >= 0, got {self.beta}, {self.beta_warmup_steps}")
        if problems:
            raise ValueError("invalid ProbeTrainConfig: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class ProbeInputs:
    """What a head reads for the instances ``ids``: the hidden-state cache, or for
    ``posthoc_embed`` row-aligned output embeddings of shape (len(ids), d)."""

    ids: list[str]
    cache: HiddenStateCache | None = None
    embeddings: np.ndarray | None = None

    def subset(self, rows: Sequence[int] | np.ndarray) -> ProbeInputs:
        rows = np.asarray(rows, dtype=np.int64)
        return ProbeInputs([self.ids[r] for r in rows], self.cache,
                           None if self.embeddings is None else np.asarray(self.embeddings)[rows])


def build_network(config: ProbeTrainConfig, d: int, backbone: nn.Module | None = None,
                  layer: int | None = None) -> nn.Module:
    """The plain ``nn.Module`` of ``config.head`` for inputs of width ``d``."""
    from mmroute.probes.heads import AttentionProbe, MLPProbe, ReLopeNet
    from mmroute.probes.replay import LayerReplay, LoraSpec

    if config.head == "relope":
        if backbone is None or layer is None:
            raise ValueError("head 'relope' needs the backbone (model or name/path) to copy layer l from")
        k = config.latent_dim or d
        probe = MLPProbe(k, config.hidden, config.n_layers, config.dropout)
        replay = LayerReplay.from_model(backbone, layer, lora=LoraSpec(config.lora_r, config.lora_alpha,
                                                                       config.lora_dropout))
        return ReLopeNet(replay, d, probe, k)
    probe = MLPProbe(d, config.hidden, config.n_layers, config.dropout)
    return AttentionProbe(d, probe) if config.head == "attention_probe" else probe


def _training_inputs(dataset: Any, max_items: int = 2048) -> torch.Tensor:
    """Training vectors (vector heads) or the unpadded tokens of up to ``max_items`` instances."""
    if hasattr(dataset, "x"):
        return dataset.x
    picks = np.linspace(0, len(dataset) - 1, num=min(len(dataset), max_items)).astype(int)
    return torch.cat([dataset[int(i)]["states"].float() for i in picks])


class ProbeRouter:
    """A correctness probe for one small model (sklearn-style: config in ``__init__``, state in ``*_``).

    Learned attributes: ``net_`` (the trained ``nn.Module``), ``d_in_``, ``best_epoch_``,
    ``val_auroc_`` (best validation AUROC), ``epochs_`` (epochs run), ``val_rows_`` (the training
    rows held out for validation, positions in the ``fit`` inputs).
    """

    def __init__(self, config: ProbeTrainConfig | None = None, **overrides: Any) -> None:
        config = config or ProbeTrainConfig()
        self.config = dataclasses.replace(config, **overrides) if overrides else config

    # ------------------------------------------------------------------ data
    def _dataset(self, inputs: ProbeInputs, labels: np.ndarray | None) -> tuple[Any, Any]:
        from mmroute.probes.data import TokenData, VectorData, pad_tokens

        head = self.config.head
        if head == "posthoc_embed":
            if inputs.embeddings is None:
                raise ValueError("head 'posthoc_embed' needs ProbeInputs.embeddings (n, d) of the outputs")
            return VectorData(inputs.embeddings, labels), None
        if inputs.cache is None:
            raise ValueError(f"head {head!r} needs ProbeInputs.cache (a HiddenStateCache)")
        if head in _TOKEN_HEADS:
            return TokenData(inputs.cache, inputs.ids, labels, preload=self.config.preload), pad_tokens
        return VectorData(inputs.cache.last_states(inputs.ids), labels), None

    def _loader(self, dataset: Any, collate: Any, shuffle: bool) -> Any:
        from torch.utils.data import DataLoader

        gen = torch.Generator().manual_seed(self.config.seed)
        return DataLoader(dataset, batch_size=self.config.batch_size, shuffle=shuffle, collate_fn=collate,
                          generator=gen if shuffle else None)

    def _trainer(self, **kwargs: Any) -> Any:
        import lightning as L

        extra = {"precision": self.config.precision} if self.config.precision else {}
        return L.Trainer(accelerator=self.config.accelerator, devices=self.config.devices,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                         **extra, **kwargs)

    def _lit(self, net: nn.Module) -> Any:
        from mmroute.probes.lit import AttentionProbeLit, ReLopeLit, VectorProbeLit

        c = self.config
        if c.head == "relope":
            return ReLopeLit(net, lr=c.lr, weight_decay=c.weight_decay, beta=c.beta,
                             warmup_steps=c.beta_warmup_steps)
        cls = AttentionProbeLit if c.head == "attention_probe" else VectorProbeLit
        return cls(net, lr=c.lr, weight_decay=c.weight_decay)

    # ------------------------------------------------------------------- API
    def fit(self, inputs: ProbeInputs, labels: np.ndarray, *, backbone: nn.Module | None = None,
            logger: Any = None) -> ProbeRouter:
        """Train on ``inputs`` with binary ``labels`` (n,) (1 = the small model answered correctly).

        ``backbone`` (``relope`` only): the model whose layer l is replayed; ``logger``: a Lightning
        logger for per-epoch metrics (e.g. an MLFlowLogger bound to the active run).
        """
        from lightning.fabric.utilities.seed import seed_everything
        from lightning.pytorch.callbacks import EarlyStopping
        from sklearn.model_selection import train_test_split

        from mmroute.probes.lit import KeepBestState

        labels = np.asarray(labels, dtype=np.float32)
        if labels.shape != (len(inputs.ids),) or np.isnan(labels).any():
            raise ValueError(f"labels must be {len(inputs.ids)} values without NaN, got shape {labels.shape}")
        if len(np.unique(labels >= 0.5)) < 2:
            raise ValueError("training labels hold a single class; a correctness probe needs both")
        seed_everything(self.config.seed, verbose=False)
        rows = np.arange(len(labels))
        train_rows, val_rows = train_test_split(rows, test_size=self.config.val_frac,
                                                random_state=self.config.seed, stratify=labels >= 0.5)
        train_ds, collate = self._dataset(inputs.subset(train_rows), labels[train_rows])
        val_ds, _ = self._dataset(inputs.subset(val_rows), labels[val_rows])
        d = int(inputs.embeddings.shape[1]) if self.config.head == "posthoc_embed" else inputs.cache.hidden_size
        layer = inputs.cache.layer if inputs.cache is not None else None
        net = build_network(self.config, d, backbone, layer)
        if self.config.input_norm and self.config.head != "relope":
            # relope's probe reads the learned mu, whose scale the mu head sets itself.
            probe = net.probe if self.config.head == "attention_probe" else net
            probe.fit_standardization(_training_inputs(train_ds))
        lit = self._lit(net)
        keep = KeepBestState("val_auroc", "val_loss")
        trainer = self._trainer(max_epochs=self.config.max_epochs, logger=logger if logger is not None else False,
                                callbacks=[EarlyStopping("val_auroc", mode="max", patience=self.config.patience),
                                           keep],
                                num_sanity_val_steps=0, log_every_n_steps=1)
        trainer.fit(lit, self._loader(train_ds, collate, True), self._loader(val_ds, collate, False))
        self.net_ = net.eval()
        self.d_in_ = d
        self.best_epoch_ = keep.best_epoch
        self.val_auroc_ = keep.best
        self.epochs_ = trainer.current_epoch
        self.val_rows_ = np.sort(val_rows)
        return self

    def predict_proba(self, inputs: ProbeInputs) -> np.ndarray:
        """P(small model correct), array of shape (len(inputs.ids),)."""
        if not hasattr(self, "net_"):
            from mmroute.routers.base import NotFittedError

            raise NotFittedError(f"this {self.config.head} ProbeRouter is not fitted; call fit first")
        dataset, collate = self._dataset(inputs, None)
        if self.config.head == "posthoc_embed" or (inputs.cache is not None and self.config.head == "probe"):
            width = dataset.x.shape[1]
            if width != self.d_in_:
                raise ValueError(f"inputs have {width} features, the probe was fitted on {self.d_in_}")
        preds = self._trainer(logger=False).predict(self._lit(self.net_), self._loader(dataset, collate, False))
        self.net_.eval()
        return torch.cat(preds).cpu().numpy().astype(np.float64)
