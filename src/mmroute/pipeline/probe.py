"""The tracked probe experiment behind ``mmroute probe train``: extract, fit heads, evaluate, export.

One MLflow parent run (``probe``) per call, one nested run per head. Each head run records its
params (``probe.*``, ``data.*``, ``backbone.*``), per-epoch curves (``train_loss``, ``val_auroc``,
... through Lightning's MLFlowLogger bound to the run), final metrics (``auroc``, ``hybrid/area``,
``hybrid/acc_at_<h>``, ``lodo/<dataset>/auroc``, ``robust/delta_auc``, ``onnx/max_abs_diff``) and
PNG plots (``plots/hybrid.png``, ``plots/roc.png``); the parent gets ``<head>/auroc`` and
``<head>/hybrid_area`` for comparison, the joint plots and ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmroute.data.table import OutcomeTable
from mmroute.probes.evaluation import (
    auroc,
    delta_auc,
    hybrid_curve,
    leave_one_dataset_out,
    parse_perturbations,
    perturb_table,
    plot_hybrid,
    plot_roc,
    reference_curves,
)
from mmroute.probes.train import HEADS, ProbeInputs, ProbeRouter, ProbeTrainConfig

__all__ = ["ProbeExperiment", "run_probe_experiment", "select_rows"]

log = logging.getLogger(__name__)

READOUT_RATIOS = (0.1, 0.25, 0.5)


@dataclass
class ProbeExperiment:
    """Everything one probe experiment needs (the CLI and MLproject map onto these fields)."""

    table: str
    small: str
    large: str
    cache: str
    model: str | None = None
    layer: int | None = None
    heads: tuple[str, ...] = ("probe", "attention_probe", "relope")
    split: str = "in"
    train_frac: float = 0.8
    seed: int = 0
    sample: int | None = None
    images: str = "warn"
    with_images: bool = True
    token_cap: int | None = None
    extract_batch_size: int = 8
    accelerator: str = "auto"
    devices: int | str = 1
    strategy: str = "auto"
    dtype: str | None = None
    perturb: str | None = None
    posthoc: str | None = None
    onnx_dir: str | None = None
    out: str | None = None
    experiment: str | None = None
    tracking: bool = True
    train: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = [f"unknown head {h!r}" for h in self.heads if h not in HEADS]
        if self.split not in ("in", "lodo"):
            problems.append(f"split must be 'in' or 'lodo', got {self.split!r}")
        if not 0.0 < self.train_frac < 1.0:
            problems.append(f"train_frac must be in (0, 1), got {self.train_frac}")
        known = {f.name for f in dataclasses.fields(ProbeTrainConfig)} - {"head"}
        unknown = sorted(set(self.train) - known)
        if unknown:
            problems.append(f"unknown probe training option(s) {unknown} (valid: {sorted(known)})")
        if "posthoc_embed" in self.heads and not self.posthoc:
            problems.append("head 'posthoc_embed' needs posthoc (a .npy of output embeddings, row-aligned)")
        if problems:
            raise ValueError("invalid probe experiment: " + "; ".join(problems) + f"; heads: {sorted(HEADS)}")


def select_rows(table: OutcomeTable, small: str, large: str, sample: int | None, seed: int) -> np.ndarray:
    """Rows with both outcomes present, optionally a seeded sample of ``sample`` of them (sorted)."""
    for name in (small, large):
        if name not in table.models:
            raise KeyError(f"model {name!r} is not in the table; it has {list(table.models)}")
    correct = table.correct[:, [table.models.index(small), table.models.index(large)]]
    rows = np.flatnonzero(~np.isnan(correct).any(axis=1))
    if sample is not None and sample < rows.size:
        rows = np.sort(np.random.default_rng(seed).choice(rows, size=sample, replace=False))
    return rows


def _train_config(head: str, cfg: ProbeExperiment) -> ProbeTrainConfig:
    return ProbeTrainConfig(**{"seed": cfg.seed, "accelerator": cfg.accelerator, **cfg.train, "head": head})


def _extract(cfg: ProbeExperiment, table: OutcomeTable, cache_dir: str | Path, backbone: Any, builder: Any) -> Any:
    from mmroute.probes.extract import extract_hidden_states

    if cfg.layer is None:
        raise ValueError("layer is required to extract hidden states")
    return extract_hidden_states(backbone, builder, table, cache_dir, layer=cfg.layer,
                                 with_images=cfg.with_images, batch_size=cfg.extract_batch_size,
                                 accelerator=cfg.accelerator, devices=cfg.devices, strategy=cfg.strategy,
                                 info={"model": cfg.model or type(backbone).__name__,
                                       "token_cap": cfg.token_cap})


def _log_head_run(name: str, metrics: dict[str, float], figs: dict[str, Any], params: dict[str, Any]) -> None:
    import mlflow

    from mmroute.tracking import finite_metrics, log_params

    log_params(params)
    mlflow.log_metrics(finite_metrics(metrics))
    for fname, fig in figs.items():
        mlflow.log_figure(fig, f"plots/{fname}.png")


def run_probe_experiment(cfg: ProbeExperiment, *, table: OutcomeTable | None = None, backbone: Any = None,
                         builder: Any = None) -> dict[str, Any]:
    """Run the experiment; returns a JSON-friendly summary (also written to ``cfg.out``/summary.json).

    ``table``, ``backbone`` and ``builder`` may be passed in (tests, notebooks); otherwise they are
    loaded from ``cfg.table`` and ``cfg.model``.
    """
    from mmroute.probes.cache import HiddenStateCache

    if table is None:
        from mmroute.data import load_table

        table = load_table(cfg.table, images=cfg.images)
    n_rows = table.n_instances
    rows = select_rows(table, cfg.small, cfg.large, cfg.sample, cfg.seed)
    table = table.subset(rows)
    needs_backbone = (not (Path(cfg.cache) / "meta.json").is_file() or "relope" in cfg.heads or bool(cfg.perturb))
    if needs_backbone and backbone is None:
        if not cfg.model:
            raise ValueError("model (backbone name or path) is required to extract states or train relope")
        from mmroute.probes.inputs import load_backbone

        backbone, builder = load_backbone(cfg.model, token_cap=cfg.token_cap, dtype=cfg.dtype)
    cache = (_extract(cfg, table, cfg.cache, backbone, builder) if backbone is not None and builder is not None
             else HiddenStateCache(cfg.cache))
    missing = [i for i in table.ids if i not in cache]
    if missing:
        raise ValueError(f"cache {cfg.cache} lacks {len(missing)} of the {table.n_instances} selected instances "
                         f"(e.g. {missing[:3]}); extract them first (same table, sample and seed)")
    ids = [str(i) for i in table.ids]
    small = table.correct[:, table.models.index(cfg.small)]
    large = table.correct[:, table.models.index(cfg.large)]
    posthoc = None
    if cfg.posthoc:
        full = np.load(cfg.posthoc)
        if full.ndim != 2 or full.shape[0] != n_rows:
            raise ValueError(f"{cfg.posthoc}: expected output embeddings of shape ({n_rows}, d), row-aligned "
                             f"with the table, got {full.shape}")
        posthoc = full[rows]
    inputs = ProbeInputs(ids, cache, posthoc)
    if cfg.split == "in":
        from mmroute.data import split_in

        train_idx, test_idx = split_in(table, cfg.train_frac, cfg.seed)
        splits = [("in", np.asarray(train_idx), np.asarray(test_idx))]
    else:
        splits = leave_one_dataset_out(table.datasets)
    perturbations = parse_perturbations(cfg.perturb) if cfg.perturb else []

    summary: dict[str, Any] = {"n_instances": table.n_instances, "small": cfg.small, "large": cfg.large,
                               "layer": cache.layer, "split": cfg.split,
                               "small_accuracy": float(small.mean()), "large_accuracy": float(large.mean()),
                               "heads": {}}
    out_dir = Path(cfg.out) if cfg.out else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        parent = None
        if cfg.tracking:
            import mlflow

            from mmroute.tracking import run_tags, setup_tracking, start_run

            setup_tracking(cfg.experiment)
            parent = stack.enter_context(start_run(run_name="probe"))
            mlflow.set_tags(run_tags(step="probe", extra={"mmroute.probe.small": cfg.small}))
            from mmroute.tracking import log_params

            log_params({"data": {"spec": cfg.table, "hash": table.content_hash(), "n": table.n_instances},
                        "backbone": {"model": cfg.model or cache.meta.get("model"), "layer": cache.layer,
                                     "token_cap": cfg.token_cap},
                        "split": {"kind": cfg.split, "train_frac": cfg.train_frac, "seed": cfg.seed},
                        "probe": {"small": cfg.small, "large": cfg.large, "heads": list(cfg.heads)}})
        all_scores: dict[str, np.ndarray] = {}
        curves: dict[str, Any] = {}
        eval_rows = np.concatenate([s[2] for s in splits])
        for head in cfg.heads:
            tc = _train_config(head, cfg)
            head_ctx = nullcontext()
            logger = None
            if parent is not None:
                import mlflow

                from mmroute.tracking import run_logger, start_run

                head_ctx = start_run(run_name=head, nested=True)
            with head_ctx as run:
                if run is not None:
                    logger = run_logger(run.info.run_id)
                scores = np.full(table.n_instances, np.nan)
                metrics: dict[str, float] = {}
                fitted = None
                fit_seconds = 0.0
                for name, tr, te in splits:
                    start = time.perf_counter()
                    router = ProbeRouter(tc).fit(inputs.subset(tr), small[tr], backbone=backbone, logger=logger)
                    fit_seconds += time.perf_counter() - start
                    scores[te] = router.predict_proba(inputs.subset(te))
                    if cfg.split == "lodo":
                        metrics[f"lodo/{name}/auroc"] = auroc(small[te], scores[te])
                    fitted = router
                s, y, yl = scores[eval_rows], small[eval_rows], large[eval_rows]
                curve = hybrid_curve(s, y, yl)
                metrics.update({"auroc": auroc(y, s), "hybrid/area": curve.area, "fit_seconds": fit_seconds,
                                **{f"hybrid/acc_at_{h:g}": curve.at(h) for h in READOUT_RATIOS}})
                if cfg.split == "lodo":
                    metrics["lodo/mean_auroc"] = float(np.nanmean([v for k, v in metrics.items()
                                                                   if k.startswith("lodo/")]))
                if perturbations and cfg.split == "in":
                    metrics.update(_robustness(cfg, table, splits[0][2], fitted, inputs, small, backbone, builder,
                                               metrics["auroc"]))
                if cfg.onnx_dir and cfg.split == "in":
                    metrics["onnx/max_abs_diff"] = _export(cfg, head, fitted, cache, run is not None)
                all_scores[head], curves[head] = s, curve
                refs = reference_curves(y, yl)
                figs = {"hybrid": plot_hybrid({head: curve}, references=refs, small_name=cfg.small,
                                              large_name=cfg.large),
                        "roc": plot_roc({head: s}, y)}
                if run is not None:
                    _log_head_run(head, metrics, figs, {"probe": tc.to_dict(), "probe.head": head})
                summary["heads"][head] = {**{k: round(v, 6) for k, v in metrics.items()},
                                          "epochs": fitted.epochs_, "best_epoch": fitted.best_epoch_,
                                          "hybrid_curve": [round(float(a), 5) for a in curve.accuracy[::10]]}
        refs = reference_curves(small[eval_rows], large[eval_rows])
        summary["references"] = {k: round(v.area, 6) for k, v in refs.items()}
        fig = plot_hybrid(curves, references=refs, small_name=cfg.small, large_name=cfg.large)
        roc = plot_roc(all_scores, small[eval_rows])
        if parent is not None:
            import mlflow

            mlflow.log_metrics({f"{h}/auroc": v["auroc"] for h, v in summary["heads"].items()
                                if np.isfinite(v["auroc"])})
            mlflow.log_metrics({f"{h}/hybrid_area": v["hybrid/area"] for h, v in summary["heads"].items()})
            mlflow.log_figure(fig, "plots/hybrid.png")
            mlflow.log_figure(roc, "plots/roc.png")
            mlflow.log_dict(summary, "summary.json")
            summary["run_id"] = parent.info.run_id
        if out_dir:
            fig.savefig(out_dir / "hybrid.png", dpi=120)
            roc.savefig(out_dir / "roc.png", dpi=120)
            (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _robustness(cfg: ProbeExperiment, table: OutcomeTable, test_rows: np.ndarray, router: ProbeRouter,
                inputs: ProbeInputs, small: np.ndarray, backbone: Any, builder: Any,
                clean: float) -> dict[str, float]:
    """Re-extract the test rows with perturbed images and score them with the fitted head."""
    test = table.subset(test_rows)
    if not test.has_images.any():
        log.warning("no test instance has an image; skipping the perturbation robustness check")
        return {}
    root = Path(cfg.cache) / "perturbed"
    out, aucs = {}, []
    for kind, strength in parse_perturbations(cfg.perturb or ""):
        tag = f"{kind}-{strength:g}"
        perturbed = perturb_table(test, kind, strength, root / "images", seed=cfg.seed)
        cache = _extract(cfg, perturbed, root / tag, backbone, builder)
        pin = ProbeInputs([str(i) for i in test.ids], cache,
                          None if inputs.embeddings is None else inputs.embeddings[test_rows])
        value = auroc(small[test_rows], router.predict_proba(pin))
        out[f"robust/{tag}/auroc"] = value
        aucs.append(value)
    out["robust/delta_auc"] = delta_auc(clean, aucs)
    return out


def _export(cfg: ProbeExperiment, head: str, router: ProbeRouter, cache: Any, tracked: bool) -> float:
    from mmroute.probes.export import export_probe, onnx_inputs_for

    d = router.d_in_
    example = onnx_inputs_for(head, d, position_rows=cache.position_rows, seed=cfg.seed)
    info = export_probe(head, router.net_, Path(cfg.onnx_dir) / f"{head}.onnx", example)
    if tracked:
        import mlflow

        mlflow.log_artifact(info["path"], artifact_path="onnx")
    return info["max_abs_diff"]


def experiment_from_dict(values: dict[str, Any]) -> ProbeExperiment:
    """Build a :class:`ProbeExperiment`, naming unknown keys."""
    known = {f.name for f in dataclasses.fields(ProbeExperiment)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown probe experiment fields {unknown}; valid: {sorted(known)}")
    return ProbeExperiment(**values)


# ------------------------------------------------------------------ probe routers in a sweep
def probe_cache_root(cfg: Any) -> Path:
    """Where a pipeline's hidden states go: ``cfg.probe_cache`` or a folder of the cache root named
    by the backbone identity (path, layer, token cap, dtype), so that runs on one backbone share it."""
    import hashlib

    if cfg.probe_cache:
        return Path(cfg.probe_cache)
    from mmroute._paths import default_cache_dir

    identity = json.dumps([str(Path(cfg.probe_backbone).resolve()) if Path(cfg.probe_backbone).exists()
                           else cfg.probe_backbone, cfg.probe_layer, cfg.probe_token_cap, cfg.probe_dtype])
    root = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    return root / "probe-states" / hashlib.sha256(identity.encode()).hexdigest()[:16]


def hidden_state_features(cfg: Any, prepared: Any, *, backbone: Any = None, builder: Any = None) -> Any:
    """Extract the small model's hidden states of the train and test rows (cached) and set
    ``prepared.probe_train_features`` / ``probe_test_features`` (:class:`ProbeFeatures`).

    The backbone (``cfg.probe_backbone``, a local path) runs up to layer ``cfg.probe_layer``;
    ``backbone``/``builder`` may be passed in (tests, notebooks) instead of loading it.
    """
    from mmroute.probes.extract import extract_hidden_states
    from mmroute.routers.probe import ProbeFeatures

    start = time.perf_counter()
    if backbone is None:
        from mmroute.probes.inputs import load_backbone

        backbone, builder = load_backbone(cfg.probe_backbone, token_cap=cfg.probe_token_cap, dtype=cfg.probe_dtype)
    root = probe_cache_root(cfg)
    info = {"model": cfg.probe_backbone, "token_cap": cfg.probe_token_cap}
    feats = {}
    for side, table in (("train", prepared.train), ("test", prepared.test)):
        cache = extract_hidden_states(backbone, builder, table, root / side, layer=cfg.probe_layer,
                                      batch_size=cfg.probe_batch_size, accelerator=_accelerator(cfg),
                                      info=info)
        feats[side] = ProbeFeatures.from_cache(cache, table.ids, backbone=backbone)
    prepared.probe_train_features, prepared.probe_test_features = feats["train"], feats["test"]
    prepared.probe_seconds = time.perf_counter() - start
    log.info("hidden states of %d + %d rows (layer %d of %s) in %.1f s, cached under %s", len(prepared.train),
             len(prepared.test), cfg.probe_layer, cfg.probe_backbone, prepared.probe_seconds, root)
    return prepared


def _accelerator(cfg: Any) -> str:
    return "cpu" if cfg.device == "cpu" else "auto"


def billed_table(table: OutcomeTable, cfg: Any) -> OutcomeTable:
    """``table`` (pool ``[small, large]``) with the probe routers' billed costs
    (:func:`mmroute.probes.costs.deferral_costs`: a deferred query also pays the small model's prefill)."""
    from mmroute.probes.costs import deferral_costs

    return dataclasses.replace(table, cost=deferral_costs(table, cfg.small, cfg.large, cfg.probe_prefill))


def deferral_metrics(perf: np.ndarray, correct: np.ndarray) -> dict[str, float]:
    """AUROC and hybrid-curve area of any router on a two-model pool ``[small, large]``.

    The deferral score is ``perf[:, 0] - perf[:, 1]`` (how much better the small model is predicted
    to be; for probe routers the predicted correctness up to a constant), so query-only routers
    and probe routers are ranked on one scale. ``deferral/auroc`` is the AUROC of ``perf[:, 0]``
    against the small model's outcome. Missing outcomes: rows dropped.
    """
    keep = ~np.isnan(correct).any(axis=1)
    score = perf[keep, 0] - perf[keep, 1]
    curve = hybrid_curve(score, correct[keep, 0], correct[keep, 1])
    refs = reference_curves(correct[keep, 0], correct[keep, 1])
    return {"deferral/auroc": auroc(correct[keep, 0], perf[keep, 0]), "deferral/hybrid_area": curve.area,
            "deferral/random_area": refs["random"].area, "deferral/oracle_area": refs["oracle"].area,
            **{f"deferral/acc_at_{h:g}": curve.at(h) for h in READOUT_RATIOS}}


def log_probe_model(router: Any, cfg: Any, prepared: Any, test_table: OutcomeTable) -> Any:
    """Log the served probe model (logged model ``router``, raw queries in) and the gate's
    evaluation table of the test rows (``eval/eval_table.npz``: raw texts and images, outcomes and
    billed costs) into the active run, so that the registry can register and gate it."""
    import tempfile

    import mlflow

    from mmroute.export.probe_pyfunc import log_probe_router_model
    from mmroute.registry.evaltable import save_eval_table
    from mmroute.tracking.record import EVAL_TABLE

    info = log_probe_router_model(router, test_table.models, backbone=cfg.probe_backbone,
                                  serve_backbone=cfg.probe_serve_backbone, token_cap=cfg.probe_token_cap,
                                  storage_dtype=router.storage_dtype_)
    with tempfile.TemporaryDirectory() as tmp:
        # Raw rows only: the gate scores every version with its own served model on them.
        path = save_eval_table(Path(tmp) / Path(EVAL_TABLE).name, None, test_table, raw=True)
        mlflow.log_artifact(str(path), artifact_path=str(Path(EVAL_TABLE).parent))
    mlflow.set_tags({"mmroute.export.backend": "probe head (torch.onnx dynamo) + backbone (transformers)",
                     "mmroute.flavour": "probe"})
    return info
