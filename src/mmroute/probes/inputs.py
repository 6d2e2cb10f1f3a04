"""Turn outcome-table rows into backbone inputs: the item dataset and the batch builders.

A *builder* is a picklable callable ``builder(items) -> dict`` mapping a list of items (dicts with
``id``, ``text`` and ``image``) to the keyword arguments of the backbone's ``forward``, always
including a right-padded ``attention_mask`` of shape (batch, seq). Right padding keeps every real
token's state independent of how many pad tokens follow (causal attention never looks ahead and
padded keys are masked), so cached states do not depend on how instances were batched.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from mmroute.data.table import OutcomeTable

__all__ = ["TableItems", "TokenizerInputs", "ProcessorInputs", "load_backbone", "load_image"]

log = logging.getLogger(__name__)


def load_image(path_or_image: Any) -> Any:
    """An RGB PIL image from a path (or an image passed through unchanged).

    Paths go through :func:`mmroute.features.encoders.open_rgb`, so an image larger than the
    default pixel limit is refused from its header before it is decoded.
    """
    from PIL import Image

    from mmroute.features.encoders import open_rgb

    if isinstance(path_or_image, Image.Image):
        return path_or_image.convert("RGB")
    return open_rgb(str(path_or_image), "error")


class TableItems(Dataset):
    """Rows of an outcome table as items ``{"id", "text", "image"}`` (image: path or None).

    Parameters
    ----------
    table : OutcomeTable
    rows : optional integer rows to keep (default: all)
    with_images : pass image paths on (False: text only, e.g. modality ablations)
    """

    def __init__(self, table: OutcomeTable, rows: Sequence[int] | None = None, *,
                 with_images: bool = True) -> None:
        self.rows = np.arange(table.n_instances) if rows is None else np.asarray(rows, dtype=np.int64)
        texts = table.texts()
        self.ids = [str(table.ids[r]) for r in self.rows]
        self.texts = [texts[r] for r in self.rows]
        has = table.has_images if with_images else np.zeros(table.n_instances, dtype=bool)
        self.images = [table.image_paths[r] if has[r] else None for r in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"id": self.ids[i], "text": self.texts[i], "image": self.images[i]}


def _cap_kwargs(token_cap: int | None) -> dict[str, Any]:
    if token_cap is None:
        return {}
    if token_cap < 2:
        raise ValueError(f"token_cap must be >= 2 tokens or None, got {token_cap}")
    return {"truncation": True, "max_length": int(token_cap)}


class TokenizerInputs:
    """Text-only inputs through a ``transformers`` tokenizer (right-padded, optionally capped).

    ``token_cap`` limits each instance to its first ``token_cap`` tokens (special tokens included).
    """

    def __init__(self, tokenizer: Any, token_cap: int | None = None) -> None:
        self.tokenizer = tokenizer
        self.token_cap = token_cap
        tokenizer.padding_side = "right"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        if any(it["image"] is not None for it in items):
            log.debug("TokenizerInputs ignores images (text-only backbone)")
        enc = self.tokenizer([it["text"] for it in items], padding=True, return_tensors="pt",
                             **_cap_kwargs(self.token_cap))
        return dict(enc)


class ProcessorInputs:
    """Text and image inputs through a vision-language processor (Qwen2-VL, Qwen2.5-VL, ...).

    Each instance becomes one user turn of the processor's chat template, the image (when there is
    one) before the question. ``token_cap`` caps the *question* tokens; image tokens are never cut
    (a truncated image placeholder would not match the vision features).
    """

    def __init__(self, processor: Any, token_cap: int | None = None) -> None:
        if getattr(processor, "chat_template", None) is None:
            raise ValueError(f"{type(processor).__name__} has no chat template; pass a builder that "
                             "places the image tokens itself")
        self.processor = processor
        self.token_cap = token_cap
        processor.tokenizer.padding_side = "right"

    def _capped(self, text: str) -> str:
        if self.token_cap is None:
            return text
        tok = self.processor.tokenizer
        ids = tok(text, add_special_tokens=False)["input_ids"][: self.token_cap]
        return tok.decode(ids)

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        prompts, images = [], []
        for it in items:
            content: list[dict[str, Any]] = []
            if it["image"] is not None:
                content.append({"type": "image"})
                images.append(load_image(it["image"]))
            content.append({"type": "text", "text": self._capped(it["text"])})
            prompts.append(self.processor.apply_chat_template(
                [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True))
        enc = self.processor(text=prompts, images=images or None, padding=True, return_tensors="pt")
        return dict(enc)


def load_backbone(name_or_path: str, *, token_cap: int | None = None, dtype: Any = None,
                  attn_implementation: str | None = None) -> tuple[Any, Any]:
    """Load a backbone (without its LM head) and its input builder from a hub name or local path.

    Vision-language configs (with a ``vision_config``) get :class:`ProcessorInputs`, others
    :class:`TokenizerInputs`. ``dtype`` is a torch dtype or its name ("bfloat16"); default: the
    checkpoint's. Returns ``(model, builder)`` with the model in eval mode and frozen.
    """
    from transformers import AutoConfig, AutoModel, AutoProcessor, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except OSError as exc:  # a missing path or hub name: a user error, reported in one line
        raise ValueError(f"cannot load backbone {name_or_path!r}: {exc}") from exc
    kwargs: dict[str, Any] = {}
    if dtype is not None:
        kwargs["dtype"] = dtype
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    model = AutoModel.from_pretrained(name_or_path, **kwargs)
    model.eval().requires_grad_(False)
    if getattr(config, "vision_config", None) is not None:
        builder: Any = ProcessorInputs(AutoProcessor.from_pretrained(name_or_path), token_cap)
    else:
        builder = TokenizerInputs(AutoTokenizer.from_pretrained(name_or_path), token_cap)
    log.info("loaded backbone %s (%s) with %s", name_or_path, type(model).__name__, type(builder).__name__)
    return model, builder
