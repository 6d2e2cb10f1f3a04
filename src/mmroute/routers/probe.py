"""Probe routers in the router contract: ``probe``, ``attention_probe`` and ``relope``.

A probe router routes over the pool ``[small, large]`` (two models, in that order). The small
model reads the query; its hidden states up to layer ``l`` feed a correctness head
(:mod:`mmroute.probes.heads`), and the query is deferred to the large model when the predicted
correctness ``p`` of the small model is low. In the contract's terms, ``predict`` returns

- ``perf[:, 0] = p`` (the head's P(small correct)), ``perf[:, 1] = a_L`` (the large model's
  accuracy on the training rows);
- ``cost[:, j]`` = the mean *billed* cost of model ``j`` on the training rows, where a deferred
  query also pays the small model's prefill (:mod:`mmroute.probes.costs`; the pipeline fits and
  scores probe routers on those billed costs).

Because the predicted costs do not depend on the query, the shared decision rules of
:mod:`mmroute.evaluation` reduce to the deferral threshold: the trade-off rule (maximise
``perf - lambda * cost``) defers exactly the queries with ``p < a_L - lambda * (c_L - c_s)``, so
its sweep over lambda traces the deferral-threshold curve at every distinct score below ``a_L``
(deferring a query whose ``p`` is above ``a_L`` costs more *and* is predicted to lose accuracy, so
the rule never does); the budget rule has two decisions only (all small below ``c_L``, defer
``p < a_L`` from ``c_L`` up). ``tests/routers/test_probe.py`` checks both. The hybrid curve over
every routing ratio (AUROC and its area, ReLope's own metrics) is logged beside them.

Inputs are :class:`ProbeFeatures`: the layer-l last-token states as ``fused`` plus the instance
ids of a :class:`~mmroute.probes.cache.HiddenStateCache` (token heads read their layer l-1 states
from it). torch and Lightning are imported only when a router fits or predicts.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from mmroute.arrays import ArrayLike
from mmroute.features.types import Features
from mmroute.routers.base import Router, RouterConfig

__all__ = ["ProbeFeatures", "ProbeRouterConfig", "HiddenStateRouter", "MLPProbeRouter",
           "AttentionProbeRouter", "ReLopeRouter", "HIDDEN_STATE_ROUTERS"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class ProbeFeatures(Features):
    """Features of hidden-state routers.

    Attributes
    ----------
    fused : ndarray of float32, shape (n_instances, d)
        Layer-l state of each instance's last token.
    ids : tuple of str, length n_instances
        The instances' ids in ``cache``.
    cache : HiddenStateCache
        Where the token heads read the layer l-1 states (and positions) of ``ids``.
    backbone : the loaded backbone (optional): ``relope`` copies layer ``l`` from it instead of
        loading the router's ``backbone`` path again.
    """

    ids: tuple[str, ...] = ()
    cache: Any = None
    backbone: Any = None

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "ids", tuple(str(i) for i in self.ids))
        if len(self.ids) != len(self):
            raise ValueError(f"ProbeFeatures: {len(self.ids)} ids for {len(self)} rows of states")
        if self.cache is None:
            raise ValueError("ProbeFeatures needs the HiddenStateCache its ids refer to")

    @classmethod
    def from_cache(cls, cache: Any, ids: Sequence[str], backbone: Any = None) -> ProbeFeatures:
        ids = [str(i) for i in ids]
        return cls(fused=cache.last_states(ids), ids=tuple(ids), cache=cache, backbone=backbone)

    def subset(self, rows: ArrayLike) -> ProbeFeatures:
        rows = np.asarray(rows)
        return ProbeFeatures(fused=self.fused[rows], ids=tuple(np.asarray(self.ids, dtype=object)[rows]),
                             cache=self.cache, backbone=self.backbone)


@dataclass
class ProbeRouterConfig(RouterConfig):
    """Head training (paper defaults: AdamW lr 1e-4, LoRA r=128 alpha=256, beta=1; see
    :class:`~mmroute.probes.train.ProbeTrainConfig`) and the backbone the head reads.

    ``backbone``: local path (or hub name) of the small model; ``relope`` copies layer ``l`` from
    it when the features carry no loaded backbone, and the served model loads it. ``val_frac`` of
    the training rows are held out for early stopping and for calibrating deferral thresholds.
    """

    hidden: int = 256
    n_layers: int = 5
    dropout: float = 0.1
    input_norm: bool = True
    lr: float = 1e-4
    weight_decay: float = 0.01
    batch_size: int = 32
    max_epochs: int = 20
    patience: int = 3
    val_frac: float = 0.2
    lora_r: int = 128
    lora_alpha: int = 256
    lora_dropout: float = 0.0
    beta: float = 1.0
    beta_warmup_steps: int = 0
    latent_dim: int | None = None
    accelerator: str = "auto"
    precision: str | None = None
    backbone: str | None = None

    def train_config(self, head: str) -> Any:
        from mmroute.probes.train import ProbeTrainConfig

        known = {f.name for f in dataclasses.fields(ProbeTrainConfig)}
        values: dict[str, Any] = {k: v for k, v in self.to_dict().items() if k in known}
        return ProbeTrainConfig(**values, head=head)

    def __post_init__(self) -> None:
        self.train_config("probe")  # one validation of the head options, errors collected there


class HiddenStateRouter(Router):
    """Base of the probe routers (module docstring). Learned: ``probe_`` (the fitted
    :class:`~mmroute.probes.train.ProbeRouter`), ``large_accuracy_``, ``cost_`` (2,),
    ``layer_``, ``calibration_`` (scores and outcomes of the training rows held out for validation,
    ``val_frac`` of them, for thresholds)."""

    head: ClassVar[str] = ""
    config_class = ProbeRouterConfig
    reads: ClassVar[str] = "hidden_states"
    # Deployable, but not as a features -> (perf, cost) graph: the served model runs the backbone
    # up to layer l and the head's ONNX graph (mmroute.export.probe_pyfunc), logged by the pipeline.
    deployable: ClassVar[bool] = True
    blendable: ClassVar[bool] = False

    def __init__(self, config: ProbeRouterConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.lightning_logger: Any = None  # bound by the pipeline to the active MLflow run

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "lightning_logger": None}

    def _check_inputs(self, features: Features) -> ProbeFeatures:
        if not isinstance(features, ProbeFeatures):
            raise TypeError(f"router {self.name!r} reads hidden states: pass ProbeFeatures (from a "
                            f"HiddenStateCache), got {type(features).__name__}")
        return features

    def _inputs(self, features: ProbeFeatures, rows: np.ndarray | None = None) -> Any:
        from mmroute.probes.train import ProbeInputs

        ids = list(features.ids) if rows is None else [features.ids[r] for r in rows]
        return ProbeInputs(ids, features.cache)

    def _backbone(self, features: ProbeFeatures) -> Any:
        if self.head != "relope":
            return None
        if features.backbone is not None:
            return features.backbone
        if not self.config.backbone:
            raise ValueError("router 'relope' copies layer l of the backbone: set backbone= (a local path) "
                             "or pass ProbeFeatures with the loaded backbone")
        from mmroute.probes.inputs import load_backbone

        return load_backbone(self.config.backbone)[0]

    def _fit(self, features: Features, correct: np.ndarray, cost: np.ndarray, **_: Any) -> None:
        from mmroute.probes.train import ProbeRouter

        features = self._check_inputs(features)
        if correct.shape[1] != 2:
            raise ValueError(f"router {self.name!r} routes over [small, large]: expected outcomes of 2 models, "
                             f"got {correct.shape[1]} (restrict the pool, e.g. --small M --large M2)")
        keep = np.flatnonzero(~np.isnan(correct[:, 0]))
        if keep.size < 4:
            raise ValueError(f"router {self.name!r}: only {keep.size} training rows have the small model's outcome")
        probe = ProbeRouter(self.config.train_config(self.head))
        probe.fit(self._inputs(features, keep), correct[keep, 0], backbone=self._backbone(features),
                  logger=self.lightning_logger)
        self.probe_ = probe
        self.layer_ = int(features.cache.layer)
        self.position_rows_ = int(features.cache.position_rows)
        self.storage_dtype_ = str(features.cache.meta.get("dtype", "float16"))
        self.d_in_ = int(probe.d_in_)
        self.large_accuracy_ = float(np.nanmean(correct[:, 1]))
        self.cost_ = np.array([np.nanmean(cost[:, 0]), np.nanmean(cost[:, 1])], dtype=np.float64)
        # Thresholds are calibrated on the training rows the head held out for validation: scores of
        # rows it took gradient steps on are more extreme than those of new queries.
        cal = keep[probe.val_rows_]
        cal = cal[~np.isnan(correct[cal, 1])]
        scores = probe.predict_proba(self._inputs(features, cal))
        self.calibration_ = {"scores": scores, "small": correct[cal, 0], "large": correct[cal, 1]}

    def predict_correctness(self, features: Features) -> np.ndarray:
        """P(small model correct), shape (n_instances,)."""
        self.check_fitted()
        return self.probe_.predict_proba(self._inputs(self._check_inputs(features)))

    def _predict(self, features: Features, **_: Any) -> tuple[np.ndarray, np.ndarray]:
        p = self.predict_correctness(features)
        n = p.shape[0]
        perf = np.column_stack([p, np.full(n, self.large_accuracy_)])
        return perf, np.tile(self.cost_, (n, 1))

    def write_onnx(self, x_sample: np.ndarray, path: Any, *, opset: int, exporter: str) -> str:
        from mmroute.routers.base import NotExportableError

        raise NotExportableError(
            f"router {self.name!r} reads raw queries through its backbone: export it with "
            "mmroute.export.probe_pyfunc.log_probe_router_model (backbone up to layer l + ONNX head), "
            "which the pipeline logs for every probe run")

    def threshold(self, *, defer_share: float | None = None, target_accuracy: float | None = None) -> float:
        """Deferral threshold (defer when ``p < threshold``), calibrated on the training rows.

        ``defer_share``: defer that share of queries; ``target_accuracy``: the smallest deferral
        share reaching that hybrid accuracy on the training rows; neither: ``a_L`` (defer when the
        large model is predicted to be better, the trade-off rule at lambda = 0).
        """
        from mmroute.probes.deferral import threshold_for_accuracy, threshold_for_share

        self.check_fitted()
        if defer_share is not None and target_accuracy is not None:
            raise ValueError("give either defer_share or target_accuracy, not both")
        cal = self.calibration_
        if defer_share is not None:
            return threshold_for_share(cal["scores"], defer_share)
        if target_accuracy is not None:
            return threshold_for_accuracy(cal["scores"], cal["small"], cal["large"], target_accuracy)
        return self.large_accuracy_


class MLPProbeRouter(HiddenStateRouter):
    """``probe``: five-layer MLP on the layer-l last-token state."""

    name = "probe"
    head = "probe"


class AttentionProbeRouter(HiddenStateRouter):
    """``attention_probe``: one learned query attends over the layer l-1 token states."""

    name = "attention_probe"
    head = "attention_probe"


class ReLopeRouter(HiddenStateRouter):
    """``relope``: layer ``l`` replayed with LoRA over cached l-1 states, Gaussian bottleneck, probe."""

    name = "relope"
    head = "relope"


HIDDEN_STATE_ROUTERS = ("probe", "attention_probe", "relope")
