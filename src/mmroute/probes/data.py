"""Training data for the probe heads, read from the hidden-state cache.

Two shapes of batch:

- vectors: ``{"x": (batch, d) float32, "y": (batch,) float32}`` (probe, posthoc_embed);
- tokens: ``{"states": (batch, seq, d) float32, "mask": (batch, seq) int64,
  "position_ids": (P, batch, seq) int64, "y": (batch,)}``, right-padded per batch
  (attention_probe, relope).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from mmroute.probes.cache import HiddenStateCache

__all__ = ["VectorData", "TokenData", "pad_tokens"]


class VectorData(Dataset):
    """Rows of a (n, d) array with labels (n,); labels may be None for prediction."""

    def __init__(self, x: np.ndarray, y: np.ndarray | None = None) -> None:
        self.x = torch.as_tensor(np.asarray(x, dtype=np.float32))
        if self.x.ndim != 2:
            raise ValueError(f"vector inputs must have shape (n, d), got {tuple(self.x.shape)}")
        self.y = None if y is None else torch.as_tensor(np.asarray(y, dtype=np.float32))
        if self.y is not None and self.y.shape != (self.x.shape[0],):
            raise ValueError(f"labels must have shape ({self.x.shape[0]},), got {tuple(self.y.shape)}")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = {"x": self.x[i]}
        if self.y is not None:
            item["y"] = self.y[i]
        return item


class TokenData(Dataset):
    """Cached layer l-1 token states of ``ids``, with labels (or None for prediction).

    ``preload`` reads every instance into memory once (fast epochs; memory = the cache's size for
    these ids); otherwise each item is sliced from the memory-mapped shards on access.
    """

    def __init__(self, cache: HiddenStateCache, ids: Sequence[str], y: np.ndarray | None = None, *,
                 preload: bool = True) -> None:
        self.cache = cache
        self.ids = list(ids)
        self.y = None if y is None else torch.as_tensor(np.asarray(y, dtype=np.float32))
        if self.y is not None and self.y.shape != (len(self.ids),):
            raise ValueError(f"labels must have shape ({len(self.ids)},), got {tuple(self.y.shape)}")
        self._items = [cache.tokens(i) for i in self.ids] if preload else None

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        states, mask, pos = self._items[i] if self._items is not None else self.cache.tokens(self.ids[i])
        item: dict[str, Any] = {"states": states, "mask": mask, "position_ids": pos}
        if self.y is not None:
            item["y"] = self.y[i]
        return item


def pad_tokens(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Collate token items into one right-padded float32 batch (see module docstring)."""
    n = len(items)
    seq = max(int(it["states"].shape[0]) for it in items)
    d = int(items[0]["states"].shape[1])
    p = int(items[0]["position_ids"].shape[0])
    states = torch.zeros(n, seq, d, dtype=torch.float32)
    mask = torch.zeros(n, seq, dtype=torch.int64)
    pos = torch.zeros(p, n, seq, dtype=torch.int64)
    for r, it in enumerate(items):
        t = int(it["states"].shape[0])
        states[r, :t] = it["states"].float()
        mask[r, :t] = it["mask"].long()
        pos[:, r, :t] = it["position_ids"]
    batch = {"states": states, "mask": mask, "position_ids": pos}
    if "y" in items[0]:
        batch["y"] = torch.stack([it["y"] for it in items])
    return batch
