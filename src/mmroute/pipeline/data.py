"""Data and features for a pipeline run: load, split, apply the modality mode, embed once."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmroute.pipeline.config import PipelineConfig

__all__ = ["Prepared", "load", "prepare", "embed", "data_params", "split_params", "dataset_tag",
           "write_table", "rows_by_id", "restrict_pool"]

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """The loaded table, its split, and (after :func:`embed`) the features of both sides.

    Attributes
    ----------
    table : OutcomeTable, all rows (n, M)
    train, test : OutcomeTable
        The split's rows with the modality mode applied.
    train_idx, test_idx : ndarray of int64
        Row indices of ``train`` and ``test`` in ``table``.
    pipeline : FeaturePipeline or None
        Fitted on ``train`` only.
    train_features, test_features : Features or None
    embed_seconds : float
    probe_train_features, probe_test_features : ProbeFeatures or None
        The small model's hidden states (probe routers only; :mod:`mmroute.pipeline.probe`).
    probe_seconds : float
    """

    table: Any
    train: Any
    test: Any
    train_idx: np.ndarray
    test_idx: np.ndarray
    pipeline: Any = None
    train_features: Any = None
    test_features: Any = None
    embed_seconds: float = float("nan")
    probe_train_features: Any = None
    probe_test_features: Any = None
    probe_seconds: float = float("nan")


def load(data: str, *, images: str = "warn", dataset: str | None = None, image_root: str | None = None,
         allow_outside_images: bool = False) -> Any:
    """:func:`mmroute.data.load_table` (validated) for a path or spec."""
    from mmroute.data import load_table

    return load_table(data, images=images, dataset=dataset, image_root=image_root,
                      allow_outside_images=allow_outside_images)


def prepare(cfg: PipelineConfig, table: Any | None = None) -> Prepared:
    """Load (unless ``table`` is given), split per ``cfg.split`` and apply ``cfg.mode``."""
    from mmroute.data import apply_mode, split_column, split_in, split_out

    if table is None:
        table = load(cfg.data, images=cfg.images, dataset=cfg.dataset, image_root=cfg.image_root,
                     allow_outside_images=cfg.allow_outside_images)
    if cfg.small is not None:
        table = restrict_pool(table, cfg.small, cfg.large)
    if cfg.split == "in":
        frac = int(cfg.train_frac) if cfg.train_frac >= 1 else cfg.train_frac
        train_idx, test_idx = split_in(table, frac, cfg.split_seed)
    elif cfg.split == "out":
        train_idx, test_idx = split_out(table, list(cfg.train_datasets), list(cfg.test_datasets) or None)
    else:
        train_idx, test_idx = split_column(table, cfg.split_column)
    train, test = table.subset(train_idx), table.subset(test_idx)
    if cfg.mode is not None:
        train, test = apply_mode(train, test, cfg.mode)
    log.info("split %s: %d train / %d test rows%s", cfg.split, len(train_idx), len(test_idx),
             "" if cfg.mode is None else f", mode {cfg.mode}")
    return Prepared(table=table, train=train, test=test, train_idx=np.asarray(train_idx),
                    test_idx=np.asarray(test_idx))


def restrict_pool(table: Any, small: str, large: str) -> Any:
    """The pool ``[small, large]`` (in that order), on the rows where both outcomes are known."""
    table = table.select_models([small, large])
    rows = np.flatnonzero(~np.isnan(table.correct).any(axis=1))
    if rows.size < table.n_instances:
        log.info("pool [%s, %s]: %d of %d rows have both outcomes", small, large, rows.size, table.n_instances)
    if rows.size == 0:
        raise ValueError(f"no row of {table.source} has outcomes of both {small!r} and {large!r}")
    return table.subset(rows) if rows.size < table.n_instances else table


def embed(cfg: PipelineConfig, prepared: Prepared) -> Prepared:
    """Fit the feature pipeline on the training rows and transform both sides (in place)."""
    from mmroute.features import build_feature_pipeline

    start = time.perf_counter()
    pipe = build_feature_pipeline(cfg.features, fusion=cfg.fusion, cache_dir=cfg.cache_dir, device=cfg.device)
    pipe.fit(prepared.train)
    prepared.pipeline = pipe
    prepared.train_features = pipe.transform(prepared.train)
    prepared.test_features = pipe.transform(prepared.test)
    prepared.embed_seconds = time.perf_counter() - start
    log.info("embedded %d + %d rows with %s in %.1f s (%d features)", len(prepared.train),
             len(prepared.test), pipe, prepared.embed_seconds, prepared.train_features.n_features)
    return prepared


# ------------------------------------------------------------------ descriptions
def dataset_tag(table: Any) -> str:
    """Dataset names joined by '+' (the ``mmroute.dataset`` tag)."""
    return "+".join(table.dataset_names)


def data_params(cfg_data: str, table: Any, *, images: str, dataset: str | None) -> dict[str, Any]:
    """``data.*`` params: spec, policy, content hash, sizes and model names."""
    return {"data.spec": cfg_data, "data.images": images, "data.dataset": dataset or "",
            "data.hash": table.content_hash(), "data.n_instances": table.n_instances,
            "data.n_models": table.n_models, "data.models": list(table.models),
            "data.datasets": table.dataset_names, "data.n_with_image": int(table.has_images.sum())}


def split_params(cfg: PipelineConfig, prepared: Prepared) -> dict[str, Any]:
    """``split.*`` and ``data.mode`` params."""
    params: dict[str, Any] = {"split.kind": cfg.split, "split.n_train": len(prepared.train_idx),
                              "split.n_test": len(prepared.test_idx), "data.mode": cfg.mode or ""}
    if cfg.split == "in":
        params.update({"split.train_frac": cfg.train_frac, "split.seed": cfg.split_seed})
    elif cfg.split == "out":
        params.update({"split.train_datasets": list(cfg.train_datasets),
                       "split.test_datasets": list(cfg.test_datasets)})
    else:
        params["split.column"] = cfg.split_column
    return params


def rows_by_id(table: Any, ids: list[str]) -> np.ndarray:
    """Row indices of ``ids`` in ``table`` (in the order of ``ids``).

    Raises
    ------
    KeyError
        Naming up to five ids the table lacks.
    """
    where = {str(i): k for k, i in enumerate(table.ids)}
    missing = [i for i in ids if i not in where]
    if missing:
        raise KeyError(f"{len(missing)} instance id(s) not in table {table.source!r}, e.g. {missing[:5]}")
    return np.array([where[i] for i in ids], dtype=np.int64)


def write_table(table: Any, path: str | Path) -> Path:
    """Write ``table`` in the generic pairs layout :func:`mmroute.data.load_table` reads back:
    ``id``, ``dataset``, ``question``, optional ``options`` and ``img_path`` (relative to the output's
    folder when the image is under it, else absolute), then
    ``<model>_correct`` / ``<model>_cost``. ``.parquet`` or ``.csv`` by suffix."""
    import pandas as pd

    out = Path(path)
    cols: dict[str, Any] = {"id": table.ids.astype(str), "dataset": table.datasets.astype(str),
                            "question": table.questions.astype(str)}
    if table.contexts is not None:
        cols["options"] = table.contexts
    outside = 0
    if table.image_paths is not None:
        # Relative where the image sits under the output's folder (the table then loads back as is);
        # absolute elsewhere, which load_table confines: read it back with allow_outside_images.
        folder = out.parent.resolve()
        paths = []
        for p in table.image_paths:
            p = p if isinstance(p, str) else ""
            if p and folder in Path(p).resolve().parents:
                p = Path(p).resolve().relative_to(folder).as_posix()
            elif p:
                outside += 1
            paths.append(p)
        cols["img_path"] = paths
    for j, model in enumerate(table.models):
        cols[f"{model}_correct"] = table.correct[:, j]
        cols[f"{model}_cost"] = table.cost[:, j]
    frame = pd.DataFrame(cols)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() in (".parquet", ".pq"):
        frame.to_parquet(out, index=False)
    elif out.suffix.lower() == ".csv":
        frame.to_csv(out, index=False)
    else:
        raise ValueError(f"cannot write a table to {str(out)!r}: expected a .parquet or .csv suffix")
    log.info("wrote %s (%d rows, %d models)", out, table.n_instances, table.n_models)
    if outside:
        log.info("%s: %d image path(s) outside %s are written absolute; load the table back with "
                 "--allow-outside-images (allow_outside_images=True) or --image-root", out, outside, out.parent)
    return out
