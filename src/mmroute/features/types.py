"""The feature container routers receive: arrays, never file paths."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from mmroute.arrays import ArrayLike, BoolArray, Float32Array

__all__ = ["Features"]

A = TypeVar("A", Float32Array, BoolArray)


@dataclass(frozen=True, eq=False)
class Features:
    """Row-aligned features for a set of instances.

    Attributes
    ----------
    fused : ndarray of float32, shape (n_instances, n_features)
        The fused query representation most routers consume.
    text : ndarray of float32, shape (n_instances, d_text), or None
        Per-modality text embedding (for routers with their own fusion: cmr, fusion_mf).
    image : ndarray of float32, shape (n_instances, d_image), or None
        Per-modality image embedding; rows of instances without an image are zeros.
    image_mask : ndarray of bool, shape (n_instances,), or None
        Which rows really have an image.
    """

    fused: Float32Array
    text: Float32Array | None = None
    image: Float32Array | None = None
    image_mask: BoolArray | None = None

    def __post_init__(self) -> None:
        fused = np.asarray(self.fused, dtype=np.float32)
        if fused.ndim != 2:
            raise ValueError(f"fused features must be 2-D (n_instances, n_features), got {fused.shape}")
        object.__setattr__(self, "fused", fused)
        n = fused.shape[0]
        for name in ("text", "image"):
            arr = getattr(self, name)
            if arr is not None:
                arr = np.asarray(arr, dtype=np.float32)
                if arr.ndim != 2 or arr.shape[0] != n:
                    raise ValueError(f"{name} features must have shape ({n}, d), got {arr.shape}")
                object.__setattr__(self, name, arr)
        if self.image_mask is not None:
            mask = np.asarray(self.image_mask, dtype=bool)
            if mask.shape != (n,):
                raise ValueError(f"image_mask must have shape ({n},), got {mask.shape}")
            object.__setattr__(self, "image_mask", mask)

    @classmethod
    def from_array(cls, x: ArrayLike) -> Features:
        """Features made of one precomputed matrix (used as fused and as the text modality)."""
        arr = np.asarray(x, dtype=np.float32)
        return cls(fused=arr, text=arr)

    def __len__(self) -> int:
        return int(self.fused.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.fused.shape[1])

    def subset(self, rows: ArrayLike) -> Features:
        """The rows ``rows`` (integer indices or a boolean mask) of every array."""
        idx = np.asarray(rows)

        def pick(a: A | None) -> A | None:
            return None if a is None else a[idx]

        return Features(fused=self.fused[idx], text=pick(self.text), image=pick(self.image),
                        image_mask=pick(self.image_mask))
