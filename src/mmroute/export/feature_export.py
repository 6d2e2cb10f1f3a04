"""Write a fitted :class:`~mmroute.features.FeaturePipeline` as the served model's ``features`` folder.

The folder (``features.json`` + ONNX graphs + tokenizer files) is what
:mod:`mmroute.export.mmroute_runtime.features` runs at serving time without torch or mmroute:

* TF-IDF + SVD: the vocabulary as JSON (tokenised in Python exactly as scikit-learn's analyzer),
  the idf weighting, L2 norm and SVD projection as an skl2onnx graph. skl2onnx's sublinear tf is
  ``log(1 + tf)`` where scikit-learn uses ``1 + log(tf)``, so the runtime applies the sublinear
  step itself and the graph gets ``sublinear_tf=False``.
* sentence-transformers: transformer + pooling (+ normalisation) as one ``torch.onnx`` graph, the
  tokenizer's ``tokenizer.json`` for the ``tokenizers`` library.
* OpenCLIP: text and image towers as ``torch.onnx`` graphs, CLIP's BPE rebuilt as a ``tokenizers``
  tokenizer, the image preprocessing read from the model's transforms.
* the offline image featuriser and the fusion: parameters and fitted statistics in the JSON.

:func:`export_feature_pipeline` writes the folder; the caller (``export.pyfunc``) then checks the
served model against the training-time pipeline on held-out rows.
"""

from __future__ import annotations

import copy
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from mmroute.export.mmroute_runtime.features import FORMAT_VERSION, SPEC_FILE

__all__ = ["FeatureExportError", "export_feature_pipeline", "raw_input_refusal"]

log = logging.getLogger(__name__)

ONNX_OPSET = 18
# Unique enough not to collide with a node of the exported network (BERT has an "embeddings" module).
OUTPUT = "mmroute_embedding"


class FeatureExportError(ValueError):
    """The feature pipeline cannot run inside the served model."""


def raw_input_refusal(pipeline: Any) -> str | None:
    """Why a model over this pipeline cannot embed raw queries (None when it can)."""
    from mmroute.features.encoders import RowEncoder

    if isinstance(pipeline.encoder, RowEncoder):
        return (f"its encoder {pipeline.spec!r} reads vectors from a file or a table column, so it cannot "
                "embed raw text")
    return None


# -------------------------------------------------------------------------------------------- text
def _tfidf(encoder: Any, folder: Path) -> dict[str, Any]:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.decomposition import TruncatedSVD  # noqa: F401 - the fitted svd_ is one
    from sklearn.feature_extraction.text import TfidfTransformer
    from sklearn.pipeline import Pipeline

    if not encoder.is_fitted:
        raise FeatureExportError("the tfidf encoder is not fitted; fit the feature pipeline first")
    if not hasattr(encoder, "svd_"):
        encoder.encode_text([""])  # runs the deferred sklearn fit (see TfidfTextEncoder.fit_text)
    if encoder.svd_ is None:
        return {"kind": "zeros", "dim": int(encoder.n_features_out_)}
    vec = encoder.vectorizer_
    if vec.analyzer != "word" or vec.preprocessor is not None or vec.tokenizer is not None or vec.stop_words:
        raise FeatureExportError("only scikit-learn's default word analyzer can be served")
    fitted = vec._tfidf
    # sublinear tf is applied by the runtime (1 + log tf, as scikit-learn); the graph does idf + norm.
    weighting = TfidfTransformer(norm=fitted.norm, use_idf=fitted.use_idf, smooth_idf=fitted.smooth_idf,
                                 sublinear_tf=False)
    weighting.idf_ = fitted.idf_.astype(np.float64)
    weighting.n_features_in_ = len(fitted.idf_)
    n_terms = int(len(vec.vocabulary_))
    graph = convert_sklearn(Pipeline([("tfidf", weighting), ("svd", encoder.svd_)]),
                            initial_types=[("tf", FloatTensorType([None, n_terms]))], target_opset=ONNX_OPSET)
    (folder / "tfidf.onnx").write_bytes(graph.SerializeToString())
    (folder / "tfidf_vocabulary.json").write_text(
        json.dumps({k: int(v) for k, v in vec.vocabulary_.items()}, ensure_ascii=False), encoding="utf-8")
    return {"kind": "tfidf", "graph": "tfidf.onnx", "vocabulary": "tfidf_vocabulary.json", "n_terms": n_terms,
            "dim": int(encoder.n_features_out_), "lowercase": bool(vec.lowercase),
            "strip_accents": vec.strip_accents, "token_pattern": vec.token_pattern,
            "ngram_range": list(vec.ngram_range), "sublinear_tf": bool(fitted.sublinear_tf)}


def _torch_to_onnx(module, args: tuple, path: Path, input_names: list[str], dynamic: dict[str, dict[int, str]]):
    """``torch.onnx.export`` (dynamo) with dynamic axes; falls back to the TorchScript exporter."""
    import torch

    from mmroute.export.torch_export import _quiet_onnx_loggers

    errors = []
    for dynamo in (True, False):
        try:
            with torch.no_grad(), _quiet_onnx_loggers(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if dynamo:
                    shapes = tuple({axis: torch.export.Dim.AUTO for axis in dynamic.get(n, {})} for n in input_names)
                    program = torch.onnx.export(module, args, None, input_names=input_names,
                                                output_names=[OUTPUT], dynamic_shapes=shapes,
                                                opset_version=ONNX_OPSET, dynamo=True, verbose=False)
                    program.save(str(path))
                else:
                    axes = {**dynamic, OUTPUT: {0: "batch"}}
                    torch.onnx.export(module, args, str(path), input_names=input_names,
                                      output_names=[OUTPUT], dynamic_axes=axes,
                                      opset_version=min(ONNX_OPSET, 17), dynamo=False)
            return "torch.onnx.dynamo" if dynamo else "torch.onnx.torchscript"
        except Exception as exc:  # noqa: BLE001 - try the other exporter, report both on failure
            errors.append(f"{'dynamo' if dynamo else 'torchscript'}: {type(exc).__name__}: {str(exc)[:300]}")
            log.info("feature graph export with %s failed: %s", "dynamo" if dynamo else "torchscript", exc)
    raise FeatureExportError("cannot export the encoder to ONNX: " + "; ".join(errors))


def _backend_tokenizer(tokenizer: Any):
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is None or not hasattr(backend, "to_str"):
        raise FeatureExportError(f"the model's tokenizer ({type(tokenizer).__name__}) has no tokenizers "
                                 "backend (tokenizer.json); serving needs a fast tokenizer")
    return backend


def _sentence_transformer(encoder: Any, folder: Path) -> dict[str, Any]:
    import torch

    encoder._load()
    st = copy.deepcopy(encoder.model_).to("cpu").float().eval()
    normalize = bool(encoder.normalize)

    class Embed(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.st = st

        def forward(self, input_ids, attention_mask, token_type_ids):
            out = self.st({"input_ids": input_ids, "attention_mask": attention_mask,
                           "token_type_ids": token_type_ids})["sentence_embedding"]
            return torch.nn.functional.normalize(out, dim=-1) if normalize else out

    tokenizer = st.tokenizer
    backend = _backend_tokenizer(tokenizer)
    max_length = int(st.max_seq_length)
    sample = tokenizer(["a short question", "a longer question with a few more words in it"], padding=True,
                       truncation=True, max_length=max_length, return_tensors="pt")
    ids = sample["input_ids"]
    types = sample.get("token_type_ids", torch.zeros_like(ids))
    backend_used = _torch_to_onnx(Embed(), (ids, sample["attention_mask"], types), folder / "text.onnx",
                                  ["input_ids", "attention_mask", "token_type_ids"],
                                  {n: {0: "batch", 1: "sequence"} for n in ("input_ids", "attention_mask",
                                                                            "token_type_ids")})
    backend.save(str(folder / "tokenizer.json"))
    dim = int(st.get_sentence_embedding_dimension())
    log.info("sentence-transformers %s exported with %s (max_length %d)", encoder.model, backend_used, max_length)
    return {"kind": "onnx_st", "graph": "text.onnx", "tokenizer": "tokenizer.json", "max_length": max_length,
            "pad_id": int(tokenizer.pad_token_id or 0), "pad_token": str(tokenizer.pad_token or "[PAD]"),
            "dim": dim, "normalize": normalize, "batch_size": int(encoder.batch_size),
            "exporter": backend_used}


def _clip_tokenizer(tokenizer: Any, folder: Path) -> dict[str, Any]:
    """CLIP's BPE (open_clip's SimpleTokenizer) as a ``tokenizers`` tokenizer.json."""
    from tokenizers import AddedToken, Regex, Tokenizer, models, pre_tokenizers

    if not hasattr(tokenizer, "bpe_ranks") or not hasattr(tokenizer, "encoder"):
        raise FeatureExportError(f"OpenCLIP tokenizer {type(tokenizer).__name__} is not CLIP's BPE "
                                 "SimpleTokenizer; only that one can be served")
    if getattr(tokenizer, "reduction_fn", None) is not None:
        raise FeatureExportError("OpenCLIP tokenizers with a reduction mask cannot be served")
    clean = getattr(getattr(tokenizer, "clean_fn", None), "__name__", "_clean_lower")
    if clean != "_clean_lower":
        raise FeatureExportError(f"OpenCLIP tokenizer cleaning {clean!r} is not supported; only 'lower'")
    merges = [pair for pair, _ in sorted(tokenizer.bpe_ranks.items(), key=lambda kv: kv[1])]
    bpe = models.BPE(vocab=dict(tokenizer.encoder), merges=merges, end_of_word_suffix="</w>", fuse_unk=False)
    tok = Tokenizer(bpe)
    specials = [t for t, i in tokenizer.encoder.items() if i in set(tokenizer.all_special_ids)]
    pattern = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex("(?i)" + pattern), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.add_special_tokens([AddedToken(t, normalized=False) for t in specials])
    tok.save(str(folder / "clip_tokenizer.json"))
    return {"tokenizer": "clip_tokenizer.json", "context_length": int(tokenizer.context_length),
            "sot_id": int(tokenizer.sot_token_id), "eot_id": int(tokenizer.eot_token_id)}


def _clip_preprocess(preprocess: Any) -> dict[str, Any]:
    """Resize/crop/normalise parameters of an OpenCLIP eval transform; anything else is refused."""
    from torchvision import transforms as T

    steps = list(getattr(preprocess, "transforms", []))
    out: dict[str, Any] = {}
    for step in steps:
        name = type(step).__name__
        if isinstance(step, T.Resize):
            size = step.size
            if isinstance(size, (list, tuple)):
                if len(size) != 1:
                    raise FeatureExportError(f"OpenCLIP Resize to a fixed {size} is not supported (only shortest side)")
                size = size[0]
            if step.max_size is not None:
                raise FeatureExportError("OpenCLIP Resize with max_size is not supported")
            out["size"], out["interpolation"] = int(size), str(step.interpolation.value)
        elif isinstance(step, T.CenterCrop):
            out["crop"] = [int(s) for s in step.size]
        elif isinstance(step, T.Normalize):
            out["mean"], out["std"] = [float(v) for v in step.mean], [float(v) for v in step.std]
        elif name in ("MaybeConvertMode", "MaybeToTensor", "ToTensor", "_convert_to_rgb") or (
                callable(step) and getattr(step, "__name__", "") == "_convert_to_rgb"):
            continue
        else:
            raise FeatureExportError(f"OpenCLIP preprocessing step {name} cannot be served")
    missing = [k for k in ("size", "crop", "mean", "std") if k not in out]
    if missing:
        raise FeatureExportError(f"OpenCLIP preprocessing lacks {missing}: {preprocess}")
    return out


def _openclip(encoder: Any, folder: Path, with_image: bool) -> tuple[dict[str, Any], dict[str, Any] | None]:
    import torch

    encoder._load()
    if encoder.precision != "fp32":
        log.info("openclip %s exported in fp32 (trained features were %s)", encoder.model, encoder.precision)
    model = copy.deepcopy(encoder.model_).to("cpu").float().eval()
    normalize = bool(encoder.normalize)

    class Text(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, text):
            out = self.model.encode_text(text)
            return torch.nn.functional.normalize(out, dim=-1) if normalize else out

    class Image(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, image):
            out = self.model.encode_image(image)
            return torch.nn.functional.normalize(out, dim=-1) if normalize else out

    tok_spec = _clip_tokenizer(encoder.tokenizer_, folder)
    tokens = encoder.tokenizer_(["a photo of a cat", "a chart"]).to("cpu")
    dim = int(encoder._dim())
    text_backend = _torch_to_onnx(Text(), (tokens,), folder / "clip_text.onnx", ["text"], {"text": {0: "batch"}})
    text = {"kind": "clip_text", "graph": "clip_text.onnx", "dim": dim, "batch_size": int(encoder.batch_size),
            "exporter": text_backend, **tok_spec}
    if not with_image:
        return text, None
    pre = _clip_preprocess(encoder.preprocess_)
    pixels = torch.zeros((2, 3, pre["crop"][0], pre["crop"][1]), dtype=torch.float32)
    image_backend = _torch_to_onnx(Image(), (pixels,), folder / "clip_image.onnx", ["image"], {"image": {0: "batch"}})
    image = {"kind": "clip_image", "graph": "clip_image.onnx", "dim": dim, "batch_size": int(encoder.batch_size),
             "exporter": image_backend, **pre}
    return text, image


# ------------------------------------------------------------------------------------------ fusion
def _fusion(fusion: Any) -> dict[str, Any]:
    from mmroute.features.fusion import AdaptiveFusion, ConcatFusion, MeanFusion

    def floats(v) -> Any:
        return None if v is None else np.asarray(v, dtype=np.float64).tolist()

    if isinstance(fusion, MeanFusion):
        return {"kind": "mean", "n_features_out": int(fusion.n_features_out_)}
    if isinstance(fusion, ConcatFusion):
        return {"kind": "concat", "d_image": fusion.d_image_}
    if isinstance(fusion, AdaptiveFusion):
        out = {"kind": "adaptive", "width": int(fusion.width_), "combine": fusion.combine,
               "temperature": float(fusion.temperature), "norm_weight": float(fusion.norm_weight),
               "has_image_stats": bool(fusion.has_image_stats_),
               "text_centroid": floats(fusion.text_centroid_), "text_norm_mean": float(fusion.text_norm_mean_),
               "text_norm_std": float(fusion.text_norm_std_)}
        if fusion.has_image_stats_:
            out.update(image_centroid=floats(fusion.image_centroid_), image_norm_mean=float(fusion.image_norm_mean_),
                       image_norm_std=float(fusion.image_norm_std_))
        return out
    raise FeatureExportError(f"fusion {type(fusion).__name__} cannot be served (mean, concat, adaptive can)")


# ------------------------------------------------------------------------------------------ public
def export_feature_pipeline(pipeline: Any, folder: str | Path) -> dict[str, Any]:
    """Write the fitted ``pipeline`` into ``folder`` (created) and return its ``features.json`` spec.

    Raises :class:`FeatureExportError` for encoders that cannot embed raw queries (see
    :func:`raw_input_refusal`) or parts with no serving-time form.
    """
    from mmroute.features.offline import ImageStatsEncoder, OfflineEncoder, TfidfTextEncoder
    from mmroute.features.openclip import OpenClipEncoder
    from mmroute.features.st import SentenceTransformerEncoder

    if not hasattr(pipeline, "fusion_"):
        raise FeatureExportError("the feature pipeline is not fitted: call fit(train_table) first")
    refusal = raw_input_refusal(pipeline)
    if refusal:
        raise FeatureExportError(f"the feature pipeline cannot be served on raw queries: {refusal}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    encoder = pipeline.encoder
    image: dict[str, Any] | None = None
    if isinstance(encoder, OfflineEncoder):
        text = _tfidf(encoder.text_encoder, folder)
        enc_image = encoder.image_encoder
    elif isinstance(encoder, TfidfTextEncoder):
        text, enc_image = _tfidf(encoder, folder), None
    elif isinstance(encoder, SentenceTransformerEncoder):
        text, enc_image = _sentence_transformer(encoder, folder), None
    elif isinstance(encoder, OpenClipEncoder):
        text, image = _openclip(encoder, folder, with_image=True)
        enc_image = None
    else:
        raise FeatureExportError(f"encoder {pipeline.spec!r} ({type(encoder).__name__}) has no serving-time "
                                 "form; servable: offline, tfidf, st:, openclip")
    if isinstance(enc_image, ImageStatsEncoder):
        image = {"kind": "imagestats", "size": int(enc_image.image_size), "thumb": int(enc_image.thumb),
                 "bins": int(enc_image.bins)}
    spec = {"format_version": FORMAT_VERSION, "encoder": pipeline.spec, "text": text, "image": image,
            "fusion": _fusion(pipeline.fusion_)}
    (folder / SPEC_FILE).write_text(json.dumps(spec, indent=1, allow_nan=False), encoding="utf-8")
    return spec
