"""OpenCLIP text and image towers (``openclip:MODEL[:PRETRAINED_TAG_OR_CHECKPOINT]``).

``MODEL`` is an OpenCLIP architecture name (``ViT-B-32``) or ``local-dir:/path`` (a folder with
``open_clip_config.json`` and optionally weights, as OpenCLIP writes it); ``PRETRAINED`` is a tag
(downloaded by OpenCLIP into its cache) or a local checkpoint file. There is no model hub here,
so production runs pass a local checkpoint. Without weights the model is randomly initialised
from ``init_seed`` (deterministic, logged as a warning): only useful for tests.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmroute._limits import DEFAULT_MAX_IMAGE_PIXELS, check_max_pixels
from mmroute.features.encoders import (
    Encoder,
    check_bad_image_policy,
    log_bad_images,
    open_rgb,
    register_encoder,
    resolve_device,
)

__all__ = ["OpenClipEncoder"]

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "bf16")


def _file_stamp(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def _dir_stamp(path: Path) -> str:
    """Digest of a folder's file names, sizes and mtimes (weights or config edits change it)."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.iterdir() if p.is_file()):
        h.update(_file_stamp(f).encode())
    return f"{path.resolve()}#{h.hexdigest()[:16]}"


@register_encoder
class OpenClipEncoder(Encoder):
    """Frozen OpenCLIP model embedding texts and images into its shared space.

    Parameters
    ----------
    model : str
        Architecture name or ``local-dir:PATH``.
    pretrained : str or None
        Pretrained tag or checkpoint file (ignored for ``local-dir:``, which carries its weights).
    device : str or None
        Torch device; None means cuda when available else cpu, decided when the model loads.
    precision : {"fp32", "fp16", "bf16"}
        Weight precision (half precisions are for GPUs). Outputs are always float32.
    batch_size : int
    on_bad_image : {"error", "zero"}
        Unreadable or missing image files raise (naming the path) or become zero vectors
        (with a logged count).
    max_image_pixels : int
        Largest width x height decoded (default :data:`mmroute.data.images.DEFAULT_MAX_IMAGE_PIXELS`);
        larger images are refused from their header, as unreadable ones are.
    normalize : bool
        L2-normalise outputs. Off by default: fusion normalises, and adaptive fusion reads the norm.
    init_seed : int
        Seed for the random initialisation used when no weights are given.
    """

    name = "openclip"
    modalities = ("text", "image")

    def __init__(self, model: str = "ViT-B-32", pretrained: str | None = None, *, device: str | None = None,
                 precision: str = "fp32", batch_size: int = 64, on_bad_image: str = "error",
                 normalize: bool = False, init_seed: int = 0, progress: bool = True,
                 max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision={precision!r} is not valid; expected one of {list(PRECISIONS)}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.pretrained = pretrained or None
        self.device = device
        self.precision = precision
        self.batch_size = int(batch_size)
        self.on_bad_image = check_bad_image_policy(on_bad_image)
        self.max_image_pixels = check_max_pixels(max_image_pixels)
        self.normalize = normalize
        self.init_seed = init_seed
        self.progress = progress

    @classmethod
    def from_spec(cls, arg: str, spec: str, *, device: str | None = None, **options: Any) -> OpenClipEncoder:
        if not arg:
            # The MMR-Bench default encoder.
            return cls("ViT-B-32", options.pop("pretrained", "openai"), device=device, **options)
        if arg.startswith(("local-dir:", "hf-hub:")):
            return cls(arg, None, device=device, **options)
        model, _, pretrained = arg.partition(":")
        return cls(model, pretrained or options.pop("pretrained", None), device=device, **options)

    # ---------------------------------------------------------------- identity
    def _weights_stamp(self) -> str:
        if self.model.startswith("local-dir:"):
            path = Path(self.model[len("local-dir:"):])
            if not path.is_dir():
                raise FileNotFoundError(f"OpenCLIP local-dir {str(path)!r} is not a directory")
            return _dir_stamp(path)
        if self.pretrained is None:
            return f"random(seed={self.init_seed})"
        if os.path.isfile(self.pretrained):
            return _file_stamp(Path(self.pretrained))
        return self.pretrained

    @property
    def identity(self) -> str:
        return (f"openclip(model={self.model},weights={self._weights_stamp()},precision={self.precision},"
                f"normalize={self.normalize})")

    def modality_identity(self, modality: str) -> str:
        # Image arrays also depend on how unreadable files were handled; text arrays do not.
        if modality == "image":
            limit = "" if self.max_image_pixels == DEFAULT_MAX_IMAGE_PIXELS else f",max_pixels={self.max_image_pixels}"
            return f"{self.identity}[image,on_bad_image={self.on_bad_image}{limit}]"
        return f"{self.identity}[text]"

    # ------------------------------------------------------------------ model
    def _load(self) -> None:
        if hasattr(self, "model_"):
            return
        import open_clip
        import torch

        device = resolve_device(self.device)
        has_weights = self.pretrained is not None or self.model.startswith(("local-dir:", "hf-hub:"))
        if not has_weights:
            logger.warning("openclip %s: no pretrained weights given, using a random initialisation "
                           "(seed %d); embeddings carry no meaning", self.model, self.init_seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.init_seed)
            model, _, preprocess = open_clip.create_model_and_transforms(
                self.model, pretrained=self.pretrained, precision=self.precision, device=device)
        model.eval()
        self.model_ = model
        self.preprocess_ = preprocess
        self.tokenizer_ = open_clip.get_tokenizer(self.model)
        self.device_ = device
        self.dtype_ = next(model.parameters()).dtype
        logger.info("openclip %s loaded on %s (%s)", self.model, device, self.precision)

    @property
    def preprocess(self):
        self._load()
        return self.preprocess_

    def _finish(self, feats) -> np.ndarray:
        import torch.nn.functional as F

        if self.normalize:
            feats = F.normalize(feats.float(), dim=-1)
        return feats.float().cpu().numpy()

    # ---------------------------------------------------------------- encoding
    def _batches(self, n: int, desc: str):
        from tqdm.auto import tqdm

        starts = range(0, n, self.batch_size)
        return tqdm(starts, total=len(starts), desc=desc, unit="batch", disable=not self.progress, leave=False)

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> (n_texts, embed_dim) float32 (tokenizer truncates to the context length)."""
        import torch

        self._load()
        out = []
        with torch.inference_mode():
            for start in self._batches(len(texts), "openclip text"):
                tokens = self.tokenizer_([str(t) for t in texts[start:start + self.batch_size]]).to(self.device_)
                out.append(self._finish(self.model_.encode_text(tokens)))
        if not out:
            return np.zeros((0, self._dim()), dtype=np.float32)
        return np.concatenate(out).astype(np.float32, copy=False)

    def _dim(self) -> int:
        import torch

        self._load()
        if not hasattr(self, "dim_"):
            # Text and image towers share the embedding space, so one empty text gives its width.
            with torch.inference_mode():
                self.dim_ = int(self.model_.encode_text(self.tokenizer_([""]).to(self.device_)).shape[-1])
        return self.dim_

    def encode_images(self, paths: Sequence[str | None]) -> np.ndarray:
        """Image paths -> (n_paths, embed_dim) float32; rows without a path are zeros."""
        import torch

        self._load()
        out = np.zeros((len(paths), self._dim()), dtype=np.float32)
        bad: list[str] = []
        with torch.inference_mode():
            for start in self._batches(len(paths), "openclip images"):
                rows, pixels = [], []
                for i in range(start, min(start + self.batch_size, len(paths))):
                    if not paths[i]:
                        continue
                    image = open_rgb(str(paths[i]), self.on_bad_image, self.max_image_pixels)
                    if image is None:
                        bad.append(str(paths[i]))
                        continue
                    rows.append(i)
                    pixels.append(self.preprocess_(image))
                if rows:
                    batch = torch.stack(pixels).to(self.device_, dtype=self.dtype_)
                    out[rows] = self._finish(self.model_.encode_image(batch))
        log_bad_images(self.name, bad, sum(1 for p in paths if p))
        return out

    def get_params(self) -> dict[str, Any]:
        return {"name": self.name, "identity": self.identity, "model": self.model,
                "pretrained": self.pretrained, "precision": self.precision, "batch_size": self.batch_size,
                "on_bad_image": self.on_bad_image, "max_image_pixels": self.max_image_pixels,
                "normalize": self.normalize}
