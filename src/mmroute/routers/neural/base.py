"""Shared machinery of the torch routers: config, input building, target scaling, fit/predict.

A concrete router only says which network to build (:meth:`NeuralRouter._build_network`) and
whether it reads the fused vector or the separate modalities (``uses_modalities``).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mmroute.constraints import InstanceOf, Integral, Interval, Options, Real, SequenceOf
from mmroute.features.types import Features
from mmroute.routers.base import Router, RouterConfig

__all__ = ["NeuralRouterConfig", "NeuralRouter", "PRECISIONS", "ACCELERATORS", "STRATEGIES", "MONITORS", "WIDTHS",
           "POSITIVE"]

log = logging.getLogger(__name__)

PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
STRATEGIES = ("auto", "ddp_spawn", "ddp", "ddp_fork")
_PREDICT_CHUNK = 8192
# Early-stopping metric -> whether larger is better.
MONITORS = {"val_loss": False, "val_perf_loss": False, "val_auroc": True}


@dataclasses.dataclass
class NeuralRouterConfig(RouterConfig):
    """Training options shared by every torch router.

    ``precision``: "32-true" (default), or "bf16-mixed" / "16-mixed" on a CUDA GPU; on a machine
    without one the router logs a warning and trains in "32-true" (recorded in ``precision_``).
    ``val_fraction``: share of the training rows held out for early stopping when no validation
    rows are given (0 disables early stopping: ``max_epochs`` are run and the last weights kept).
    ``enable_progress_bar``: None = on when stderr is a terminal.
    ``n_ensemble``: members trained with seeds ``seed .. seed+n-1`` (each also carving its own
    validation rows with its seed), averaged in one network.
    ``devices``: processes (or GPUs) to train each member on with Lightning DDP; ``batch_size``
    stays the global batch (each process takes ``batch_size // devices`` rows per step), so an
    N-process fit follows the 1-process one. ``strategy``: Lightning's; "auto" is ``ddp_spawn``
    when ``devices > 1`` (no re-launch of the calling script), else a single device.
    """

    # Three folds for the guard (four trainings instead of six): torch fits are the slow ones.
    guard_folds: int = 3
    max_epochs: int = 100
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    dropout: float = 0.1
    patience: int = 10
    val_fraction: float = 0.1
    monitor: str = "val_loss"
    cost_weight: float = 1.0
    n_ensemble: int = 1
    standardize_inputs: bool = True
    precision: str = "32-true"
    accelerator: str = "auto"
    devices: int = 1
    strategy: str = "auto"
    enable_progress_bar: bool | None = None

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **{name: [Interval(Integral, 1, None, closed="left")]
           for name in ("max_epochs", "batch_size", "patience", "n_ensemble", "devices")},
        "lr": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "cost_weight": [Interval(Real, 0, None, closed="left")],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "val_fraction": [Interval(Real, 0, 1, closed="left")],
        "monitor": [Options(sorted(MONITORS))],
        "precision": [Options(PRECISIONS)],
        "accelerator": [Options(ACCELERATORS)],
        "strategy": [Options(STRATEGIES)],
        "standardize_inputs": [InstanceOf(bool)],
        "enable_progress_bar": [InstanceOf(bool), None],
    }


#: A layer-width option: a non-empty tuple of positive integers.
WIDTHS = [SequenceOf(Interval(Integral, 1, None, closed="left"), min_len=1)]
#: One positive integer (a width or a count).
POSITIVE = [Interval(Integral, 1, None, closed="left")]


def _log_cost_stats(log_cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-model mean and std of log-cost over observed rows; unobserved models get the global
    mean, constant ones std 1 (nothing to scale)."""
    observed = np.isfinite(log_cost)
    global_mean = float(log_cost[observed].mean()) if observed.any() else 0.0
    counts = observed.sum(0)
    filled = np.where(observed, log_cost, 0.0)
    mean = np.where(counts > 0, filled.sum(0) / np.maximum(counts, 1), global_mean)
    var = np.where(observed, (log_cost - mean) ** 2, 0.0).sum(0) / np.maximum(counts, 1)
    std = np.sqrt(var)
    return mean, np.where(std > 1e-6, std, 1.0)


class NeuralRouter(Router):
    """Base of the torch routers.

    Fitted attributes: ``network_`` (plain ``nn.Module``, CPU, float32, eval mode; ``forward(x)``
    with ``x = export_input(features)`` returns ``(perf, cost)``), ``d_in_``, ``cost_floor_``,
    ``train_results_`` (one :class:`~mmroute.routers.neural.lit.TrainResult` per ensemble member),
    ``precision_``. Hooks, not config: ``lightning_logger`` (a Lightning logger, e.g. MLflow's;
    given to the first ensemble member's Trainer) and ``lightning_callbacks`` (given to every
    member's Trainer) are used when set.
    """

    uses_modalities: ClassVar[bool] = False
    deployable = True
    config: NeuralRouterConfig

    def __init__(self, config: NeuralRouterConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.lightning_logger: Any = None
        self.lightning_callbacks: list[Any] = []

    def __getstate__(self) -> dict[str, Any]:
        # Loggers hold clients and open runs: a pickled router carries its weights, not those.
        state = dict(self.__dict__)
        state["lightning_logger"], state["lightning_callbacks"] = None, []
        return state

    # ------------------------------------------------------------------ inputs
    def onnx_input(self, features: Features) -> np.ndarray:
        """The network input, float32 of shape (n_instances, d_in_): the fused vector, or
        ``[text, image, image_mask]`` for modality routers (zeros / 0 where there is no image)."""
        self.check_fitted()
        return self._input(features)

    export_input = onnx_input  # the name used before the router contract; same method

    def write_onnx(self, x_sample: np.ndarray, path: Path, *, opset: int, exporter: str) -> str:
        """``network_`` (a plain ``nn.Module``) through ``torch.onnx`` (see
        :func:`mmroute.export.torch_export.export_module`)."""
        from mmroute.export.torch_export import export_module

        return export_module(self.network_, x_sample, path, opset=opset,
                             dynamo={"auto": None, "dynamo": True, "torchscript": False}[exporter])

    def _input(self, features: Features) -> np.ndarray:
        if not self.uses_modalities:
            x = features.fused
        else:
            text = features.text if features.text is not None else features.fused
            n = len(features)
            if features.image is None:
                image = np.zeros((n, self.d_image_), dtype=np.float32)
                mask = np.zeros(n, dtype=bool)
            else:
                image = features.image
                mask = (features.image_mask if features.image_mask is not None
                        else np.any(image != 0, axis=1))
                if image.shape[1] != self.d_image_:
                    raise ValueError(f"{self.name}: image features have {image.shape[1]} columns, "
                                     f"expected {self.d_image_} (as at fit time)")
            if text.shape[1] != self.d_text_:
                raise ValueError(f"{self.name}: text features have {text.shape[1]} columns, "
                                 f"expected {self.d_text_} (as at fit time)")
            image = np.where(mask[:, None], image, 0.0)
            x = np.concatenate([text, image, mask[:, None].astype(np.float32)], axis=1)
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not np.isfinite(x).all():
            raise ValueError(f"{self.name}: features contain NaN or infinite values")
        return x

    def _set_dims(self, features: Features) -> None:
        if not self.uses_modalities:
            self.d_in_ = features.n_features
            return
        text = features.text if features.text is not None else features.fused
        self.image_seen_ = features.image is not None
        self.d_text_ = int(text.shape[1])
        # Text-only training: assume the image space matches the text one (as for CLIP towers),
        # so an image-bearing test set (mode 12) still fits the graph.
        self.d_image_ = int(features.image.shape[1]) if features.image is not None else self.d_text_
        self.d_in_ = self.d_text_ + self.d_image_ + 1

    def _input_stats(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = x.shape[1]
        mean, std = np.zeros(d), np.ones(d)
        if not self.config.standardize_inputs:
            return mean, std
        if not self.uses_modalities:
            mean, std = x.mean(0), x.std(0)
        else:
            t, i = self.d_text_, self.d_image_
            mean[:t], std[:t] = x[:, :t].mean(0), x[:, :t].std(0)
            has_image = x[:, -1] > 0
            if has_image.any():  # image statistics over rows that really have one
                mean[t:t + i], std[t:t + i] = x[has_image, t:t + i].mean(0), x[has_image, t:t + i].std(0)
            mean[-1], std[-1] = 0.0, 1.0  # the mask column stays 0/1
        return mean, np.where(std > 1e-6, std, 1.0)

    # ------------------------------------------------------------------ targets
    def _targets(self, x: np.ndarray, correct: np.ndarray, cost: np.ndarray):
        from mmroute.routers.neural.lit import TrainArrays

        y_mask = np.isfinite(correct)
        z_mask = np.isfinite(cost)
        z = (self._log_cost(cost) - self.cost_mean_) / self.cost_std_
        return TrainArrays(x=x, y=np.where(y_mask, correct, 0.0), y_mask=y_mask.astype(np.float32),
                           z=np.where(z_mask, z, 0.0), z_mask=z_mask.astype(np.float32))

    def _log_cost(self, cost: np.ndarray) -> np.ndarray:
        """log(max(cost, cost_floor_)) where observed, NaN elsewhere."""
        observed = np.isfinite(cost)
        return np.where(observed, np.log(np.maximum(np.where(observed, cost, 1.0), self.cost_floor_)), np.nan)

    @staticmethod
    def _check_outcomes(correct: np.ndarray, cost: np.ndarray, what: str) -> None:
        c = correct[np.isfinite(correct)]
        if c.size and (c.min() < 0 or c.max() > 1):
            raise ValueError(f"{what} correctness must lie in [0, 1], got values in [{c.min()}, {c.max()}]")
        k = cost[np.isfinite(cost)]
        if k.size and k.min() < 0:
            raise ValueError(f"{what} costs must be >= 0, got a minimum of {k.min()}")

    # ------------------------------------------------------------------ fit
    def _build_network(self):
        raise NotImplementedError

    def _fit(self, features, correct, cost, *, val_features, val_correct, val_cost) -> None:
        import lightning
        import torch

        from mmroute.routers.neural.lit import train_network
        from mmroute.routers.neural.modules import EnsembleNet

        cfg = self.config
        self._check_outcomes(correct, cost, "training")
        self._set_dims(features)
        x = self._input(features)
        val = None
        if val_features is not None:
            if val_correct is None or val_cost is None:
                raise ValueError("val_features given without val_correct and val_cost")
            if val_correct.shape != (len(val_features), correct.shape[1]) or val_cost.shape != val_correct.shape:
                raise ValueError(f"val_correct/val_cost must have shape ({len(val_features)}, {correct.shape[1]}), "
                                 f"got {val_correct.shape} and {val_cost.shape}")
            self._check_outcomes(val_correct, val_cost, "validation")
        elif cfg.val_fraction > 0 and len(x) < 2:
            raise ValueError(f"{self.name}: {len(x)} training row(s) cannot be split for early stopping; "
                             "pass val_* rows or set val_fraction=0")

        # Scaling statistics and base rates come from all training rows (labels of the rows
        # carved out for early stopping are training labels too; test rows are never seen).
        positive = cost[np.isfinite(cost) & (cost > 0)]
        # Zero costs (free models) would give log 0: clip at a tiny fraction of the cheapest cost.
        self.cost_floor_ = float(positive.min()) * 1e-3 if positive.size else 1e-12
        self.cost_mean_, self.cost_std_ = _log_cost_stats(self._log_cost(cost))
        in_mean, in_std = self._input_stats(x)
        observed = np.isfinite(correct)
        rate = np.where(observed, correct, 0.0).sum(0) / np.maximum(observed.sum(0), 1)
        rate = np.clip(np.where(observed.any(0), rate, 0.5), 0.01, 0.99)
        data = self._targets(x, correct, cost)
        if val_features is not None:
            val = self._targets(self._input(val_features), val_correct, val_cost)

        members, results = [], []
        for k in range(cfg.n_ensemble):
            train, member_val = data, val
            if val is None and cfg.val_fraction > 0:
                # Each member holds out its own rows (seed + k): together the ensemble learns
                # from every training row, and the members differ in data, not only in init.
                from sklearn.model_selection import train_test_split

                tr, va = train_test_split(np.arange(len(x)), test_size=cfg.val_fraction, shuffle=True,
                                          random_state=cfg.seed + k)
                train, member_val = data.subset(tr), data.subset(va)
            # Seed before building: the initial weights are part of what the seed must fix.
            lightning.seed_everything(cfg.seed + k, workers=True, verbose=False)
            net = self._build_network()
            net.set_scaling(in_mean, in_std, self.cost_mean_, self.cost_std_)
            with torch.no_grad():  # start every model at its training base rate
                net.perf_bias().copy_(torch.as_tensor(np.log(rate / (1 - rate))))
            results.append(train_network(
                net, train, member_val, seed=cfg.seed + k, max_epochs=cfg.max_epochs,
                batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
                cost_weight=cfg.cost_weight, patience=cfg.patience, monitor=cfg.monitor,
                precision=cfg.precision, accelerator=cfg.accelerator, devices=cfg.devices,
                strategy=cfg.strategy, enable_progress_bar=(sys.stderr.isatty() if cfg.enable_progress_bar is None
                                     else cfg.enable_progress_bar),
                # One logger run gets one metric history: the first member's (the others would
                # restart the step axis and finalize the logger again).
                logger=self.lightning_logger if k == 0 else None, callbacks=list(self.lightning_callbacks)))
            members.append(net)
        self.network_ = members[0] if len(members) == 1 else EnsembleNet(members).eval()
        self.train_results_ = results
        self.precision_ = results[0].precision
        log.info("%s: trained %d member(s), epochs %s, best epochs %s", self.name, len(results),
                 [r.epochs_run for r in results], [r.best_epoch for r in results])

    def _predict(self, features, *, correct, cost) -> tuple[np.ndarray, np.ndarray]:
        import torch

        x = self._input(features)
        perf, pc = [], []
        with torch.inference_mode():
            for start in range(0, len(x), _PREDICT_CHUNK):
                p, c = self.network_(torch.from_numpy(x[start:start + _PREDICT_CHUNK]))
                perf.append(p.numpy())
                pc.append(c.numpy())
        if not perf:
            return np.zeros((0, self.n_models_)), np.zeros((0, self.n_models_))
        return np.concatenate(perf).astype(np.float64), np.concatenate(pc).astype(np.float64)
