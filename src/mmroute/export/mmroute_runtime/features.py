"""The fitted feature pipeline at serving time: raw query rows -> the router's input matrix.

Everything here runs on numpy, Pillow, onnxruntime and ``tokenizers`` only. The exported pipeline
is one folder: ``features.json`` (what to run, with the fitted statistics) beside the ONNX graphs
and tokenizer files it names. Kinds:

text  ``tfidf``     scikit-learn's word analyzer re-implemented in Python exactly (accent strip,
                    lowercase, ``(?u)\\b\\w\\w+\\b`` tokens, word n-grams) -> term counts -> ONNX graph
                    (skl2onnx: sublinear tf, idf, L2 norm, SVD projection); ``zeros`` (a fitted
                    vocabulary too small for an SVD: one zero column);
      ``onnx_st``   a sentence-transformers model: ``tokenizers`` from its tokenizer.json, ONNX graph
                    (transformer + pooling [+ normalisation]);
      ``clip_text`` an OpenCLIP text tower: CLIP BPE in ``tokenizers``, fixed context length, ONNX.
image ``imagestats`` the weight-free featuriser of ``mmroute.features.offline`` in numpy + Pillow;
      ``clip_image`` resize (shortest side, bicubic) + centre crop + normalise in Pillow/numpy, ONNX.
fusion ``mean`` / ``concat`` / ``adaptive`` with their fitted statistics.

The export side (``mmroute.export.features``) writes the folder and checks, on held-out rows, that
this code gives the training-time pipeline's features; this module never imports mmroute.
"""

from __future__ import annotations

import functools
import json
import math
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["SPEC_FILE", "FORMAT_VERSION", "FeatureRuntime", "load_feature_runtime", "build_input", "session_options",
           "word_analyzer", "image_statistics", "clip_pixels", "fuse"]

SPEC_FILE = "features.json"
FORMAT_VERSION = 1


# ------------------------------------------------------------------------------------- text: tfidf
def _strip_accents_unicode(s: str) -> str:
    # scikit-learn's strip_accents_unicode, verbatim in behaviour.
    try:
        s.encode("ASCII", errors="strict")
        return s
    except UnicodeEncodeError:
        normalized = unicodedata.normalize("NFKD", s)
        return "".join(c for c in normalized if not unicodedata.combining(c))


def word_analyzer(*, lowercase: bool = True, strip_accents: str | None = "unicode",
                  token_pattern: str = r"(?u)\b\w\w+\b", ngram_range: Sequence[int] = (1, 1)):
    """scikit-learn's ``CountVectorizer(analyzer="word").build_analyzer()`` for these options."""
    if strip_accents not in (None, "unicode"):
        raise ValueError(f"strip_accents={strip_accents!r} is not supported at serving time (only 'unicode')")
    tokenize = re.compile(token_pattern).findall
    min_n, max_n = int(ngram_range[0]), int(ngram_range[1])

    def analyze(doc: str) -> list[str]:
        if lowercase:
            doc = doc.lower()
        if strip_accents == "unicode":
            doc = _strip_accents_unicode(doc)
        original = tokenize(doc)
        if max_n == 1:
            return original if min_n == 1 else []
        tokens = list(original) if min_n == 1 else []
        for n in range(max(min_n, 2), min(max_n + 1, len(original) + 1)):
            for i in range(len(original) - n + 1):
                tokens.append(" ".join(original[i:i + n]))
        return tokens

    return analyze


def session_options(threads: int | None = None):
    """onnxruntime options of every graph of a served model.

    Full graph optimisation, sequential execution, ``threads`` intra-op threads (None: onnxruntime's
    default, all cores), and worker threads that sleep between runs instead of spinning: a served
    model holds several sessions (text, image, router), each with its own pool, and a spinning pool
    takes a core from the session that runs next, and from the request parsing around them. On a
    2-core machine under load this took the median batch-1 latency from ~33 ms to ~5 ms (offline)
    and from ~89 ms to ~14 ms (MiniLM), and batch-256 MiniLM from 8.0 s to 7.1 s.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = int(threads)
    return options


class _Session:
    """An onnxruntime session over one graph, fed by input name."""

    def __init__(self, path: Path, providers: Sequence[str] | None, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = session_options(threads)
        self.session = ort.InferenceSession(str(path), sess_options=options,
                                            providers=list(providers or ["CPUExecutionProvider"]))
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.output = self.session.get_outputs()[0].name

    def __call__(self, **feeds: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run([self.output], {k: feeds[k] for k in self.inputs})[0], dtype=np.float32)


class TfidfText:
    """TF-IDF + SVD: term counts in Python, the weighting and projection in an ONNX graph."""

    def __init__(self, spec: dict[str, Any], folder: Path, providers, threads: int | None = None) -> None:
        self.analyze = word_analyzer(lowercase=spec["lowercase"], strip_accents=spec["strip_accents"],
                                     token_pattern=spec["token_pattern"], ngram_range=spec["ngram_range"])
        vocabulary = json.loads((folder / spec["vocabulary"]).read_text(encoding="utf-8"))
        self.vocabulary: dict[str, int] = {str(k): int(v) for k, v in vocabulary.items()}
        self.n_terms = int(spec["n_terms"])
        self.sublinear = bool(spec.get("sublinear_tf", False))
        self.dim = int(spec["dim"])
        self.graph = _Session(folder / spec["graph"], providers, threads)

    def counts(self, texts: Sequence[str]) -> np.ndarray:
        """Term counts (n, n_terms) float32, as ``CountVectorizer.transform`` gives them."""
        out = np.zeros((len(texts), self.n_terms), dtype=np.float32)
        for i, text in enumerate(texts):
            for token in self.analyze(text):
                j = self.vocabulary.get(token)
                if j is not None:
                    out[i, j] += 1.0
        return out

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        tf = self.counts(texts)
        if self.sublinear:  # scikit-learn's 1 + log(tf) on non-zero counts
            nz = tf > 0
            tf[nz] = np.log(tf[nz]) + 1.0
        return self.graph(tf=tf)


class ZeroText:
    """A text side fitted on too few terms for a projection: one constant zero column."""

    def __init__(self, spec: dict[str, Any], folder: Path, providers, threads: int | None = None) -> None:
        self.dim = int(spec.get("dim", 1))

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        return np.zeros((len(texts), self.dim), dtype=np.float32)


class TransformerText:
    """A sentence-transformers model: ``tokenizers`` tokenisation, ONNX transformer + pooling."""

    def __init__(self, spec: dict[str, Any], folder: Path, providers, threads: int | None = None) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(folder / spec["tokenizer"]))
        self.tokenizer.enable_truncation(int(spec["max_length"]))
        self.tokenizer.no_padding()  # padded per batch below, after sorting by length
        self.pad_id = int(spec.get("pad_id", 0))
        self.dim = int(spec["dim"])
        self.batch_size = int(spec.get("batch_size", 64))
        self.graph = _Session(folder / spec["graph"], providers, threads)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        encodings = self.tokenizer.encode_batch([str(t) for t in texts])
        # As sentence-transformers does: batches of similar lengths, so little compute goes to padding.
        order = np.argsort([-len(e.ids) for e in encodings], kind="stable")
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            length = max(len(encodings[i].ids) for i in rows)
            ids = np.full((len(rows), length), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(rows), length), dtype=np.int64)
            types = np.zeros((len(rows), length), dtype=np.int64)
            for k, i in enumerate(rows):
                e = encodings[i]
                ids[k, :len(e.ids)], mask[k, :len(e.ids)], types[k, :len(e.ids)] = e.ids, 1, e.type_ids
            out[rows] = self.graph(input_ids=ids, attention_mask=mask, token_type_ids=types)
        return out


class ClipText:
    """An OpenCLIP text tower: CLIP's BPE in ``tokenizers`` to a fixed context length, ONNX graph."""

    def __init__(self, spec: dict[str, Any], folder: Path, providers, threads: int | None = None) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(folder / spec["tokenizer"]))
        self.context_length = int(spec["context_length"])
        self.sot, self.eot = int(spec["sot_id"]), int(spec["eot_id"])
        self.dim = int(spec["dim"])
        self.batch_size = int(spec.get("batch_size", 64))
        self.graph = _Session(folder / spec["graph"], providers, threads)

    def tokens(self, texts: Sequence[str]) -> np.ndarray:
        """(n, context_length) int64: <sot> BPE ids <eot>, truncated with <eot> last, zero-padded."""
        out = np.zeros((len(texts), self.context_length), dtype=np.int64)
        for i, enc in enumerate(self.tokenizer.encode_batch([clip_clean(str(t)) for t in texts],
                                                            add_special_tokens=False)):
            ids = [self.sot] + list(enc.ids) + [self.eot]
            if len(ids) > self.context_length:
                ids = ids[:self.context_length]
                ids[-1] = self.eot
            out[i, :len(ids)] = ids
        return out

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        out = [np.zeros((0, self.dim), dtype=np.float32)]
        for start in range(0, len(texts), self.batch_size):
            out.append(self.graph(text=self.tokens(texts[start:start + self.batch_size])))
        return np.concatenate(out)


def clip_clean(text: str) -> str:
    """OpenCLIP's ``basic_clean`` + ``whitespace_clean`` + lowercase, without ftfy's mojibake repair.

    ftfy's ``fix_text`` is replaced by the parts of it that change ordinary text: HTML entities,
    NFC, curly quotes, ligatures and full-width characters (NFKC on those), control characters.
    """
    import html

    text = html.unescape(html.unescape(text))
    text = "".join(_FTFY_SIMPLE.get(c, c) for c in unicodedata.normalize("NFC", text))
    text = "".join(unicodedata.normalize("NFKC", c) if _folds(c) else c for c in text)
    text = "".join(c for c in text if c in "\t\n\r" or unicodedata.category(c) not in ("Cc", "Cf")
                   or c in "\u200d")
    return re.sub(r"\s+", " ", text.strip()).strip().lower()


_FTFY_SIMPLE = {"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u201c": '"', "\u201d": '"',
                "\u201e": '"', "\u201f": '"', "\u2032": "'", "\u2033": '"', "\u00a0": " "}


def _folds(c: str) -> bool:
    o = ord(c)
    return 0xFF01 <= o <= 0xFF5E or 0xFB00 <= o <= 0xFB06 or o in (0x3000, 0x0132, 0x0133, 0x0149, 0x01C4,
                                                                  0x01C5, 0x01C6, 0x01C7, 0x01C8, 0x01C9,
                                                                  0x01CA, 0x01CB, 0x01CC, 0x01F1, 0x01F2,
                                                                  0x01F3)


# ----------------------------------------------------------------------------------------- images
def _bin_index(values: np.ndarray, n_bins: int, last: float) -> np.ndarray:
    """The bin ``np.histogram(values, bins=n_bins, range=(0, last))`` puts each value in.

    numpy's uniform-bin path puts a value in bin ``i`` when ``edges[i] <= v < edges[i + 1]`` (the last
    bin also takes ``v == last``), with ``edges`` the ``linspace`` of the range in the input's dtype;
    ``searchsorted`` against those edges is that rule. Values outside [0, last] are the caller's to drop.
    """
    edges = np.linspace(0.0, last, n_bins + 1, dtype=values.dtype)
    idx = np.searchsorted(edges, values, side="right") - 1
    idx[values == edges[-1]] = n_bins - 1
    return idx


def _uniform_histogram(values: np.ndarray, n_bins: int, last: float, weights: np.ndarray | None = None) -> np.ndarray:
    """``np.histogram(row, bins=n_bins, range=(0, last))[0]`` of each row of ``values`` (groups, n),
    concatenated, in one pass: the same bins, value for value (values outside [0, last] dropped)."""
    v = np.atleast_2d(values)
    idx = _bin_index(v, n_bins, last) + n_bins * np.arange(len(v))[:, None]
    keep = (v >= 0.0) & (v <= last)
    w = None if weights is None else np.atleast_2d(weights)[keep]
    return np.bincount(idx[keep], weights=w, minlength=n_bins * len(v))


@functools.lru_cache(maxsize=8)
def _level_bins(bins: int) -> np.ndarray:
    """The histogram bin of each 8-bit level as training sees it (``float32(level) / 255``): a resized
    8-bit image has only these 256 values per channel, so its channel histograms are a lookup."""
    return _bin_index(np.arange(256, dtype=np.float32) / 255.0, bins, 1.0).astype(np.intp)


def _percentiles(values: np.ndarray, qs: Sequence[float]) -> list[float]:
    """``np.percentile(values, q)`` (linear method) for each q, from one partial sort."""
    n = values.size
    positions = [(n - 1) * q / 100.0 for q in qs]
    ks = sorted({int(math.floor(p)) for p in positions} | {min(int(math.floor(p)) + 1, n - 1) for p in positions})
    part = np.partition(values, ks)
    out = []
    for p in positions:
        below = int(math.floor(p))
        above = min(below + 1, n - 1)
        a, b, t = part[below], part[above], p - below
        # numpy's _lerp: a + (b - a) * t, computed from the nearer end for t >= 0.5
        diff = b - a
        out.append(float(b - diff * (1 - t)) if t >= 0.5 else float(a + diff * t))
    return out


def image_statistics(image, *, size: int = 64, thumb: int = 8, bins: int = 8) -> np.ndarray:
    """``mmroute.features.offline.image_statistics``: the same features (histogram counts identical,
    moments within float32 rounding), computed with fewer numpy calls (a request pays per call)."""
    from PIL import Image

    w, h = image.size
    levels = np.asarray(image.resize((size, size), Image.BILINEAR))
    small = levels.astype(np.float32) / 255.0
    channels = np.ascontiguousarray(small.reshape(-1, 3).T)  # (3, pixels): row reductions are fast
    gray = small @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    n_pix = float(channels.shape[1])
    # Training's rgb.mean(axis=0) / rgb.std(axis=0) add the pixels one after another (a strided
    # reduction does not sum pairwise); a running sum along the rows adds them in that order, so
    # the moments are the same floats, not merely close.
    count = np.float32(channels.shape[1])
    chan_mean = channels.cumsum(axis=1)[:, -1] / count
    centred = channels - chan_mean[:, None]
    chan_std = np.sqrt((centred * centred).cumsum(axis=1)[:, -1] / count)
    chan_bins = _level_bins(bins)[np.ascontiguousarray(levels.reshape(-1, 3).T)] + bins * np.arange(3)[:, None]
    chan_hist = np.bincount(chan_bins.reshape(-1), minlength=3 * bins)
    gray_flat = gray.reshape(-1)
    gray_hist = _uniform_histogram(gray_flat, 2 * bins, 1.0)
    gx = np.diff(gray, axis=1)[:-1, :]
    gy = np.diff(gray, axis=0)[:, :-1]
    mag = np.hypot(gx, gy)
    angle = np.mod(np.arctan2(gy, gx), np.pi)
    orient = _uniform_histogram(angle.reshape(-1), 8, np.pi, weights=mag.reshape(-1))
    orient = orient / max(float(orient.sum()), 1e-8)
    tiny = np.asarray(image.convert("L").resize((thumb, thumb), Image.BOX), dtype=np.float32) / 255.0
    tiny = tiny - tiny.mean()
    lo, hi = _percentiles(gray_flat, (5, 95))
    feats = [
        chan_mean, chan_std,
        chan_hist / n_pix, gray_hist / n_pix,
        [gray_flat.mean(), gray_flat.std(), hi - lo],
        [mag.mean(), mag.std(), np.count_nonzero(mag > 0.1) / mag.size], orient,
        tiny.ravel(),
        [np.log(max(w, 1)) / 10.0, np.log(max(h, 1)) / 10.0, np.log(max(w, 1) / max(h, 1))],
    ]
    return np.concatenate([np.asarray(f, dtype=np.float32).ravel() for f in feats])


class ImageStats:
    def __init__(self, spec: dict[str, Any], folder: Path, providers, threads: int | None = None) -> None:
        self.size, self.thumb, self.bins = int(spec["size"]), int(spec["thumb"]), int(spec["bins"])
        self.dim = 6 + 5 * self.bins + 14 + self.thumb ** 2 + 3

    def __call__(self, images: Sequence[Any]) -> np.ndarray:
        out = np.zeros((len(images), self.dim), dtype=np.float32)
        for i, im in enumerate(images):
            if im is not None:
                out[i] = image_statistics(im, size=self.size, thumb=self.thumb, bins=self.bins)
        return out


_RESAMPLE = {"bicubic": 3, "bilinear": 2, "nearest": 0, "lanczos": 1, "box": 4, "hamming": 5}


def clip_pixels(image, *, size: int, crop: Sequence[int], interpolation: str, mean: Sequence[float],
                std: Sequence[float]) -> np.ndarray:
    """torchvision's ``Resize(size)`` (shortest side) + ``CenterCrop`` + ``ToTensor`` + ``Normalize``
    on a PIL RGB image, in Pillow and numpy: float32 (3, crop_h, crop_w)."""
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    if short != size:
        new_long = int(size * long / short)
        new_w, new_h = (size, new_long) if w <= h else (new_long, size)
        image = image.resize((new_w, new_h), _RESAMPLE[interpolation])
    crop_h, crop_w = int(crop[0]), int(crop[1])
    w, h = image.size
    if crop_w > w or crop_h > h:  # torchvision pads with zeros first
        padded = image.__class__.new("RGB", (max(w, crop_w), max(h, crop_h)))
        padded.paste(image, ((max(crop_w - w, 0)) // 2, (max(crop_h - h, 0)) // 2))
        image, (w, h) = padded, padded.size
    top = int(round((h - crop_h) / 2.0))
    left = int(round((w - crop_w) / 2.0))
    image = image.crop((left, top, left + crop_w, top + crop_h))
    x = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    x = (x - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


class ClipImage:
    def __init__(self, spec: dict[str, Any], folder: Path, providers, threads: int | None = None) -> None:
        self.pre = {k: spec[k] for k in ("size", "crop", "interpolation", "mean", "std")}
        self.dim = int(spec["dim"])
        self.batch_size = int(spec.get("batch_size", 64))
        self.graph = _Session(folder / spec["graph"], providers, threads)

    def __call__(self, images: Sequence[Any]) -> np.ndarray:
        out = np.zeros((len(images), self.dim), dtype=np.float32)
        rows = [i for i, im in enumerate(images) if im is not None]
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start:start + self.batch_size]
            pixels = np.stack([clip_pixels(images[i], **self.pre) for i in chunk])
            out[chunk] = self.graph(image=pixels)
        return out


TEXT_KINDS = {"tfidf": TfidfText, "zeros": ZeroText, "onnx_st": TransformerText, "clip_text": ClipText}
IMAGE_KINDS = {"imagestats": ImageStats, "clip_image": ClipImage}


# ----------------------------------------------------------------------------------------- fusion
def _l2(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


def _pad(x: np.ndarray, d: int) -> np.ndarray:
    return x if x.shape[1] == d else np.pad(x, ((0, 0), (0, d - x.shape[1])))


def _confidence(x, centroid, mean, std, norm_weight):
    cos = _l2(x) @ np.asarray(centroid, dtype=np.float32)
    if std > 1e-6 * max(abs(mean), 1e-12):
        z = (np.linalg.norm(x, axis=1) - mean) / std
    else:
        z = np.zeros(len(x), dtype=np.float32)
    sig = 1.0 / (1.0 + np.exp(-np.clip(z, -30.0, 30.0)))
    return ((1.0 - norm_weight) * cos + norm_weight * sig).astype(np.float32)


def fuse(spec: dict[str, Any], text: np.ndarray, image: np.ndarray | None, mask: np.ndarray) -> np.ndarray:
    """The fitted fusion of ``mmroute.features.fusion`` (mean, concat, adaptive) in numpy."""
    kind = spec["kind"]
    if kind == "mean":
        d = int(spec["n_features_out"])
        t = _pad(_l2(text), d)
        if image is None or not mask.any():
            return t
        i = _pad(_l2(image), d)
        return np.where(mask[:, None], (t + i) / 2.0, t).astype(np.float32)
    if kind == "concat":
        t = _l2(text)
        if spec["d_image"] is None:
            return t
        i = np.zeros((len(t), int(spec["d_image"])), dtype=np.float32)
        if image is not None:
            i = np.where(mask[:, None], _l2(image), 0.0).astype(np.float32)
        return np.concatenate([t, i], axis=1)
    if kind == "adaptive":
        d = int(spec["width"])
        w = np.zeros((len(text), 2), dtype=np.float32)
        w[:, 0] = 1.0
        if image is not None and spec["has_image_stats"] and mask.any():
            nw, temp = float(spec["norm_weight"]), float(spec["temperature"])
            c_t = _confidence(text, spec["text_centroid"], spec["text_norm_mean"], spec["text_norm_std"], nw)
            c_i = _confidence(image, spec["image_centroid"], spec["image_norm_mean"], spec["image_norm_std"], nw)
            logits = np.stack([c_t, c_i], axis=1) / temp
            logits -= logits.max(axis=1, keepdims=True)
            soft = np.exp(logits)
            soft /= soft.sum(axis=1, keepdims=True)
            w[mask] = soft[mask]
        t = _pad(_l2(text), d)
        use = mask & (w[:, 1] > 0) if image is not None else np.zeros(len(t), dtype=bool)
        i = _pad(_l2(image), d) if image is not None else np.zeros_like(t)
        i = np.where(use[:, None], i, 0.0)
        mixed = w[:, :1] * t + w[:, 1:] * i
        prod = np.where(use[:, None], t * i, 0.0)
        diff = np.where(use[:, None], np.abs(t - i), 0.0)
        fused = mixed + prod + diff if spec["combine"] == "sum" else np.concatenate([mixed, prod, diff], axis=1)
        return _l2(fused)
    raise ValueError(f"unknown fusion kind {kind!r} in the model's {SPEC_FILE}")


def build_input(parts: dict[str, np.ndarray | None], layout: Sequence[Sequence[Any]]) -> np.ndarray:
    """The router input: the named parts (fused, text, image, image_mask) concatenated per ``layout``.

    Mirrors ``mmroute.export.core.build_input``: an absent image is zeros and its mask 0.
    """
    n = len(parts["text"])
    mask = parts["image_mask"]
    out = []
    for name, width in layout:
        width = int(width)
        if name == "image_mask":
            arr = mask[:, None].astype(np.float32)
        elif name == "image":
            image = parts["image"]
            arr = (np.zeros((n, width), dtype=np.float32) if image is None
                   else np.where(mask[:, None], image, 0.0).astype(np.float32))
        elif name in ("fused", "text"):
            arr = parts[name]
        else:
            raise ValueError(f"router input part {name!r} cannot be built from raw queries")
        if arr.shape[1] != width:
            raise ValueError(f"feature part {name!r} has {arr.shape[1]} columns, the router expects {width}")
        out.append(np.asarray(arr, dtype=np.float32))
    return np.concatenate(out, axis=1)


class FeatureRuntime:
    """The exported pipeline: ``parts(texts, images)`` -> fused/text/image/image_mask arrays."""

    def __init__(self, spec: dict[str, Any], folder: str | Path, providers: Sequence[str] | None = None,
                 threads: int | None = None) -> None:
        folder = Path(folder)
        if int(spec.get("format_version", 0)) != FORMAT_VERSION:
            raise ValueError(f"feature spec format {spec.get('format_version')} is not {FORMAT_VERSION}")
        self.spec = spec
        text = spec["text"]
        if text["kind"] not in TEXT_KINDS:
            raise ValueError(f"unknown text encoder kind {text['kind']!r}; known: {sorted(TEXT_KINDS)}")
        self.text = TEXT_KINDS[text["kind"]](text, folder, providers, threads)
        image = spec.get("image")
        if image is not None and image["kind"] not in IMAGE_KINDS:
            raise ValueError(f"unknown image encoder kind {image['kind']!r}; known: {sorted(IMAGE_KINDS)}")
        self.image = None if image is None else IMAGE_KINDS[image["kind"]](image, folder, providers, threads)
        self.fusion = spec["fusion"]

    @property
    def embeds_images(self) -> bool:
        return self.image is not None

    def parts(self, texts: Sequence[str], images: Sequence[Any] | None = None) -> dict[str, Any]:
        """``{"fused", "text", "image", "image_mask"}`` for row-aligned texts and PIL images (or None)."""
        text = self.text(list(texts))
        n = len(text)
        has = np.array([im is not None for im in images], dtype=bool) if images is not None else np.zeros(n, bool)
        if self.image is None or not has.any():
            image, mask = None, np.zeros(n, dtype=bool)
        else:
            image = self.image(list(images))
            # As at training time: an image whose vector is zero counts as no image.
            mask = has & (np.linalg.norm(image, axis=1) > 0)
        fused = fuse(self.fusion, text, image, mask)
        return {"fused": fused, "text": text, "image": image, "image_mask": mask}


def load_feature_runtime(folder: str | Path, providers: Sequence[str] | None = None,
                         threads: int | None = None) -> FeatureRuntime:
    """The runtime of an exported feature folder; ``threads``: onnxruntime intra-op threads per graph."""
    folder = Path(folder)
    spec = json.loads((folder / SPEC_FILE).read_text(encoding="utf-8"))
    return FeatureRuntime(spec, folder, providers, threads)
