"""The MLflow model code of every logged mmroute router: an ONNX graph run by onnxruntime.

MLflow copies this one file into each logged model ("models from code") and executes it on load,
so serving a router needs mlflow, numpy, pandas and onnxruntime, and nothing of mmroute. Keep it
self-contained: standard library, numpy, pandas and mlflow imports only.

Input: a DataFrame with a column ``features`` (one list of ``input_width`` floats per row) and an
optional string column ``id``. Params (optional, declared in the signature): ``budget`` (pick the
best predicted performance among models whose predicted cost is <= budget; when none fits, the
cheapest predicted model, flagged ``within_budget = False``) or ``tradeoff`` (lambda >= 0: pick
argmax of perf - lambda * cost). Neither: the best predicted performance. Ties go to the lowest
model index. Output, one row per input row: ``id`` (when given), ``model`` (chosen name),
``model_index``, ``within_budget``, then ``perf_<name>`` and ``cost_<name>`` for every model.
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
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

log = logging.getLogger("mmroute.serving")

ONNX_ARTIFACT = "router_onnx"
META_ARTIFACT = "router_meta"
PROVIDERS_ENV = "MMROUTE_ORT_PROVIDERS"


def bad_input(message: str) -> MlflowException:
    """An error the scoring server answers with HTTP 400 and this message."""
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


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


def features_matrix(model_input: Any, width: int) -> np.ndarray:
    """Validate the ``features`` column and stack it into float32 (n, width); raises 400-errors."""
    if isinstance(model_input, dict):
        model_input = pd.DataFrame({k: list(v) for k, v in model_input.items()})
    if not isinstance(model_input, pd.DataFrame):
        raise bad_input(f"expected a DataFrame with a 'features' column, got {type(model_input).__name__}")
    if "features" not in model_input.columns:
        raise bad_input(f"input is missing the column 'features' (a list of {width} floats per row); "
                        f"got columns {list(model_input.columns)}")
    rows = []
    for i, value in enumerate(model_input["features"].tolist()):
        if value is None or np.isscalar(value):
            raise bad_input(f"row {i}: 'features' must be a list of {width} numbers, got {value!r}")
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise bad_input(f"row {i}: 'features' holds non-numeric values") from None
        if arr.ndim != 1 or arr.shape[0] != width:
            raise bad_input(f"row {i}: 'features' has {arr.size} values, the router expects {width}")
        rows.append(arr)
    if not rows:
        raise bad_input("input has no rows")
    x = np.stack(rows)
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if bad.size:
        raise bad_input(f"rows {bad[:10].tolist()} of 'features' contain NaN or infinite values")
    return x.astype(np.float32)


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
        options = ort.SessionOptions()
        options.log_severity_level = 3
        providers = choose_providers(config.get("providers"))
        self.session = ort.InferenceSession(context.artifacts[ONNX_ARTIFACT], sess_options=options,
                                            providers=providers)
        log.info("router graph loaded with providers %s", self.session.get_providers())

    def predict_arrays(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(perf, cost)`` each (n, M) float64 for a float32 input (n, input_width)."""
        perf, cost = self.session.run(["perf", "cost"], {"x": x})
        return perf.astype(np.float64), cost.astype(np.float64)

    def predict(self, context, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        params = params or {}
        unknown = sorted(set(params) - {"budget", "tradeoff"})
        if unknown:
            raise bad_input(f"unknown params {unknown}; expected 'budget' or 'tradeoff'")
        x = features_matrix(model_input, self.width)
        perf, cost = self.predict_arrays(x)
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


# Executed as model code by MLflow (a module named code_model_<hex>): register the model. Imported
# as part of the mmroute package it only defines the class.
if not __name__.startswith("mmroute."):
    mlflow.models.set_model(OnnxRouterModel())
