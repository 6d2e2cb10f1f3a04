"""The feature container routers receive: arrays, never file paths."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Features"]


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

    fused: np.ndarray
    text: np.ndarray | None = None
    image: np.ndarray | None = None
    image_mask: np.ndarray | None = None

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
    def from_array(cls, x: np.ndarray) -> Features:
        """Features made of one precomputed matrix (used as fused and as the text modality)."""
        x = np.asarray(x, dtype=np.float32)
        return cls(fused=x, text=x)

    def __len__(self) -> int:
        return int(self.fused.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.fused.shape[1])

    def subset(self, rows: np.ndarray) -> Features:
        rows = np.asarray(rows)

        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[rows]

        return Features(fused=self.fused[rows], text=pick(self.text), image=pick(self.image),
                        image_mask=pick(self.image_mask))
