"""Package an exported router as an MLflow pyfunc model (ONNX graph + JSON metadata).

The model's code is :mod:`mmroute.export.onnx_router_model`, logged as "model from code": MLflow
copies that single self-contained file into the model, so loading and serving need mlflow, numpy,
pandas and onnxruntime only; the serving helpers (decision rules, calibrated operating points) travel
with it as the package :mod:`mmroute.export.mmroute_runtime` (``code_paths``). The signature declares
the input (``features``: a list of ``input_width`` floats per row, optional ``id``), the output
columns, and the inference params ``budget``, ``tradeoff``, ``target_cost``, ``target_quality``,
``models`` and ``fallback`` (all optional; default = best predicted performance).

With a ``calibration`` (:func:`mmroute.export.calibration.calibrate`: out-of-fold predictions on
training rows), the model stores it (artifact ``router_calibration``), answers ``target_cost`` /
``target_quality`` and reports each answer's expected cost and accuracy; the operating-point table
is also logged to the run (``calibration/operating_points.csv`` and a plot).
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmroute.export.core import ExportResult, export_router, router_input
from mmroute.export.mmroute_runtime.calibration import Calibration
from mmroute.export.mmroute_runtime.decide import SERVING_FALLBACK, check_fallback
from mmroute.features.types import Features

__all__ = [
    "MODEL_CODE",
    "FORMAT_VERSION",
    "router_signature",
    "router_metadata",
    "input_frame",
    "log_router_model",
    "save_router_model",
    "predict_frame_arrays",
    "log_calibration",
]

log = logging.getLogger(__name__)

MODEL_CODE = Path(__file__).with_name("onnx_router_model.py")
# Shipped with the model (code_paths): importable there as the top-level package `mmroute_runtime`.
RUNTIME_CODE = Path(__file__).with_name("mmroute_runtime")
CALIBRATION_DIR = "calibration"
FORMAT_VERSION = 1
DEFAULT_NAME = "router"
# What a request may hold (validated by mmroute_runtime.inputs, not by an MLflow input schema).
INPUT_COLUMNS = {
    "question": "string, required for raw queries",
    "image": "optional: base64 of PNG or JPEG bytes",
    "context": "optional string, appended to the question on a new line",
    "features": "a list of input_width numbers: instead of the raw columns, for clients holding vectors",
    "id": "optional string, echoed in the output",
}


def router_signature(models: Sequence[str], input_width: int):
    """The pyfunc signature: per-model outputs and params (inputs: see :data:`INPUT_COLUMNS`)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, DataType, ParamSchema, ParamSpec, Schema

    if input_width < 1:
        raise ValueError(f"input_width must be >= 1, got {input_width}")
    # No input schema: MLflow's schema enforcement silently drops undeclared columns, and a request
    # with a misspelt column must be refused. predict() validates the request itself (see
    # mmroute_runtime.inputs: raw `question`/`image`/`context` rows or `features` rows, optional
    # `id`) and names every problem in one 400 line; the columns are listed in INPUT_COLUMNS and in
    # the model's router_meta.json.
    inputs = None
    outputs = Schema([ColSpec(DataType.string, "model"), ColSpec(DataType.long, "model_index"),
                      ColSpec(Array(DataType.string), "ranking"),
                      ColSpec(DataType.boolean, "within_budget"), ColSpec(DataType.boolean, "within_target"),
                      ColSpec(DataType.string, "rule"), ColSpec(DataType.double, "param"),
                      ColSpec(DataType.double, "expected_cost", required=False),
                      ColSpec(DataType.double, "expected_accuracy", required=False)]
                     + [ColSpec(DataType.double, f"perf_{m}") for m in models]
                     + [ColSpec(DataType.double, f"cost_{m}") for m in models])
    params = ParamSchema([ParamSpec("budget", DataType.double, None),
                          ParamSpec("tradeoff", DataType.double, None),
                          ParamSpec("target_cost", DataType.double, None),
                          ParamSpec("target_quality", DataType.double, None),
                          ParamSpec("models", DataType.string, None),
                          ParamSpec("fallback", DataType.string, None)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def input_frame(x: np.ndarray, ids: Sequence[str] | None = None):
    """A pyfunc input DataFrame from a router input matrix (n, d): one ``features`` list per row."""
    import pandas as pd

    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"router input must be 2-D (n, d), got shape {x.shape}")
    frame = pd.DataFrame({"features": [row.tolist() for row in x]})
    if ids is not None:
        frame["id"] = [str(i) for i in ids]
    return frame


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def router_metadata(router: Any, export: ExportResult, models: Sequence[str], *,
                    feature_info: dict[str, Any] | None = None, fallback: str = SERVING_FALLBACK,
                    calibration: Calibration | None = None) -> dict[str, Any]:
    """The JSON stored beside the graph: model names, input width and layout, feature/fusion info
    (encoder spec, fusion mode and any fitted statistics the caller passes), router config, export
    check figures."""
    models = [str(m) for m in models]
    if len(models) != export.n_models:
        raise ValueError(f"{len(models)} model names given for a router predicting {export.n_models} models")
    if len(set(models)) != len(models):
        raise ValueError(f"model names must be unique, got {models}")
    check_fallback(fallback)
    if calibration is not None and tuple(calibration.models) != tuple(models):
        raise ValueError(f"the calibration is for models {list(calibration.models)}, the router for {models}")
    params = router.get_params() if hasattr(router, "get_params") else {}
    export_info = export.to_dict()
    export_info.pop("path", None)
    return _jsonable({
        "format_version": FORMAT_VERSION,
        "router": export.router,
        "router_params": params,
        "models": models,
        "input_width": export.input_width,
        "input_layout": export_info.pop("input_layout"),
        "features": feature_info or {},
        "input_columns": INPUT_COLUMNS,
        "export": export_info,
        "fallback": fallback,
        "calibration": None if calibration is None else {
            "fallback": calibration.fallback, "n_points": calibration.n_points, **calibration.info},
    })


def _pip_requirements() -> list[str]:
    reqs = []
    for dist in ("mlflow", "numpy", "pandas", "tokenizers", "pillow"):
        reqs.append(f"{dist}=={importlib.metadata.version(dist)}")
    for dist in ("onnxruntime-gpu", "onnxruntime"):
        try:
            reqs.append(f"{dist}=={importlib.metadata.version(dist)}")
            break
        except importlib.metadata.PackageNotFoundError:
            continue
    return reqs


def _prepare(router: Any, sample_features: Features, models: Sequence[str], workdir: Path, *,
             check_features: Features | None, feature_info: dict[str, Any] | None, atol: float,
             exporter: str, fallback: str = SERVING_FALLBACK, calibration: Calibration | None = None,
             pipeline: Any = None, check_table: Any = None, model_config: dict[str, Any] | None = None):
    check_fallback(fallback)  # bad options fail before the (slow) export
    from mmroute.export.served import check_served, example_frame, export_features, served_config

    model_config = served_config(model_config)
    if pipeline is not None and check_table is None:
        raise ValueError("pass check_table (the raw rows of check_features, or of sample_features) with "
                         "pipeline: the served model is checked on them")
    if calibration is not None and tuple(calibration.models) != tuple(str(m) for m in models):
        raise ValueError(f"the calibration is for models {list(calibration.models)}, the router for "
                         f"{list(models)}")
    export = export_router(router, sample_features, workdir / "router.onnx",
                           check_features=check_features, atol=atol, exporter=exporter)
    features_dir, feature_info = export_features(pipeline, export, workdir / "features", feature_info)
    meta = router_metadata(router, export, models, feature_info=feature_info, fallback=fallback,
                           calibration=calibration)
    meta_path = workdir / "router_meta.json"
    meta_path.write_text(json.dumps(meta, indent=2, allow_nan=False))
    from mmroute.export.onnx_router_model import CALIBRATION_ARTIFACT, FEATURES_ARTIFACT, META_ARTIFACT, ONNX_ARTIFACT

    artifacts = {ONNX_ARTIFACT: str(export.path), META_ARTIFACT: str(meta_path)}
    if calibration is not None:
        cal_path = workdir / "calibration.npz"
        calibration.save(cal_path)
        artifacts[CALIBRATION_ARTIFACT] = str(cal_path)
    if features_dir is not None:
        artifacts[FEATURES_ARTIFACT] = str(features_dir)
        check = check_features if check_features is not None else sample_features
        meta["served_check"] = check_served(artifacts, model_config, router, check, check_table, atol=atol)
        meta_path.write_text(json.dumps(_jsonable(meta), indent=2, allow_nan=False))
        example = example_frame(check_table)
    else:
        example = input_frame(router_input(router, sample_features)[:2])
    return export, meta, artifacts, router_signature(meta["models"], export.input_width), example, model_config


def log_router_model(router: Any, sample_features: Features, models: Sequence[str], *,
                     name: str = DEFAULT_NAME, check_features: Features | None = None,
                     feature_info: dict[str, Any] | None = None, registered_model_name: str | None = None,
                     atol: float = 1e-4, tags: dict[str, str] | None = None, exporter: str = "auto",
                     fallback: str = SERVING_FALLBACK, calibration: Calibration | None = None,
                     pipeline: Any = None, check_table: Any = None, model_config: dict[str, Any] | None = None):
    """Export ``router`` to ONNX (parity-checked) and log it as a pyfunc model in the active run.

    Parameters
    ----------
    router : fitted router; ``sample_features`` : held-out Features (n >= 1) for tracing, the
        parity check (unless ``check_features``) and the logged input example (first 2 rows).
    models : the M model names, in the router's output column order.
    name : the logged model's name (MLflow 3 LoggedModel name, also ``runs:/<run>/<name>``).
    feature_info : JSON-able description of the inputs (encoder spec, fusion, fitted fusion
        statistics) stored in the metadata for clients that build the ``features`` column.
    exporter : torch routers: "auto", "dynamo" or "torchscript" (see :func:`export_router`).
    fallback : what a budget request takes for a row with no model under the budget, "cheapest"
        (default) or "first" (the reference's; see :mod:`mmroute.export.mmroute_runtime.decide`).
    calibration : operating points from rows the router was not trained on
        (:func:`mmroute.export.calibration.calibrate`); stored in the model and logged to the run
        as ``calibration/operating_points.csv`` and ``calibration/operating_points.png``.
    pipeline : the fitted :class:`~mmroute.features.FeaturePipeline` the router's features came from.
        It travels inside the model (ONNX + JSON, see :mod:`mmroute.export.feature_export`), so the
        model answers raw queries; without it (or for a precomputed encoder) the model takes
        ``features`` only. The served model is checked on ``check_table`` first: its features and
        predictions must equal the training-time pipeline's within ``atol``, or nothing is logged.
    check_table : the OutcomeTable whose rows ``check_features`` (else ``sample_features``) encode.
    model_config : serving settings stored with the model: ``max_rows`` (rows per request, default
        1024), ``max_image_pixels`` (default 36,000,000); overridable at load time.

    Returns
    -------
    (mlflow.models.model.ModelInfo, ExportResult)
    """
    import mlflow

    with tempfile.TemporaryDirectory(prefix="mmroute-export-") as tmp:
        export, meta, artifacts, signature, example, config = _prepare(
            router, sample_features, models, Path(tmp), check_features=check_features,
            feature_info=feature_info, atol=atol, exporter=exporter, fallback=fallback,
            calibration=calibration, pipeline=pipeline, check_table=check_table, model_config=model_config)
        info = mlflow.pyfunc.log_model(
            name=name, python_model=str(MODEL_CODE), artifacts=artifacts, signature=signature,
            input_example=example, pip_requirements=_pip_requirements(), model_config=config,
            code_paths=[str(RUNTIME_CODE)], registered_model_name=registered_model_name,
            tags={"mmroute.router": meta["router"], **(tags or {})},
            params={"router": meta["router"], "input_width": meta["input_width"],
                    "export_backend": export.backend})
        if calibration is not None:
            log_calibration(calibration)
    log.info("logged router %s as %s", meta["router"], info.model_uri)
    return info, export


def log_calibration(calibration: Calibration, artifact_dir: str = CALIBRATION_DIR) -> None:
    """Log the operating-point table (CSV) and its plot into the active run."""
    import mlflow

    from mmroute.export.calibration import plot_operating_points

    with tempfile.TemporaryDirectory(prefix="mmroute-calibration-") as tmp:
        path = Path(tmp) / "operating_points.csv"
        calibration.table().to_csv(path, index=False)
        mlflow.log_artifact(str(path), artifact_path=artifact_dir)
    mlflow.log_figure(plot_operating_points(calibration), f"{artifact_dir}/operating_points.png")


def save_router_model(router: Any, sample_features: Features, models: Sequence[str], path: str | Path, *,
                      check_features: Features | None = None, feature_info: dict[str, Any] | None = None,
                      atol: float = 1e-4, exporter: str = "auto", fallback: str = SERVING_FALLBACK,
                      calibration: Calibration | None = None, pipeline: Any = None, check_table: Any = None,
                      model_config: dict[str, Any] | None = None) -> ExportResult:
    """Like :func:`log_router_model` but writes the MLflow model directory ``path`` (no run needed)."""
    import mlflow

    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} already exists; choose a new directory for the model")
    with tempfile.TemporaryDirectory(prefix="mmroute-export-") as tmp:
        export, _, artifacts, signature, example, config = _prepare(
            router, sample_features, models, Path(tmp), check_features=check_features,
            feature_info=feature_info, atol=atol, exporter=exporter, fallback=fallback,
            calibration=calibration, pipeline=pipeline, check_table=check_table, model_config=model_config)
        mlflow.pyfunc.save_model(str(path), python_model=str(MODEL_CODE), artifacts=artifacts,
                                 signature=signature, input_example=example, model_config=config,
                                 pip_requirements=_pip_requirements(), code_paths=[str(RUNTIME_CODE)])
    return export


def predict_frame_arrays(frame) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Split a pyfunc output DataFrame back into (model names, perf (n, M), cost (n, M))."""
    models = [c[len("perf_"):] for c in frame.columns if c.startswith("perf_")]
    if not models:
        raise ValueError(f"not a router output: no perf_<model> columns in {list(frame.columns)}")
    perf = frame[[f"perf_{m}" for m in models]].to_numpy(dtype=np.float64)
    cost = frame[[f"cost_{m}" for m in models]].to_numpy(dtype=np.float64)
    return models, perf, cost
