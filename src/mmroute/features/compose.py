"""Composable encoders: one encoder per modality, named in one spec.

``text=SPEC,image=SPEC`` pairs any text encoder with any image encoder, e.g.
``text=precomputed:mathv_minilm.npy,image=imagestats`` (MiniLM questions + the weight-free image
featuriser), ``text=st:/models/minilm,image=openclip:ViT-B-32:/ckpt.bin`` or
``text=tfidf:dim=64,image=imagestats:thumb=4``. Each part is built by
:func:`~mmroute.features.encoders.create_encoder` from its own spec (commas inside a part's options
are fine: parts are split only before ``text=`` / ``image=``), each is cached under its own identity,
and the pair behaves as one :class:`~mmroute.features.encoders.Encoder` with both modalities.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mmroute.features.encoders import Encoder, RowEncoder

if TYPE_CHECKING:
    from mmroute.data.table import OutcomeTable

__all__ = ["ComposedEncoder", "is_composed_spec", "parse_composed_spec"]

_PART = re.compile(r",\s*(?=(?:text|image)\s*=)")
_HEAD = re.compile(r"^\s*(?:text|image)\s*=")


def is_composed_spec(spec: str) -> bool:
    """Whether ``spec`` is a ``text=...,image=...`` composition."""
    return isinstance(spec, str) and bool(_HEAD.match(spec))


def parse_composed_spec(spec: str) -> dict[str, str]:
    """``"text=A,image=B"`` -> ``{"text": "A", "image": "B"}`` (each named at most once, text required)."""
    parts: dict[str, str] = {}
    for chunk in _PART.split(spec.strip()):
        key, eq, value = chunk.partition("=")
        key, value = key.strip(), value.strip()
        if key not in ("text", "image") or not eq or not value:
            raise ValueError(f"bad part {chunk!r} in encoder spec {spec!r}; expected text=SPEC[,image=SPEC]")
        if key in parts:
            raise ValueError(f"encoder spec {spec!r} names the {key} encoder twice")
        parts[key] = value
    if "text" not in parts:
        raise ValueError(f"encoder spec {spec!r} has no text encoder; every instance has text: add text=SPEC "
                         "(e.g. text=tfidf or text=precomputed:EMB.npy)")
    return parts


class ComposedEncoder(Encoder):
    """A text encoder and an optional image encoder used as one.

    Parameters
    ----------
    text_encoder : Encoder with the "text" modality (a row encoder such as ``precomputed`` too)
    image_encoder : Encoder with the "image" modality, or None (text only)
    spec : the spec it was built from (for ``get_params``)
    """

    name = "composed"
    modalities = ("text", "image")

    def __init__(self, text_encoder: Encoder, image_encoder: Encoder | None = None, *, spec: str = "") -> None:
        if "text" not in text_encoder.modalities:
            raise ValueError(f"text={text_encoder.name!r} does not embed text (it embeds "
                             f"{list(text_encoder.modalities)})")
        if image_encoder is not None and "image" not in image_encoder.modalities:
            raise ValueError(f"image={image_encoder.name!r} does not embed images (it embeds "
                             f"{list(image_encoder.modalities)})")
        self.text_encoder = text_encoder
        self.image_encoder = image_encoder
        self.spec = spec
        # Instance attributes shadow the class defaults the pipeline reads.
        self.requires_fit = bool(text_encoder.requires_fit)
        self.modalities = ("text",) if image_encoder is None else ("text", "image")

    @classmethod
    def from_composed_spec(cls, spec: str, *, device: str | None = None, **options: Any) -> ComposedEncoder:
        from mmroute.features.encoders import create_encoder

        if options:
            raise ValueError(f"options {sorted(options)} cannot be given with the composed spec {spec!r}; "
                             "put them in the part they belong to, e.g. image=imagestats:thumb=4")
        parts = parse_composed_spec(spec)
        text = create_encoder(parts["text"], device=device)
        image = create_encoder(parts["image"], device=device) if "image" in parts else None
        return cls(text, image, spec=spec)

    @property
    def identity(self) -> str:
        image = "none" if self.image_encoder is None else self.image_encoder.modality_identity("image")
        return f"composed[text={self.text_encoder.modality_identity('text')}|image={image}]"

    def modality_identity(self, modality: str) -> str:
        if modality == "image" and self.image_encoder is not None:
            return self.image_encoder.modality_identity("image")
        return self.text_encoder.modality_identity("text")

    @property
    def text_rows(self) -> RowEncoder | None:
        """The text part when it reads existing vectors per row (``precomputed``, ``column``)."""
        return self.text_encoder if isinstance(self.text_encoder, RowEncoder) else None

    @property
    def preprocess(self) -> Callable[[Any], Any] | None:
        return None if self.image_encoder is None else self.image_encoder.preprocess

    @property
    def is_fitted(self) -> bool:
        return self.text_encoder.is_fitted

    def fit_text(self, texts: Sequence[str]) -> ComposedEncoder:
        self.text_encoder.fit_text(texts)
        return self

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        return self.text_encoder.encode_text(texts)

    def encode_rows(self, table: OutcomeTable) -> np.ndarray:
        if self.text_rows is None:
            raise TypeError(f"text encoder {self.text_encoder.name!r} encodes texts, not table rows")
        return self.text_rows.encode_rows(table)

    def encode_images(self, paths: Sequence[str | None]) -> np.ndarray:
        if self.image_encoder is None:
            raise TypeError(f"encoder spec {self.spec!r} names no image encoder")
        return self.image_encoder.encode_images(paths)

    def get_params(self) -> dict[str, Any]:
        params = {"name": self.name, "identity": self.identity, "text": self.text_encoder.name,
                  "image": None if self.image_encoder is None else self.image_encoder.name}
        params.update({f"text.{k}": v for k, v in self.text_encoder.get_params().items()
                       if k not in ("name", "identity")})
        if self.image_encoder is not None:
            params.update({f"image.{k}": v for k, v in self.image_encoder.get_params().items()
                           if k not in ("name", "identity")})
        return params

    def __repr__(self) -> str:
        return f"ComposedEncoder({self.spec or self.identity})"
