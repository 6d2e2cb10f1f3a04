"""User-supplied embeddings: a row-aligned ``.npy`` file, or a table column holding vectors.

``precomputed:PATH.npy`` is row-aligned with the file the table was loaded from. Rows are picked
by ``table.extra["row"]`` (the loader's original row number, carried through ``subset``) when
present, else the table must have exactly as many rows as the array. ``column:NAME`` reads
``table.extra[NAME]``: a 2-D array, or one vector (sequence or JSON list string) per row.
Both supply the text modality (the query embedding); they are not cached, being arrays already.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmroute.features.encoders import RowEncoder, register_encoder

if TYPE_CHECKING:
    from mmroute.data.table import OutcomeTable

__all__ = ["PrecomputedEncoder", "ColumnEncoder"]

logger = logging.getLogger(__name__)


@register_encoder
class PrecomputedEncoder(RowEncoder):
    """Rows of a saved ``(n_rows, d)`` array, picked per table row."""

    name = "precomputed"

    def __init__(self, path: str) -> None:
        if not path:
            raise ValueError("precomputed encoder needs a path, e.g. 'precomputed:embeddings.npy'")
        self.path = str(path)

    @classmethod
    def from_spec(cls, arg: str, spec: str, *, device: str | None = None, **options: Any) -> PrecomputedEncoder:
        return cls(arg, **options)

    @property
    def identity(self) -> str:
        p = Path(self.path)
        if p.is_file():
            st = p.stat()
            return f"precomputed({p.resolve()}|{st.st_size}|{st.st_mtime_ns})"
        return f"precomputed({self.path})"

    def _array(self) -> np.ndarray:
        if not Path(self.path).is_file():
            raise FileNotFoundError(f"precomputed embeddings file {self.path!r} does not exist")
        try:
            arr = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except ValueError as exc:
            raise ValueError(f"cannot read {self.path!r} as a .npy array: {exc}") from exc
        if arr.ndim != 2:
            raise ValueError(f"precomputed embeddings {self.path!r} must be 2-D (n_rows, d), got shape {arr.shape}")
        return arr

    def encode_rows(self, table: OutcomeTable) -> np.ndarray:
        """Table -> (n_instances, d) float32 picked by ``extra["row"]`` or in table order."""
        arr = self._array()
        rows = table.extra.get("row")
        if rows is None:
            if arr.shape[0] != table.n_instances:
                raise ValueError(
                    f"precomputed embeddings {self.path!r} have shape {arr.shape} but the table "
                    f"({table.source}) has shape ({table.n_instances}, ...) and no extra['row'] column to "
                    "pick rows by; supply an array with one row per table row")
            return np.asarray(arr, dtype=np.float32)
        rows = np.asarray(rows)
        if not np.issubdtype(rows.dtype, np.integer):
            raise ValueError(f"table.extra['row'] must hold integer row numbers, got dtype {rows.dtype}")
        if rows.size and (rows.min() < 0 or rows.max() >= arr.shape[0]):
            raise ValueError(
                f"precomputed embeddings {self.path!r} have shape {arr.shape} but the table "
                f"({table.source}, shape ({table.n_instances}, ...)) asks for rows "
                f"{int(rows.min())}..{int(rows.max())} via extra['row']")
        return np.asarray(arr[rows], dtype=np.float32)


@register_encoder
class ColumnEncoder(RowEncoder):
    """Vectors stored in ``table.extra[column]``."""

    name = "column"

    def __init__(self, column: str) -> None:
        if not column:
            raise ValueError("column encoder needs a column name, e.g. 'column:embedding'")
        self.column = column

    @classmethod
    def from_spec(cls, arg: str, spec: str, *, device: str | None = None, **options: Any) -> ColumnEncoder:
        return cls(arg, **options)

    @property
    def identity(self) -> str:
        return f"column({self.column})"

    def encode_rows(self, table: OutcomeTable) -> np.ndarray:
        """Table -> (n_instances, d) float32 from the column's vectors."""
        if self.column not in table.extra:
            raise KeyError(f"table ({table.source}) has no column {self.column!r} in extra; "
                           f"available: {sorted(table.extra)}")
        values = table.extra[self.column]
        arr = np.asarray(values)
        if arr.ndim == 2 and arr.dtype != object:
            return arr.astype(np.float32)
        vectors: list[np.ndarray] = []
        for i, v in enumerate(values):
            if isinstance(v, str):
                try:
                    v = json.loads(v)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"column {self.column!r} row {i}: cannot parse {v[:40]!r} as a "
                                     "JSON list of numbers") from exc
            vec = np.asarray(v, dtype=np.float32).ravel()
            if vectors and vec.shape != vectors[0].shape:
                raise ValueError(f"column {self.column!r} row {i} has {vec.size} values, expected "
                                 f"{vectors[0].size} like row 0")
            vectors.append(vec)
        if not vectors:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack(vectors)
