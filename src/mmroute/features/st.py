"""sentence-transformers text encoders (``st:NAME_OR_PATH``).

A local folder (as written by ``SentenceTransformer.save`` or a plain Hugging Face model folder,
which gets mean pooling) is loaded offline; a bare name goes through the Hugging Face cache.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmroute.features.encoders import Encoder, register_encoder, resolve_device

__all__ = ["SentenceTransformerEncoder"]

logger = logging.getLogger(__name__)


def _folder_stamp(path: Path) -> str:
    """Digest of the files (names, sizes, mtimes) under a model folder: retrained weights re-key the cache."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(path)}|{st.st_size}|{st.st_mtime_ns}".encode())
    return f"{path.resolve()}#{h.hexdigest()[:16]}"


@register_encoder
class SentenceTransformerEncoder(Encoder):
    """Text embeddings from a sentence-transformers model.

    Parameters
    ----------
    model : str
        Model name or local folder.
    device : str or None
        Torch device; None means cuda when available else cpu, decided when the model loads.
    batch_size : int
    normalize : bool
        L2-normalise outputs (sentence-transformers' ``normalize_embeddings``).
    max_seq_length : int or None
        Override the model's truncation length.
    """

    name = "st"
    modalities = ("text",)

    def __init__(self, model: str, *, device: str | None = None, batch_size: int = 64, normalize: bool = False,
                 max_seq_length: int | None = None, progress: bool = True) -> None:
        if not model:
            raise ValueError("st encoder needs a model name or path, e.g. 'st:/models/all-MiniLM-L6-v2'")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.device = device
        self.batch_size = int(batch_size)
        self.normalize = normalize
        self.max_seq_length = max_seq_length
        self.progress = progress

    @classmethod
    def from_spec(cls, arg: str, spec: str, *, device: str | None = None, **options: Any) -> SentenceTransformerEncoder:
        return cls(arg, device=device, **options)

    @property
    def identity(self) -> str:
        path = Path(self.model)
        weights = _folder_stamp(path) if path.is_dir() else self.model
        return f"st(model={weights},normalize={self.normalize},max_seq_length={self.max_seq_length})"

    def _load(self) -> None:
        if hasattr(self, "model_"):
            return
        from sentence_transformers import SentenceTransformer

        device = resolve_device(self.device)
        local = Path(self.model).is_dir()
        self.model_ = SentenceTransformer(self.model, device=device, local_files_only=local)
        if self.max_seq_length is not None:
            self.model_.max_seq_length = int(self.max_seq_length)
        self.device_ = device
        logger.info("sentence-transformers %s loaded on %s", self.model, device)

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> (n_texts, d) float32."""
        self._load()
        emb = self.model_.encode([str(t) for t in texts], batch_size=self.batch_size,
                                 show_progress_bar=self.progress, convert_to_numpy=True,
                                 normalize_embeddings=self.normalize)
        emb = np.asarray(emb, dtype=np.float32)
        if emb.ndim == 1:  # no texts
            emb = emb.reshape(0, self.model_.get_sentence_embedding_dimension() or 0)
        return emb

    def get_params(self) -> dict[str, Any]:
        return {"name": self.name, "identity": self.identity, "model": self.model,
                "batch_size": self.batch_size, "normalize": self.normalize,
                "max_seq_length": self.max_seq_length}
