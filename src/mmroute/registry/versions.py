"""Registering routers: pick the best run of a sweep, register its logged router as a version.

A sweep is a parent run with one nested child run per router (see :mod:`mmroute.tracking`);
each child that should be deployable logs its router with
:func:`mmroute.export.pyfunc.log_router_model` (a logged model named ``router``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from mmroute.tracking import record
from mmroute.vocabulary import DEFAULT_METRIC, selection_metric

__all__ = ["DEFAULT_METRIC", "MODEL_ARTIFACT", "get_client", "select_run", "find_router_model",
           "register_best", "version_metrics", "status"]

log = logging.getLogger(__name__)

MODEL_ARTIFACT = record.LOGGED_MODEL
METRIC_TAG = "metric."  # version tag prefix for the source run's final metrics
_MAX_METRIC_TAGS = 200


def get_client(client: Any = None, tracking_uri: str | None = None):
    """``client`` if given, else an ``MlflowClient`` for ``tracking_uri`` (default: MLflow's)."""
    if client is not None:
        return client
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _lower_is_better(metric: str) -> bool:
    from mmroute.tracking.compare import lower_is_better

    return lower_is_better(metric)


def select_run(client: Any, run_id: str, metric: str = DEFAULT_METRIC) -> tuple[Any, str | None]:
    """The run to register: the best child of a parent run by ``metric``, or the run itself.

    Children are compared on the validation twin of ``metric`` (``val/<metric>``, scored on rows
    carved out of the training rows; :func:`mmroute.vocabulary.selection_metric`), the same choice
    as the sweep's own, so test rows never choose what is registered.
    Returns ``(run, parent_run_id)``; ``parent_run_id`` is None when ``run_id`` has no children.
    Children that failed, lack the metric, or trained a router whose class is not ``deployable``
    (``random``, ``oracle``) are skipped; none left raises ``KeyError`` listing what was logged.
    """
    run = client.get_run(run_id)
    children = client.search_runs([run.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{run_id}'", max_results=1000)
    if not children:
        return run, None
    key = selection_metric(metric)
    scored = [c for c in children
              if c.info.status != "FAILED" and _deployable(record.router_name(c))
              and key in c.data.metrics and not math.isnan(c.data.metrics[key])]
    if not scored:
        logged = sorted({k for c in children for k in c.data.metrics})
        raise KeyError(f"no child run of {run_id} logged the validation metric {key!r} (a sweep's children are "
                       f"compared on validation rows of the training rows, never on test rows); "
                       f"logged metrics: {logged}")
    lower = _lower_is_better(key)
    best = (min if lower else max)(scored, key=lambda c: c.data.metrics[key])
    log.info("best child of %s by %s (%s is better): %s = %.4f", run_id, key,
             "lower" if lower else "higher", best.info.run_id, best.data.metrics[key])
    return best, run_id


def _deployable(name: str) -> bool:
    """What the router's class declares; a router unknown to this process (defined in a module
    not imported here) is not ruled out: its run either logged a model or fails to export."""
    from mmroute.routers import list_routers, router_class

    return name not in list_routers() or router_class(name).deployable


def find_router_model(client: Any, run: Any, name: str = MODEL_ARTIFACT) -> Any:
    """The LoggedModel called ``name`` that ``run`` logged (the newest if several)."""
    run_id = run.info.run_id
    models = client.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run_id}' AND name = '{name}'")
    if not models:
        raise FileNotFoundError(
            f"run {run_id} has no logged model named {name!r}; log the router with "
            "mmroute.export.pyfunc.log_router_model(...) in that run (or `mmroute export --run-id`, "
            "mmroute.pipeline.export_run)")
    return max(models, key=lambda m: m.creation_timestamp)


def _metric_tags(metrics: dict[str, float]) -> dict[str, str]:
    # Headline metrics first, so they survive the cap on runs with many per-dataset metrics.
    keys = sorted(metrics, key=lambda k: (k.count("/") > 1, k))[:_MAX_METRIC_TAGS]
    return {f"{METRIC_TAG}{k}": repr(float(metrics[k])) for k in keys}


def register_best(run_id: str, model_name: str, *, metric: str = DEFAULT_METRIC,
                  artifact: str = MODEL_ARTIFACT, exporter: Callable[[str], Any] | None = None,
                  client: Any = None, tracking_uri: str | None = None):
    """Register the router of the best child of sweep ``run_id`` (or of run ``run_id`` itself).

    When the chosen run has no logged model ``artifact`` yet, ``exporter(run_id)`` is called to log
    it (the pipeline passes :func:`mmroute.pipeline.export_run`); without an exporter that is a
    ``FileNotFoundError``. The new version is tagged
    with the source run's final metrics (``metric.<name>``), the data hash (``data_hash``), the
    source run and its parent (``source_run_id``, ``parent_run_id``), the router name and the
    selection metric. Returns the ``ModelVersion``.
    """
    from mlflow.exceptions import MlflowException

    client = get_client(client, tracking_uri)
    run, parent_id = select_run(client, run_id, metric)
    try:
        logged = find_router_model(client, run, artifact)
    except FileNotFoundError:
        if exporter is None:
            raise
        log.info("run %s has no logged %r model yet: exporting its router", run.info.run_id, artifact)
        exporter(run.info.run_id)
        logged = find_router_model(client, run, artifact)
    tags = {
        "source_run_id": run.info.run_id,
        "parent_run_id": parent_id or "",
        "selection_metric": selection_metric(metric) if parent_id else metric,
        "router": record.router_name(run) or logged.tags.get(record.TAG_ROUTER, ""),
        "data_hash": record.data_hash(run),
        "logged_model_id": logged.model_id,
        **_metric_tags(run.data.metrics),
    }
    if tags["selection_metric"] in run.data.metrics:
        tags["selection_value"] = repr(float(run.data.metrics[tags["selection_metric"]]))
    try:
        client.create_registered_model(model_name, description="mmroute router (ONNX graph, pyfunc)")
    except MlflowException as exc:
        if "already exists" not in str(exc).lower() and exc.error_code not in (
                "RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    version = client.create_model_version(model_name, source=f"models:/{logged.model_id}",
                                          run_id=run.info.run_id, tags=tags, model_id=logged.model_id)
    log.info("registered %s version %s from run %s (%s)", model_name, version.version,
             run.info.run_id, tags["router"])
    return version


def version_metrics(version: Any) -> dict[str, float]:
    """The ``metric.<name>`` tags of a model version, as floats."""
    return {k[len(METRIC_TAG):]: float(v) for k, v in version.tags.items() if k.startswith(METRIC_TAG)}


def status(model_name: str, *, client: Any = None, tracking_uri: str | None = None,
           metrics: tuple[str, ...] = ("budget/nAUC", "budget/Ps", "budget/QNC", "tradeoff/nAUC")
           ) -> dict[str, Any]:
    """What is where: aliases -> version, and per version its source, router, headline metrics and
    mmroute tags (gate results, rollbacks). JSON-able."""
    client = get_client(client, tracking_uri)
    registered = client.get_registered_model(model_name)
    versions = client.search_model_versions(f"name = '{model_name}'")
    aliases = {a: str(v) for a, v in (registered.aliases or {}).items()}
    by_version = {}
    for mv in sorted(versions, key=lambda v: int(v.version)):
        found = version_metrics(mv)
        by_version[str(mv.version)] = {
            "aliases": sorted(a for a, v in aliases.items() if v == str(mv.version)),
            "router": mv.tags.get("router", ""),
            "source_run_id": mv.run_id,
            "created": mv.creation_timestamp,
            "metrics": {m: found[m] for m in metrics if m in found},
            "tags": {k: v for k, v in mv.tags.items() if not k.startswith(METRIC_TAG)},
        }
    return {"name": model_name, "aliases": aliases, "tags": dict(registered.tags or {}),
            "versions": by_version}
