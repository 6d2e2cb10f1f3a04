"""The raw-query half of a logged router: feature folder, request rows, and the served-model check.

``export_features`` writes the fitted feature pipeline into the model (or records why the model can
take ``features`` only); ``check_served`` runs the model's own serving code
(:class:`~mmroute.export.onnx_router_model.OnnxRouterModel`) on held-out raw rows, text and image
rows, and refuses the export unless its router inputs and predictions equal the training-time
pipeline's; ``raw_frame`` / ``example_frame`` build request rows (base64 images) from a table.
"""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from mmroute.export.core import ExportParityError, router_input
from mmroute.export.mmroute_runtime.inputs import DEFAULT_MAX_IMAGE_PIXELS, DEFAULT_MAX_ROWS, IMAGE_FORMATS

__all__ = ["served_config", "export_features", "raw_frame", "example_frame", "check_served", "CHECK_ROWS"]

log = logging.getLogger(__name__)

# Held-out rows the served model is checked on, per kind (rows with an image, rows without).
CHECK_ROWS = 128
CONFIG_KEYS = ("max_rows", "max_image_pixels", "providers", "intra_op_threads")


def served_config(config: dict[str, Any] | None) -> dict[str, Any]:
    """The model config stored with the model: the request bounds, defaults filled in."""
    from PIL import Image

    config = dict(config or {})
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise ValueError(f"unknown model_config keys {unknown}; valid: {list(CONFIG_KEYS)}")
    # intra_op_threads is stored even when unset (None: onnxruntime's default), because MLflow lets
    # a load-time model_config override only the keys logged with the model (batch routing sets it
    # to the cores of one Spark task).
    out = {"max_rows": config.pop("max_rows", DEFAULT_MAX_ROWS),
           "max_image_pixels": config.pop("max_image_pixels", DEFAULT_MAX_IMAGE_PIXELS),
           "intra_op_threads": config.pop("intra_op_threads", None), **config}
    for key in ("max_rows", "max_image_pixels", "intra_op_threads"):
        if key not in out or (key == "intra_op_threads" and out[key] is None):
            continue
        value = out[key]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"model_config {key} must be an integer >= 1, got {value!r}")
        out[key] = int(value)
    pil_limit = Image.MAX_IMAGE_PIXELS
    if pil_limit is not None and out["max_image_pixels"] > pil_limit:
        raise ValueError(f"model_config max_image_pixels={out['max_image_pixels']} is above Pillow's "
                         f"decompression limit ({pil_limit}); choose a value at or below it")
    return out


def export_features(pipeline: Any, export: Any, folder: Path,
                    feature_info: dict[str, Any] | None) -> tuple[Path | None, dict[str, Any]]:
    """Write ``pipeline`` into ``folder`` for the model; ``(folder or None, feature_info)``.

    ``feature_info["raw_refusal"]`` says why a model without a folder takes ``features`` only.
    """
    from mmroute.export.feature_export import export_feature_pipeline, raw_input_refusal

    info = dict(feature_info or {})
    if pipeline is None:
        info["raw_refusal"] = "the model was logged without its feature pipeline"
        return None, info
    refusal = raw_input_refusal(pipeline)
    parts = [part for part, _ in export.input_layout]
    if refusal is None and "custom" in parts:
        refusal = f"the router's input ({export.input_layout}) is not built from the pipeline's features"
    if refusal:
        log.warning("the served model takes 'features' only: %s", refusal)
        info["raw_refusal"] = refusal
        return None, info
    spec = export_feature_pipeline(pipeline, folder)
    info["serving"] = {"encoder": spec["encoder"], "text": spec["text"]["kind"],
                       "image": None if spec["image"] is None else spec["image"]["kind"],
                       "fusion": spec["fusion"]["kind"]}
    return folder, info


def _request_image(path: str, max_pixels: int) -> tuple[str | None, str]:
    """(base64 PNG/JPEG bytes, "ok") for an image file, or (None, why) when it cannot be sent."""
    from PIL import Image

    try:
        data = Path(path).read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            if im.size[0] * im.size[1] > max_pixels:
                return None, "too_large"
            if im.format not in IMAGE_FORMATS:  # e.g. GIF/WebP: sent as PNG of the same RGB pixels
                im.load()
                buf = io.BytesIO()
                im.convert("RGB").save(buf, format="PNG")
                data = buf.getvalue()
            else:
                im.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None, "unreadable"
    return base64.b64encode(data).decode("ascii"), "ok"


def raw_frame(table: Any, rows: Sequence[int] | None = None, *,
              max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS):
    """Request rows for ``table`` (``rows`` of it): ``id``, ``question``, ``context``, ``image`` (base64).

    Returns ``(frame, status)``: ``status[i]`` is "ok", "none" (no image), "unreadable" (sent without
    its image, as training zeroes it) or "too_large" (above the pixel limit: sent without it).
    """
    import pandas as pd

    rows = range(table.n_instances) if rows is None else [int(r) for r in rows]
    records, status = [], []
    for i in rows:
        path = None if table.image_paths is None else table.image_paths[i]
        image, why = (None, "none") if not path else _request_image(str(path), max_image_pixels)
        context = None if table.contexts is None else table.contexts[i]
        records.append({"id": str(table.ids[i]), "question": str(table.questions[i]),
                        "context": None if context in (None, "") or context != context else str(context),
                        "image": image})
        status.append(why)
    return pd.DataFrame(records, columns=["id", "question", "context", "image"]), status


def _demo_png() -> str:
    """A small gradient PNG for input examples of tables without images."""
    from PIL import Image

    x = np.linspace(0, 255, 64, dtype=np.uint8)
    pixels = np.stack([np.tile(x, (48, 1)), np.tile(x[::-1], (48, 1)), np.full((48, 64), 128, np.uint8)], axis=2)
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def example_frame(table: Any):
    """The logged input example: a raw query with an image, and one text-only query."""
    frame, status = raw_frame(table, range(min(table.n_instances, 64)))
    with_image = [i for i, s in enumerate(status) if s == "ok"]
    text_only = [i for i, s in enumerate(status) if s == "none"]
    first = frame.iloc[[with_image[0] if with_image else 0]].copy()
    if not with_image:
        first["image"] = _demo_png()
    second = frame.iloc[[text_only[0]]] if text_only else frame.iloc[[0]].assign(image=None)
    out = first.drop(columns="id").reset_index(drop=True)
    out.loc[1] = second.drop(columns="id").iloc[0]
    return out


def _check_rows(status: Sequence[str], per_kind: int) -> list[int]:
    images = [i for i, s in enumerate(status) if s == "ok"][:per_kind]
    texts = [i for i, s in enumerate(status) if s in ("none", "unreadable")][:per_kind]
    return sorted(images + texts)


def _max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    return float(np.nan_to_num(np.abs(a - b), nan=np.inf).max(initial=0.0))


def check_served(artifacts: dict[str, str], config: dict[str, Any], router: Any, features: Any, table: Any, *,
                 atol: float, per_kind: int = CHECK_ROWS) -> dict[str, Any]:
    """Run the served model's code on raw rows of ``table`` and compare with the training-time path.

    ``features`` are the training-time pipeline's Features of ``table`` (row-aligned). Raises
    :class:`~mmroute.export.core.ExportParityError` when the router inputs or the predictions
    differ by more than ``atol``; returns the figures otherwise.
    """
    from mmroute.export.onnx_router_model import OnnxRouterModel

    if table.n_instances != len(features):
        raise ValueError(f"check_table has {table.n_instances} rows but the check features have {len(features)}")
    status = [_status_only(table, i, config["max_image_pixels"]) for i in range(table.n_instances)]
    rows = _check_rows(status, per_kind)
    frame, _ = raw_frame(table, rows, max_image_pixels=config["max_image_pixels"])
    model = OnnxRouterModel()
    model.load_context(SimpleNamespace(artifacts=artifacts, model_config={**config,
                                                                         "providers": ["CPUExecutionProvider"]}))
    xs, perfs, costs = [], [], []
    step = int(config["max_rows"])
    for start in range(0, len(frame), step):
        x = model._router_input(frame.iloc[start:start + step].drop(columns="id").reset_index(drop=True))
        perf, cost = model.predict_arrays(x)
        xs.append(x), perfs.append(perf), costs.append(cost)
    subset = features.subset(np.asarray(rows))
    x_ref = router_input(router, subset)
    perf_ref, cost_ref = router.predict(subset)
    diffs = {"features": _max_abs_diff(np.concatenate(xs), x_ref),
             "perf": _max_abs_diff(np.concatenate(perfs), perf_ref),
             "cost": _max_abs_diff(np.concatenate(costs), cost_ref)}
    n_image = sum(status[r] == "ok" for r in rows)
    if not all(d <= atol for d in diffs.values()):
        raise ExportParityError(
            f"the served model disagrees with the training-time pipeline on {len(rows)} held-out raw rows "
            f"({n_image} with an image): max |diff| features {diffs['features']:.3g}, perf {diffs['perf']:.3g}, "
            f"cost {diffs['cost']:.3g}, tolerance {atol:g}; nothing was logged")
    skipped = sum(s == "too_large" for s in status)
    log.info("served model checked on %d raw rows (%d with an image): max diff features %.2g, perf %.2g, "
             "cost %.2g", len(rows), n_image, diffs["features"], diffs["perf"], diffs["cost"])
    return {"n_rows": len(rows), "n_image_rows": int(n_image), "n_skipped_too_large": int(skipped),
            "max_abs_diff": diffs, "atol": atol}


def _status_only(table: Any, i: int, max_pixels: int) -> str:
    from PIL import Image

    path = None if table.image_paths is None else table.image_paths[i]
    if not path:
        return "none"
    try:
        with Image.open(str(path)) as im:
            return "too_large" if im.size[0] * im.size[1] > max_pixels else "ok"
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return "unreadable"
