"""Pipeline step ``export``: log the router a pipeline run logged as a verified ONNX MLflow model.

``export_run(run_id)`` loads the run's router and fitted feature pipeline (its run record, see
:mod:`mmroute.tracking.record`), rebuilds the features
of the run's test rows (its ``split/test_ids.txt``, modality mode applied), logs the verified
ONNX pyfunc model into the same run (logged model ``router``: the feature pipeline inside, so it
answers raw queries, checked on those test rows against the training-time pipeline) and, by
default, the evaluation table of those rows (``eval/eval_table.npz``: raw rows, outcomes, and this
version's features) that the promotion gate scores versions on.

The model's operating points are calibrated on the run's *training* rows (``split/train_ids.txt``):
``calibration_folds`` clones of the router, each refitted without one fold, predict the rows they
did not see (:func:`mmroute.export.calibration.calibrate`). Test rows are never used for it.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from mmroute.export.calibration import DEFAULT_FOLDS
from mmroute.tracking import record, stop_aware

__all__ = ["export_run", "fusion_info"]

log = logging.getLogger(__name__)


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


def export_run(run_id: str, *, name: str = record.LOGGED_MODEL, sample_rows: int = 256, eval_table: bool = True,
               exporter: str = "auto", calibration_folds: int | None = DEFAULT_FOLDS) -> tuple[Any, Any]:
    """Log the verified ONNX pyfunc model of run ``run_id``'s router into that run.

    Parameters
    ----------
    run_id : a run that logged a router with the pipeline (``model/router.pkl`` + ``model/meta.json``).
    sample_rows : held-out rows used to trace and parity-check the graph (the first ones of the
        run's test split).
    eval_table : also log ``eval/eval_table.npz`` (features + outcomes of every test row).
    calibration_folds : folds of the out-of-fold calibration on the training rows (>= 2); None:
        no calibration (the model then refuses ``target_cost`` / ``target_quality``).

    Returns
    -------
    (ModelInfo, ExportResult)
    """
    import mlflow

    from mmroute.data import apply_mode
    from mmroute.export.pyfunc import log_router_model
    from mmroute.pipeline.data import load, rows_by_id
    from mmroute.pipeline.routers import load_logged_router
    from mmroute.registry.evaltable import save_eval_table  # a pipeline step may use the registry

    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    router, pipeline, meta = load_logged_router(run_id)
    # The run's own image access: a table the run was allowed to read is readable here too.
    table = load(meta["data"], images=meta.get("images", "warn"), dataset=meta.get("dataset"),
                 image_root=meta.get("image_root"), allow_outside_images=bool(meta.get("allow_outside_images")))
    ids = record.load_test_ids(run)
    test = table if ids is None else table.subset(rows_by_id(table, ids))
    if ids is None:
        log.warning("run %s has no %s; exporting against all %d rows of %s", run_id, record.TEST_IDS,
                    len(table), meta["data"])
    if meta.get("mode") is not None:
        test = apply_mode(test, "test", meta["mode"])
    features = pipeline.transform(test)
    calibration = None
    if calibration_folds is not None:
        calibration = _calibrate(client, run, router, pipeline, table, meta, ids, calibration_folds)
    sample = features.subset(np.arange(min(sample_rows, len(features))))
    info_features = {"data": meta["data"], "mode": meta.get("mode"), **fusion_info(pipeline)}
    active = mlflow.active_run()
    resume = (contextlib.nullcontext() if active is not None and active.info.run_id == run_id
              else stop_aware(mlflow.start_run(run_id=run_id, nested=active is not None)))
    with resume:
        info, result = log_router_model(router, sample, meta["models"], name=name, check_features=features,
                                        feature_info=info_features, exporter=exporter,
                                        calibration=calibration, pipeline=pipeline, check_table=test)
        if eval_table:
            with tempfile.TemporaryDirectory() as tmp:
                path = save_eval_table(Path(tmp) / Path(record.EVAL_TABLE).name, features, test,
                                       feature_info=info_features)
                mlflow.log_artifact(str(path), artifact_path=str(Path(record.EVAL_TABLE).parent))
        worst = max(result.max_abs_diff_perf, result.max_abs_diff_cost)
        mlflow.set_tags({record.TAG_EXPORT_BACKEND: result.backend,
                         record.TAG_EXPORT_MAX_DIFF: f"{worst:.3g}"})
    return info, result


def _calibrate(client: Any, run: Any, router: Any, pipeline: Any, table: Any, meta: dict, test_ids: Any,
               n_folds: int):
    """Out-of-fold calibration of ``router`` on the run's training rows (never its test rows)."""
    from mmroute.data import apply_mode
    from mmroute.export.calibration import calibrate
    from mmroute.pipeline.data import rows_by_id

    train_ids = record.load_split_ids(run, record.TRAIN_IDS)
    if train_ids is None:
        if test_ids is None:
            raise ValueError(f"run {run.info.run_id} records no split ({record.TRAIN_IDS}); cannot tell training "
                             "rows from test rows to calibrate on (pass calibration_folds=None to skip)")
        test = set(map(str, test_ids))
        train_ids = [i for i in table.ids.astype(str) if i not in test]
    train = table.subset(rows_by_id(table, train_ids))
    if meta.get("mode") is not None:
        train = apply_mode(train, "train", meta["mode"])
    seed = int(router.get_params().get("seed", 0) or 0)
    # A router fitted with its guard kept its out-of-fold training rows: no features, no refit.
    features = None if getattr(router, "oof_", None) is not None else pipeline.transform(train)
    cal = calibrate(router, features, train.correct, train.cost, meta["models"],
                    n_folds=n_folds, seed=seed)
    log.info("calibrated %s on %d rows: %s", meta["router"], cal.n_rows, cal.info["source"])
    return cal
