"""Hidden-state extraction as a Lightning predict loop, written to a sharded safetensors cache.

The backbone runs up to layer ``l`` and no further: a forward hook on layer ``l`` raises
:class:`_StopForward` once it has its output. An exception is used rather than truncating the
layer list on a shallow copy because it works unchanged for every architecture (decoder LMs,
the text tower of a VLM, encoders) without knowing how each ``forward`` iterates its layers,
indexes ``layer_types`` or applies a final norm, and later layers (and any head) never run.
Pre-hooks on layer ``l`` and on the rotary embedding capture the layer's input (the layer l-1
states) and the position ids it was given (3-D M-RoPE ids for Qwen2-VL).

Each rank writes its own shards (``shard-r<rank>-<n>.safetensors``); rank 0 then checks that every
instance is present (distributed samplers may repeat a few to even out ranks) and writes
``meta.json`` (see :mod:`mmroute.probes.cache`).
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import nn

from mmroute.data.table import OutcomeTable
from mmroute.probes.arch import LayerStack, find_layer_stack
from mmroute.probes.cache import SHARD_GLOB, HiddenStateCache, finalize_cache
from mmroute.probes.inputs import TableItems

__all__ = ["Captured", "run_to_layer", "ExtractionModule", "ShardWriter", "extract_hidden_states",
           "Collate"]

log = logging.getLogger(__name__)

_STORAGE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


class _StopForward(Exception):
    """Raised by the hook on layer l once its output is captured, so later layers never run."""


@dataclass
class Captured:
    """What one forward up to layer l yields, padded as the batch was.

    states_in : (batch, seq, d) layer l-1 states (input of layer l)
    states_out : (batch, seq, d) layer l states
    position_ids : (P, batch, seq) position ids given to the rotary embedding, or None
    """

    states_in: torch.Tensor
    states_out: torch.Tensor
    position_ids: torch.Tensor | None


@contextmanager
def _hooks(stack: LayerStack, layer: int, got: dict[str, Any]) -> Iterator[None]:
    target = stack.layer(layer)

    def before(module: nn.Module, args: tuple, kwargs: dict) -> None:
        got["in"] = args[0] if args else kwargs["hidden_states"]

    def after(module: nn.Module, args: tuple, output: Any) -> None:
        got["out"] = output[0] if isinstance(output, tuple) else output
        raise _StopForward

    def rotary(module: nn.Module, args: tuple, kwargs: dict) -> None:
        got["pos"] = args[1] if len(args) > 1 else kwargs.get("position_ids")

    handles = [target.register_forward_pre_hook(before, with_kwargs=True),
               target.register_forward_hook(after)]
    if stack.rotary is not None:
        handles.append(stack.rotary.register_forward_pre_hook(rotary, with_kwargs=True))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def run_to_layer(model: nn.Module, layer: int, inputs: dict[str, Any],
                 stack: LayerStack | None = None) -> Captured:
    """Run ``model(**inputs)`` under ``torch.no_grad`` until layer ``layer`` (1-based) has run."""
    stack = stack or find_layer_stack(model)
    got: dict[str, Any] = {}
    with torch.no_grad(), _hooks(stack, layer, got):
        try:
            model(**inputs)
        except _StopForward:
            pass
    if "out" not in got:
        raise RuntimeError(f"{type(model).__name__}: layer {layer} did not run during forward")
    states_in = got["in"]
    batch, seq = states_in.shape[:2]
    pos = got.get("pos")
    if pos is not None:
        pos = pos if pos.ndim == 3 else pos[None]
        pos = pos.expand(pos.shape[0], batch, seq)
    return Captured(states_in, got["out"], pos)


def pack_batch(cap: Captured, mask: torch.Tensor, ids: Sequence[str], dtype: torch.dtype) -> dict[str, Any]:
    """Drop padding and flatten one batch for storage (all tensors moved to CPU).

    Returns ``ids`` (list), ``lengths`` (batch,), ``states`` (sum T, d), ``attention_mask`` (sum T,),
    ``position_ids`` (P, sum T) and ``last`` (batch, d): the layer l state of each last token.
    """
    keep = mask.bool()
    lengths = keep.sum(dim=1)
    if bool((lengths == 0).any()):
        raise ValueError(f"instances with no tokens in batch: {[i for i, n in zip(ids, lengths) if n == 0]}")
    positions = torch.arange(mask.shape[1], device=mask.device)
    last_idx = torch.where(keep, positions, -1).max(dim=1).values
    rows = torch.arange(mask.shape[0], device=mask.device)
    pos = cap.position_ids
    if pos is None:  # absolute-position encoders: positions are informative only
        pos = positions.expand(1, *mask.shape)
    return {
        "ids": list(ids),
        "lengths": lengths.cpu(),
        "states": cap.states_in[keep].to(dtype).cpu(),
        "attention_mask": mask[keep].to(torch.uint8).cpu(),
        "position_ids": pos[:, keep].to(torch.int64).cpu(),
        "last": cap.states_out[rows, last_idx].to(dtype).cpu(),
    }


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
