"""The run record: every artifact path, param, tag and metric key an mmroute run writes, named once.

Writers (the pipeline steps, the export and register recipes, the comparison) and readers
(``evaluate``, ``export``, ``register``, ``promote``) use these names; a reader reads the one key
the writers write, it never tries alternatives.

A router run (``train``, or one child of ``sweep``/``run``) records:

============================  ==================================================================
artifact                      content
============================  ==================================================================
``config.yaml``               the resolved :class:`~mmroute.pipeline.PipelineConfig` and params
``split/train_ids.txt``       instance ids of the training rows, one per line
``split/test_ids.txt``        instance ids of the test rows
``model/router.pkl``          the fitted router (pickle; load only runs you trust)
``model/features.pkl``        the fitted feature pipeline (logged once by a sweep's parent)
``model/meta.json``           what reloading needs: router name, models, ``features_uri``, data
                              spec, images policy, dataset filter, mode, rules, mmroute version
``eval/eval_table.npz``       features and outcomes of the test rows (written by ``export``; the
                              promotion gate scores versions on it)
``curves/``, ``plots/``       per-rule curve CSVs and Pareto plots
logged model ``router``       the verified ONNX pyfunc model (written by ``export``)
============================  ==================================================================

Params: ``router.name`` and ``router.<field>``; ``data.spec``, ``data.hash``, ...; ``split.*``;
``features.*``. Tags: ``mmroute.router`` (set first, so a router that fails to build is findable),
``mmroute.step``, ``mmroute.error`` on a failed child. Final metrics: ``<rule>/<metric>`` (see
:mod:`mmroute.tracking.records`). A sweep's parent adds ``comparison/routers.csv`` and the tags
``best_child_run_id`` / ``best_router``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

__all__ = [
    "CONFIG", "DATA_SUMMARY", "MODEL_DIR", "ROUTER_PICKLE", "FEATURES_PICKLE", "ROUTER_META", "SPLIT_DIR",
    "TRAIN_IDS", "TEST_IDS", "EVAL_TABLE", "CURVES_DIR", "PLOTS_DIR", "COMPARISON_DIR", "COMPARISON_CSV",
    "LOGGED_MODEL", "PARAM_ROUTER_NAME", "PARAM_ROUTER_PREFIX", "PARAM_DATA_SPEC", "PARAM_DATA_HASH",
    "TAG_ROUTER", "TAG_STEP", "TAG_VERSION", "TAG_GIT_COMMIT", "TAG_DATASET", "TAG_MODE", "TAG_ERROR",
    "TAG_FAILED_ROUTERS", "TAG_SOURCE_RUN", "TAG_PARENT_RUN", "TAG_EXPORT_BACKEND", "TAG_EXPORT_MAX_DIFF",
    "TAG_REGISTERED_MODEL", "TAG_BEST_CHILD", "TAG_BEST_ROUTER", "METRIC_FIT_SECONDS", "METRIC_PREDICT_SECONDS",
    "router_name", "data_hash", "parent_run_id", "load_router_meta", "load_test_ids", "load_split_ids", "artifact_uri",
]

log = logging.getLogger(__name__)

# ------------------------------------------------------------------ artifacts
CONFIG = "config.yaml"
DATA_SUMMARY = "data/summary.json"
MODEL_DIR = "model"
ROUTER_PICKLE = f"{MODEL_DIR}/router.pkl"
FEATURES_PICKLE = f"{MODEL_DIR}/features.pkl"
ROUTER_META = f"{MODEL_DIR}/meta.json"
SPLIT_DIR = "split"
TRAIN_IDS = f"{SPLIT_DIR}/train_ids.txt"
TEST_IDS = f"{SPLIT_DIR}/test_ids.txt"
EVAL_TABLE = "eval/eval_table.npz"
CURVES_DIR = "curves"
PLOTS_DIR = "plots"
COMPARISON_DIR = "comparison"
COMPARISON_CSV = f"{COMPARISON_DIR}/routers.csv"
#: Name of the logged (ONNX pyfunc) model of a router run.
LOGGED_MODEL = "router"

# ------------------------------------------------------------------ params
PARAM_ROUTER_NAME = "router.name"
PARAM_ROUTER_PREFIX = "router."
PARAM_DATA_SPEC = "data.spec"
PARAM_DATA_HASH = "data.hash"

# ------------------------------------------------------------------ tags
TAG_ROUTER = "mmroute.router"
TAG_STEP = "mmroute.step"
TAG_VERSION = "mmroute.version"
TAG_GIT_COMMIT = "mmroute.git_commit"
TAG_DATASET = "mmroute.dataset"
TAG_MODE = "mmroute.mode"
TAG_ERROR = "mmroute.error"
TAG_FAILED_ROUTERS = "mmroute.failed_routers"
TAG_SOURCE_RUN = "mmroute.source_run_id"
TAG_PARENT_RUN = "mlflow.parentRunId"  # MLflow's own
TAG_EXPORT_BACKEND = "mmroute.export.backend"
TAG_EXPORT_MAX_DIFF = "mmroute.export.max_abs_diff"
TAG_REGISTERED_MODEL = "mmroute.registered_model"
TAG_BEST_CHILD = "best_child_run_id"
TAG_BEST_ROUTER = "best_router"

# ------------------------------------------------------------------ metrics
METRIC_FIT_SECONDS = "fit_seconds"
METRIC_PREDICT_SECONDS = "predict_seconds"


# ------------------------------------------------------------------ readers
def router_name(run: Any) -> str:
    """The router a run trained (its ``router.name`` param), or "" for a run that trained none."""
    return str(run.data.params.get(PARAM_ROUTER_NAME, ""))


def data_hash(run: Any) -> str:
    """The content hash of the table a run used (its ``data.hash`` param), or ""."""
    return str(run.data.params.get(PARAM_DATA_HASH, ""))


def parent_run_id(run: Any) -> str | None:
    """The sweep parent of a child run, or None."""
    return run.data.tags.get(TAG_PARENT_RUN) or None


def artifact_uri(run_id: str, path: str) -> str:
    """``runs:/<run_id>/<path>``."""
    return f"runs:/{run_id}/{path}"


def load_router_meta(run_id: str) -> dict[str, Any]:
    """The ``model/meta.json`` a router run logged; ``FileNotFoundError`` naming the run otherwise."""
    import mlflow

    try:
        return dict(json.loads(mlflow.artifacts.load_text(artifact_uri(run_id, ROUTER_META))))
    except Exception as exc:  # noqa: BLE001 - MLflow raises several types for an absent artifact
        raise FileNotFoundError(f"run {run_id} has no {ROUTER_META}: it logged no router "
                                "(was it a sweep parent, or trained with --no-log-model?)") from exc


def load_test_ids(run: Any) -> list[str] | None:
    """The test instance ids ``split/test_ids.txt`` of a run, else of its sweep parent; None when
    neither logged them."""
    return load_split_ids(run, TEST_IDS)


def load_split_ids(run: Any, artifact: str) -> list[str] | None:
    """Instance ids in ``artifact`` (:data:`TRAIN_IDS` or :data:`TEST_IDS`) of a run, else of its
    sweep parent; None when neither logged them."""
    import mlflow

    for run_id in (run.info.run_id, parent_run_id(run)):
        if not run_id:
            continue
        try:
            text = mlflow.artifacts.load_text(artifact_uri(run_id, artifact))
        except Exception:  # noqa: BLE001 - absent artifact: try the parent
            continue
        return [line for line in text.splitlines() if line]
    return None
