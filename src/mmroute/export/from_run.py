"""Export the router a pipeline run logged (pickled router + feature pipeline) as an MLflow model.

``export_run(run_id)`` loads the run's router and fitted feature pipeline, rebuilds the features
of the run's test rows (its ``split/test_ids.txt``, modality mode applied), logs the verified
ONNX pyfunc model into the same run (logged model ``router``) and, by default, the evaluation
table of those rows (``eval/eval_table.npz``) that the promotion gate scores versions on.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["export_run", "EVAL_TABLE_ARTIFACT", "fusion_info"]

log = logging.getLogger(__name__)

EVAL_TABLE_ARTIFACT = "eval/eval_table.npz"
_SPLIT_IDS = "split/test_ids.txt"


def fusion_info(pipeline: Any) -> dict[str, Any]:
    """The feature pipeline's description and its fitted fusion statistics (JSON-able)."""
    info: dict[str, Any] = {}
    info.update({k: v if isinstance(v, (str, int, float, bool)) or v is None else str(v)
                 for k, v in pipeline.get_params().items()})
    fusion = getattr(pipeline, "fusion_", None)
    if fusion is not None:
        stats = {}
        for key, value in vars(fusion).items():
            if key.endswith("_") and not key.startswith("_"):
                value = np.asarray(value).tolist() if isinstance(value, (np.ndarray, np.generic)) else value
                if isinstance(value, (str, int, float, bool, list)) or value is None:
                    stats[key] = value
        info["fusion_stats"] = stats
    return info


def _test_ids(client: Any, run: Any) -> list[str] | None:
    import mlflow

    for run_id in (run.info.run_id, run.data.tags.get("mmroute.parent_run_id") or
                   run.data.tags.get("mlflow.parentRunId")):
        if not run_id:
            continue
        try:
            text = mlflow.artifacts.load_text(f"runs:/{run_id}/{_SPLIT_IDS}")
        except Exception:  # noqa: BLE001 - absent artifact: try the parent, then use all rows
            continue
        return [line for line in text.splitlines() if line]
    return None


def export_run(run_id: str, *, name: str = "router", sample_rows: int = 256, eval_table: bool = True,
               exporter: str = "auto") -> tuple[Any, Any]:
    """Log the verified ONNX pyfunc model of run ``run_id``'s router into that run.

    Parameters
    ----------
    run_id : a run that logged a router with the pipeline (``model/router.pkl`` + ``model/meta.json``).
    sample_rows : held-out rows used to trace and parity-check the graph (the first ones of the
        run's test split).
    eval_table : also log ``eval/eval_table.npz`` (features + outcomes of every test row).

    Returns
    -------
    (ModelInfo, ExportResult)
    """
    import mlflow

    from mmroute.data import apply_mode
    from mmroute.export.pyfunc import log_router_model
    from mmroute.pipeline.data import load, rows_by_id
    from mmroute.pipeline.routers import load_logged_router
    from mmroute.registry.evaltable import save_eval_table

    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    router, pipeline, meta = load_logged_router(run_id)
    table = load(meta["data"], images=meta.get("images", "warn"), dataset=meta.get("dataset"))
    ids = _test_ids(client, run)
    test = table if ids is None else table.subset(rows_by_id(table, ids))
    if ids is None:
        log.warning("run %s has no %s; exporting against all %d rows of %s", run_id, _SPLIT_IDS,
                    len(table), meta["data"])
    if meta.get("mode") is not None:
        test = apply_mode(test, "test", meta["mode"])
    features = pipeline.transform(test)
    sample = features.subset(np.arange(min(sample_rows, len(features))))
    info_features = {"data": meta["data"], "mode": meta.get("mode"), **fusion_info(pipeline)}
    active = mlflow.active_run()
    resume = (contextlib.nullcontext() if active is not None and active.info.run_id == run_id
              else mlflow.start_run(run_id=run_id, nested=active is not None))
    with resume:
        info, result = log_router_model(router, sample, meta["models"], name=name, check_features=features,
                                        feature_info=info_features, exporter=exporter)
        if eval_table:
            with tempfile.TemporaryDirectory() as tmp:
                path = save_eval_table(Path(tmp) / Path(EVAL_TABLE_ARTIFACT).name, features, test)
                mlflow.log_artifact(str(path), artifact_path=str(Path(EVAL_TABLE_ARTIFACT).parent))
        worst = max(result.max_abs_diff_perf, result.max_abs_diff_cost)
        mlflow.set_tags({"mmroute.export.backend": result.backend,
                         "mmroute.export.max_abs_diff": f"{worst:.3g}"})
    return info, result
