"""Pipeline step ``register``: the best deployable router of a sweep (or one run) as a new version.

The registry registers logged models; exporting a run that has none yet is a pipeline step
(:func:`mmroute.pipeline.export.export_run`), handed to the registry as its ``exporter``.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from mmroute.vocabulary import DEFAULT_METRIC

__all__ = ["register_run", "default_eval_table"]

log = logging.getLogger(__name__)


def register_run(run_id: str, model_name: str, *, metric: str = DEFAULT_METRIC, stage: str | None = None,
                 export_missing: bool = True, client: Any = None) -> dict[str, Any]:
    """Register the best deployable child of sweep ``run_id`` (or run ``run_id``) under ``model_name``.

    A chosen run without a logged ONNX model is exported first unless ``export_missing`` is False
    (then that is a ``FileNotFoundError``). ``stage="staging"`` also points the alias at the new
    version (production is only reached through the promotion gate). Returns a JSON-able summary:
    model, version, source_run_id, router and, with a stage, stage.
    """
    from mmroute.pipeline.export import export_run
    from mmroute.registry import promote, register_best
    from mmroute.tracking.record import LOGGED_MODEL

    if stage not in (None, "staging"):
        raise ValueError(f"stage={stage!r} (expected 'staging' or None: production is gated, use promote)")
    exporter = functools.partial(export_run, name=LOGGED_MODEL) if export_missing else None
    version = register_best(run_id, model_name, metric=metric, exporter=exporter, client=client)
    out: dict[str, Any] = {"model": model_name, "version": str(version.version), "source_run_id": version.run_id,
                           "router": version.tags.get("router")}
    if stage:
        out["stage"] = promote(model_name, version.version, to=stage, client=client).stage
    return out


def default_eval_table(model_name: str, version: str | None, to: str, *, client: Any = None) -> str:
    """The evaluation table a promotion of ``version`` (None: the one ``to`` means) scores on by
    default: the candidate's source run artifact ``eval/eval_table.npz``, as a ``runs:/`` URI."""
    from mmroute.registry.stages import resolve_version
    from mmroute.registry.versions import get_client
    from mmroute.tracking.record import EVAL_TABLE, artifact_uri

    client = get_client(client)
    mv = client.get_model_version(model_name, resolve_version(client, model_name, version, to))
    if not mv.run_id:
        raise ValueError(f"{model_name} version {mv.version} has no source run: pass --eval-table")
    return artifact_uri(mv.run_id, EVAL_TABLE)
