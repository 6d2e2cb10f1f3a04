"""Hidden-state extraction as a Lightning predict loop, written to a sharded safetensors cache.

The backbone runs up to layer ``l`` and no further (:func:`mmroute.probes.forward.run_to_layer`).
Each rank writes its own shards (``shard-r<rank>-<n>.safetensors``); rank 0 then checks that every
instance is present (distributed samplers may repeat a few to even out ranks) and writes
``meta.json`` (see :mod:`mmroute.probes.cache`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import nn

from mmroute.data.table import OutcomeTable
from mmroute.probes.arch import find_layer_stack
from mmroute.probes.cache import SHARD_GLOB, HiddenStateCache, finalize_cache
from mmroute.probes.forward import Captured, pack_batch, run_to_layer
from mmroute.probes.inputs import TableItems

__all__ = ["Captured", "run_to_layer", "ExtractionModule", "ShardWriter", "extract_hidden_states",
           "Collate", "extraction_throughput"]

log = logging.getLogger(__name__)

_STORAGE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


class Collate:
    """DataLoader collate: items -> backbone kwargs plus the list of instance ``ids``."""

    def __init__(self, builder: Any) -> None:
        self.builder = builder

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.builder(items)
        if "attention_mask" not in batch:
            raise ValueError(f"builder {type(self.builder).__name__} returned no attention_mask")
        batch["ids"] = [it["id"] for it in items]
        return batch


class ExtractionModule(L.LightningModule):
    """Predict-only LightningModule: ``predict_step`` runs the frozen backbone up to layer ``l``
    and returns the packed batch (see :func:`pack_batch`) for :class:`ShardWriter`."""

    def __init__(self, model: nn.Module, layer: int, dtype: str = "float16") -> None:
        super().__init__()
        if dtype not in _STORAGE_DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_STORAGE_DTYPES)}, got {dtype!r}")
        self.backbone = model.eval().requires_grad_(False)
        self.stack = find_layer_stack(model)
        self.stack.layer(layer)  # validates the index before any worker starts
        self.layer = layer
        self.storage = _STORAGE_DTYPES[dtype]

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        ids = batch.pop("ids")
        cap = run_to_layer(self.backbone, self.layer, batch, self.stack)
        return pack_batch(cap, batch["attention_mask"], ids, self.storage)


class ShardWriter(BasePredictionWriter):
    """Writes packed batches into safetensors shards of about ``shard_items`` instances per rank."""

    def __init__(self, out_dir: str | Path, shard_items: int = 512) -> None:
        super().__init__(write_interval="batch")
        self.out_dir = Path(out_dir)
        self.shard_items = max(1, int(shard_items))
        self._pending: list[dict[str, Any]] = []
        self._count = 0

    def write_on_batch_end(self, trainer: Any, pl_module: Any, prediction: Any, batch_indices: Any,
                           batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._pending.append(prediction)
        if sum(len(p["ids"]) for p in self._pending) >= self.shard_items:
            self._flush(trainer.global_rank)

    def on_predict_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._flush(trainer.global_rank)
        super().on_predict_epoch_end(trainer, pl_module)

    def _flush(self, rank: int) -> None:
        if not self._pending:
            return
        from safetensors.torch import save_file

        parts, self._pending = self._pending, []
        tensors = {k: torch.cat([p[k] for p in parts], dim=-1 if k == "position_ids" else 0).contiguous()
                   for k in ("lengths", "states", "attention_mask", "position_ids", "last")}
        ids = [i for p in parts for i in p["ids"]]
        path = self.out_dir / f"shard-r{rank:03d}-{self._count:05d}.safetensors"
        save_file(tensors, str(path), metadata={"ids": json.dumps(ids)})
        self._count += 1
        log.debug("wrote %s (%d instances)", path.name, len(ids))


def extract_hidden_states(model: nn.Module, builder: Any, table: OutcomeTable, out_dir: str | Path, *,
                          layer: int, rows: Sequence[int] | None = None, with_images: bool = True,
                          batch_size: int = 8, dtype: str = "float16", accelerator: str = "auto",
                          devices: int | str = 1, strategy: str = "auto", precision: Any = None,
                          num_workers: int = 0, shard_items: int = 512, info: dict[str, Any] | None = None,
                          overwrite: bool = False) -> HiddenStateCache:
    """Extract layer l-1 token states and layer-l last-token states of ``table`` rows into ``out_dir``.

    Parameters
    ----------
    model : the backbone (``transformers`` model), frozen during extraction
    builder : callable items -> model kwargs (:class:`~mmroute.probes.inputs.TokenizerInputs`,
        :class:`~mmroute.probes.inputs.ProcessorInputs` or a custom one); it must be picklable for
        spawn-based strategies
    layer : 1-based layer index ``l``
    rows : table rows to extract (default: all)
    accelerator, devices, strategy, precision : passed to ``lightning.Trainer``; e.g.
        ``devices=2, strategy="ddp_spawn"`` shards the rows across two processes
    info : extra identity fields stored in ``meta.json`` (e.g. the model name or path)

    Returns the opened :class:`~mmroute.probes.cache.HiddenStateCache`. An existing complete cache
    with the same identity is reused unless ``overwrite``.
    """
    import lightning as L
    from torch.utils.data import DataLoader

    out = Path(out_dir)
    items = TableItems(table, rows, with_images=with_images)
    identity = {"layer": layer, "dtype": dtype, "table_hash": table.content_hash(),
                "with_images": bool(with_images), **(info or {})}
    if not overwrite and (out / "meta.json").is_file():
        cache = HiddenStateCache(out)
        if cache.matches(identity, items.ids):
            log.info("reusing complete hidden-state cache %s", out)
            return cache
    out.mkdir(parents=True, exist_ok=True)
    for stale in [*out.glob(SHARD_GLOB), out / "meta.json"]:
        stale.unlink(missing_ok=True)
    module = ExtractionModule(model, layer, dtype)
    loader = DataLoader(items, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=Collate(builder))
    trainer_kwargs: dict[str, Any] = {}
    if precision is not None:
        trainer_kwargs["precision"] = precision
    trainer = L.Trainer(accelerator=accelerator, devices=devices, strategy=strategy, logger=False,
                        callbacks=[ShardWriter(out, shard_items)], enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, **trainer_kwargs)
    trainer.predict(module, dataloaders=loader, return_predictions=False)
    if trainer.world_size > 1 and not _spawned(trainer):
        trainer.strategy.barrier("mmroute-probe-cache")
    if trainer.is_global_zero:
        stack = module.stack
        finalize_cache(out, items.ids, {
            **identity, "n_layers": stack.n_layers, "layer_path": stack.path, "causal": stack.causal,
            "rotary": stack.rotary is not None, "backbone_class": type(model).__name__,
            "world_size": trainer.world_size})
    if trainer.world_size > 1 and not _spawned(trainer):
        trainer.strategy.barrier("mmroute-probe-cache-done")
    return HiddenStateCache(out)


def _spawned(trainer: Any) -> bool:
    # After a spawn/fork-based run only the launching process continues, without a process group.
    return getattr(trainer.strategy, "_start_method", "popen") != "popen"


def extraction_throughput(model: nn.Module, builder: Any, table: OutcomeTable, *, layer: int,
                          batch_size: int = 8, dtype: str = "float16", accelerator: str = "auto",
                          devices: int | str = 1, precision: Any = None, warmup_rows: int | None = None,
                          work_dir: str | Path | None = None) -> dict[str, Any]:
    """Extraction speed: rows per second of :func:`extract_hidden_states` over ``table``'s rows.

    One warm-up pass over the first ``warmup_rows`` rows (default: one batch; kernels, allocator,
    lazy imports) is not timed; the timed pass extracts every row into a fresh cache (written under
    ``work_dir``, default a temporary directory, removed afterwards). ``precision`` (e.g.
    ``"bf16-mixed"``) and ``dtype`` (cache storage) are the GPU options; the model's own dtype is
    whatever it was loaded with (``load_backbone(..., dtype="bfloat16")``).

    Returns ``{"rows", "seconds", "rows_per_s", "batch_size", "tokens", "tokens_per_s", "layer",
    "accelerator", "precision", "device"}``.
    """
    import shutil
    import tempfile
    import time

    root = Path(tempfile.mkdtemp(prefix="mmroute-extract-", dir=work_dir))
    try:
        n_warm = min(table.n_instances, warmup_rows if warmup_rows is not None else batch_size)
        kwargs = dict(layer=layer, batch_size=batch_size, dtype=dtype, accelerator=accelerator, devices=devices,
                      precision=precision, overwrite=True)
        if n_warm:
            extract_hidden_states(model, builder, table, root / "warmup", rows=list(range(n_warm)), **kwargs)
        start = time.perf_counter()
        cache = extract_hidden_states(model, builder, table, root / "timed", **kwargs)
        seconds = time.perf_counter() - start
        tokens = int(cache.lengths(cache.ids).sum())
    finally:
        shutil.rmtree(root, ignore_errors=True)
    device = next(model.parameters()).device
    return {"rows": table.n_instances, "seconds": round(seconds, 3),
            "rows_per_s": round(table.n_instances / seconds, 2), "batch_size": batch_size, "tokens": tokens,
            "tokens_per_s": round(tokens / seconds, 1), "layer": layer, "accelerator": accelerator,
            "precision": precision, "device": str(device), "model_dtype": str(next(model.parameters()).dtype)}
