"""The MLflow model code of every logged mmroute router: raw query -> routing decision.

MLflow copies this file into each logged model ("models from code") and executes it on load; the
serving-time helpers travel beside it as the package ``mmroute_runtime`` (``code_paths``). Serving
needs mlflow, numpy, pandas, onnxruntime, tokenizers and Pillow, and nothing of mmroute or torch.

Input (see ``mmroute_runtime.inputs``): rows with ``question`` (string), optional ``image`` (base64
PNG/JPEG) and ``context``; or rows with ``features`` (a list of ``input_width`` floats, for clients
that already hold vectors); optional ``id``. The exported feature pipeline (artifact ``features``)
turns raw rows into the router input, then the router graph predicts per-model performance and
cost, and the request's params pick the model.

Params (optional, declared in the signature; at most one of the first four):

* ``budget``: the best predicted performance among models whose predicted cost is <= budget;
  when none fits, the ``fallback`` (default ``"cheapest"``: the best predicted performance among
  the row's cheapest-predicted models; ``"first"``: model 0, as the MMR-Bench reference; see
  ``mmroute_runtime.decide``);
* ``tradeoff`` (lambda >= 0): argmax of perf - lambda * cost;
* ``target_cost`` (USD per query): the calibrated operating point that is most accurate with an
  expected mean cost within it (below the cheapest point: the cheapest, ``within_target`` False);
* ``target_quality`` (a fraction of the best single model's accuracy, e.g. 0.95): the cheapest
  calibrated point expected to reach it;
* ``models``: comma-separated names, the models allowed for this request (default all; an
  unknown name is a 400 naming it);
* ``fallback``: ``"cheapest"`` or ``"first"``, for ``budget``.

None of the rule params: the best predicted performance (the trade-off rule at lambda = 0).
Ties go to the lowest model index.

Output, one row per input row: ``id`` (when given), ``model`` (chosen name), ``model_index`` (in
the pool), ``ranking`` (the allowed models best first: failing over down it equals asking again
without the models that are down), ``within_budget``, ``within_target``, ``rule`` and ``param``
(the operating point used), ``expected_cost`` and ``expected_accuracy`` (that point's mean cost
per query and accuracy on the calibration rows; absent when the model has no calibration), then
``perf_<name>`` and ``cost_<name>`` for every model of the pool.

Model config (``model_config`` at log or load time): ``max_rows`` (rows per request, default 1024),
``max_image_pixels`` (default 36,000,000), ``providers`` (onnxruntime providers),
``intra_op_threads`` (onnxruntime threads per graph; default: onnxruntime's, all cores).
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
    from .mmroute_runtime import calibration as runtime_calibration
    from .mmroute_runtime import decide as runtime_decide
    from .mmroute_runtime.features import build_input, load_feature_runtime, session_options
    from .mmroute_runtime.inputs import (
        DEFAULT_MAX_IMAGE_PIXELS,
        DEFAULT_MAX_ROWS,
        bad_input,
        check_finite_output,
        parse_request,
    )
else:
    try:  # executed as a logged model's code: the runtime package is on sys.path via code_paths
        from mmroute_runtime import calibration as runtime_calibration
        from mmroute_runtime import decide as runtime_decide
        from mmroute_runtime.features import build_input, load_feature_runtime, session_options
        from mmroute_runtime.inputs import (
            DEFAULT_MAX_IMAGE_PIXELS,
            DEFAULT_MAX_ROWS,
            bad_input,
            check_finite_output,
            parse_request,
        )
    except ModuleNotFoundError:  # executed from mmroute's source tree while the model is logged
        from mmroute.export.mmroute_runtime import calibration as runtime_calibration
        from mmroute.export.mmroute_runtime import decide as runtime_decide
        from mmroute.export.mmroute_runtime.features import build_input, load_feature_runtime, session_options
        from mmroute.export.mmroute_runtime.inputs import (
            DEFAULT_MAX_IMAGE_PIXELS,
            DEFAULT_MAX_ROWS,
            bad_input,
            check_finite_output,
            parse_request,
        )

log = logging.getLogger("mmroute.serving")

ONNX_ARTIFACT = "router_onnx"
META_ARTIFACT = "router_meta"
FEATURES_ARTIFACT = "features"
CALIBRATION_ARTIFACT = "router_calibration"
RULE_PARAMS = ("budget", "tradeoff", "target_cost", "target_quality")
PARAMS = RULE_PARAMS + ("models", "fallback")
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


class OnnxRouterModel(mlflow.pyfunc.PythonModel):
    """Routes each row to a model with the router's ONNX graph (see the module docstring)."""

    def load_context(self, context) -> None:
        import onnxruntime as ort

        with open(context.artifacts[META_ARTIFACT]) as fh:
            self.meta = json.load(fh)
        self.models = list(self.meta["models"])
        self.width = int(self.meta["input_width"])
        self.fallback = runtime_decide.check_fallback(self.meta.get("fallback", runtime_decide.SERVING_FALLBACK))
        cal_path = context.artifacts.get(CALIBRATION_ARTIFACT)
        self.calibration = None if cal_path is None else runtime_calibration.Calibration.load(cal_path)
        config = getattr(context, "model_config", None) or {}
        self.max_rows = int(config.get("max_rows", DEFAULT_MAX_ROWS))
        self.max_image_pixels = int(config.get("max_image_pixels", DEFAULT_MAX_IMAGE_PIXELS))
        self.threads = config.get("intra_op_threads")
        options = session_options(self.threads)
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
            self.feature_runtime = load_feature_runtime(folder, providers, self.threads)
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

    # ------------------------------------------------------------ decisions
    def _allowed(self, value: Any) -> list[int]:
        if value is None:
            return list(range(len(self.models)))
        names = value.split(",") if isinstance(value, str) else list(value)
        names = [str(n).strip() for n in names if str(n).strip()]
        if not names:
            raise bad_input(f"'models' names no model; expected comma-separated names among {self.models}")
        unknown = [n for n in names if n not in self.models]
        if unknown:
            raise bad_input(f"'models' names unknown model(s) {unknown}; this router's pool is {self.models}")
        return sorted({self.models.index(n) for n in names})

    def _request(self, params: dict[str, Any] | None) -> dict[str, Any]:
        """Validated params: ``rule``, ``param``, ``target``, ``cols``, ``fallback``."""
        params = {k: v for k, v in (params or {}).items() if v is not None}
        unknown = sorted(set(params) - set(PARAMS))
        if unknown:
            raise bad_input(f"unknown params {unknown}; expected any of {list(PARAMS)}")
        given = [k for k in RULE_PARAMS if k in params]
        if len(given) > 1:
            raise bad_input(f"give at most one of {list(RULE_PARAMS)}, got {given}")
        fallback = params.get("fallback", self.fallback)
        if fallback not in runtime_decide.FALLBACKS:
            raise bad_input(f"fallback={fallback!r} is not one of {list(runtime_decide.FALLBACKS)}")
        # No rule param: the best predicted performance, which is the trade-off rule at lambda = 0.
        request = {"rule": "tradeoff", "param": 0.0, "target": None, "cols": self._allowed(params.get("models")),
                   "fallback": fallback}
        if not given:
            return request
        key = given[0]
        try:
            value = float(params[key])
        except (TypeError, ValueError):
            raise bad_input(f"{key} must be a number, got {params[key]!r}") from None
        if not np.isfinite(value):
            raise bad_input(f"{key} must be a finite number, got {value}")
        if key == "budget":
            request.update(rule="budget", param=value)
        elif key == "tradeoff":
            if value < 0:
                raise bad_input(f"tradeoff must be a finite number >= 0, got {value}")
            request.update(rule="tradeoff", param=value)
        else:
            if self.calibration is None:
                raise bad_input(f"{key} needs calibrated operating points, and this model was exported "
                                "without them; use 'budget' or 'tradeoff'")
            if key == "target_cost" and value < 0:
                raise bad_input(f"target_cost must be >= 0 (USD per query), got {value}")
            if key == "target_quality" and not 0 < value <= 1.5:
                raise bad_input(f"target_quality is a fraction of the best single model's accuracy "
                                f"(e.g. 0.95), expected a number in (0, 1.5], got {value}")
            cols = request["cols"]
            point = (self.calibration.for_cost(value, cols) if key == "target_cost"
                     else self.calibration.for_quality(value, cols))
            request.update(rule=point.rule, param=point.param, target=point,
                           fallback=self.calibration.fallback)
        return request

    def _decide(self, model_input: Any, perf: np.ndarray, cost: np.ndarray,
                params: dict[str, Any] | None) -> pd.DataFrame:
        """The output frame: the chosen model, ranking and operating point per row."""
        request = self._request(params)
        cols = np.asarray(request["cols"], dtype=np.int64)
        rule, param, fallback = request["rule"], request["param"], request["fallback"]
        sub_perf, sub_cost = perf[:, cols], cost[:, cols]
        order = runtime_decide.ranking(sub_perf, sub_cost, rule, param, fallback)
        choice = cols[order[:, 0]]
        n = perf.shape[0]
        within_budget = (np.ones(n, dtype=bool) if rule != "budget"
                         else (sub_cost <= param).any(axis=1))
        point = request["target"]
        within_target = within_budget if point is None else np.full(n, point.within_target)
        names = np.asarray(self.models, dtype=object)
        out: dict[str, Any] = {}
        if isinstance(model_input, pd.DataFrame) and "id" in model_input.columns:
            out["id"] = model_input["id"].astype(str).to_numpy()
        out["model"] = names[choice]
        out["model_index"] = choice.astype(np.int64)
        out["ranking"] = names[cols[order]].tolist()  # lists of names; tolist() is one C pass
        out["within_budget"] = within_budget
        out["within_target"] = within_target
        out["rule"] = np.full(n, rule, dtype=object)
        out["param"] = np.full(n, float(param))
        if self.calibration is not None:
            if point is not None:
                expected = (point.expected_cost, point.expected_accuracy)
            else:
                expected = self.calibration.expected(rule, param, cols, fallback)
            out["expected_cost"] = np.full(n, expected[0])
            out["expected_accuracy"] = np.full(n, expected[1])
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
