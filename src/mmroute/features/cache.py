"""On-disk embedding cache: one ``.npy`` array plus a small JSON sidecar per entry.

An entry is keyed by the encoder's ``identity`` (name, weights, the parameters that change the
output, and for fitted encoders a hash of the fit data), the modality and a hash of the inputs
(texts, or image paths with their file size and modification time). A second run with the same
encoder and data therefore loads the array instead of encoding again. Writes go to a temporary
file first and are renamed into place, so concurrent runs never read a half-written entry; the
sidecar carries the array's SHA-256, so a damaged entry is recomputed instead of trusted.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmroute._paths import default_cache_dir

__all__ = ["EmbeddingCache", "default_cache_dir", "hash_texts", "hash_image_inputs", "hash_strings"]

logger = logging.getLogger(__name__)

_SEP = "\x1f"


def hash_strings(values: Sequence[str]) -> str:
    """SHA-256 (hex, 24 chars) of a sequence of strings; order matters."""
    h = hashlib.sha256()
    h.update(str(len(values)).encode())
    for v in values:
        h.update(_SEP.encode())
        h.update(str(v).encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:24]


def hash_texts(texts: Sequence[str]) -> str:
    return hash_strings(list(texts))


def hash_image_inputs(paths: Sequence[str | None]) -> str:
    """Hash of image paths plus each file's size and mtime, so an edited image invalidates the entry.

    A missing file hashes as ``missing``: if it appears later, the entry is recomputed.
    """
    parts = []
    for p in paths:
        if not p:
            parts.append("")
            continue
        try:
            st = os.stat(p)
            parts.append(f"{p}|{st.st_size}|{st.st_mtime_ns}")
        except OSError:
            parts.append(f"{p}|missing")
    return hash_strings(parts)


class EmbeddingCache:
    """A directory of cached embedding arrays.

    Parameters
    ----------
    directory : path-like or None
        Where entries live; None means :func:`default_cache_dir` at the time of the call,
        under an ``embeddings`` sub-folder so other caches can share the root.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        root = Path(directory) if directory is not None else default_cache_dir()
        self.directory = root / "embeddings"

    @staticmethod
    def key(identity: str, modality: str, input_hash: str) -> str:
        return hash_strings([identity, modality, input_hash])

    def _paths(self, key: str) -> tuple[Path, Path]:
        return self.directory / f"{key}.npy", self.directory / f"{key}.json"

    def load(self, key: str, n_rows: int) -> np.ndarray | None:
        """The cached array for ``key``, or None on a miss (or an unreadable / mismatched entry)."""
        npy, meta = self._paths(key)
        if not (npy.is_file() and meta.is_file()):
            return None
        try:
            info = json.loads(meta.read_text())
            data = npy.read_bytes()
        except (OSError, ValueError) as exc:
            logger.warning("ignoring unreadable cache entry %s: %s", meta, exc)
            return None
        # The sidecar's checksum catches a truncated or overwritten array that still parses.
        expected = info.get("sha256") if isinstance(info, dict) else None
        if expected != hashlib.sha256(data).hexdigest():
            logger.warning("ignoring damaged cache entry %s (checksum %s, expected %s); recomputing it",
                           npy, "mismatch" if expected else "missing", expected or "one in the sidecar")
            return None
        try:
            arr = np.load(io.BytesIO(data), allow_pickle=False)
        except (OSError, ValueError) as exc:
            logger.warning("ignoring unreadable cache entry %s: %s", npy, exc)
            return None
        if arr.ndim != 2 or arr.shape[0] != n_rows:
            logger.warning("ignoring cache entry %s of shape %s, expected %d rows", npy, arr.shape, n_rows)
            return None
        return arr.astype(np.float32, copy=False)

    def save(self, key: str, array: np.ndarray, metadata: dict[str, Any]) -> Path:
        """Write ``array`` and its JSON metadata atomically; returns the ``.npy`` path."""
        self.directory.mkdir(parents=True, exist_ok=True)
        npy, meta = self._paths(key)
        arr = np.ascontiguousarray(array, dtype=np.float32)
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        data = buf.getvalue()
        info = {**metadata, "shape": list(arr.shape), "dtype": "float32", "created": time.time(),
                "sha256": hashlib.sha256(data).hexdigest()}
        # Metadata is renamed into place after the array: a reader only trusts entries with both,
        # and only when the array's bytes match the metadata's checksum.
        for target, write in ((npy, lambda f: f.write(data)),
                              (meta, lambda f: f.write(json.dumps(info, indent=1, default=str).encode()))):
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=target.suffix)
            try:
                with os.fdopen(fd, "wb") as f:
                    write(f)
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return npy

    def metadata(self, key: str) -> dict[str, Any] | None:
        meta = self._paths(key)[1]
        if not meta.is_file():
            return None
        return json.loads(meta.read_text())
