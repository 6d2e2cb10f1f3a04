"""Encoders that need no weights: TF-IDF + TruncatedSVD text, a deterministic image featuriser.

``offline`` (the default for the embedded synthetic data) combines both. The TF-IDF vocabulary
and the SVD basis are fitted on the training split only and reused for every later table, so
train and test rows live in one space (the MMR-Bench reference fits them separately on train and
test, which makes its test vectors incomparable with its training vectors).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from mmroute._limits import DEFAULT_MAX_IMAGE_PIXELS, check_max_pixels
from mmroute.features.cache import hash_texts
from mmroute.features.encoders import (
    Encoder,
    check_bad_image_policy,
    log_bad_images,
    open_rgb,
    parse_kv_options,
    register_encoder,
)

__all__ = ["TfidfTextEncoder", "ImageStatsEncoder", "PixelsEncoder", "OfflineEncoder", "image_statistics"]

logger = logging.getLogger(__name__)

# Bump when image_statistics changes its output, so cached arrays are not reused across versions.
IMAGE_FEATURISER_VERSION = 1


def _progress(iterable, total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="batch", disable=not enabled, leave=False)


@register_encoder
class TfidfTextEncoder(Encoder):
    """TF-IDF (word 1..``ngram_max``-grams, sublinear tf) projected by TruncatedSVD to ``dim``.

    Output rows are the SVD projection of the L2-normalised TF-IDF vector; they are not
    re-normalised, because their norm (<= 1: the share of the text inside the training topic
    space) is the signal adaptive fusion uses as confidence. When the training vocabulary is
    smaller than ``dim``, the output has ``min(dim, n_terms - 1, n_train)`` columns; with fewer
    than 2 terms (all questions blank, as in the image-only modality modes) it is one zero column.
    """

    name = "tfidf"
    modalities = ("text",)
    requires_fit = True

    def __init__(self, dim: int = 128, max_features: int = 50_000, ngram_max: int = 2,
                 min_df: int = 1, seed: int = 0) -> None:
        self.dim = dim
        self.max_features = max_features
        self.ngram_max = ngram_max
        self.min_df = min_df
        self.seed = seed

    @classmethod
    def from_spec(cls, arg: str, spec: str, *, device: str | None = None, **options: Any) -> TfidfTextEncoder:
        return cls(**{**parse_kv_options(arg, spec), **options})

    def _params(self) -> str:
        return f"dim={self.dim},max_features={self.max_features},ngram_max={self.ngram_max}," \
               f"min_df={self.min_df},seed={self.seed}"

    @property
    def identity(self) -> str:
        fit = getattr(self, "fit_hash_", "unfitted")
        return f"tfidf({self._params()})@fit={fit}"

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "fit_hash_")

    def fit_text(self, texts: Sequence[str]) -> TfidfTextEncoder:
        """Record the training ``texts`` (n_train strings) the vocabulary, idf and SVD are fitted on.

        The sklearn fit itself is deferred to the first ``encode_text``: ``identity`` only needs the
        fit-data hash, so a run whose embeddings are all cached never pays for the SVD.
        """
        if int(self.dim) < 1:
            raise ValueError(f"tfidf dim must be >= 1, got {self.dim}")
        texts = [str(t) for t in texts]
        if len(texts) < 2:
            raise ValueError(f"tfidf needs at least 2 training texts, got {len(texts)}")
        for attr in ("vectorizer_", "svd_", "n_features_out_"):
            self.__dict__.pop(attr, None)
        self.fit_hash_ = hash_texts(texts)
        self._fit_texts = texts
        return self

    def _fit_now(self) -> None:
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        texts = self._fit_texts
        vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, int(self.ngram_max)),
                                     min_df=self.min_df, max_features=int(self.max_features),
                                     strip_accents="unicode", dtype=np.float32)
        try:
            x = vectorizer.fit_transform(texts)
            n_terms = x.shape[1]
        except ValueError:  # empty vocabulary: e.g. the image-only modality modes blank every question
            n_terms = 0
        k = min(int(self.dim), n_terms - 1, len(texts))
        if k < 1:
            # No text signal to project: one constant zero column keeps the text modality's shape.
            logger.warning("tfidf: the %d training texts give %d term(s), too few for an SVD projection; "
                           "text features are zero", len(texts), n_terms)
            self.vectorizer_, self.svd_, self.n_features_out_ = None, None, 1
            del self._fit_texts
            return
        if k < self.dim:
            logger.info("tfidf: %d training texts / %d terms allow only %d SVD components (dim=%d asked)",
                        len(texts), n_terms, k, self.dim)
        svd = TruncatedSVD(n_components=k, random_state=self.seed)
        svd.fit(x)
        self.vectorizer_ = vectorizer
        self.svd_ = svd
        self.n_features_out_ = k
        del self._fit_texts

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        if not self.is_fitted:
            raise RuntimeError("tfidf encoder is not fitted: call fit_text(training_texts) first "
                               "(it must see the training split only)")
        if not hasattr(self, "svd_"):
            self._fit_now()
        if self.svd_ is None:
            return np.zeros((len(texts), 1), dtype=np.float32)
        x = self.vectorizer_.transform([str(t) for t in texts])
        return self.svd_.transform(x).astype(np.float32)


def image_statistics(image, *, size: int = 64, thumb: int = 8, bins: int = 8) -> np.ndarray:
    """Deterministic features of one RGB PIL image.

    Blocks, in order: per-channel mean and std (6), per-channel histograms (3 * bins),
    grayscale histogram (2 * bins), grayscale mean / std / contrast (3), gradient magnitude
    mean / std / edge density (3), gradient-orientation histogram weighted by magnitude (8),
    a mean-centred ``thumb`` x ``thumb`` grayscale thumbnail (thumb**2) and log width, log
    height, log aspect ratio (3). Values lie roughly in [-1, 1].

    Returns
    -------
    ndarray of float32, shape (6 + 5 * bins + 14 + thumb**2 + 3,)
    """
    from PIL import Image

    w, h = image.size
    small = np.asarray(image.resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0
    rgb = small.reshape(-1, 3)
    gray = small @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    chan_hist = [np.histogram(rgb[:, c], bins=bins, range=(0.0, 1.0))[0] for c in range(3)]
    gray_hist = np.histogram(gray, bins=2 * bins, range=(0.0, 1.0))[0]
    n_pix = float(rgb.shape[0])
    gx = np.diff(gray, axis=1)[:-1, :]
    gy = np.diff(gray, axis=0)[:, :-1]
    mag = np.hypot(gx, gy)
    angle = np.mod(np.arctan2(gy, gx), np.pi)  # orientation, sign-free
    orient = np.histogram(angle, bins=8, range=(0.0, np.pi), weights=mag)[0]
    orient = orient / max(float(orient.sum()), 1e-8)
    tiny = np.asarray(image.convert("L").resize((thumb, thumb), Image.BOX), dtype=np.float32) / 255.0
    tiny = tiny - tiny.mean()
    feats = [
        rgb.mean(axis=0), rgb.std(axis=0),
        np.concatenate(chan_hist) / n_pix, gray_hist / n_pix,
        [gray.mean(), gray.std(), np.percentile(gray, 95) - np.percentile(gray, 5)],
        [mag.mean(), mag.std(), (mag > 0.1).mean()], orient,
        tiny.ravel(),
        [np.log(max(w, 1)) / 10.0, np.log(max(h, 1)) / 10.0, np.log(max(w, 1) / max(h, 1))],
    ]
    return np.concatenate([np.asarray(f, dtype=np.float32).ravel() for f in feats])


@register_encoder
class ImageStatsEncoder(Encoder):
    """Weight-free image featuriser (:func:`image_statistics`); identical output on any machine."""

    name = "imagestats"
    modalities = ("image",)

    def __init__(self, image_size: int = 64, thumb: int = 8, bins: int = 8, batch_size: int = 64,
                 on_bad_image: str = "error", progress: bool = True,
                 max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> None:
        self.image_size = image_size
        self.thumb = thumb
        self.bins = bins
        self.batch_size = batch_size
        self.on_bad_image = check_bad_image_policy(on_bad_image)
        self.progress = progress
        self.max_image_pixels = check_max_pixels(max_image_pixels)

    @classmethod
    def from_spec(cls, arg: str, spec: str, *, device: str | None = None, **options: Any) -> ImageStatsEncoder:
        return cls(**{**parse_kv_options(arg, spec), **options})

    @property
    def dim(self) -> int:
        return 6 + 5 * self.bins + 14 + self.thumb ** 2 + 3

    @property
    def identity(self) -> str:
        # The pixel limit changes outputs only when it zeroes images; the default keeps old keys.
        limit = "" if self.max_image_pixels == DEFAULT_MAX_IMAGE_PIXELS else f",max_pixels={self.max_image_pixels}"
        return f"imagestats-v{IMAGE_FEATURISER_VERSION}(size={self.image_size},thumb={self.thumb}," \
               f"bins={self.bins},on_bad_image={self.on_bad_image}{limit})"

    @property
    def preprocess(self):
        return lambda image: image.convert("RGB")

    def _one(self, image) -> np.ndarray:
        return image_statistics(image, size=self.image_size, thumb=self.thumb, bins=self.bins)

    def encode_images(self, paths: Sequence[str | None]) -> np.ndarray:
        out = np.zeros((len(paths), self.dim), dtype=np.float32)
        bad: list[str] = []
        starts = range(0, len(paths), max(int(self.batch_size), 1))
        for start in _progress(starts, len(starts), "imagestats", self.progress):
            for i in range(start, min(start + self.batch_size, len(paths))):
                if not paths[i]:
                    continue
                image = open_rgb(str(paths[i]), self.on_bad_image, self.max_image_pixels)
                if image is None:
                    bad.append(str(paths[i]))
                    continue
                out[i] = self._one(image)
        log_bad_images(self.name, bad, sum(1 for p in paths if p))
        return out


@register_encoder
class PixelsEncoder(Encoder):
    """Raw downsampled pixels: each image resized to ``size`` x ``size`` (bilinear), RGB (or grey
    with ``gray=True``) in [0, 1], flattened channel-first: ``3 * size**2`` (``size**2``) values.

    The input of the learned image tower (``image_tower=cnn`` in ``fusion_mf`` / ``cmr``), for
    users without pretrained vision weights; compose it with any text encoder:
    ``text=precomputed:emb.npy,image=pixels:size=32``.
    """

    name = "pixels"
    modalities = ("image",)

    def __init__(self, size: int = 32, gray: bool = False, batch_size: int = 64, on_bad_image: str = "error",
                 progress: bool = True) -> None:
        if not isinstance(size, int) or size < 8:
            raise ValueError(f"pixels size={size!r} (expected an integer >= 8)")
        self.size = size
        self.gray = bool(gray)
        self.batch_size = batch_size
        self.on_bad_image = check_bad_image_policy(on_bad_image)
        self.progress = progress

    @classmethod
    def from_spec(cls, arg: str, spec: str, *, device: str | None = None, **options: Any) -> PixelsEncoder:
        return cls(**{**parse_kv_options(arg, spec), **options})

    @property
    def dim(self) -> int:
        return (1 if self.gray else 3) * self.size ** 2

    @property
    def identity(self) -> str:
        return f"pixels-v1(size={self.size},gray={self.gray},on_bad_image={self.on_bad_image})"

    @property
    def preprocess(self):
        from PIL import Image

        mode = "L" if self.gray else "RGB"
        return lambda image: image.convert(mode).resize((self.size, self.size), Image.BILINEAR)

    def encode_images(self, paths: Sequence[str | None]) -> np.ndarray:
        out = np.zeros((len(paths), self.dim), dtype=np.float32)
        bad: list[str] = []
        prep = self.preprocess
        starts = range(0, len(paths), max(int(self.batch_size), 1))
        for start in _progress(starts, len(starts), "pixels", self.progress):
            for i in range(start, min(start + self.batch_size, len(paths))):
                if not paths[i]:
                    continue
                image = open_rgb(str(paths[i]), self.on_bad_image)
                if image is None:
                    bad.append(str(paths[i]))
                    continue
                arr = np.asarray(prep(image), dtype=np.float32) / 255.0
                out[i] = (arr[None] if self.gray else arr.transpose(2, 0, 1)).ravel()
        log_bad_images(self.name, bad, sum(1 for p in paths if p))
        return out


@register_encoder
class OfflineEncoder(Encoder):
    """``offline``: :class:`TfidfTextEncoder` for text plus :class:`ImageStatsEncoder` for images.

    Options: ``dim``, ``max_features``, ``ngram_max``, ``min_df``, ``seed`` go to the text side;
    ``image_size``, ``thumb``, ``bins``, ``batch_size``, ``on_bad_image``, ``progress`` to the
    image side. Spec form: ``offline`` or ``offline:dim=64,thumb=8``.
    """

    name = "offline"
    modalities = ("text", "image")
    requires_fit = True
    _TEXT_KEYS = ("dim", "max_features", "ngram_max", "min_df", "seed")

    def __init__(self, **options: Any) -> None:
        self.options = dict(options)
        text_opts = {k: v for k, v in options.items() if k in self._TEXT_KEYS}
        image_opts = {k: v for k, v in options.items() if k not in self._TEXT_KEYS}
        try:
            self.text_encoder = TfidfTextEncoder(**text_opts)
            self.image_encoder = ImageStatsEncoder(**image_opts)
        except TypeError as exc:
            raise TypeError(f"bad option for the offline encoder ({exc}); text options: "
                            f"{list(self._TEXT_KEYS)}, image options: image_size, thumb, bins, "
                            "batch_size, on_bad_image, progress, max_image_pixels") from exc

    @classmethod
    def from_spec(cls, arg: str, spec: str, *, device: str | None = None, **options: Any) -> OfflineEncoder:
        return cls(**{**parse_kv_options(arg, spec), **options})

    @property
    def identity(self) -> str:
        return f"offline[{self.text_encoder.identity}|{self.image_encoder.identity}]"

    # Each modality is cached under its own identity, so changing the image options does not
    # invalidate cached text arrays and vice versa.
    def modality_identity(self, modality: str) -> str:
        return self.text_encoder.identity if modality == "text" else self.image_encoder.identity

    @property
    def preprocess(self):
        return self.image_encoder.preprocess

    @property
    def is_fitted(self) -> bool:
        return self.text_encoder.is_fitted

    def fit_text(self, texts: Sequence[str]) -> OfflineEncoder:
        self.text_encoder.fit_text(texts)
        return self

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        return self.text_encoder.encode_text(texts)

    def encode_images(self, paths: Sequence[str | None]) -> np.ndarray:
        return self.image_encoder.encode_images(paths)

    def get_params(self) -> dict[str, Any]:
        return {"name": self.name, "identity": self.identity, **self.options}
