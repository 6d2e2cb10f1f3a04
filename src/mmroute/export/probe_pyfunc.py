"""Package a fitted probe router as an MLflow pyfunc model that reads raw queries.

The model (code: :mod:`mmroute.export.probe_model`) holds the head as ONNX (parity-checked against
PyTorch, :func:`mmroute.probes.export.export_probe`), a JSON of what serving needs (layer, the
pool, the large model's training accuracy, the billed costs, the training rows' scores for
calibrating thresholds), and the backbone: packaged as an artifact (``serve_backbone="package"``,
self-contained) or referenced by its local path (``"reference"``: smaller, and loading fails with
a clear message when the weights are not there). The mmroute package travels as ``code_paths``.
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

__all__ = ["PROBE_MODEL_CODE", "SERVE_BACKBONE", "probe_signature", "probe_metadata", "log_probe_router_model",
           "save_probe_router_model", "request_frame"]

log = logging.getLogger(__name__)

PROBE_MODEL_CODE = Path(__file__).with_name("probe_model.py")
SERVE_BACKBONE = ("package", "reference")
_PACKAGE_DIR = Path(__file__).resolve().parents[1]


def probe_signature(models: Sequence[str]):
    """Input ``question`` (+ optional ``context``, ``image``, ``id``); outputs; params ``threshold``,
    ``defer_share``, ``target_accuracy`` (all optional)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, DataType, ParamSchema, ParamSpec, Schema

    inputs = Schema([ColSpec(DataType.string, "question"), ColSpec(DataType.string, "context", required=False),
                     ColSpec(DataType.string, "image", required=False), ColSpec(DataType.string, "id", required=False)])
    outputs = Schema([ColSpec(DataType.boolean, "defer"), ColSpec(DataType.double, "p_correct"),
                      ColSpec(DataType.string, "model"), ColSpec(DataType.double, "threshold")]
                     + [ColSpec(DataType.double, f"{kind}_{m}") for kind in ("perf", "cost") for m in models])
    params = ParamSchema([ParamSpec(name, DataType.double, None)
                          for name in ("threshold", "defer_share", "target_accuracy")])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def request_frame(questions: Sequence[str], images: Sequence[str | None] | None = None,
                  ids: Sequence[str] | None = None):
    """A request DataFrame for the served model (images: paths or base64 strings)."""
    import pandas as pd

    frame = pd.DataFrame({"question": list(questions)})
    if images is not None:
        frame["image"] = [im or None for im in images]
    if ids is not None:
        frame["id"] = [str(i) for i in ids]
    return frame


def probe_metadata(router: Any, models: Sequence[str], *, backbone: str, serve_backbone: str,
                   token_cap: int | None, storage_dtype: str, export: dict[str, Any]) -> dict[str, Any]:
    cal = router.calibration_
    return {
        "format_version": 1, "flavour": "mmroute.probe", "router": router.name, "head": router.head,
        "router_params": {k: v for k, v in router.get_params().items()}, "models": [str(m) for m in models],
        "layer": router.layer_, "large_accuracy": router.large_accuracy_, "cost": router.cost_.tolist(),
        "default_threshold": router.threshold(),
        "calibration": {"scores": np.asarray(cal["scores"]).tolist(), "small": np.asarray(cal["small"]).tolist(),
                        "large": np.asarray(cal["large"]).tolist()},
        "backbone": {"path": str(Path(backbone).resolve()), "packaged": serve_backbone == "package",
                     "token_cap": token_cap},
        "storage_dtype": storage_dtype, "export": export,
    }


def _pip_requirements() -> list[str]:
    reqs = []
    for dist in ("mlflow", "numpy", "pandas", "torch", "transformers", "tokenizers", "safetensors", "pillow"):
        try:
            reqs.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    for dist in ("onnxruntime-gpu", "onnxruntime"):
        try:
            reqs.append(f"{dist}=={importlib.metadata.version(dist)}")
            break
        except importlib.metadata.PackageNotFoundError:
            continue
    return reqs


def _prepare(router: Any, models: Sequence[str], workdir: Path, *, backbone: str, serve_backbone: str,
             token_cap: int | None, storage_dtype: str, example_texts: Sequence[str]):
    from mmroute.export.probe_model import BACKBONE_ARTIFACT, HEAD_ARTIFACT, META_ARTIFACT
    from mmroute.probes.export import export_probe, onnx_inputs_for

    router.check_fitted()
    if serve_backbone not in SERVE_BACKBONE:
        raise ValueError(f"serve_backbone={serve_backbone!r}: expected one of {list(SERVE_BACKBONE)}")
    if not backbone or not (Path(backbone) / "config.json").is_file():
        raise FileNotFoundError(f"backbone {backbone!r} is not a local model directory (config.json); a served "
                                "probe model loads the backbone from disk (save_pretrained it first)")
    if len(models) != 2:
        raise ValueError(f"a probe router routes over [small, large], got {len(models)} model names")
    cache_rows = int(getattr(router, "position_rows_", 1))
    example = onnx_inputs_for(router.head, router.d_in_, position_rows=cache_rows, seed=router.config.seed)
    info = export_probe(router.head, router.probe_.net_, workdir / "head.onnx", example)
    meta = probe_metadata(router, models, backbone=backbone, serve_backbone=serve_backbone, token_cap=token_cap,
                          storage_dtype=storage_dtype, export={"inputs": info["inputs"],
                                                               "max_abs_diff": info["max_abs_diff"]})
    meta_path = workdir / "probe_meta.json"
    meta_path.write_text(json.dumps(meta, allow_nan=False))
    artifacts = {HEAD_ARTIFACT: info["path"], META_ARTIFACT: str(meta_path)}
    if serve_backbone == "package":
        artifacts[BACKBONE_ARTIFACT] = str(Path(backbone).resolve())
    # No input example: MLflow would load the backbone at logging time to check it.
    return meta, artifacts, None


def log_probe_router_model(router: Any, models: Sequence[str], *, backbone: str, name: str = "router",
                           serve_backbone: str = "package", token_cap: int | None = None,
                           storage_dtype: str = "float16", example_texts: Sequence[str] = (),
                           registered_model_name: str | None = None):
    """Log the served probe model into the active run (logged model ``name``); returns ModelInfo."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="mmroute-probe-export-") as tmp:
        meta, artifacts, example = _prepare(router, models, Path(tmp), backbone=backbone,
                                            serve_backbone=serve_backbone, token_cap=token_cap,
                                            storage_dtype=storage_dtype, example_texts=example_texts)
        info = mlflow.pyfunc.log_model(
            name=name, python_model=str(PROBE_MODEL_CODE), artifacts=artifacts, signature=probe_signature(models),
            input_example=example, pip_requirements=_pip_requirements(), code_paths=[str(_PACKAGE_DIR)],
            registered_model_name=registered_model_name,
            tags={"mmroute.router": router.name, "mmroute.flavour": "probe"},
            params={"router": router.name, "layer": router.layer_, "serve_backbone": serve_backbone})
    log.info("logged probe router %s as %s (backbone %s)", router.name, info.model_uri, serve_backbone)
    return info


def save_probe_router_model(router: Any, models: Sequence[str], path: str | Path, *, backbone: str,
                            serve_backbone: str = "package", token_cap: int | None = None,
                            storage_dtype: str = "float16", example_texts: Sequence[str] = ()) -> dict[str, Any]:
    """Like :func:`log_probe_router_model` but writes the model directory ``path``; returns the meta."""
    import mlflow

    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} already exists; choose a new directory for the model")
    with tempfile.TemporaryDirectory(prefix="mmroute-probe-export-") as tmp:
        meta, artifacts, example = _prepare(router, models, Path(tmp), backbone=backbone,
                                            serve_backbone=serve_backbone, token_cap=token_cap,
                                            storage_dtype=storage_dtype, example_texts=example_texts)
        mlflow.pyfunc.save_model(str(path), python_model=str(PROBE_MODEL_CODE), artifacts=artifacts,
                                 signature=probe_signature(models), input_example=example,
                                 pip_requirements=_pip_requirements(), code_paths=[str(_PACKAGE_DIR)])
    return meta
