"""The MLflow model code of a served probe router: raw query in, deferral decision out.

MLflow copies this file into each logged probe model ("models from code") and runs it on load;
the model also carries the mmroute package (``code_paths``) for the backbone forward up to layer
``l`` and the input builders. This flavour needs torch and transformers (declared in the model's
pip requirements) besides mlflow, numpy, pandas and onnxruntime.

Per request row, as for every served mmroute router: ``question`` (required), ``context``
(optional, appended on a new line, e.g. answer options), ``image`` (optional: base64-encoded image
bytes, a ``data:`` URI, or a path on the server; vision-language backbones only) and ``id``.
The row goes through the backbone's tokenizer or processor (image preprocessing, image tokens,
3-D M-RoPE positions), the backbone runs up to layer ``l``, the head (ONNX) gives ``p_correct``,
the small model's predicted correctness; the query is deferred when ``p_correct < threshold``.

Params (at most one; default: defer when the large model is predicted better, ``p < a_L``):
``threshold`` (a value), ``defer_share`` (the share of training queries deferred, calibrated on
the training rows' scores) or ``target_accuracy`` (the smallest deferral share whose hybrid
accuracy on the training rows reaches it). Output: ``id`` (when given), ``defer``, ``p_correct``,
``model`` (the chosen model), ``threshold``, then ``perf_<m>`` and ``cost_<m>`` of both models (the
router's ``predict``: the registry's gate scores versions with them). Bad payloads raise errors the
server answers with 400.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import math
import os
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

log = logging.getLogger("mmroute.serving.probe")

HEAD_ARTIFACT = "probe_head_onnx"
META_ARTIFACT = "probe_meta"
BACKBONE_ARTIFACT = "backbone"
PARAMS = ("threshold", "defer_share", "target_accuracy")
BATCH = 16


def bad_input(message: str) -> MlflowException:
    """An error the scoring server answers with HTTP 400 and this message."""
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def _image(value: Any, row: int) -> Any:
    from PIL import Image, UnidentifiedImageError

    if isinstance(value, str) and os.path.isfile(value):
        try:
            with Image.open(value) as img:
                return img.convert("RGB")
        except (OSError, UnidentifiedImageError):
            raise bad_input(f"row {row}: 'image' {value!r} is not a readable image") from None
    if not isinstance(value, (str, bytes)):
        raise bad_input(f"row {row}: 'image' must be base64 image bytes or a path, got {type(value).__name__}")
    text = value.split(",", 1)[1] if isinstance(value, str) and value.startswith("data:") else value
    try:
        raw = base64.b64decode(text, validate=True)
        with Image.open(io.BytesIO(raw)) as img:
            return img.convert("RGB")
    except (binascii.Error, ValueError, OSError, UnidentifiedImageError):
        raise bad_input(f"row {row}: 'image' is neither base64 image bytes nor an existing image path") from None


def request_items(model_input: Any, *, vision: bool) -> list[dict[str, Any]]:
    """Validate the request rows into builder items ``{"id", "text", "image"}``; raises 400-errors."""
    if isinstance(model_input, dict):
        model_input = pd.DataFrame({k: list(v) if isinstance(v, (list, tuple)) else [v]
                                    for k, v in model_input.items()})
    if not isinstance(model_input, pd.DataFrame):
        raise bad_input(f"expected rows with a 'question' column, got {type(model_input).__name__}")
    if "question" not in model_input.columns:
        raise bad_input(f"input is missing the column 'question' (the query); got columns "
                        f"{list(model_input.columns)}")
    if len(model_input) == 0:
        raise bad_input("input has no rows")
    items = []
    n = len(model_input)
    images = model_input["image"].tolist() if "image" in model_input.columns else [None] * n
    contexts = model_input["context"].tolist() if "context" in model_input.columns else [None] * n
    for i, (text, context, image) in enumerate(zip(model_input["question"].tolist(), contexts, images)):
        if not isinstance(text, str) or not text.strip():
            raise bad_input(f"row {i}: 'question' must be a non-empty string, got {text!r}")
        if isinstance(context, str) and context:
            text = f"{text}\n{context}"  # as the training rows' texts (OutcomeTable.texts)
        if image is not None and not (isinstance(image, float) and math.isnan(image)) and image != "":
            if not vision:
                raise bad_input(f"row {i}: this probe's backbone reads text only; drop the 'image' field")
            image = _image(image, i)
        else:
            image = None
        items.append({"id": str(i), "text": text, "image": image})
    return items


def choose_threshold(meta: dict[str, Any], params: dict[str, Any]) -> float:
    """The deferral threshold a request asks for (module docstring); raises 400-errors."""
    from mmroute.probes.deferral import threshold_for_accuracy, threshold_for_share

    unknown = sorted(set(params) - set(PARAMS))
    if unknown:
        raise bad_input(f"unknown params {unknown}; expected one of {list(PARAMS)}")
    given = {k: v for k, v in params.items() if v is not None}
    if len(given) > 1:
        raise bad_input(f"give at most one of {list(PARAMS)}, got {sorted(given)}")
    cal = meta["calibration"]
    try:
        if "threshold" in given:
            value = float(given["threshold"])
            if not math.isfinite(value):
                raise ValueError(f"threshold must be a finite number, got {given['threshold']!r}")
            return value
        if "defer_share" in given:
            return threshold_for_share(np.asarray(cal["scores"]), float(given["defer_share"]))
        if "target_accuracy" in given:
            return threshold_for_accuracy(np.asarray(cal["scores"]), np.asarray(cal["small"]),
                                          np.asarray(cal["large"]), float(given["target_accuracy"]))
    except (TypeError, ValueError) as exc:
        raise bad_input(str(exc)) from None
    return float(meta["default_threshold"])


class ProbeRouterModel(mlflow.pyfunc.PythonModel):
    """Serves one probe router (see the module docstring)."""

    # Read by the registry's gate: this model takes raw rows (its own backbone is the runtime).
    feature_runtime = "probe backbone"
    max_rows = 256

    def load_context(self, context) -> None:
        import onnxruntime as ort
        import torch

        from mmroute.probes.inputs import load_backbone

        with open(context.artifacts[META_ARTIFACT]) as fh:
            self.meta = json.load(fh)
        self.models = list(self.meta["models"])
        path = context.artifacts.get(BACKBONE_ARTIFACT) or self.meta["backbone"]["path"]
        if not path or not os.path.isdir(path) or not os.path.isfile(os.path.join(path, "config.json")):
            raise MlflowException(
                f"probe backbone weights are missing: {path!r} is not a model directory with config.json. "
                "The model references the backbone by path; put the weights there or log the model with "
                "the backbone packaged (serve_backbone='package').")
        config = getattr(context, "model_config", None) or {}
        self.device = config.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = config.get("dtype") or self.meta["backbone"].get("dtype")
        self.backbone, self.builder = load_backbone(path, token_cap=self.meta["backbone"].get("token_cap"),
                                                    dtype=dtype)
        self.backbone.to(self.device)
        self.vision = type(self.builder).__name__ == "ProcessorInputs"
        self.storage = getattr(torch, self.meta.get("storage_dtype", "float32"))
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(context.artifacts[HEAD_ARTIFACT], sess_options=options,
                                            providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def scores(self, items: list[dict[str, Any]]) -> np.ndarray:
        """P(small model correct) of builder items, shape (len(items),)."""
        import torch

        from mmroute.probes.forward import run_to_layer

        out = []
        for start in range(0, len(items), BATCH):
            batch = self.builder(items[start:start + BATCH])
            batch = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in batch.items()}
            cap = run_to_layer(self.backbone, int(self.meta["layer"]), batch)
            mask = batch["attention_mask"]
            # The head was trained on states stored at the cache's precision: round them the same way.
            rows = torch.arange(mask.shape[0], device=mask.device)
            last = torch.where(mask.bool(), torch.arange(mask.shape[1], device=mask.device), -1).max(dim=1).values
            feeds = {"last_state": cap.states_out[rows, last], "states": cap.states_in, "mask": mask.long()}
            if "position_ids" in self.inputs:
                pos = cap.position_ids
                if pos is None:
                    pos = torch.arange(mask.shape[1], device=mask.device).expand(1, *mask.shape)
                feeds["position_ids"] = pos.long() * mask.long()[None]
            arrays = {}
            for name in self.inputs:
                t = feeds[name]
                t = t.to(self.storage).float() if t.is_floating_point() else t
                arrays[name] = t.detach().cpu().numpy()
            out.append(self.session.run(None, arrays)[0].astype(np.float64).reshape(-1))
        return np.concatenate(out)

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        threshold = choose_threshold(self.meta, dict(params or {}))
        items = request_items(model_input, vision=self.vision)
        p = self.scores(items)
        defer = p < threshold
        out: dict[str, Any] = {}
        if isinstance(model_input, pd.DataFrame) and "id" in model_input.columns:
            out["id"] = model_input["id"].astype(str).to_numpy()
        out["defer"] = defer
        out["p_correct"] = p
        out["model"] = np.where(defer, self.models[1], self.models[0]).astype(object)
        out["threshold"] = np.full(p.shape[0], threshold)
        cost = np.asarray(self.meta["cost"], dtype=np.float64)
        for j, name in enumerate(self.models):
            out[f"perf_{name}"] = p if j == 0 else np.full(p.shape[0], float(self.meta["large_accuracy"]))
        for j, name in enumerate(self.models):
            out[f"cost_{name}"] = np.full(p.shape[0], cost[j])
        return pd.DataFrame(out)


# Executed as model code by MLflow (a module named code_model_<hex>): register the model. Imported
# as part of the mmroute package it only defines the class.
if not __name__.startswith("mmroute."):
    mlflow.models.set_model(ProbeRouterModel())
