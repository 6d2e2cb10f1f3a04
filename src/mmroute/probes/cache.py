"""The on-disk hidden-state cache: sharded safetensors plus ``meta.json``.

Each shard holds, for the instances listed in its header metadata (``ids``, JSON):

- ``lengths`` (n,) int64: tokens per instance (padding removed);
- ``states`` (sum T, d): layer l-1 token states, concatenated (fp16 by default);
- ``attention_mask`` (sum T,) uint8: 1 per stored token (padding is removed, so all ones; kept so
  a consumer can rebuild the padded batch mask without knowing that convention);
- ``position_ids`` (P, sum T) int64: position ids the layer's rotary embedding received
  (P = 3 for M-RoPE, 1 otherwise; absolute-position encoders store 0..T-1 for reference);
- ``last`` (n, d): layer-l state of each instance's last token.

``meta.json`` records the identity (layer, dtype, table hash, backbone, ...), the shard list and an
index ``id -> [shard, item, token_start, length]``, and is only written once every requested
instance is present, so its existence means the cache is complete.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["HiddenStateCache", "finalize_cache", "IncompleteCacheError", "SHARD_GLOB", "FORMAT"]

log = logging.getLogger(__name__)

SHARD_GLOB = "shard-*.safetensors"
FORMAT = "mmroute.probe-cache/1"


class IncompleteCacheError(RuntimeError):
    """Raised when shards do not cover every requested instance."""


def finalize_cache(out_dir: str | Path, ids: Sequence[str], info: dict[str, Any]) -> dict[str, Any]:
    """Index the shards in ``out_dir``, check that every id in ``ids`` is present, write meta.json.

    Instances written twice (distributed samplers repeat a few to give each rank as many) keep
    their first copy. Raises :class:`IncompleteCacheError` naming the missing ids otherwise.
    """
    from safetensors import safe_open

    out = Path(out_dir)
    shards = sorted(p.name for p in out.glob(SHARD_GLOB))
    index: dict[str, list[int]] = {}
    hidden = position_rows = None
    for s, name in enumerate(shards):
        with safe_open(str(out / name), framework="pt") as f:
            shard_ids = json.loads(f.metadata()["ids"])
            lengths = f.get_tensor("lengths").tolist()
            hidden = f.get_slice("last").get_shape()[1]
            position_rows = f.get_slice("position_ids").get_shape()[0]
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(int).tolist()
        for k, (i, start, n) in enumerate(zip(shard_ids, starts, lengths)):
            index.setdefault(i, [s, k, int(start), int(n)])
    missing = [i for i in ids if i not in index]
    if missing:
        raise IncompleteCacheError(f"hidden-state cache {out} lacks {len(missing)} of {len(ids)} "
                                   f"instances, e.g. {missing[:5]}")
    meta = {"format": FORMAT, **info, "hidden_size": hidden, "position_rows": position_rows,
            "n_instances": len(ids), "ids": list(ids), "shards": shards,
            "index": {i: index[i] for i in ids}}
    (out / "meta.json").write_text(json.dumps(meta))
    log.info("hidden-state cache %s complete: %d instances in %d shards", out, len(ids), len(shards))
    return meta


class HiddenStateCache:
    """Read access to a complete cache directory.

    Attributes
    ----------
    path : Path
    meta : dict, the parsed meta.json
    ids : list of str, the cached instance ids in extraction order
    layer, hidden_size, position_rows : int
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        meta_path = self.path / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{self.path} is not a complete hidden-state cache (no meta.json); "
                                    "run the extraction first")
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("format") != FORMAT:
            raise ValueError(f"{meta_path}: format {self.meta.get('format')!r}, expected {FORMAT!r}")
        self.ids: list[str] = list(self.meta["ids"])
        self._index: dict[str, list[int]] = self.meta["index"]
        self._handles: dict[int, Any] = {}

    # safe_open handles are per process; they reopen lazily after unpickling (DataLoader workers).
    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_handles": {}}

    @property
    def layer(self) -> int:
        return int(self.meta["layer"])

    @property
    def hidden_size(self) -> int:
        return int(self.meta["hidden_size"])

    @property
    def position_rows(self) -> int:
        return int(self.meta["position_rows"])

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, instance_id: object) -> bool:
        return instance_id in self._index

    def matches(self, identity: dict[str, Any], ids: Sequence[str]) -> bool:
        """Whether this cache was built with ``identity`` and holds every id in ``ids``."""
        same = all(self.meta.get(k) == v for k, v in identity.items())
        return same and all(i in self._index for i in ids)

    def _handle(self, shard: int) -> Any:
        from safetensors import safe_open

        if shard not in self._handles:
            self._handles[shard] = safe_open(str(self.path / self.meta["shards"][shard]), framework="pt")
        return self._handles[shard]

    def _where(self, instance_id: str) -> list[int]:
        try:
            return self._index[instance_id]
        except KeyError:
            raise KeyError(f"instance {instance_id!r} is not in the hidden-state cache {self.path}") from None

    def tokens(self, instance_id: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(states (T, d), mask (T,), position_ids (P, T))`` of one instance, as stored."""
        shard, _, start, n = self._where(instance_id)
        f = self._handle(shard)
        return (f.get_slice("states")[start:start + n], f.get_slice("attention_mask")[start:start + n],
                f.get_slice("position_ids")[:, start:start + n])

    def last_states(self, ids: Sequence[str]) -> np.ndarray:
        """Layer-l last-token states, float32 array of shape (len(ids), d)."""
        out = np.empty((len(ids), self.hidden_size), dtype=np.float32)
        by_shard: dict[int, list[tuple[int, int]]] = {}
        for row, i in enumerate(ids):
            shard, item, _, _ = self._where(i)
            by_shard.setdefault(shard, []).append((row, item))
        for shard, pairs in by_shard.items():
            last = self._handle(shard).get_tensor("last").float().numpy()
            rows, items = zip(*pairs)
            out[list(rows)] = last[list(items)]
        return out

    def lengths(self, ids: Sequence[str]) -> np.ndarray:
        """Stored tokens per instance, int array of shape (len(ids),)."""
        return np.array([self._where(i)[3] for i in ids], dtype=np.int64)
