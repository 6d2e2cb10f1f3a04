"""Encoder interface, registry and the one factory (``create_encoder``).

Every encoder turns texts and/or images into float32 row vectors and exposes a stable
``identity`` string (name, weights, output-changing parameters) that keys the embedding cache.
Encoders that learn from data (TF-IDF) also hash their fit data into ``identity``. Row encoders
(precomputed arrays, a table column) read vectors that already exist instead of encoding inputs.

Specs are ``NAME`` or ``NAME:ARG`` (``openclip:ViT-B-32:laion2b_s34b_b79k``, ``st:/models/minilm``,
``precomputed:emb.npy``, ``offline:dim=64``); keyword options are passed through to the class.
``text=SPEC,image=SPEC`` composes one encoder per modality (:mod:`mmroute.features.compose`).
"""

from __future__ import annotations

import abc
import logging
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    from mmroute.data.table import OutcomeTable

__all__ = ["Encoder", "RowEncoder", "register_encoder", "create_encoder", "list_encoders",
           "resolve_device", "parse_kv_options", "BAD_IMAGE_POLICIES", "check_bad_image_policy",
           "open_rgb", "log_bad_images", "ImageTooLargeError"]

logger = logging.getLogger(__name__)

BAD_IMAGE_POLICIES = ("error", "zero")

_REGISTRY: dict[str, type[Encoder]] = {}


def resolve_device(device: str | None) -> str:
    """The caller's device, or ``cuda`` when available else ``cpu`` (decided now, not at import)."""
    if device:
        return str(device)
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_bad_image_policy(value: str) -> str:
    if value not in BAD_IMAGE_POLICIES:
        raise ValueError(f"on_bad_image={value!r} is not valid; expected one of {list(BAD_IMAGE_POLICIES)}")
    return value


def open_rgb(path: str, on_bad_image: str, max_pixels: int | None = None):
    """Open ``path`` as an RGB PIL image; on failure raise (``error``) or return None (``zero``).

    ``max_pixels`` (default :data:`mmroute.data.images.DEFAULT_MAX_IMAGE_PIXELS`) bounds width x
    height: the size is read from the header and a larger image is refused before it is decoded,
    so a small file that decompresses to gigabytes (a decompression bomb) never reaches memory.
    """
    from PIL import Image

    from mmroute._limits import DEFAULT_MAX_IMAGE_PIXELS

    limit = DEFAULT_MAX_IMAGE_PIXELS if max_pixels is None else int(max_pixels)
    try:
        with warnings.catch_warnings():
            # Pillow warns above its own (higher) limit; the check below decides instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)  # reads the header only
        with im:
            width, height = im.size
            if width * height > limit:
                raise ImageTooLargeError(
                    f"{width} x {height} = {width * height:,} pixels exceeds the limit of {limit:,} "
                    "(raise it with the encoder option max_image_pixels=N)")
            im.load()
            return im.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        if on_bad_image == "error":
            raise ValueError(f"cannot read image {path!r}: {exc} (pass on_bad_image='zero' to "
                             "replace unreadable images by zero vectors)") from exc
        logger.debug("image %s replaced by a zero vector: %s", path, exc)
        return None


class ImageTooLargeError(ValueError):
    """An image's header announces more pixels than the configured limit."""


def log_bad_images(encoder: str, bad: list[str], total: int) -> None:
    """Unreadable images are never dropped silently: always report how many were zeroed."""
    if bad:
        logger.warning("%s: %d of %d images could not be read and were replaced by zero vectors "
                       "(first: %s)", encoder, len(bad), total, bad[0])


def parse_kv_options(arg: str, spec: str) -> dict[str, Any]:
    """``"dim=64,thumb=8"`` -> ``{"dim": 64, "thumb": 8}`` (bools, None, ints, floats, else strings)."""
    literals = {"true": True, "false": False, "none": None}
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in arg.split(","))):
        key, eq, value = part.partition("=")
        if not eq or not key:
            raise ValueError(f"bad option {part!r} in encoder spec {spec!r}; expected key=value pairs")
        if value.lower() in literals:
            out[key] = literals[value.lower()]
            continue
        for cast in (int, float):
            try:
                out[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            out[key] = value
    return out


class Encoder(abc.ABC):
    """Base class. Subclasses set ``name`` and ``modalities`` and implement the encode methods.

    Attributes
    ----------
    modalities : tuple of {"text", "image"}
        What the encoder can embed.
    requires_fit : bool
        True when ``fit_text`` must be called on training texts before encoding (TF-IDF).
    cacheable : bool
        Whether outputs are worth caching on disk (False for row encoders, which read arrays).
    """

    name: ClassVar[str] = ""
    modalities: ClassVar[tuple[str, ...]] = ()
    requires_fit: ClassVar[bool] = False
    cacheable: ClassVar[bool] = True

    @classmethod
    def from_spec(cls, arg: str, spec: str, *, device: str | None = None, **options: Any) -> Encoder:
        """Build from the part of the spec after ``NAME:`` (empty when absent).

        ``device`` only matters to encoders that run a network; they override this method.
        """
        if arg:
            raise ValueError(f"encoder {cls.name!r} takes no argument, got spec {spec!r}")
        return cls(**options)

    @property
    @abc.abstractmethod
    def identity(self) -> str:
        """Stable cache key: name, weights, output-changing parameters (and fit-data hash)."""

    def modality_identity(self, modality: str) -> str:
        """Identity of the part producing ``modality`` ("text" or "image"); the cache key."""
        return self.identity

    @property
    def preprocess(self) -> Callable[[Any], Any] | None:
        """The image preprocessing this encoder applies (open_clip style), or None."""
        return None

    @property
    def is_fitted(self) -> bool:
        return True

    def fit_text(self, texts: Sequence[str]) -> Encoder:
        """Learn text statistics from training texts (only encoders with ``requires_fit``)."""
        raise TypeError(f"encoder {self.name!r} is not fitted on data")

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> array of shape (n_texts, d_text), float32."""
        raise TypeError(f"encoder {self.name!r} does not embed text (modalities: {self.modalities})")

    def encode_images(self, paths: Sequence[str | None]) -> np.ndarray:
        """Image paths -> array of shape (n_paths, d_image), float32; None/"" rows are zeros."""
        raise TypeError(f"encoder {self.name!r} does not embed images (modalities: {self.modalities})")

    def get_params(self) -> dict[str, Any]:
        return {"name": self.name, "identity": self.identity}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.identity})"


class RowEncoder(Encoder):
    """Reads existing vectors for a table's rows instead of encoding inputs (the text modality)."""

    modalities: ClassVar[tuple[str, ...]] = ("text",)
    cacheable: ClassVar[bool] = False

    @abc.abstractmethod
    def encode_rows(self, table: OutcomeTable) -> np.ndarray:
        """Table -> array of shape (n_instances, d), float32, row-aligned with the table."""


def register_encoder(cls: type[Encoder]) -> type[Encoder]:
    """Class decorator adding an encoder to the registry under ``cls.name``; refuses duplicates."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} must set a non-empty class attribute 'name'")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"encoder name {cls.name!r} is already registered by {_REGISTRY[cls.name].__name__}")
    _REGISTRY[cls.name] = cls
    return cls


def _ensure_builtins() -> None:
    # Imported on first use rather than at package import: keeps `import mmroute` free of work.
    from mmroute.features import offline, openclip, precomputed, st  # noqa: F401


def list_encoders() -> list[str]:
    """Names usable as the first part of an encoder spec."""
    _ensure_builtins()
    return sorted(_REGISTRY)


def create_encoder(spec: str, *, device: str | None = None, **options: Any) -> Encoder:
    """Build the encoder named by ``spec`` (``NAME`` or ``NAME:ARG``), with keyword ``options``.

    The returned encoder carries its image preprocessing as ``encoder.preprocess``.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"encoder spec must be a non-empty string, got {spec!r}; "
                         f"valid names: {list_encoders()}")
    _ensure_builtins()
    from mmroute.features.compose import ComposedEncoder, is_composed_spec

    if is_composed_spec(spec):  # text=SPEC,image=SPEC: one encoder per modality
        return ComposedEncoder.from_composed_spec(spec, device=device, **options)
    name, _, arg = spec.strip().partition(":")
    cls = _REGISTRY.get(name)
    if cls is None:
        raise ValueError(f"unknown encoder {name!r} in spec {spec!r}; valid names: {sorted(_REGISTRY)}")
    return cls.from_spec(arg, spec, device=device, **options)
