"""The evaluation table of the promotion gate: raw query rows and actual outcomes of the same rows.

The gate scores each version with its own served model (``mlflow.pyfunc.load_model``) on the same
rows, so versions built with different encoders compete on the same evidence. The table therefore
holds the *raw* rows (ids, datasets, question, context, image bytes) and the outcomes (``correct``,
``cost``, ``models``); it may also hold the features one version's pipeline computed for them
(``fused`` and optional ``text``, ``image``, ``image_mask``) with that pipeline's description
(``feature_info``), for models that take ``features`` only.

Stored as one ``.npz`` without pickles: strings and image bytes are concatenated UTF-8 / raw bytes
with offsets (``<name>_bytes``, ``<name>_offsets``, ``<name>_present``), so a table of thousands of rows with images
stays compact. Images are kept as their file's bytes (PNG / JPEG; other formats re-encoded as PNG)
and sent to the model as base64, as a client would.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmroute.features.types import Features

__all__ = ["EvalTable", "save_eval_table", "load_eval_table", "score_model", "model_pool",
           "ScoringRefused", "raw_rows"]

log = logging.getLogger(__name__)

_CHUNK = 512
_SERVED_FORMATS = ("PNG", "JPEG")


class ScoringRefused(ValueError):
    """A version cannot be scored fairly on this table (names the version and the reason)."""


@dataclass(frozen=True)
class EvalTable:
    """n rows with their actual outcomes for M models.

    ``correct``, ``cost`` : arrays of shape (n, M), NaN = missing; ``models`` : M names;
    ``rows`` : the raw query rows (a DataFrame with ``id``, ``question``, ``context``, ``image``
    as base64 or None), or None for a features-only table; ``features`` : features of the rows
    from one pipeline (described by ``feature_info``), or None; ``datasets`` : (n,) names.
    """

    features: Features | None
    correct: np.ndarray
    cost: np.ndarray
    models: tuple[str, ...]
    ids: np.ndarray | None = None
    datasets: np.ndarray | None = None
    rows: Any = None
    feature_info: dict | None = None

    def __post_init__(self) -> None:
        n = np.asarray(self.correct).shape[0]
        if self.features is not None and len(self.features) != n:
            raise ValueError(f"eval table has {len(self.features)} feature rows for {n} outcome rows")
        if self.rows is not None and len(self.rows) != n:
            raise ValueError(f"eval table has {len(self.rows)} raw rows for {n} outcome rows")
        if self.features is None and self.rows is None:
            raise ValueError("an eval table needs raw rows or features (or both)")
        shape = (n, len(self.models))
        for name in ("correct", "cost"):
            arr = np.asarray(getattr(self, name), dtype=np.float64)
            if arr.shape != shape:
                raise ValueError(f"eval table {name} must have shape {shape} (rows x models), "
                                 f"got {arr.shape}")
            object.__setattr__(self, name, arr)

    def __len__(self) -> int:
        return int(self.correct.shape[0])

    def select(self, models: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(correct, cost)`` restricted to ``models``, in that order; raises naming missing ones."""
        missing = [m for m in models if m not in self.models]
        if missing:
            raise KeyError(f"the evaluation table has no outcomes for model(s) {missing}; "
                           f"it has {list(self.models)}")
        cols = [self.models.index(m) for m in models]
        return self.correct[:, cols], self.cost[:, cols]


# ------------------------------------------------------------------ raw rows
def _image_bytes(path: Any) -> bytes:
    if path is None or (isinstance(path, float) and np.isnan(path)) or str(path) == "":
        return b""
    data = Path(str(path)).read_bytes()
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        if im.format in _SERVED_FORMATS:
            return data
        buf = io.BytesIO()
        im.convert("RGB").save(buf, format="PNG")
        return buf.getvalue()


def raw_rows(table: Any):
    """The served model's request rows for an OutcomeTable: ``id``, ``question``, ``context``,
    ``image`` (base64 of the image file's bytes, or None)."""
    images = (table.image_paths if table.image_paths is not None else [None] * table.n_instances)
    contexts = table.contexts if table.contexts is not None else [None] * table.n_instances
    return _object_frame({
        "id": np.asarray(table.ids).astype(str).tolist(),
        "question": [str(q) for q in table.questions],
        "context": [None if _absent(c) else str(c) for c in contexts],
        "image": [base64.b64encode(b).decode("ascii") if b else None for b in map(_image_bytes, images)],
    })


def _absent(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value == ""


def _object_frame(columns: dict[str, list]):
    """A DataFrame of Python objects: missing values stay None (not NaN in a string dtype)."""
    import pandas as pd

    return pd.DataFrame({k: pd.Series(v, dtype=object) for k, v in columns.items()})


def _pack(values: Sequence[bytes | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(concatenated bytes (uint8), offsets (n + 1,), present (n,)) of optional byte strings."""
    blobs = [v or b"" for v in values]
    offsets = np.zeros(len(blobs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(b) for b in blobs])
    data = np.frombuffer(b"".join(blobs), dtype=np.uint8).copy()
    return data, offsets, np.array([v is not None for v in values], dtype=bool)


def _unpack(data: np.ndarray, offsets: np.ndarray, present: np.ndarray) -> list[bytes | None]:
    raw = data.tobytes()
    return [raw[offsets[i]:offsets[i + 1]] if present[i] else None for i in range(len(present))]


# ------------------------------------------------------------------ storage
def save_eval_table(path: str | Path, features: Features | None, table: Any, *,
                    feature_info: dict | None = None, raw: bool = True) -> Path:
    """Write ``table``'s raw rows (``raw``), outcomes and, when given, its ``features`` to ``path``.

    ``table`` is an OutcomeTable; ``feature_info`` describes the pipeline that computed
    ``features`` (the served model's ``features`` metadata).
    """
    if features is not None and len(features) != table.n_instances:
        raise ValueError(f"{len(features)} feature rows for a table of {table.n_instances} instances")
    if features is None and not raw:
        raise ValueError("an eval table needs raw rows or features (or both)")
    arrays: dict[str, Any] = {"correct": table.correct, "cost": table.cost,
                              "models": np.asarray(table.models, dtype=str),
                              "ids": np.asarray(table.ids, dtype=str),
                              "datasets": np.asarray(table.datasets, dtype=str)}
    if features is not None:
        arrays["fused"] = features.fused
        for name in ("text", "image", "image_mask"):
            if getattr(features, name) is not None:
                arrays[name] = getattr(features, name)
        arrays["feature_info"] = np.asarray(json.dumps(feature_info or {}, sort_keys=True, default=str))
    if raw:
        rows = raw_rows(table)
        for name in ("question", "context", "image"):
            values = rows[name].tolist()
            blobs = [None if _absent(v) else (base64.b64decode(v) if name == "image" else str(v).encode("utf-8"))
                     for v in values]
            if name == "question":  # the question is required: an empty one is kept as ""
                blobs = [b"" if b is None else b for b in blobs]
            arrays[f"{name}_bytes"], arrays[f"{name}_offsets"], arrays[f"{name}_present"] = _pack(blobs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:  # a file handle keeps numpy from appending ".npz"
        np.savez_compressed(fh, **arrays)
    return path


def load_eval_table(source: str | Path) -> EvalTable:
    """Read an evaluation table from a local ``.npz`` path or an MLflow artifact URI
    (``runs:/<run_id>/eval/eval_table.npz``, ``models:/...``)."""
    source = str(source)
    if "://" in source or source.startswith(("runs:/", "models:/")):
        import mlflow

        source = mlflow.artifacts.download_artifacts(artifact_uri=source)
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"evaluation table {path} does not exist (expected an .npz written by "
                                "mmroute.registry.save_eval_table)")
    with np.load(path, allow_pickle=False) as data:
        missing = sorted({"correct", "cost", "models"} - set(data.files))
        if missing or not ({"fused", "question_bytes"} & set(data.files)):
            raise ValueError(f"{path} is not an evaluation table: missing arrays "
                             f"{missing or ['fused or question_bytes']}")

        def get(k: str) -> np.ndarray | None:
            return data[k] if k in data.files else None

        features = None
        if "fused" in data.files:
            features = Features(fused=data["fused"], text=get("text"), image=get("image"),
                                image_mask=get("image_mask"))
        ids = get("ids")
        rows = None
        if "question_bytes" in data.files:
            text = {k: _unpack(data[f"{k}_bytes"], data[f"{k}_offsets"], data[f"{k}_present"])
                    for k in ("question", "context", "image")}
            n = len(text["question"])
            rows = _object_frame({
                "id": ids.astype(str).tolist() if ids is not None else [str(i) for i in range(n)],
                "question": [b.decode("utf-8") for b in text["question"]],
                "context": [None if b is None else b.decode("utf-8") for b in text["context"]],
                "image": [None if b is None else base64.b64encode(b).decode("ascii") for b in text["image"]],
            })
        info = get("feature_info")
        return EvalTable(features=features, correct=data["correct"], cost=data["cost"],
                         models=tuple(str(m) for m in data["models"]), ids=ids, datasets=get("datasets"),
                         rows=rows, feature_info=None if info is None else json.loads(str(info)))


# ------------------------------------------------------------------ scoring
def model_pool(model: Any) -> tuple[str, ...]:
    """The model names a loaded mmroute router model routes between."""
    inner = model.unwrap_python_model()
    if not (hasattr(inner, "models") and hasattr(inner, "meta")):
        raise TypeError(f"not an mmroute router model (got {type(inner).__name__})")
    return tuple(inner.models)


_NOT_FEATURES = ("cache_dir", "data", "raw_refusal")  # do not change the features themselves


def _same_pipeline(version_info: dict | None, table_info: dict | None) -> bool:
    """Whether the version's feature description agrees on every key the table recorded.

    A table with no description (written before descriptions were recorded) accepts any version.
    """
    own = version_info or {}
    stored = {k: v for k, v in (table_info or {}).items() if k not in _NOT_FEATURES}
    if not stored:
        log.warning("the evaluation table does not say which feature pipeline computed its features")
    return all(json.dumps(own.get(k), sort_keys=True, default=str) == json.dumps(v, sort_keys=True, default=str)
               for k, v in stored.items())


def _predictions(model: Any, model_uri: str, table: EvalTable) -> tuple[np.ndarray, np.ndarray, str]:
    """``(perf, cost, how)``: the version's own served model on the raw rows when it takes raw
    queries; else on the stored features, only if its pipeline is the one that computed them."""
    from mmroute.export.core import build_input
    from mmroute.export.pyfunc import predict_frame_arrays

    inner = model.unwrap_python_model()
    takes_raw = getattr(inner, "feature_runtime", None) is not None
    if takes_raw and table.rows is not None:
        step = min(_CHUNK, int(getattr(inner, "max_rows", _CHUNK)))
        perf, cost = [], []
        for start in range(0, len(table.rows), step):
            out = model.predict(table.rows.iloc[start:start + step].reset_index(drop=True))
            names, p, c = predict_frame_arrays(out)
            perf.append(p), cost.append(c)
        if names != list(inner.models):
            raise RuntimeError(f"{model_uri} answered for models {names}, its metadata lists {inner.models}")
        return np.concatenate(perf), np.concatenate(cost), "raw rows"
    if table.features is None:
        raise ScoringRefused(f"{model_uri} takes precomputed features only (it was logged without its "
                             "feature pipeline) and this evaluation table holds raw rows only; re-export the "
                             "version with its feature pipeline")
    if not _same_pipeline(inner.meta.get("features"), table.feature_info):
        own = inner.meta.get("features") or {}
        diff = sorted(k for k, v in (table.feature_info or {}).items()
                      if k not in _NOT_FEATURES and own.get(k) != v)
        raise ScoringRefused(
            f"{model_uri} takes precomputed features only, and the table's features were computed by a "
            f"different feature pipeline (they differ in {diff}); scoring it on them would be unfair. "
            "Re-export the version with its feature pipeline so it is scored on the raw rows")
    layout = [tuple(part) for part in inner.meta["input_layout"]]
    x = build_input(table.features, layout)
    perf, pcost = zip(*(inner.predict_arrays(x[i:i + 4096]) for i in range(0, len(x), 4096)))
    return np.concatenate(perf), np.concatenate(pcost), "stored features"


def score_model(model_uri: str, table: EvalTable, metric: str, *, model: Any = None) -> float:
    """Load a router model (pyfunc), predict on the table's rows and return ``metric``.

    ``metric`` is ``<rule>/<name>`` as logged by the pipeline (e.g. ``budget/nAUC``,
    ``tradeoff/Ps``); a bare name means the budget rule. A model that takes raw queries is scored
    on the raw rows through its own served pipeline; one that takes features only, on the stored
    features when they come from its own pipeline (else :class:`ScoringRefused`).
    """
    import mlflow

    from mmroute.evaluation import RULES, evaluate_predictions

    rule, _, name = metric.rpartition("/")
    rule = rule or "budget"
    if rule not in RULES:
        raise ValueError(f"metric {metric!r}: rule {rule!r} is not one of {list(RULES)}")
    model = model if model is not None else mlflow.pyfunc.load_model(model_uri)
    models = model_pool(model)
    perf, pcost, how = _predictions(model, model_uri, table)
    correct, cost = table.select(list(models))
    result = evaluate_predictions(perf, pcost, correct, cost, rule=rule, models=list(models))
    if name not in result.metrics:
        raise KeyError(f"metric {name!r} is not computed; available: {sorted(result.metrics)}")
    value = float(result.metrics[name])
    log.info("%s scores %s = %.4f on %d rows (%s)", model_uri, metric, value, len(table), how)
    return value
