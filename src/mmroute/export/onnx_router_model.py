"""The MLflow model code of every logged mmroute router: raw query -> routing decision.

MLflow copies this file into each logged model ("models from code") and executes it on load; the
serving-time helpers travel beside it as the package ``mmroute_runtime`` (``code_paths``). Serving
needs mlflow, numpy, pandas, onnxruntime, tokenizers and Pillow, and nothing of mmroute or torch.

Input (see ``mmroute_runtime.inputs``): rows with ``question`` (string), optional ``image`` (base64
PNG/JPEG) and ``context``; or rows with ``features`` (a list of ``input_width`` floats, for clients
that already hold vectors); optional ``id``. The exported feature pipeline (artifact ``features``)
turns raw rows into the router input, then the router graph predicts per-model performance and
cost. Params (optional, declared in the signature): ``budget`` (pick the best predicted performance
among models whose predicted cost is <= budget; when none fits, the cheapest predicted model,
flagged ``within_budget = False``) or ``tradeoff`` (lambda >= 0: pick argmax of perf - lambda *
cost). Neither: the best predicted performance. Ties go to the lowest model index. Output, one row
per input row: ``id`` (when given), ``model`` (chosen name), ``model_index``, ``within_budget``,
then ``perf_<name>`` and ``cost_<name>`` for every model.

Model config (``model_config`` at log or load time): ``max_rows`` (rows per request, default 1024),
``max_image_pixels`` (default 36,000,000), ``providers`` (onnxruntime providers).
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
from typing import Any

import mlflow
import numpy as np
import pandas as pd

if __name__.startswith("mmroute."):
    from .mmroute_runtime.features import build_input, load_feature_runtime
    from .mmroute_runtime.inputs import (DEFAULT_MAX_IMAGE_PIXELS, DEFAULT_MAX_ROWS, bad_input,
                                         check_finite_output, features_matrix, parse_request)
else:
    try:  # executed as a logged model's code: the runtime package is on sys.path via code_paths
        from mmroute_runtime.features import build_input, load_feature_runtime
        from mmroute_runtime.inputs import (DEFAULT_MAX_IMAGE_PIXELS, DEFAULT_MAX_ROWS, bad_input,
                                            check_finite_output, features_matrix, parse_request)
    except ModuleNotFoundError:  # executed from mmroute's source tree while the model is logged
        from mmroute.export.mmroute_runtime.features import build_input, load_feature_runtime
        from mmroute.export.mmroute_runtime.inputs import (DEFAULT_MAX_IMAGE_PIXELS, DEFAULT_MAX_ROWS,
                                                           bad_input, check_finite_output,
                                                           features_matrix, parse_request)

log = logging.getLogger("mmroute.serving")

ONNX_ARTIFACT = "router_onnx"
META_ARTIFACT = "router_meta"
FEATURES_ARTIFACT = "features"
PROVIDERS_ENV = "MMROUTE_ORT_PROVIDERS"


def _cuda_driver_present() -> bool:
    # onnxruntime-gpu lists the CUDA provider even on machines without a GPU and then logs a
    # loud failure; the driver library is a cheap, reliable sign that a device exists.
    try:
        ctypes.CDLL("libcuda.so.1")
        return True
    except OSError:
        return False


def choose_providers(requested: list[str] | None = None) -> list[str]:
    """``requested`` (or $MMROUTE_ORT_PROVIDERS, comma-separated) if given; else CUDA then CPU
    when a CUDA device is usable, else CPU."""
    import onnxruntime as ort

    if requested is None and os.environ.get(PROVIDERS_ENV):
        requested = [p.strip() for p in os.environ[PROVIDERS_ENV].split(",") if p.strip()]
    available = ort.get_available_providers()
    if requested:
        unknown = [p for p in requested if p not in available]
        if unknown:
            raise ValueError(f"onnxruntime providers {unknown} are not available; available: {available}")
        return list(requested)
    if "CUDAExecutionProvider" in available and _cuda_driver_present():
        if hasattr(ort, "preload_dlls"):
            try:  # CUDA/cuDNN from the nvidia-* wheels torch installed, when present
                ort.preload_dlls()
            except Exception as exc:  # noqa: BLE001 - optional convenience, never fatal
                log.debug("onnxruntime.preload_dlls failed: %s", exc)
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def decide(perf: np.ndarray, cost: np.ndarray, budget: float | None = None,
           tradeoff: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Chosen model index (n,) and whether it is within the budget (n,), from (n, M) predictions."""
    if budget is not None and tradeoff is not None:
        raise bad_input("give either 'budget' or 'tradeoff', not both")
    n = perf.shape[0]
    if budget is not None:
        budget = float(budget)
        if not np.isfinite(budget):
            raise bad_input(f"budget must be a finite number, got {budget}")
        fits = cost <= budget
        masked = np.where(fits, perf, -np.inf)
        choice = np.where(fits.any(axis=1), masked.argmax(axis=1), cost.argmin(axis=1))
        return choice, fits.any(axis=1)
    if tradeoff is not None:
        tradeoff = float(tradeoff)
        if not (np.isfinite(tradeoff) and tradeoff >= 0):
            raise bad_input(f"tradeoff must be a finite number >= 0, got {tradeoff}")
        return (perf - tradeoff * cost).argmax(axis=1), np.ones(n, dtype=bool)
    return perf.argmax(axis=1), np.ones(n, dtype=bool)


class OnnxRouterModel(mlflow.pyfunc.PythonModel):
    """Routes each row to a model with the router's ONNX graph (see the module docstring)."""

    def load_context(self, context) -> None:
        import onnxruntime as ort

        with open(context.artifacts[META_ARTIFACT]) as fh:
            self.meta = json.load(fh)
        self.models = list(self.meta["models"])
        self.width = int(self.meta["input_width"])
        config = getattr(context, "model_config", None) or {}
        self.max_rows = int(config.get("max_rows", DEFAULT_MAX_ROWS))
        self.max_image_pixels = int(config.get("max_image_pixels", DEFAULT_MAX_IMAGE_PIXELS))
        options = ort.SessionOptions()
        options.log_severity_level = 3
        providers = choose_providers(config.get("providers"))
        self.session = ort.InferenceSession(context.artifacts[ONNX_ARTIFACT], sess_options=options,
                                            providers=providers)
        log.info("router graph loaded with providers %s", self.session.get_providers())
        self._load_features(context, providers)

    def _load_features(self, context, providers: list[str]) -> None:
        """The exported feature pipeline, when the model has one (else ``features`` input only)."""
        self.feature_runtime = None
        self.raw_refusal = self.meta.get("features", {}).get("raw_refusal", "") or (
            "this model was logged without its feature pipeline")
        folder = context.artifacts.get(FEATURES_ARTIFACT)
        if folder and os.path.isdir(folder):
            self.feature_runtime = load_feature_runtime(folder, providers)
            self.raw_refusal = ""

    def _router_input(self, model_input: Any) -> np.ndarray:
        """Validated router input (n, input_width) float32 from raw query rows or a features column."""
        request = parse_request(model_input, width=self.width, max_rows=self.max_rows,
                                max_image_pixels=self.max_image_pixels,
                                accepts_raw=self.feature_runtime is not None, raw_refusal=self.raw_refusal)
        if not request.raw:
            return request.features
        parts = self.feature_runtime.parts(request.texts(), request.images)
        x = build_input(parts, self.meta["input_layout"])
        check_finite_output(features=x)
        return x

    def predict_arrays(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(perf, cost)`` each (n, M) float64 for a float32 input (n, input_width); never NaN/inf."""
        perf, cost = self.session.run(["perf", "cost"], {"x": x})
        check_finite_output(perf=perf, cost=cost)
        return perf.astype(np.float64), cost.astype(np.float64)

    def _decide(self, model_input: Any, perf: np.ndarray, cost: np.ndarray,
                params: dict[str, Any]) -> pd.DataFrame:
        """The output frame: the chosen model per row under the request's params."""
        unknown = sorted(set(params) - {"budget", "tradeoff"})
        if unknown:
            raise bad_input(f"unknown params {unknown}; expected 'budget' or 'tradeoff'")
        choice, within = decide(perf, cost, params.get("budget"), params.get("tradeoff"))
        out: dict[str, Any] = {}
        if isinstance(model_input, pd.DataFrame) and "id" in model_input.columns:
            out["id"] = model_input["id"].astype(str).to_numpy()
        out["model"] = np.asarray(self.models, dtype=object)[choice]
        out["model_index"] = choice.astype(np.int64)
        out["within_budget"] = within
        for j, name in enumerate(self.models):
            out[f"perf_{name}"] = perf[:, j]
        for j, name in enumerate(self.models):
            out[f"cost_{name}"] = cost[:, j]
        return pd.DataFrame(out)

    def predict(self, context, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        x = self._router_input(model_input)
        perf, cost = self.predict_arrays(x)
        return self._decide(model_input, perf, cost, params or {})


# Executed as model code by MLflow (a module named code_model_<hex>): register the model. Imported
# as part of the mmroute package it only defines the class.
if not __name__.startswith("mmroute."):
    mlflow.models.set_model(OnnxRouterModel())
